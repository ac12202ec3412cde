"""Wrappers (discretization, the Atari chain) and the frame-deduplicated replay buffer.

The wrapper tests use Gymnasium and NumPy only; the Atari ones are marked ``atari``.
"""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from probe_envs import ImageEnv

from keras_rl_gym.buffers import FrameReplayBuffer, NStepAccumulator, ReplayBuffer
from keras_rl_gym.config import make_env, validate_config
from keras_rl_gym.spaces import env_spaces
from keras_rl_gym.wrappers.discretize import discretize_observation

# Gymnasium, NumPy and host code only: nothing here depends on KERAS_BACKEND, so `make test` runs it once.
pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[1]
LOW = [-2.4, -2.0, -0.42, -3.5]
HIGH = [2.4, 2.0, 0.42, 3.5]


# -- discretization -------------------------------------------------------------------


class ScriptedEnv(gym.Env):
    """Emits the observations it is given, one per step, in an unbounded Box like CartPole's."""

    def __init__(self, observations, dim=4):
        self.observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.observations = [np.asarray(o, np.float32) for o in observations]
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observations[0], {}

    def step(self, action):
        self.t += 1
        return self.observations[self.t], 0.0, self.t == len(self.observations) - 1, False, {}


def test_discretize_cartpole_codes_stay_inside_the_declared_space():
    env = discretize_observation(gym.make("CartPole-v1"), n_bins=8, low=LOW, high=HIGH)
    assert env.observation_space == spaces.Discrete(8**4)
    seen = set()
    for episode in range(20):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            assert isinstance(obs, int) and env.observation_space.contains(obs)
            seen.add(obs)
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
        assert env.observation_space.contains(obs)
    assert len(seen) > 10


def test_discretize_bounds_and_beyond_land_in_the_edge_bins():
    # n is exactly the number of codes: the corners are 0 and n - 1, and beyond-bound values clip there.
    observations = [
        LOW,
        HIGH,
        [-100.0, -100.0, -100.0, -100.0],
        [1e30, 1e30, 1e30, 1e30],
        [np.inf, -np.inf, np.inf, -np.inf],
        [0.0, 0.0, 0.0, 0.0],
        [2.4 - 1e-6, -2.0, 0.0, 0.0],
    ]
    env = discretize_observation(ScriptedEnv(observations), n_bins=8, low=LOW, high=HIGH)
    n = env.observation_space.n
    codes = [env.reset()[0]] + [env.step(0)[0] for _ in observations[1:]]
    assert all(0 <= c < n for c in codes)
    assert codes[0] == 0 and codes[1] == n - 1
    assert codes[2] == 0 and codes[3] == n - 1
    assert codes[4] == (7 * 8**3 + 0 * 8**2 + 7 * 8 + 0)  # row-major flattening, first dimension most significant
    assert codes[5] == 4 * 8**3 + 4 * 8**2 + 4 * 8 + 4  # 0 is the left edge of bin 4 of 8
    assert codes[6] == 7 * 8**3 + 0 + 4 * 8 + 4


def test_discretize_per_dimension_bins_and_one_bin():
    env = discretize_observation(ScriptedEnv([[0.0] * 4, [1.0] * 4]), n_bins=[1, 2, 3, 4], low=-1.0, high=1.0)
    assert env.observation_space == spaces.Discrete(24)
    env = discretize_observation(ScriptedEnv([[0.0] * 4, [1.0] * 4]), n_bins=1, low=LOW, high=HIGH)
    assert env.observation_space == spaces.Discrete(1) and env.reset()[0] == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_bins=8, low=[-1.0, -1.0], high=HIGH), "low has 2 value"),
        (dict(n_bins=8, low=LOW, high=[1.0] * 5), "high has 5 value"),
        (dict(n_bins=0, low=LOW, high=HIGH), "n_bins must be integers >= 1"),
        (dict(n_bins=[8, 8], low=LOW, high=HIGH), "n_bins has 2 values"),
        (dict(n_bins=8, low=HIGH, high=LOW), "low < high"),
        (dict(n_bins=8, low=[0.0, 0.0, 1.0, 0.0], high=[1.0, 1.0, 1.0, 1.0]), r"dimension\(s\) \[2\]"),
        (dict(n_bins=8), "not finite"),  # CartPole's own bounds are infinite
    ],
)
def test_discretize_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        discretize_observation(gym.make("CartPole-v1"), **kwargs)


