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
    when the card of step t is dealt), ``target()`` and ``answered()``.
    """

    num_streams = 1

    def __init__(self, num_envs, device, seed, difficulty, **kwargs):
        self.level = _check_difficulty(difficulty)
        self.difficulty = difficulty
        self.num_cards = 52 * self.num_decks
        self.per_category = self.num_cards // self.num_categories
        self.scale = 1.0 / self.num_answers
        super().__init__(num_envs, device, seed, **kwargs)
        n, dev, S, C = self.num_envs, self.device, self.num_streams, self.num_categories
        # Cards of each category still in each deck: [n, streams, categories].
        self.remaining = torch.full((n, S, C), self.per_category, dtype=torch.int64, device=dev)
        self.wrong = torch.zeros(n, dtype=torch.int64, device=dev)
        self._forced_cards: torch.Tensor | None = None  # [n, streams, num_deals]
        self._forced = torch.zeros(n, dtype=torch.bool, device=dev)
        self._pending = torch.zeros(n, dtype=torch.bool, device=dev)
        self._categories = torch.arange(C, device=dev)
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

    # ---------------------------------------------------------------- dealing
    def _deal(self) -> torch.Tensor:
        """The category of the card dealt at step t, per deck: [n, streams]."""
        left = (self.num_cards - self.t).clamp(min=1)[:, None]  # cards in the deck before this deal
        draws = []
        for s in range(self.num_streams):
            u = rng.randint(self.step_key(s), left[:, 0])
            below = self.remaining[:, s].cumsum(1) <= u[:, None]
            draws.append(below.sum(1).clamp(max=self.num_categories - 1))
        cards = torch.stack(draws, dim=1)
        if self._forced_cards is not None:
            pos = self.t.clamp(max=self.num_deals - 1)[:, None, None].expand(-1, self.num_streams, 1)
            forced = self._forced_cards.gather(2, pos).squeeze(2)
            cards = torch.where(self._forced[:, None], forced, cards)
        dealing = (self.t < self.num_deals)[:, None, None]
        taken = (cards[:, :, None] == self._categories) & dealing
        self.remaining -= taken.long()
        return cards

    def _new_episode(self, mask, key):
        self.remaining = torch.where(mask[:, None, None], self.per_category, self.remaining)
        self.wrong.masked_fill_(mask, 0)
        if self._forced_cards is not None:
            self._forced = (self._forced & ~mask) | (self._pending & mask)
            self._pending = self._pending & ~mask
        self._on_deal(self._deal(), mask)

    def set_cards(self, cards) -> None:
        """Start a new episode in every copy that deals ``cards`` in this order.

        ``cards``: ints of shape ``[num_envs, num_deals]`` (or ``[num_envs, 2, num_deals]``
        for CountRecall: row 0 the value deck, row 1 the query deck), each a card
        category in POPGym's numbering (suits: spades, diamonds, clubs, hearts = 0..3;
        colours 0..1; ranks ace..king = 0..12). Each deck must hold at most
        ``52 * num_decks / categories`` cards of a category. Later episodes are random.
        """
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
        self._forced_cards = cards
        self._pending = torch.ones_like(self._pending)
        self._begin(self._all)

    def reset(self, *, seed=None, options=None):
        self._forced_cards = None  # a reset returns to random decks
        self._forced.zero_()
        self._pending.zero_()
        return super().reset(seed=seed, options=options)

    # ---------------------------------------------------------------- answers
    def _transition(self, actions):
        answered = self.answered()
        right = actions == self.target()
        self.wrong += (answered & ~right).long()
        reward = torch.where(right, self.scale, -self.scale) * answered.float()
        terminated = self.t == self.episode_steps - 1
        return reward, terminated, torch.zeros_like(terminated), self.wrong == 0

    def oracle_actions(self):
        return self.target().clone()

    def _on_deal(self, cards: torch.Tensor, mask: torch.Tensor) -> None:
        raise NotImplementedError

    def target(self) -> torch.Tensor:
        raise NotImplementedError

    def answered(self) -> torch.Tensor:
        """Whether this step's action is scored."""
        return torch.ones_like(self.t, dtype=torch.bool)

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
        n = self.num_envs
        self.first = torch.zeros(n, dtype=torch.int64, device=self.device)
        self.card = torch.zeros(n, dtype=torch.int64, device=self.device)

    def _on_deal(self, cards, mask):
        self.card = cards[:, 0]
        self.first = torch.where(self.t == 0, self.card, self.first)

    def target(self):
        return self.first

    def _observe(self):
        return self.card[:, None].clone()

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
        self.ring = torch.zeros(self.num_envs, self.k, dtype=torch.int64, device=self.device)

    def _on_deal(self, cards, mask):
        self.ring.scatter_(1, (self.t % self.k)[:, None], cards[:, :1])

    def target(self):
        # The card of step t - k + 1 lives in slot (t + 1) % k until step t + 1 overwrites it.
        return self.ring.gather(1, ((self.t + 1) % self.k)[:, None]).squeeze(1)

    def answered(self):
        return self.t >= self.k - 1

    @property
    def memory_horizon(self) -> int:
        return self.k

    def _observe(self):
        return self.ring.gather(1, (self.t % self.k)[:, None])

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
        n, dev = self.num_envs, self.device
        self.counts = torch.zeros(n, self.num_categories, dtype=torch.int64, device=dev)
        self.value = torch.zeros(n, dtype=torch.int64, device=dev)
        self.query = torch.zeros(n, dtype=torch.int64, device=dev)

    def _on_deal(self, cards, mask):
        self.counts.masked_fill_(mask[:, None], 0)
        self.value, self.query = cards[:, 0], cards[:, 1]
        self.counts.scatter_add_(1, self.value[:, None], torch.ones_like(self.value[:, None]))

    def target(self):
        return self.counts.gather(1, self.query[:, None]).squeeze(1)

    def _observe(self):
        return torch.stack([self.value, self.query], dim=1)

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
        self.cards = torch.zeros(self.num_envs, self.num_deals, dtype=torch.int64,
                                 device=self.device)

    def _on_deal(self, cards, mask):
        pos = self.t.clamp(max=self.num_deals - 1)[:, None]
        keep = self.cards.gather(1, pos)
        self.cards.scatter_(1, pos, torch.where(self.t[:, None] < self.num_deals, cards[:, :1], keep))

    def answered(self):
        return self.t >= self.num_deals - 1

    def target(self):
        # Play step j (t = N - 1 + j) recites card N - 1 - j = 2N - 2 - t.
        pos = (2 * self.num_deals - 2 - self.t).clamp(0, self.num_deals - 1)
        return self.cards.gather(1, pos[:, None]).squeeze(1)

    def _observe(self):
        watch = self.t < self.num_deals - 1
        last_shown = self.t == self.num_deals - 1
        pos = self.t.clamp(max=self.num_deals - 1)[:, None]
        suit = self.cards.gather(1, pos).squeeze(1) * (watch | last_shown)
        return torch.stack([watch.long(), suit], dim=1)

    def render_frame(self, index=0, show_answer=True, action=None):
        t, N = int(self.t[index]), self.num_deals
        mode = "watch" if t < N - 1 else "play"
        title = f"Autoencode ({self.difficulty})  t={t}/{self.episode_steps}  {mode}"
        cards = self.cards[index].tolist()
        shown = cards[max(0, min(t, N - 1) - 7): min(t, N - 1) + 1]
        answer = int(self.target()[index]) if t >= N - 1 else None
        return self._frame(title, shown, answer, "recite (reverse order):", show_answer, action)
