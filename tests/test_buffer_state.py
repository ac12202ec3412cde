"""save_buffer / load_buffer: a reloaded replay buffer equals the saved one and samples exactly as it would have."""

import json

import numpy as np
import pytest

from keras_rl_gym.buffers import FrameReplayBuffer, ReplayBuffer, SequenceReplayBuffer, load_buffer, save_buffer

# Gymnasium, NumPy and host code only: nothing here depends on KERAS_BACKEND, so `make test` runs it once.
pytestmark = pytest.mark.backend_independent


def assert_same_buffer(a, b):
    """Every attribute of ``a`` and ``b`` is equal: arrays (also inside dicts), counters and generator state.

    It walks ``vars()``, not the saved keys, so an attribute that saving forgets fails here.
    """
    assert type(a) is type(b) and vars(a).keys() == vars(b).keys()
    for name, value in vars(a).items():
        other = getattr(b, name)
        if name == "rng":
            assert value.bit_generator.state == other.bit_generator.state
        elif isinstance(value, dict):
            assert value.keys() == other.keys(), name
            for field in value:
                assert value[field].dtype == other[field].dtype, (name, field)
                np.testing.assert_array_equal(value[field], other[field], err_msg=f"{name}/{field}")
        elif isinstance(value, np.ndarray):
            assert value.dtype == other.dtype, name
            np.testing.assert_array_equal(value, other, err_msg=name)
        else:
            assert value == other and type(value) is type(other), name


def assert_same_samples(a, b, batch_size, batches=5):
    for _ in range(batches):
        x, y = a.sample(batch_size), b.sample(batch_size)
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def roundtrip(buf, tmp_path):
    path = tmp_path / "replay.npz"
    save_buffer(buf, path)
    np.load(path, allow_pickle=False).close()  # plain arrays and strings only
    return load_buffer(path)


def uniform_steps(rng, num_envs=3):
    """CartPole-shaped vector steps for ``ReplayBuffer.add``."""
    while True:
        obs = rng.normal(size=(num_envs, 4)).astype(np.float32)
        yield {
            "obs": obs,
            "action": rng.integers(0, 2, num_envs).astype(np.int32),
            "reward": np.ones(num_envs, np.float32),
            "next_obs": obs + 0.1,
            "terminated": (rng.random(num_envs) < 0.1).astype(np.float32),
        }


def uniform_buffer(seed=0):
    fields = {
        "obs": ((4,), np.float32),
        "action": ((), np.int32),
        "reward": ((), np.float32),
        "next_obs": ((4,), np.float32),
        "terminated": ((), np.float32),
    }
    return ReplayBuffer(50, fields, seed=seed)


@pytest.mark.parametrize("samples_before", [0, 3])
def test_replay_buffer_roundtrip(tmp_path, samples_before):
    buf, steps = uniform_buffer(), uniform_steps(np.random.default_rng(1))
    for _ in range(40):  # 120 transitions into 50 slots: wrapped, position mid-ring
        buf.add(**next(steps))
    for _ in range(samples_before):  # 0: the random block not drawn yet (None); 3: part-used
        buf.sample(32)
    assert buf.size == buf.capacity and buf.position != 0
    loaded = roundtrip(buf, tmp_path)
    assert_same_buffer(buf, loaded)
    assert_same_samples(buf, loaded, 32)
    # Past the end of the cached block (8192 integers) and onto a fresh draw from the restored generator.
    assert_same_samples(buf, loaded, 4000, batches=3)
    step = next(steps)
    buf.add(**step)
    loaded.add(**step)
    assert_same_buffer(buf, loaded)
    assert_same_samples(buf, loaded, 32)


def test_replay_buffer_file_size_is_its_arrays(tmp_path):
    buf, steps = uniform_buffer(), uniform_steps(np.random.default_rng(0))
    buf = ReplayBuffer(10_000, {name: (array.shape[1:], array.dtype) for name, array in buf.data.items()}, seed=0)
    for _ in range(4000):
        buf.add(**next(steps))
    buf.sample(32)
    save_buffer(buf, tmp_path / "replay.npz")
    arrays = sum(array.nbytes for array in buf.data.values()) + buf._random.nbytes
    assert arrays <= (tmp_path / "replay.npz").stat().st_size < arrays + 16_384


