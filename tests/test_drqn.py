"""DRQN (DQNAgent(network="lstm")): sequence replay, recurrent state while acting, and memory on a POMDP."""

import gymnasium as gym
import keras
import numpy as np
import pytest
from probe_envs import CounterEnv

from keras_rl_gym import DQNAgent
from keras_rl_gym.buffers import SequenceReplayBuffer
from keras_rl_gym.wrappers.partial import RemoveVelocity


def test_sequence_replay_keeps_each_env_in_order_and_masks_after_episode_ends():
    fields = {"obs": ((2,), np.float32), "next_obs": ((2,), np.float32), "done": ((), bool)}
    buf = SequenceReplayBuffer(40, num_envs=2, length=4, fields=fields, seed=0)
    # Env e plays episodes of length 3 (env 0) and 5 (env 1): obs = [episode, t] offset by 100 * e.
    t = np.zeros(2, int)
    episode = np.zeros(2, int)
    lengths = np.array([3, 5])
    for step in range(30):
        obs = np.stack([episode + 100 * np.arange(2), t], axis=1).astype(np.float32)
        done = t + 1 == lengths
        next_obs = obs + [0, 1]
        valid = np.array([True, step % 7 != 3])  # env 1 skips a few steps (autoreset steps)
        buf.add(valid, obs=obs, next_obs=next_obs, done=done)
        t = np.where(valid, np.where(done, 0, t + 1), t)
        episode = np.where(valid & done, episode + 1, episode)
    batch = buf.sample(256)
    assert batch["obs"].shape == (256, 2) and batch["next_obs"].shape == (256, 4, 2)
    x = np.concatenate([batch["obs"][:, None], batch["next_obs"]], axis=1)
    for seq, mask in zip(x, batch["mask"]):
        env = int(seq[0, 0] // 100)
        assert np.all(seq[:, 0] // 100 == env)  # one env's ring
        live = mask.astype(bool)
        # While the mask is 1, the sequence stays in one episode and t advances by one.
        k = int(live.sum())
        assert live[:k].all() and not live[k:].any()
        assert np.all(seq[: k + 1, 0] == seq[0, 0]) and np.all(np.diff(seq[: k + 1, 1]) == 1)
        if k < 4:
            assert seq[k, 1] == lengths[env]  # masked from the step after an episode's end


def test_recurrent_state_is_carried_and_reset_at_episode_starts():
    env = CounterEnv(length=3)
    agent = DQNAgent(env.observation_space, env.action_space, network="lstm", lstm_size=8, hidden_sizes=(8,), seed=0)
    agent._reset_policy_state(1)
    agent.act(np.array([1.0, 2.0], np.float32))
    h, c = agent._state
    assert np.abs(h).sum() > 0  # the state moved
    # The same observation from a fresh state gives the same state: acting is deterministic.
    agent._reset_policy_state(1)
    agent.act(np.array([1.0, 2.0], np.float32))
    np.testing.assert_allclose(agent._state[0], h, rtol=1e-6)
    agent._episode_ended(np.array([True]))
    assert not agent._state[0].any() and not agent._state[1].any()


def test_lstm_q_values_depend_on_history_and_loss_trains():
    env = CounterEnv(length=5)
    agent = DQNAgent(
        env.observation_space,
        env.action_space,
        network="lstm",
        lstm_size=8,
        hidden_sizes=(8,),
        sequence_length=4,
        batch_size=8,
        learning_starts=20,
        seed=0,
    )
    history = agent.fit(env, steps=60, verbose=0, log_every=30)
    assert np.isfinite(history.history["loss"][-1]) and agent.updates > 0
    x = np.zeros((1, 3, 2), np.float32)
    x[0, :, 1] = [0, 1, 2]
    zeros = np.zeros((1, 8), np.float32)
    q_seq = keras.ops.convert_to_numpy(agent.q_network([x, zeros, zeros])[0])
    q_last_alone = keras.ops.convert_to_numpy(agent.q_network([x[:, -1:], zeros, zeros])[0])
    assert not np.allclose(q_seq[0, -1], q_last_alone[0, 0])  # memory: history changes Q
    with pytest.raises(ValueError, match="network='lstm' needs vector observations"):
        DQNAgent(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), env.action_space, network="lstm")


def test_remove_velocity():
    env = RemoveVelocity(gym.make("CartPole-v1"))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (2,) and obs.shape == (2,)
    full = gym.make("CartPole-v1")
    np.testing.assert_array_equal(obs, full.reset(seed=0)[0][[0, 2]])
    with pytest.raises(ValueError, match="keep"):
        RemoveVelocity(gym.make("LunarLander-v3"))


@pytest.mark.learning
def test_lstm_beats_dense_on_cartpole_without_velocities():
    """Masked CartPole-v1 (positions only): memory is needed to tell which way the pole falls."""
    make = lambda: RemoveVelocity(gym.make("CartPole-v1"))  # noqa: E731
    common = dict(
        double=True,
        learning_rate=5e-4,
        batch_size=32,
        buffer_size=50_000,
        learning_starts=1_000,
        train_freq=4,
        target_update_every=1_000,
        exploration_fraction=0.3,
        seed=0,
    )
    results = {}
    for network, extra in (("lstm", dict(hidden_sizes=(64,), lstm_size=64, sequence_length=8)), ("dense", {})):
        env = make()
        agent = DQNAgent(env.observation_space, env.action_space, network=network, **extra, **common)
        agent.fit(env, steps=25_000, verbose=0)
        results[network] = agent.evaluate(make(), episodes=20, seed=1_000)["mean_return"]
    print(f"CartPole-v1 without velocities, 25k steps: LSTM {results['lstm']:.1f}, dense {results['dense']:.1f}")
    # A memoryless policy on positions alone balances ~40 steps; the LSTM must clearly do better.
    assert results["lstm"] > results["dense"] + 15, results