def test_discretize_rejects_non_box_observations():
    with pytest.raises(ValueError, match="needs a Box observation space, got Discrete"):
        discretize_observation(gym.make("FrozenLake-v1"), n_bins=8, low=0.0, high=1.0)


def test_discretize_from_config_under_both_names():
    for name in ("DiscretizeObservation", "DiscretizedObservationWrapper"):
        config = validate_config(
            {
                "algo": "dqn",
                "env": "CartPole-v1",
                "wrappers": [[name, {"n_bins": 8, "low": LOW, "high": HIGH}]],
            }
        )
        assert make_env(config).observation_space == spaces.Discrete(4096)


def test_wrapper_modules_do_not_import_keras():
    # The package's __init__ imports the agents (and Keras), so each module is loaded from its file.
    code = (
        "import importlib.util, sys\n"
        "for name in ('discretize', 'atari'):\n"
        f"    path = {str(ROOT / 'keras_rl_gym' / 'wrappers')!r} + '/' + name + '.py'\n"
        "    spec = importlib.util.spec_from_file_location(name, path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'keras_rl_gym')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- frame replay ---------------------------------------------------------------------


def stacked_vector_rollout(num_envs, steps, frame_shape=(6, 5), stack=4, seed=0, max_len=9):
    """Simulates a Gymnasium vector env of frame-stacked observations (NEXT_STEP autoreset).

    Every frame has random pixels, and its first two pixels carry a unique episode number.
    Yields the arguments of one ``FrameReplayBuffer.add`` call per vector step.
    """
    rng = np.random.default_rng(seed)
    episode = 0

    def frame(ep):
        f = rng.integers(0, 256, frame_shape, dtype=np.uint8)
        f.flat[0], f.flat[1] = ep % 256, ep // 256
        return f

    def new_stack():
        nonlocal episode
        episode += 1
        first = frame(episode)
        return np.stack([first] * stack, axis=-1), episode  # FrameStackObservation's "reset" padding

    states = [new_stack() for _ in range(num_envs)]
    obs = np.stack([s[0] for s in states])
    ep_of = [s[1] for s in states]
    lengths = rng.integers(1, max_len, num_envs)
    t = np.zeros(num_envs, int)
    prev_done = np.zeros(num_envs, bool)
    for _ in range(steps):
        next_obs = obs.copy()
        terminated = np.zeros(num_envs, bool)
        truncated = np.zeros(num_envs, bool)
        for i in range(num_envs):
            if prev_done[i]:
                next_obs[i], ep_of[i] = new_stack()
                t[i], lengths[i] = 0, rng.integers(1, max_len)
            else:
                next_obs[i] = np.concatenate([obs[i, ..., 1:], frame(ep_of[i])[..., None]], axis=-1)
                t[i] += 1
                if t[i] >= lengths[i]:
                    terminated[i], truncated[i] = (True, False) if rng.random() < 0.5 else (False, True)
        valid = ~prev_done
        action = rng.integers(0, 6, num_envs)
        reward = rng.normal(size=num_envs).astype(np.float32)
        yield obs, action, reward, next_obs, terminated, truncated, valid
        prev_done = terminated | truncated
        obs = next_obs


def episode_ids(stacks):
    """``(B, C)`` episode numbers of each frame of ``(B, H, W, C)`` stacks."""
    flat = stacks.reshape(len(stacks), -1, stacks.shape[-1])
    return flat[:, 0].astype(int) + 256 * flat[:, 1].astype(int)


@pytest.mark.parametrize("frame_capacity", [None, 80])
def test_frame_replay_rebuilds_exactly_what_was_added_across_envs_and_wraparound(frame_capacity):
    capacity, stack = 40, 4
    buf = FrameReplayBuffer(
        capacity, frame_shape=(6, 5), stack=stack, seed=0, num_envs=2, frame_capacity=frame_capacity
    )
    added = []
    for obs, _, reward, next_obs, terminated, truncated, valid in stacked_vector_rollout(2, 150, stack=stack):
        for i in np.flatnonzero(valid):
            added.append((obs[i], reward[i], next_obs[i], terminated[i]))
        # The action carries the transition's number, to find it again after sampling.
        ids = np.full(2, -1)
        ids[valid] = np.arange(len(added) - valid.sum(), len(added))
        buf.add(obs, ids, reward, next_obs, terminated, truncated, valid=valid)
    assert len(added) > 3 * capacity and len(buf) == capacity
    batch = buf.sample(2000)
    assert batch["obs"].shape == (2000, 6, 5, stack) and batch["obs"].dtype == np.uint8
    assert batch["action"].dtype == np.int32 and batch["terminated"].dtype == np.float32
    sampled = set(batch["action"].tolist())
    # Only the last `capacity` transitions; with room for their frames, all of them. These episodes
    # are short (1-8 steps), so with one frame per transition the oldest have lost theirs.
    assert min(sampled) >= len(added) - capacity
    assert len(sampled) == capacity if frame_capacity else len(sampled) >= capacity * 0.6
    for k in range(2000):
        obs, reward, next_obs, terminated = added[batch["action"][k]]
        np.testing.assert_array_equal(batch["obs"][k], obs)
        np.testing.assert_array_equal(batch["next_obs"][k], next_obs)
        assert batch["reward"][k] == reward and batch["terminated"][k] == terminated
    # The same data sampled from the plain replay buffer gives the same dict of fields.
    plain = ReplayBuffer(4, {"obs": ((6, 5, 4), np.uint8), "action": ((), np.int32)})
    plain.add(obs=batch["obs"][:2], action=batch["action"][:2])
    assert set(plain.sample(1)) <= set(batch)


def test_frame_replay_nstep_rows_are_the_accumulators_transitions():
    """n-step frame replay against ``NStepAccumulator`` (tested on hand-computed returns) as the oracle.

    Two envs with episodes of 1-8 steps ending in terminations and truncations, each followed by an
    autoreset step that is no transition: every row the frame replay has completed is one the accumulator
    emitted, with the same frames, return, discount and termination, and the rest are its open windows.
    """
    n, gamma = 3, 0.9
    buf = FrameReplayBuffer(400, frame_shape=(6, 5), stack=4, seed=0, num_envs=2, n_step=n, gamma=gamma)
    acc = NStepAccumulator(n, gamma, num_envs=2)
    emitted, count = {}, 0
    for obs, _, reward, next_obs, terminated, truncated, valid in stacked_vector_rollout(2, 150, stack=4):
        ids = np.full(2, -1)  # the action carries the transition's number
        ids[valid] = np.arange(count, count + valid.sum())
        count += int(valid.sum())
        buf.add(obs, ids, reward, next_obs, terminated, truncated, valid=valid)
        out = acc.add(obs, ids, reward, next_obs, terminated, truncated, valid)
        for k in range(0 if out is None else len(out["action"])):
            emitted[int(out["action"][k])] = {key: value[k] for key, value in out.items()}
    assert count < buf.capacity  # nothing overwritten: every transition is in both
    ready = np.flatnonzero(buf.ready[: len(buf)])
    assert sorted(buf.action[ready].tolist()) == sorted(emitted)
    assert len(buf) - len(ready) == sum(len(window) for window in acc.windows) > 0
    cuts = [e for e in emitted.values() if e["terminated"]]
    bootstraps = [e for e in emitted.values() if not e["terminated"] and e["discount"] > gamma**n + 1e-6]
    assert cuts and bootstraps  # the rollout has both kinds of episode end
    batch = buf.sample(1000)
    assert batch["discount"].dtype == np.float32 and set(batch["action"].tolist()) <= set(emitted)
    for k in range(len(batch["action"])):
        e = emitted[int(batch["action"][k])]
        np.testing.assert_array_equal(batch["obs"][k], e["obs"])
        np.testing.assert_array_equal(batch["next_obs"][k], e["next_obs"])
        assert batch["reward"][k] == pytest.approx(e["reward"], rel=1e-5)
        assert batch["discount"][k] == pytest.approx(e["discount"]) and batch["terminated"][k] == e["terminated"]


def test_frame_replay_nstep_bootstraps_an_episode_broken_off():
    # obs that does not continue an env's episode (a new vector env, or a second fit) ends its open
    # windows as a truncation would: they bootstrap from their last next_obs.
    buf = FrameReplayBuffer(64, frame_shape=(2, 2), stack=2, n_step=3, gamma=0.5)
    obs = np.zeros((1, 2, 2, 2), np.uint8)
    for t in range(2):
        next_obs = np.concatenate([obs[..., 1:], np.full((1, 2, 2, 1), t + 1, np.uint8)], axis=-1)
        buf.add(obs, np.array([t]), np.array([1.0]), next_obs, np.array([False]))
        obs = next_obs
    assert not buf.ready[:2].any()
    buf.add(np.full((1, 2, 2, 2), 9, np.uint8), np.array([2]), np.array([1.0]), obs, np.array([False]))
    assert buf.ready[:2].all() and not buf.ready[2]
    np.testing.assert_allclose(buf.nstep_reward[:2], [1.5, 1.0])
    np.testing.assert_allclose(buf.discount[:2], [0.25, 0.5])
    np.testing.assert_array_equal(buf.nstep_next_slots[0], buf.next_slots[1])


def test_frame_replay_nstep_needs_room_for_its_windows():
    with pytest.raises(ValueError, match="too small for n_step=3"):
        FrameReplayBuffer(8, frame_shape=(2, 2), stack=2, n_step=3).add(
            np.zeros((2, 2, 2, 2), np.uint8), [0, 0], [0.0, 0.0], np.zeros((2, 2, 2, 2), np.uint8), [False, False]
        )


def test_frame_replay_never_mixes_episodes_in_a_stack():
    buf = FrameReplayBuffer(64, frame_shape=(6, 5), stack=4, seed=1, num_envs=3)
    for args in stacked_vector_rollout(3, 200, stack=4, seed=1, max_len=4):
        buf.add(*args[:6], valid=args[6])
    batch = buf.sample(1000)
    obs_ids, next_ids = episode_ids(batch["obs"]), episode_ids(batch["next_obs"])
    assert (obs_ids == obs_ids[:, :1]).all() and (next_ids == obs_ids[:, :1]).all()


def test_frame_replay_stores_one_frame_per_transition():
    capacity = 10_000
    buf = FrameReplayBuffer(capacity, frame_shape=(84, 84), stack=4)
    per_transition = buf.nbytes / capacity
    assert 84 * 84 <= per_transition < 84 * 84 * 1.01  # vs 56,448 bytes for obs and next_obs stored whole
    # Within an episode each add writes exactly one new frame.
    frames = np.random.default_rng(0).integers(0, 256, (20, 84, 84), dtype=np.uint8)
    for t in range(4, 20):
        obs = frames[t - 4 : t].transpose(1, 2, 0)[None]
        next_obs = frames[t - 3 : t + 1].transpose(1, 2, 0)[None]
        buf.add(obs, np.array([0]), np.array([0.0]), next_obs, np.array([False]))
    assert buf.frames_written == 4 + 16
    # A first stack of a repeated reset frame (FrameStackObservation's padding) costs one frame.
    first = np.stack([frames[0]] * 4, axis=-1)[None]
    second = np.concatenate([first[..., 1:], frames[1][None, ..., None]], axis=-1)
    buf.add(first, np.array([0]), np.array([0.0]), second, np.array([True]))
    assert buf.frames_written == 20 + 1 + 1


def test_frame_replay_unshifted_observations_and_bad_shapes():
    # Observations that are not a shifted stack are stored whole, still exact.
    buf = FrameReplayBuffer(8, frame_shape=(2, 2), stack=2, seed=0)
    rng = np.random.default_rng(0)
    obs, next_obs = rng.integers(0, 256, (2, 1, 2, 2, 2), dtype=np.uint8)
    buf.add(obs, np.array([1]), np.array([0.5]), next_obs, np.array([True]))
    batch = buf.sample(3)
    np.testing.assert_array_equal(batch["obs"], np.repeat(obs, 3, 0))
    np.testing.assert_array_equal(batch["next_obs"], np.repeat(next_obs, 3, 0))
    with pytest.raises(ValueError, match="stacked frames"):
        buf.add(np.zeros((1, 2, 2, 3), np.uint8), [0], [0.0], np.zeros((1, 2, 2, 3), np.uint8), [False])
    with pytest.raises(ValueError, match="empty"):
        FrameReplayBuffer(8, frame_shape=(2, 2), stack=2).sample(1)


def test_dqn_replay_auto_picks_frame_replay_for_stacked_uint8_frames():
    from keras_rl_gym import DQNAgent

    # A conv agent costs ~20 s of JAX initializer compiles on a busy 2-core machine; the replay
    # choice and storage are host-side, so a small dense agent is given an image space instead.
    cartpole = gym.make("CartPole-v1")
    agent = DQNAgent(cartpole.observation_space, cartpole.action_space, hidden_sizes=(8,), batch_size=4, seed=0)
    assert agent.get_config()["replay"] == "auto"
    agent.total_steps = 100  # fit sets the horizon before _on_fit_begin
    agent._on_fit_begin(1, 100)
    assert isinstance(agent.buffer, ReplayBuffer)
    agent.buffer = None
    agent.observation_space = ImageEnv().observation_space  # (84, 84, 4) uint8
    agent._on_fit_begin(2, 100)
    assert isinstance(agent.buffer, FrameReplayBuffer) and agent.buffer.frame_shape == (84, 84)
    # What fit hands _observe each vector step: every env's row, and the mask of real transitions.
    n_valid = 0
    for obs, action, reward, next_obs, terminated, truncated, valid in stacked_vector_rollout(2, 30, (84, 84)):
        agent._observe(obs, action, reward, next_obs, terminated, truncated, valid)
        n_valid += valid.sum()
    batch = agent.buffer.sample(agent.batch_size)
    assert len(agent.buffer) == n_valid and batch["obs"].shape == (4, 84, 84, 4)
    obs_ids = episode_ids(batch["obs"])
    assert (obs_ids == obs_ids[:, :1]).all() and (episode_ids(batch["next_obs"]) == obs_ids[:, :1]).all()

    for space, replay, frames in [
        (spaces.Box(0, 255, (84, 84, 4), np.uint8), "uniform", False),
        (spaces.Box(0, 255, (84, 84, 1), np.uint8), "auto", False),  # one frame: nothing to share
        (spaces.Box(0.0, 1.0, (84, 84, 4), np.float32), "auto", False),  # scaled frames are not stacked bytes
        (spaces.Box(0.0, 1.0, (84, 84, 4), np.float32), "frames", True),
    ]:
        assert DQNAgent._use_frame_replay(SimpleNamespace(observation_space=space, replay=replay)) is frames
    with pytest.raises(
        ValueError, match=r"DQNAgent: replay must be one of \('auto', 'uniform', 'frames'\), got 'prior"
    ):
        DQNAgent(*env_spaces(ImageEnv()), network="conv", replay="prioritized")
    with pytest.raises(ValueError, match="replay='frames' needs HxWxC"):
        DQNAgent(cartpole.observation_space, cartpole.action_space, replay="frames")


# -- configs --------------------------------------------------------------------------


def test_pong_config_is_valid():
    config = validate_config(json.loads((ROOT / "configs" / "dqn-conv-pong.json").read_text()))
    assert config["env_factory"] == "atari"


# -- Atari ----------------------------------------------------------------------------


@pytest.mark.atari
@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "ALE/Breakout-v5", "ALE/MsPacman-v5", "PongNoFrameskip-v4"])
def test_atari_env_builds_resets_and_steps(env_id):
    from keras_rl_gym.wrappers.atari import make_atari_env

    env = make_atari_env(env_id)
    assert env.observation_space == spaces.Box(0, 255, (84, 84, 4), np.uint8)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    for _ in range(3):
        obs, reward, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and reward in (-1.0, 0.0, 1.0)
    # The stack shifts by one frame per step, which is what FrameReplayBuffer relies on.
    prev = obs
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs[..., :-1], prev[..., 1:])
    env.close()


