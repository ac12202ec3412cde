"""Observation and reward normalization (SB3's VecNormalize), saved with the agent."""

import gymnasium as gym
import keras
import numpy as np
import pytest
from keras import ops

from keras_rl_gym import DQNAgent, PPOAgent, QLearningAgent, SACAgent
from keras_rl_gym.normalization import RewardScaler, RunningStats


def test_running_stats_combine_batches_exactly():
    rng = np.random.default_rng(0)
    rows = rng.normal(3.0, 2.0, size=(1000, 4))
    stats = RunningStats((4,))
    for chunk in np.array_split(rows, [1, 7, 300, 301, 999]):
        stats.update(chunk)
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mean, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.var, rows.var(axis=0), rtol=1e-10)


def _variance_with_prior(returns, prior=1e-4):
    """The variance of ``returns`` pooled with SB3's prior: variance 1 with the weight of 1e-4 samples."""
    returns = np.asarray(returns, np.float64)
    n = len(returns) + prior
    mean = returns.sum() / n
    return (prior * (1.0 + mean**2) + ((returns - mean) ** 2).sum()) / n


def test_reward_scaler_divides_by_the_spread_of_the_discounted_return():
    scaler = RewardScaler(gamma=0.5, clip=100.0)
    valid = np.array([True, True])
    # Env 0: rewards 1, 2 then an episode end; env 1: 4, 4.
    first = scaler(np.array([1.0, 4.0]), np.array([False, False]), valid)
    returns = [1.0, 4.0]
    np.testing.assert_allclose(first, np.array([1.0, 4.0]) / np.sqrt(_variance_with_prior(returns)), rtol=1e-6)
    second = scaler(np.array([2.0, 4.0]), np.array([True, False]), valid)
    returns += [0.5 * 1 + 2, 0.5 * 4 + 4]
    np.testing.assert_allclose(second, np.array([2.0, 4.0]) / np.sqrt(_variance_with_prior(returns)), rtol=1e-6)
    assert scaler.returns[0] == 0.0 and scaler.returns[1] == 6.0  # env 0's return restarts after its end


def test_dqn_statistics_are_those_of_every_stored_observation_and_load_with_the_agent(tmp_path):
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, normalize_observations=True, learning_starts=100, seed=0)
    agent.fit(env, steps=400, verbose=0)
    stored = agent.buffer.data["obs"][: len(agent.buffer)].astype(np.float64)
    normalizer = agent.obs_normalizer
    assert float(ops.convert_to_numpy(normalizer.count)) == len(stored) == agent.env_steps
    np.testing.assert_allclose(ops.convert_to_numpy(normalizer.mean), stored.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(normalizer.var), stored.var(axis=0), rtol=1e-5, atol=1e-6)

    obs = np.random.default_rng(1).normal(0, 1, size=(64, 4)).astype(np.float32)
    # The networks see normalized observations: Keras's predict is the Q-network on them.
    mean, var = stored.mean(axis=0), stored.var(axis=0)
    normalized = np.clip((obs - mean) / np.sqrt(var + 1e-8), -10, 10).astype(np.float32)
    q = ops.convert_to_numpy(agent.q_network(normalized))
    np.testing.assert_allclose(agent.predict(obs, verbose=0), q, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(agent.act(obs), q.argmax(axis=1))
    np.testing.assert_array_equal(ops.convert_to_numpy(agent.greedy_graph(obs)), agent.act(obs))

    agent.save(tmp_path / "dqn.keras")
    loaded = keras.saving.load_model(tmp_path / "dqn.keras")
    np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))
    np.testing.assert_allclose(ops.convert_to_numpy(loaded.obs_normalizer.var), var, rtol=1e-5)
    # A second fit goes on from the saved statistics.
    loaded.fit(env, steps=100, verbose=0)
    assert float(ops.convert_to_numpy(loaded.obs_normalizer.count)) == loaded.env_steps == 500


def test_evaluate_and_act_never_move_the_statistics():
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, normalize_observations=True, learning_starts=50, seed=0)
    agent.fit(env, steps=100, verbose=0)
    before = [ops.convert_to_numpy(v).copy() for v in agent.obs_normalizer.weights]
    agent.evaluate(env, episodes=2)
    agent.act(np.zeros((3, 4), np.float32))
    for a, b in zip(before, agent.obs_normalizer.weights):
        np.testing.assert_array_equal(a, ops.convert_to_numpy(b))


def test_sac_with_both_normalizations_saves_and_resumes_them(tmp_path):
    env = gym.make("Pendulum-v1")
    agent = SACAgent(
        env.observation_space,
        env.action_space,
        normalize_observations=True,
        normalize_rewards=True,
        learning_starts=100,
        actor_hidden_sizes=(32,),
        critic_hidden_sizes=(32,),
        seed=0,
    )
    agent.fit(env, steps=300, verbose=0)
    stored = agent.buffer.data["obs"][: len(agent.buffer)].astype(np.float64)
    np.testing.assert_allclose(ops.convert_to_numpy(agent.obs_normalizer.mean), stored.mean(axis=0), atol=1e-5)
    # Pendulum's rewards are -16..0: the stored ones are scaled by the discounted return's spread
    # (the first few, before the returns spread out, at the clip of 10, as in SB3).
    rewards = agent.buffer.data["reward"][: len(agent.buffer)]
    assert np.abs(rewards).max() <= 10.0 and np.abs(rewards[10:]).max() < 5.0 and rewards.std() > 0
    agent.save(tmp_path / "sac.keras")
    loaded = keras.saving.load_model(tmp_path / "sac.keras")
    assert loaded.reward_stats["count"] == pytest.approx(300.0) and loaded.reward_stats == agent.reward_stats
    obs = np.random.default_rng(0).normal(0, 1, size=(16, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.act(obs), agent.act(obs), atol=1e-6)


def test_ppo_normalizes_inside_the_compiled_act_and_loss():
    env = gym.make("CartPole-v1")
    agent = PPOAgent(env.observation_space, env.action_space, normalize_observations=True, n_steps=64, seed=0)
    agent.fit(env, steps=256, verbose=0)
    assert float(ops.convert_to_numpy(agent.obs_normalizer.count)) == 256.0 and agent.updates > 0
    # Far above every mean seen (CartPole's spreads are under 2): clipped to +10 standard deviations.
    obs = np.full((2, 4), 100.0, np.float32)
    logits = ops.convert_to_numpy(agent.policy_network(np.full((2, 4), 10.0, np.float32)))
    np.testing.assert_allclose(agent.predict(obs, verbose=0), logits, rtol=1e-4, atol=1e-5)


def test_normalization_is_refused_where_observations_are_not_box():
    with pytest.raises(ValueError, match="normalize_observations needs Box observations"):
        QLearningAgent(gym.spaces.Discrete(4), gym.spaces.Discrete(2), normalize_observations=True)
    with pytest.raises(ValueError, match="normalization_clip must be > 0"):
        DQNAgent(gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2), normalize_observations=True, normalization_clip=0)
