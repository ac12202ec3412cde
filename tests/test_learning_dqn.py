"""DQN learns CartPole-v1 for real: a mean greedy return of at least 150 over 10 episodes."""

import gymnasium as gym
import pytest

from keras_rl_gym import DQNAgent


@pytest.mark.learning
def test_dqn_learns_cartpole():
    env = gym.make("CartPole-v1")
    agent = DQNAgent(
        env.observation_space,
        env.action_space,
        hidden_sizes=(64, 64),
        double=True,
        learning_rate=1e-3,
        batch_size=64,
        buffer_size=20_000,
        learning_starts=1_000,
        train_freq=2,
        target_update_every=250,
        exploration_fraction=0.3,
        seed=0,
    )
    agent.fit(env, steps=15_000, verbose=0)
    result = agent.evaluate(gym.make("CartPole-v1"), episodes=10, seed=1_000)
    print(f"DQN CartPole-v1 after 15k steps: mean return {result['mean_return']:.1f}")
    assert result["mean_return"] >= 150, result