@pytest.mark.atari
def test_atari_life_loss_terminal_keeps_whole_game_statistics():
    from keras_rl_gym.wrappers.atari import make_atari_env

    env = make_atari_env("ALE/Breakout-v5", repeat_action_probability=0.0)
    ale = env.unwrapped.ale
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    life_terminals = 0
    for _ in range(2000):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
        if terminated or truncated:
            if "episode" in info:  # only the real game over reports statistics
                assert ale.lives() == 0 and ale.game_over()
                break
            life_terminals += 1
            assert info["life_loss"]  # fit logs no episode for it
            lives = ale.lives()
            obs, _ = env.reset()
            assert ale.lives() == lives and not ale.game_over()  # the game went on
            np.testing.assert_array_equal(obs[..., 0], obs[..., -1])  # a fresh stack
    else:
        pytest.fail("The game never ended.")
    assert life_terminals == 4  # Breakout's five lives
    assert info["episode"]["l"] > 100  # the whole game, not one life


@pytest.mark.atari
def test_atari_eval_env_and_errors():
    from keras_rl_gym.wrappers.atari import EpisodicLifeEnv, FireResetEnv, make_atari_env

    env = make_atari_env("ALE/Breakout-v5", training=False, frame_stack=2, scale=True)
    assert env.observation_space == spaces.Box(0.0, 1.0, (84, 84, 2), np.float32)
    chain = []
    inner = env
    while isinstance(inner, gym.Wrapper):
        chain.append(type(inner))
        inner = inner.env
    assert EpisodicLifeEnv not in chain and FireResetEnv in chain
    assert gym.wrappers.TransformReward not in chain
    with pytest.raises(ValueError, match="not an Atari env"):
        make_atari_env("CartPole-v1")


