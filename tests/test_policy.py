"""Encoders per observation space; the acting path equals the sequence path."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.common.encoders import make_encoder
from agents.ppo.policy import Policy

SPACES = {
    "symbols": gym.spaces.MultiDiscrete([3, 9, 9, 9]),
    "grid_hw": gym.spaces.MultiDiscrete(np.full((7, 7), 5)),
    "grid_hwc": gym.spaces.MultiDiscrete(np.tile(np.array([11, 6, 3]), (7, 7, 1))),
    "discrete": gym.spaces.Discrete(5),
    "image_hwc": gym.spaces.Box(0, 255, (40, 40, 3), np.uint8),
    "image_chw": gym.spaces.Box(0.0, 1.0, (3, 11, 11), np.float32),
    "vector": gym.spaces.Box(-1.0, 1.0, (7,), np.float32),
    "binary": gym.spaces.MultiBinary(6),
    "dict": gym.spaces.Dict(
        {"grid": gym.spaces.MultiDiscrete(np.full((5, 5), 4)), "goal": gym.spaces.Discrete(3)}
    ),
}


def _batch(space: gym.Space, n: int):
    space.seed(0)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, gym.spaces.Dict):
        return {k: torch.as_tensor(np.stack([s[k] for s in samples])) for k in space.spaces}
    return torch.as_tensor(np.stack(samples))


@pytest.mark.parametrize("name", SPACES)
def test_encoder_per_space(name):
    space = SPACES[name]
    enc = make_encoder(space, hidden_size=32)
    y = enc(_batch(space, 5))
    assert y.shape == (5, enc.output_size)
    assert torch.isfinite(y).all()


def test_multidiscrete_start_is_respected():
    space = gym.spaces.MultiDiscrete([3, 4], start=[-1, 5])
    enc = make_encoder(space)
    obs = torch.tensor([[-1, 5], [1, 8]])
    assert torch.isfinite(enc(obs)).all()


def test_shared_token_table_gives_equal_symbols_equal_vectors():
    enc = make_encoder(gym.spaces.MultiDiscrete([3, 9, 9]), embed_dim=4)
    assert enc.embed.num_embeddings == 3 + 9  # the two 9-symbol positions share one table
    unshared = make_encoder(gym.spaces.MultiDiscrete([3, 9, 9]), share_embeddings=False)
    assert unshared.embed.num_embeddings == 3 + 9 + 9


@pytest.mark.parametrize("core", ["mlp", "gru", "lstm"])
@pytest.mark.parametrize("prev,norm", [(False, False), (True, False), (False, True)])
def test_act_step_by_step_equals_evaluate_sequence(core, prev, norm):
    torch.manual_seed(0)
    obs_space = gym.spaces.MultiDiscrete([3, 9, 9, 9])
    policy = Policy(obs_space, gym.spaces.Discrete(3), core=core, prev_action_reward=prev,
                    core_norm=norm).eval()
    T, B = 12, 4
    obs = torch.stack([_batch(obs_space, B) for _ in range(T)])
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0] = True
    starts[5, 1] = starts[9, 2] = True
    state0 = policy.initial_state(B, "cpu")
    actions, logps, values = [], [], []
    prev_a = torch.zeros(T, B, dtype=torch.int64)
    prev_r = torch.randn(T, B)
    with torch.no_grad():
        state = state0
        for t in range(T):
            a, lp, v, state = policy.act(obs[t], state, starts[t], prev_a[t], prev_r[t])
            actions.append(a)
            logps.append(lp)
            values.append(v)
            if t + 1 < T:
                prev_a[t + 1] = a
        acts = torch.stack(actions)
        assert ((acts >= 0) & (acts < 3)).all()
        lp_seq, ent, v_seq = policy.evaluate_sequence(obs, state0, starts, acts, prev_a, prev_r)
    torch.testing.assert_close(lp_seq, torch.stack(logps), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_seq, torch.stack(values), atol=1e-5, rtol=1e-5)
    assert (ent > 0).all() and (ent <= np.log(3) + 1e-5).all()



@pytest.mark.parametrize("core,core_cfg", [("gru", None), ("hcam", {"chunk_size": 2, "max_chunks": 4}),
                                           ("gtrxl", {"window": 4})])
@pytest.mark.parametrize("cut", [[1, 4], [], [0, 1, 2, 3, 4, 5], [5]])
def test_truncation_values_value_the_cut_envs_alone(core, core_cfg, cut):
    torch.manual_seed(0)
    obs_space = gym.spaces.MultiDiscrete([3, 9, 9, 9])
    policy = Policy(obs_space, gym.spaces.Discrete(3), core=core, core_cfg=core_cfg,
                    prev_action_reward=True).eval()
    B = 6
    state = policy.initial_state(B, "cpu")
    starts = torch.ones(B, dtype=torch.bool)
    a, r = torch.zeros(B, dtype=torch.int64), torch.zeros(B)
    with torch.no_grad():
        for _ in range(5):  # a state with history in it
            a, _, _, state = policy.act(_batch(obs_space, B), state, starts, a, r)
            starts, r = torch.zeros(B, dtype=torch.bool), torch.randn(B)
        before = {k: v.clone() for k, v in state.items()}
        final = _batch(obs_space, B)
        truncated = torch.zeros(B, dtype=torch.bool)
        truncated[cut] = True
        got = policy.truncation_values(final, state, truncated, a, r)
        every = policy.value(final, state, starts, a, r)
    assert got.shape == (B,)
    torch.testing.assert_close(got, torch.where(truncated, every, torch.zeros(B)), atol=1e-5, rtol=1e-5)
    assert (got[~truncated] == 0).all()
    for k, v in state.items():  # the state is read, never written
        assert torch.equal(v, before[k])

def test_core_norm_hands_the_heads_unit_scale_features():
    # A GRU's first outputs are small (its retain gate starts biased shut); the LayerNorm
    # hands the heads features of mean 0 and variance 1 per step whatever their scale.
    obs_space = gym.spaces.MultiDiscrete([8] * 6)
    obs = torch.randint(0, 8, (256, 6), generator=torch.Generator().manual_seed(0))
    starts = torch.ones(256, dtype=torch.bool)
    for norm in (False, True):
        torch.manual_seed(0)
        policy = Policy(obs_space, gym.spaces.Discrete(8), core="gru", core_norm=norm)
        y, _ = policy._step(obs, policy.initial_state(256, "cpu"), starts, None, None)
        if norm:
            torch.testing.assert_close(y.mean(-1), torch.zeros(256), atol=1e-5, rtol=0)
            torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(256), atol=0.05, rtol=0)  # eps 1e-5
        else:
            assert isinstance(policy.core_norm, torch.nn.Identity) and y.abs().mean() < 0.2


def test_prev_action_is_hidden_at_episode_starts():
    policy = Policy(gym.spaces.MultiDiscrete([4]), gym.spaces.Discrete(3), core="mlp",
                    prev_action_reward=True)
    obs = torch.zeros(1, 2, 1, dtype=torch.int64)
    starts = torch.tensor([[True, True]])
    x = policy.features(obs, starts, torch.tensor([[0, 2]]), torch.tensor([[1.0, -1.0]]))
    assert torch.equal(x[0, 0], x[0, 1]), "a new episode must not see the last episode's action"


def test_greedy_action_is_the_argmax():
    torch.manual_seed(0)
    policy = Policy(gym.spaces.MultiDiscrete([4, 4]), gym.spaces.Discrete(5), core="gru")
    obs = torch.randint(0, 4, (64, 2))
    starts = torch.ones(64, dtype=torch.bool)
    state = policy.initial_state(64, "cpu")
    with torch.no_grad():
        a, lp, _, _ = policy.act(obs, state, starts, deterministic=True)
        y, _ = policy.core(policy.features(obs[None], starts[None]), state, starts[None])
        all_logp, _ = policy.heads(y[0])
    assert a.shape == (64,) and lp.shape == (64,)
    assert torch.equal(a, all_logp.argmax(-1))


def test_sampling_follows_the_policy():
    """Gumbel-max sampling: empirical frequencies match the softmax."""
    torch.manual_seed(0)
    policy = Policy(gym.spaces.MultiDiscrete([2]), gym.spaces.Discrete(3), core="mlp")
    with torch.no_grad():
        policy.actor.weight.zero_()
        policy.actor.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    n = 20000
    obs = torch.zeros(n, 1, dtype=torch.int64)
    with torch.no_grad():
        a, lp, _, _ = policy.act(obs, policy.initial_state(n, "cpu"), torch.ones(n, dtype=torch.bool))
    freq = torch.bincount(a, minlength=3).float() / n
    torch.testing.assert_close(freq, torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0), atol=0.015, rtol=0)


def test_an_image_of_ids_is_embedded_not_scaled():
    """MiniGrid's view is a uint8 image of (object, colour, state) ids: the env says so
    with ``symbol_counts`` and the policy embeds each id instead of dividing by 255."""
    import envs
    from agents.common.config import compose, policy_spec
    from agents.common.encoders import GridEncoder, make_encoder

    env = envs.make_vec("MiniGrid-MemoryS7-v0", 2)
    spec = policy_spec(compose(["env=minigrid_memory"]), env)
    assert spec["encoder_cfg"]["symbol_counts"] == [11, 6, 3]
    enc = make_encoder(env.single_observation_space, **spec["encoder_cfg"])
    assert isinstance(enc, GridEncoder)
    obs, _ = env.reset()
    key, ball = obs.clone(), obs.clone()
    key[:, 0, 0, 0], ball[:, 0, 0, 0] = 5, 6  # a key and a ball differ as much as any two ids
    assert not torch.allclose(enc(key), enc(ball))
    with pytest.raises(ValueError, match="do not match the channels"):
        make_encoder(env.single_observation_space, symbol_counts=[11, 6])
    nested = gym.spaces.Dict(view=env.single_observation_space, step=gym.spaces.Discrete(4))
    with pytest.raises(ValueError, match=r"symbol_counts=\[11, 6, 3\].*Dict spaces do not take them"):
        make_encoder(nested, symbol_counts=[11, 6, 3])


@pytest.mark.parametrize("env_id", ["MiniGrid-MemoryS7-v0", "recall/Ballet-v0"])
def test_a_grid_read_by_an_mlp_instead_of_the_cnn(env_id):
    """policy.grid_trunk=mlp: the embedded cells, flattened, through an MLP; every cell
    still counts, and the spec (what a checkpoint stores) keeps the choice."""
    import envs
    from agents.common.config import compose, make_policy, policy_spec
    from agents.common.encoders import FlatTrunk

    env = envs.make_vec(env_id, 2)
    name = "minigrid_memory" if env_id.startswith("MiniGrid") else "ballet"
    spec = policy_spec(compose([f"env={name}", "policy.grid_trunk=mlp"]), env)
    assert spec["encoder_cfg"]["grid_trunk"] == "mlp"
    policy = make_policy(spec)
    trunks = [m for m in policy.encoder.modules() if isinstance(m, FlatTrunk)]
    assert len(trunks) == 1 and not any(isinstance(m, torch.nn.Conv2d) for m in policy.modules())
    obs, _ = env.reset()
    far = obs.clone()
    far.view(2, -1)[:, 0] = 5  # the first cell (a corner of the view) holds something else
    assert (far != obs).any()
    assert not torch.allclose(policy.encoder(obs), policy.encoder(far))
    from agents.common.encoders import make_encoder
    grid = gym.spaces.MultiDiscrete(np.full((5, 5), 4))
    nested = make_encoder(gym.spaces.Dict({"view": grid}), grid_trunk="mlp")
    assert any(isinstance(m, FlatTrunk) for m in nested.modules())  # a Dict's grids too
    with pytest.raises(ValueError, match="grid_trunk='rnn' is not one of cnn, mlp"):
        make_encoder(env.single_observation_space, **{**spec["encoder_cfg"], "grid_trunk": "rnn"})


def test_a_view_inside_a_flat_observation_goes_through_the_cnn():
    """Ballet's symbolic observation is the 11 x 11 view, row by row, then the instruction
    token: the env says so with ``symbol_grid``, and the policy reads the view with the
    grid encoder (the same filters at every cell) and the token with its own table."""
    import envs
    from agents.common.config import compose, policy_spec
    from agents.common.encoders import FlatGridEncoder, SymbolEncoder

    env = envs.make_vec("recall/Ballet-v0", 2)
    spec = policy_spec(compose(["env=ballet"]), env)
    assert spec["encoder_cfg"]["symbol_grid"] == [11, 11]
    enc = make_encoder(env.single_observation_space, **spec["encoder_cfg"])
    assert isinstance(enc, FlatGridEncoder)
    obs, _ = env.reset()
    assert enc(obs).shape == (2, enc.output_size)
    # the token and every cell of the view reach the features
    token, cell = obs.clone(), obs.clone()
    token[:, 121] = 5
    cell[:, 0] = 7
    assert not torch.allclose(enc(obs), enc(token))
    assert not torch.allclose(enc(obs), enc(cell))
    # policy.grid_view=false keeps the flat per-position tables
    flat = policy_spec(compose(["env=ballet", "policy.grid_view=false"]), env)
    assert "symbol_grid" not in flat["encoder_cfg"]
    assert isinstance(make_encoder(env.single_observation_space, **flat["encoder_cfg"]), SymbolEncoder)
    # pixels: no symbolic view to point at
    assert envs.make_vec("recall/Ballet-v0", 1, pixels=True).symbol_grid is None
    with pytest.raises(ValueError, match=r"symbol_grid \[12, 11\] needs 132 symbols; the observation has 122"):
        make_encoder(env.single_observation_space, symbol_grid=[12, 11])


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_joint_table_equals_summed_channel_embeddings(layout):
    """A grid of several channels with few ids (MiniGrid's 11 x 6 x 3) looks up one row of
    a joint table per cell: the same features and gradients as summing the channels' rows,
    with starts other than 0; many ids, or one channel, keep the per-channel lookup."""
    from agents.common.encoders import MAX_JOINT_ROWS, GridEncoder

    counts = np.array([11, 6, 3])
    nvec = np.tile(counts, (7, 7, 1))
    start = np.tile(np.array([0, 2, -1]), (7, 7, 1))
    if layout == "chw":
        nvec, start = np.moveaxis(nvec, -1, 0), np.moveaxis(start, -1, 0)
    torch.manual_seed(0)
    enc = GridEncoder(nvec, start, 8, 4, 32, trunk="mlp")
    assert enc.joint_sizes == [11, 6, 3]
    gen = torch.Generator().manual_seed(1)
    ids = torch.stack([torch.randint(0, int(n), (6, 7, 7), generator=gen) for n in counts], -1)
    obs = ids + torch.as_tensor(np.moveaxis(start, 0, -1) if layout == "chw" else start)
    if layout == "chw":
        obs = obs.permute(0, 3, 1, 2)
    w = torch.randn(6, enc.output_size, generator=gen)

    def run(joint: bool):
        enc.joint_sizes = [11, 6, 3] if joint else None
        enc.zero_grad()
        y = enc(obs)
        (y * w).sum().backward()
        return y.detach(), enc.embed.weight.grad.clone()

    (y_joint, g_joint), (y_sum, g_sum) = run(True), run(False)
    torch.testing.assert_close(y_joint, y_sum)
    torch.testing.assert_close(g_joint, g_sum)
    assert (g_joint.abs().sum(-1) > 0).all()  # every id occurs, so every row learns
    big = np.tile(np.array([64, 64, 2]), (7, 7, 1))  # 8192 rows > MAX_JOINT_ROWS
    assert 64 * 64 * 2 > MAX_JOINT_ROWS
    assert GridEncoder(big, 0, 8, 4, 32).joint_sizes is None
    assert GridEncoder(np.full((7, 7), 5), 0, 8, 4, 32).joint_sizes is None
