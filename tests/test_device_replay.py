"""DQN's device copy of the replay ring (JAX, TensorFlow) trains exactly as batches sampled on the host."""

import gymnasium as gym
import keras
import numpy as np
import pytest

from keras_rl_gym import DQNAgent
from keras_rl_gym.backend import ReplayMirror
from keras_rl_gym.buffers import ReplayBuffer

ON_DEVICE = keras.backend.backend() in ("jax", "tensorflow")


def _trained(monkeypatch, device: bool, num_envs: int, **kwargs):
    monkeypatch.setenv("KERAS_RL_GYM_DEVICE_REPLAY", "1" if device else "0")
    env = gym.make_vec("CartPole-v1", num_envs=num_envs) if num_envs > 1 else gym.make("CartPole-v1")
    space = env.single_observation_space if num_envs > 1 else env.observation_space
    action_space = env.single_action_space if num_envs > 1 else env.action_space
    # A ring of 64 rows wraps many times; train_freq 3 sends 3 new rows per update (padded to 4).
    agent = DQNAgent(
        space,
        action_space,
        buffer_size=64,
        learning_starts=40,
        train_freq=3,
        gradient_steps=2,
        target_update_every=50,
        hidden_sizes=(16,),
        seed=0,
        **kwargs,
    )
    agent.fit(env, steps=600, verbose=0)
    return agent


@pytest.mark.parametrize("num_envs", [1, 3])
def test_device_ring_trains_as_host_sampling(monkeypatch, num_envs):
    host = _trained(monkeypatch, False, num_envs)
    device = _trained(monkeypatch, True, num_envs)
    assert not host._device_replay
    assert device._device_replay == ON_DEVICE
    assert host.updates == device.updates > 100
    for a, b in zip(host.get_weights(), device.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The device copy of the ring is the host ring, row for row.
    if keras.backend.backend() == "jax":
        for name, array in device.buffer.data.items():
            np.testing.assert_array_equal(np.asarray(device.runtime.ring[name]), array)


def test_mirror_sends_new_rows_padded_then_a_whole_copy_after_many():
    buffer = ReplayBuffer(10, {"x": ((), np.float32)})
    mirror, copies = ReplayMirror(buffer), []
    buffer.add(x=np.arange(3, dtype=np.float32))
    assert mirror.inserts(copies.append) == {} and len(copies) == 1  # the first sync copies everything
    buffer.add(x=np.array([7.0, 8.0, 9.0], np.float32))
    inserts = mirror.inserts(copies.append)
    assert inserts["insert.index"].tolist() == [3, 4, 5, 5]  # three rows, padded to four with the last one
    assert inserts["insert.x"].tolist() == [7.0, 8.0, 9.0, 9.0]
    buffer.add(x=np.arange(9, dtype=np.float32))  # wraps around the end of the ring
    assert mirror.inserts(copies.append)["insert.index"].tolist() == [6, 7, 8, 9, 0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4]
    assert mirror.inserts(copies.append) == {}


def test_auto_keeps_the_ring_on_the_host_on_cpu_only(monkeypatch):
    buffer = ReplayBuffer(10, {"x": ((), np.float32)})
    monkeypatch.setenv("KERAS_RL_GYM_DEVICE_REPLAY", "auto")
    assert not ReplayMirror.wanted(buffer, accelerator=False)
    assert ReplayMirror.wanted(buffer, accelerator=True)
    monkeypatch.setenv("KERAS_RL_GYM_DEVICE_REPLAY", "0")
    assert not ReplayMirror.wanted(buffer, accelerator=True)