def shifted_stack_steps(rng, num_envs=2, frame_shape=(6, 6), stack=4, max_len=6):
    """Vector steps for ``FrameReplayBuffer.add``: stacks that shift by one frame, episodes of 1-5 steps.

    As with Gymnasium's NEXT_STEP autoreset, the step after an episode's end only resets that env
    (``valid`` is False there) and its next ``obs`` is a new episode's first stack.
    """

    def first_stack():
        return np.repeat(rng.integers(0, 256, (*frame_shape, 1), dtype=np.uint8), stack, axis=-1)

    obs = np.stack([first_stack() for _ in range(num_envs)])
    t = np.zeros(num_envs, int)
    lengths = rng.integers(1, max_len, num_envs)
    prev_done = np.zeros(num_envs, bool)
    while True:
        next_obs = np.empty_like(obs)
        terminated = np.zeros(num_envs, bool)
        truncated = np.zeros(num_envs, bool)
        for i in range(num_envs):
            if prev_done[i]:
                next_obs[i], t[i], lengths[i] = first_stack(), 0, rng.integers(1, max_len)
            else:
                frame = rng.integers(0, 256, (*frame_shape, 1), dtype=np.uint8)
                next_obs[i] = np.concatenate([obs[i, ..., 1:], frame], axis=-1)
                t[i] += 1
                terminated[i] = t[i] >= lengths[i] and rng.random() < 0.5
                truncated[i] = t[i] >= lengths[i] and not terminated[i]
        action = rng.integers(0, 6, num_envs)
        reward = rng.normal(size=num_envs).astype(np.float32)
        yield obs, action, reward, next_obs, terminated, truncated, ~prev_done
        prev_done = terminated | truncated
        obs = next_obs


@pytest.mark.parametrize("n_step", [1, 3])
def test_frame_replay_buffer_roundtrip(tmp_path, n_step):
    # frame_capacity < what short episodes need: some transitions have lost frames, so sampling rejects.
    buf = FrameReplayBuffer(40, frame_shape=(6, 6), stack=4, seed=0, num_envs=2, frame_capacity=44, n_step=n_step)
    steps = shifted_stack_steps(np.random.default_rng(2))
    for _ in range(100):
        *args, valid = next(steps)
        buf.add(*args, valid=valid)
    for _ in range(3):
        buf.sample(16)
    assert buf.size == buf.capacity and buf.frames_written > buf.frame_capacity and buf._open.any()
    if n_step > 1:  # saved with rows still waiting for their n-step return
        assert buf._window_len.any() and not buf.ready.all()
    loaded = roundtrip(buf, tmp_path)
    assert_same_buffer(buf, loaded)
    assert_same_samples(buf, loaded, 16)
    # One more step: an env whose episode goes on continues it (one new frame) only if its tracking was restored.
    *args, valid = next(steps)
    buf.add(*args, valid=valid)
    loaded.add(*args, valid=valid)
    assert_same_buffer(buf, loaded)
    assert_same_samples(buf, loaded, 16)


def test_frame_replay_buffer_roundtrip_keeps_a_changed_num_envs(tmp_path):
    buf = FrameReplayBuffer(40, frame_shape=(6, 6), stack=4, seed=0, num_envs=1)
    steps = shifted_stack_steps(np.random.default_rng(3), num_envs=3)
    for _ in range(20):
        *args, valid = next(steps)
        buf.add(*args, valid=valid)
    assert buf.num_envs == 3
    loaded = roundtrip(buf, tmp_path)
    assert_same_buffer(buf, loaded)
    assert_same_samples(buf, loaded, 16)


def test_sequence_replay_buffer_roundtrip(tmp_path):
    fields = {"obs": ((2,), np.float32), "next_obs": ((2,), np.float32), "done": ((), bool)}
    buf = SequenceReplayBuffer(41, num_envs=2, length=4, fields=fields, seed=0)  # 20 per env
    rng = np.random.default_rng(4)

    def step():
        obs = rng.normal(size=(2, 2)).astype(np.float32)
        return {"valid": rng.random(2) < 0.8, "obs": obs, "next_obs": obs + 1, "done": rng.random(2) < 0.2}

    for _ in range(60):
        buf.add(**step())
    for _ in range(3):
        buf.sample(8)
    assert (buf.sizes == buf.per_env).all() and (buf.position != 0).any()
    loaded = roundtrip(buf, tmp_path)
    assert loaded.per_env == 20
    assert_same_buffer(buf, loaded)
    assert_same_samples(buf, loaded, 8)
    s = step()
    buf.add(**s)
    loaded.add(**s)
    assert_same_buffer(buf, loaded)
    assert_same_samples(buf, loaded, 8)


def test_load_buffer_rejects_an_unknown_kind(tmp_path):
    buf = uniform_buffer()
    buf.add(**next(uniform_steps(np.random.default_rng(0))))
    save_buffer(buf, tmp_path / "replay.npz")
    with np.load(tmp_path / "replay.npz", allow_pickle=False) as file:
        contents = dict(file)
    assert contents["kind"].item() == "uniform" and json.loads(contents["args"].item())["capacity"] == 50
    contents["kind"] = np.array("prioritized")
    np.savez(tmp_path / "other.npz", **contents)
    with pytest.raises(ValueError, match="Unknown replay buffer kind 'prioritized'"):
        load_buffer(tmp_path / "other.npz")