@pytest.mark.atari
def test_atari_vector_env_and_factory_fill_frame_replay():
    from keras_rl_gym.wrappers.atari import make_atari_vec_env

    venv = make_atari_vec_env("ALE/Breakout-v5", 2, repeat_action_probability=0.0)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (2, 84, 84, 4) and obs.dtype == np.uint8
    buf = FrameReplayBuffer(1000, stack=4, seed=0, num_envs=2)
    added, prev_done = [], np.zeros(2, bool)
    for _ in range(60):
        action = venv.action_space.sample()
        next_obs, reward, terminated, truncated, _ = venv.step(action)
        valid = ~prev_done
        added += [(obs[i], next_obs[i]) for i in np.flatnonzero(valid)]
        buf.add(obs, action, reward, next_obs, terminated, truncated, valid=valid)
        prev_done, obs = terminated | truncated, next_obs
    venv.close()
    assert buf.frames_written < 2 * 4 + len(added) + 4 * 10  # about one frame per transition
    for k in range(len(added)):
        np.testing.assert_array_equal(buf._stacks(buf.obs_slots[[k]])[0], added[k][0])
        np.testing.assert_array_equal(buf._stacks(buf.next_slots[[k]])[0], added[k][1])
    config = validate_config({"algo": "dqn", "env": "ALE/Pong-v5", "env_factory": "atari"})
    env = make_env(config, training=False)
    assert env.reset(seed=0)[0].shape == (84, 84, 4)


class _LivesEnv(gym.Env):
    """A "game" of 3 lives of 2 steps each, reward 1 a step, reporting statistics only at game over."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if getattr(self, "t", 6) >= 6:
            self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t == 6:
            return np.zeros(2, np.float32), 1.0, True, False, {"episode": {"r": 6.0, "l": 6, "t": 0.0}}
        return np.zeros(2, np.float32), 1.0, self.t % 2 == 0, False, {"life_loss": True} if self.t % 2 == 0 else {}


def test_fit_logs_whole_games_not_lives():
    import keras

    from keras_rl_gym import DQNAgent

    episodes = []

    class Record(keras.callbacks.Callback):
        def on_episode_end(self, episode, logs):
            episodes.append((logs["episode_return"], logs["episode_length"]))

    env = _LivesEnv()
    agent = DQNAgent(env.observation_space, env.action_space, hidden_sizes=(4,), learning_starts=10_000, seed=0)
    agent.fit(env, steps=12, verbose=0, callbacks=[Record()])
    assert episodes == [(6.0, 6), (6.0, 6)]
    assert len(agent.buffer) == 12 and agent.buffer.data["terminated"][:12].sum() == 6  # every life ends in a terminal
