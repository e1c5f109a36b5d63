"""POPGym's card tasks (Morad et al. 2023) with POPGym's rules, levels and reward scale.

Each task deals cards from a shuffled deck of ``52 * num_decks`` cards (13 of
each suit per deck). Dealing is sequential sampling without replacement: the
next card's category is drawn with probability proportional to the cards of
that category left in the deck, which gives exactly the card sequences of a
uniformly shuffled deck without storing or sorting one. Every answer earns
``+scale`` if right and ``-scale`` if wrong, with ``scale = 1 / answers`` as in
POPGym, so the return lies in [-1, 1]. ``success`` = every answer of the
episode right (return 1); POPGym itself reports only the return.

``difficulty`` picks POPGym's Easy / Medium / Hard level:

* ``RepeatFirst``: decks 1 / 8 / 16. Shows one suit per step (the first card
  first); at every step the agent names the suit of the *first* card.
  ``52 * decks - 1`` steps, all answered.
* ``RepeatPrevious``: (decks, k) = (1, 4) / (2, 32) / (3, 64). Shows one suit
  per step; from step k - 1 on, the agent names the suit of the card shown
  k - 1 steps before the current one (POPGym's ``hand[-k]``, the current card
  being ``hand[-1]``). ``52 * decks - 1`` steps, ``52 * decks - k`` answered.
* ``CountRecall``: (decks, what is counted) = (1, colours) / (2, suits) /
  (4, ranks). Each step shows a dealt value card and a query category (from a
  second, independent deck); the agent names how many value cards of the
  queried category it has seen so far, the current one included. Actions
  ``0 .. 52 * decks / categories``. ``52 * decks - 1`` steps, all answered.
* ``Autoencode``: decks 1 / 2 / 3. Watch phase: one suit per step; play phase
  (from the step that shows the last card on): the agent names the cards in
  reverse order, one per step. ``2 * 52 * decks - 1`` steps,
  ``52 * decks`` answered.

Observations are POPGym's, as a MultiDiscrete: ``[suit]`` (RepeatFirst,
RepeatPrevious), ``[value, query]`` (CountRecall), ``[mode, suit]`` with mode
1 = watch, 0 = play and suit 0 during play (Autoencode).

``set_cards(...)`` starts a new episode in every copy that plays a given deck
order (then later episodes draw at random again): the way to replay POPGym's
own card sequences, used by the tests that compare rewards with POPGym.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs import rng
from envs.backends import f32
from envs.batched import BatchedEnv
from envs.render import ANSWER, Canvas, verdict

DIFFICULTIES = ("easy", "medium", "hard")
SUIT_NAMES = ("spades", "diamonds", "clubs", "hearts")  # POPGym's suit order


def _check_difficulty(difficulty) -> int:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty={difficulty!r} is not accepted; accepted: easy, medium, hard")
    return DIFFICULTIES.index(difficulty)


class CardTask(BatchedEnv):
    """Shared dealing, answer bookkeeping and card injection of the card tasks.

    A subclass sets ``num_decks``, ``num_categories`` (per dealt card), ``num_answers``,
    ``episode_steps`` and ``num_deals`` (how many cards a deck deals in an episode;
    ``num_streams`` independent decks), and writes ``_on_deal(cards)`` (state update
    when the cards of step t are dealt, one per deck), ``target()`` and ``answered()``;
    ``_clear(mask)`` resets its own state at the start of an episode.
    """

    num_streams = 1
    python_rules = True

    def __init__(self, num_envs, device, seed, difficulty, **kwargs):
        self.level = _check_difficulty(difficulty)
        self.difficulty = difficulty
        self.num_cards = 52 * self.num_decks
        self.per_category = self.num_cards // self.num_categories
        self.scale = f32(1.0 / self.num_answers)
        super().__init__(num_envs, device, seed, **kwargs)
        xp, S, C = self.xp, self.num_streams, self.num_categories
        # Cards of each category still in each deck: deck s holds columns s*C .. s*C + C - 1.
        self.remaining = xp.full(self.per_category, S * C)
        self.wrong = xp.zeros()
        self._forced_cards = None  # [n, streams * num_deals] (set_cards)
        self._forced = xp.zeros(dtype=torch.bool)
        self._pending = xp.zeros(dtype=torch.bool)
        self._start_state()

    @property
    def chance(self) -> float:
        """Expected return of a uniform random policy (POPGym's scale: 2p - 1)."""
        return 2.0 / self.single_action_space.n - 1.0

    @property
    def memory_horizon(self) -> int:
        # RepeatFirst, CountRecall and Autoencode need the card of step 0 at the last step.
        return self.episode_steps

    def _start_state(self) -> None:
        """Allocate the task's own state (called before the first deal)."""

    def _clear(self, mask) -> None:
        """Reset the task's own state for the copies in ``mask`` (a new episode)."""

    # ---------------------------------------------------------------- dealing
    def _deal(self) -> list:
        """The category of the card dealt at step t by each deck (one per stream)."""
        xp, C, t, remaining = self.xp, self.num_categories, self.t, self.remaining
        left = xp.maximum(self.num_cards - t, 1)  # cards in the deck before this deal
        taken = -xp.int(t < self.num_deals)
        cards = []
        for s in range(self.num_streams):
            u = rng.randint(rng.combine(self.episode_key, t * 64 + s), left)  # step_key(s)
            card = xp.category(remaining, u, s * C, C)
            if self._forced_cards is not None:
                pos = s * self.num_deals + xp.minimum(t, self.num_deals - 1)
                card = xp.where(self._forced, xp.get(self._forced_cards, pos), card)
            remaining = xp.add_at(remaining, s * C + card, taken)
            cards.append(card)
        self.remaining = remaining
        return cards

    def _new_episode(self, mask, key):
        xp = self.xp
        self.remaining = xp.fill(self.remaining, mask, self.per_category)
        self.wrong = xp.fill(self.wrong, mask, 0)
        if self._forced_cards is not None:
            self._forced = (self._forced & xp.not_(mask)) | (self._pending & mask)
            self._pending = self._pending & xp.not_(mask)
        self._clear(mask)

    def _advance(self):
        if self.xp.maybe(self.t < self.num_deals):  # (Autoencode's play phase deals nothing)
            self._on_deal(self._deal())

    def set_cards(self, cards) -> None:
        """Start a new episode in every copy that deals ``cards`` in this order.

        ``cards``: ints of shape ``[num_envs, num_deals]`` (or ``[num_envs, 2, num_deals]``
        for CountRecall: row 0 the value deck, row 1 the query deck), each a card
        category in POPGym's numbering (suits: spades, diamonds, clubs, hearts = 0..3;
        colours 0..1; ranks ace..king = 0..12). Each deck must hold at most
        ``52 * num_decks / categories`` cards of a category. Later episodes are random.
        A batched env only (the single env plays random decks).
        """
        if self.xp.python:
            raise TypeError(f"{self.env_id}: set_cards is for batched envs")
        cards = torch.as_tensor(cards, device=self.device).long()
        if cards.dim() == 2:
            cards = cards[:, None, :]
        want = (self.num_envs, self.num_streams, self.num_deals)
        if tuple(cards.shape) != want:
            shape = want if self.num_streams > 1 else (self.num_envs, self.num_deals)
            raise ValueError(f"{self.env_id}: cards must have shape {shape}, got {tuple(cards.shape)}")
        if bool(((cards < 0) | (cards >= self.num_categories)).any()):
            raise ValueError(f"{self.env_id}: cards must be in 0..{self.num_categories - 1}")
        counts = torch.nn.functional.one_hot(cards, self.num_categories).sum(2)
        if bool((counts > self.per_category).any()):
            raise ValueError(
                f"{self.env_id}: a deck holds at most {self.per_category} cards of each category"
            )
        self._forced_cards = cards.reshape(self.num_envs, -1)
        self._pending = torch.ones_like(self._pending)
        self._begin(self._all)
        self._advance()

    def _eager_only(self) -> bool:
        return self._forced_cards is not None  # the compiled step deals random decks only

    def reset(self, *, seed=None, options=None):
        self._forced_cards = None  # a reset returns to random decks
        self._forced = self.xp.zeros(dtype=torch.bool)
        self._pending = self.xp.zeros(dtype=torch.bool)
        return super().reset(seed=seed, options=options)

    # ---------------------------------------------------------------- answers
    def _transition(self, actions):
        xp = self.xp
        answered = xp.int(self.answered())
        right = xp.int(actions == self.target())
        self.wrong = self.wrong + answered * (1 - right)
        reward = xp.float(answered * (2 * right - 1)) * self.scale  # +-scale, 0 if not scored
        terminated = self.t == self.episode_steps - 1
        return reward, terminated, xp.false(terminated), self.wrong == 0

    def oracle_actions(self):
        return self.xp.copy(self.target())

    def _on_deal(self, cards: list) -> None:
        raise NotImplementedError

    def target(self):
        raise NotImplementedError

    def answered(self):
        """Whether this step's action is scored."""
        return self.t >= 0

    def actions_matter(self):
        return self.answered()

    # ---------------------------------------------------------------- drawing
    def _frame(self, title: str, cards: list[int], answer: int | None, note: str, show_answer: bool,
               action: int | None = None):
        c = Canvas(max(340, 24 + 36 * len(cards)), 150)
        c.text((8, 6), title)
        for j, card in enumerate(cards):
            self._card(c, 8 + 36 * j, 40, card)
        if answer is not None:
            c.text((8, 100), note)
            x = 8 + 6 * len(note) + 8
            self._card(c, x, 94, answer, outline=ANSWER if show_answer else None,
                       hidden=not show_answer)
            if action is not None:  # the agent's card beside the right one
                c.text((x + 40, 100), "agent")
                self._card(c, x + 76, 94, action)
                c.pick_bar(x + 76, 138, 29, right=action == answer)
        return c.array()

    def _card(self, c: Canvas, x: int, y: int, card: int, outline=None, hidden=False) -> None:
        colours = [(40, 40, 40), (200, 40, 40), (40, 40, 40), (200, 40, 40)]
        c.draw.rectangle((x, y, x + 28, y + 40), fill=(235, 235, 235), outline=outline,
                         width=3 if outline else 1)
        if hidden:
            c.draw.text((x + 10, y + 14), "?", fill=(0, 0, 0))
        elif self.num_categories == 4:
            c.draw.text((x + 4, y + 14), "SDCH"[card], fill=colours[card])
        else:
            c.draw.text((x + 4, y + 14), str(card), fill=(0, 0, 0))


class RepeatFirst(CardTask):
    env_id = "recall/RepeatFirst-v0"

    def __init__(self, num_envs: int = 1, device="cpu", seed: int = 0, *,
                 difficulty: str = "easy", **kwargs):
        self.num_decks = (1, 8, 16)[_check_difficulty(difficulty)]
        self.num_categories = 4
        self.num_deals = 52 * self.num_decks - 1
        self.episode_steps = self.num_answers = 52 * self.num_decks - 1
        super().__init__(num_envs, device, seed, difficulty, **kwargs)

    def _spaces(self):
        return gym.spaces.MultiDiscrete(np.array([4], dtype=np.int64)), gym.spaces.Discrete(4)

    def _start_state(self):
        self.first = self.xp.zeros()
        self.card = self.xp.zeros()

    def _on_deal(self, cards):
        self.card = cards[0]
        self.first = self.xp.where(self.t == 0, self.card, self.first)

    def target(self):
        return self.first

    def _observe(self):
        return self.xp.obs(self.card)

    def render_frame(self, index=0, show_answer=True, action=None):
        t = int(self.t[index])
        title = f"RepeatFirst ({self.difficulty})  t={t}/{self.episode_steps}"
        return self._frame(title, [int(self.card[index])], int(self.first[index]),
                           "name the first card:", show_answer, action)


class RepeatPrevious(CardTask):
    env_id = "recall/RepeatPrevious-v0"

    def __init__(self, num_envs: int = 1, device="cpu", seed: int = 0, *,
                 difficulty: str = "easy", **kwargs):
        level = _check_difficulty(difficulty)
        self.num_decks, self.k = ((1, 4), (2, 32), (3, 64))[level]
        self.num_categories = 4
        self.num_deals = self.episode_steps = 52 * self.num_decks - 1
        self.num_answers = 52 * self.num_decks - self.k
        super().__init__(num_envs, device, seed, difficulty, **kwargs)

    def _spaces(self):
        return gym.spaces.MultiDiscrete(np.array([4], dtype=np.int64)), gym.spaces.Discrete(4)

    def _start_state(self):
        # Ring of the last k cards: the card of step t sits in slot t % k.
        self.ring = self.xp.zeros(self.k)

    def _on_deal(self, cards):
        self.ring = self.xp.put(self.ring, self.t % self.k, cards[0])

    def target(self):
        # The card of step t - k + 1 lives in slot (t + 1) % k until step t + 1 overwrites it.
        return self.xp.get(self.ring, (self.t + 1) % self.k)

    def answered(self):
        return self.t >= self.k - 1

    @property
    def memory_horizon(self) -> int:
        return self.k

    def _observe(self):
        return self.xp.obs(self.xp.get(self.ring, self.t % self.k))

    def render_frame(self, index=0, show_answer=True, action=None):
        t = int(self.t[index])
        title = f"RepeatPrevious ({self.difficulty}, k={self.k})  t={t}/{self.episode_steps}"
        ring = self.ring[index].tolist()
        shown = [ring[s % self.k] for s in range(max(0, t - min(self.k, 8) + 1), t + 1)]
        answer = int(self.target()[index]) if t >= self.k - 1 else None
        return self._frame(title, shown, answer, f"name the card {self.k - 1} back:", show_answer,
                           action)


class CountRecall(CardTask):
    env_id = "recall/CountRecall-v0"
    num_streams = 2  # the value deck and the query deck

    def __init__(self, num_envs: int = 1, device="cpu", seed: int = 0, *,
                 difficulty: str = "easy", **kwargs):
        level = _check_difficulty(difficulty)
        self.num_decks, self.num_categories = ((1, 2), (2, 4), (4, 13))[level]
        self.counted = ("colours", "suits", "ranks")[level]
        self.num_deals = self.episode_steps = self.num_answers = 52 * self.num_decks - 1
        super().__init__(num_envs, device, seed, difficulty, **kwargs)

    def _spaces(self):
        c = self.num_categories
        obs = gym.spaces.MultiDiscrete(np.array([c, c], dtype=np.int64))
        return obs, gym.spaces.Discrete(52 * self.num_decks // c + 1)

    def _start_state(self):
        xp = self.xp
        self.counts = xp.zeros(self.num_categories)
        self.value = xp.zeros()
        self.query = xp.zeros()

    def _clear(self, mask):
        self.counts = self.xp.fill(self.counts, mask, 0)

    def _on_deal(self, cards):
        xp = self.xp
        self.value, self.query = cards
        self.counts = xp.put(self.counts, self.value, xp.get(self.counts, self.value) + 1)

    def target(self):
        return self.xp.get(self.counts, self.query)

    def _observe(self):
        return self.xp.obs(self.value, self.query)

    def render_frame(self, index=0, show_answer=True, action=None):
        t = int(self.t[index])
        title = f"CountRecall ({self.difficulty}: {self.counted})  t={t}/{self.episode_steps}"
        c = Canvas(320, 150)
        c.text((8, 6), title)
        c.text((8, 36), "dealt:")
        self._card(c, 60, 28, int(self.value[index]))
        c.text((110, 36), "query:")
        self._card(c, 160, 28, int(self.query[index]))
        answer = int(self.target()[index])
        c.text((8, 100), f"count of the queried {self.counted[:-1]}: "
                         + (str(answer) if show_answer else "?"), fill=ANSWER)
        if action is not None:
            c.pick_bar(8, 124, 8, right=action == answer)
            c.text((20, 120), f"agent: {action}", fill=verdict(action == answer))
        return c.array()


class Autoencode(CardTask):
    env_id = "recall/Autoencode-v0"

    def __init__(self, num_envs: int = 1, device="cpu", seed: int = 0, *,
                 difficulty: str = "easy", **kwargs):
        self.num_decks = (1, 2, 3)[_check_difficulty(difficulty)]
        self.num_categories = 4
        self.num_deals = self.num_answers = 52 * self.num_decks
        self.episode_steps = 2 * self.num_deals - 1
        super().__init__(num_envs, device, seed, difficulty, **kwargs)

    def _spaces(self):
        obs = gym.spaces.MultiDiscrete(np.array([2, 4], dtype=np.int64))
        return obs, gym.spaces.Discrete(4)

    def _start_state(self):
        self.cards = self.xp.zeros(self.num_deals)

    def _on_deal(self, cards):
        xp = self.xp
        pos = xp.minimum(self.t, self.num_deals - 1)
        keep = xp.get(self.cards, pos)
        self.cards = xp.put(self.cards, pos, xp.where(self.t < self.num_deals, cards[0], keep))

    def answered(self):
        return self.t >= self.num_deals - 1

    def target(self):
        # Play step j (t = N - 1 + j) recites card N - 1 - j = 2N - 2 - t.
        pos = self.xp.clip(2 * self.num_deals - 2 - self.t, 0, self.num_deals - 1)
        return self.xp.get(self.cards, pos)

    def _observe(self):
        xp = self.xp
        watch = self.t < self.num_deals - 1
        last_shown = self.t == self.num_deals - 1
        pos = xp.minimum(self.t, self.num_deals - 1)
        suit = xp.get(self.cards, pos) * xp.int(watch | last_shown)
        return xp.obs(xp.int(watch), suit)

    def render_frame(self, index=0, show_answer=True, action=None):
        t, N = int(self.t[index]), self.num_deals
        mode = "watch" if t < N - 1 else "play"
        title = f"Autoencode ({self.difficulty})  t={t}/{self.episode_steps}  {mode}"
        cards = self.cards[index].tolist()
        shown = cards[max(0, min(t, N - 1) - 7): min(t, N - 1) + 1]
        answer = int(self.target()[index]) if t >= N - 1 else None
        return self._frame(title, shown, answer, "recite (reverse order):", show_answer, action)
