"""DQN learns CartPole-v1 for real: a mean greedy return of at least 150 over 10 episodes (random: about 22).

Plain Double DQN, and the same with prioritized replay and 3-step returns, on one setup and budget
(15k env steps, an update every 2)."""

import gymnasium as gym
import numpy as np
import pytest

from keras_rl_gym import DQNAgent

SETTINGS = dict(
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


@pytest.mark.learning
@pytest.mark.parametrize("extensions", [{}, {"prioritized": True, "n_step": 3}], ids=["plain", "prioritized-3-step"])
def test_dqn_learns_cartpole(extensions):
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, **SETTINGS, **extensions)
    agent.fit(env, steps=15_000, verbose=0)
    result = agent.evaluate(gym.make("CartPole-v1"), episodes=10, seed=1_000)
    print(f"DQN {extensions or 'plain'} on CartPole-v1 after 15k steps: mean return {result['mean_return']:.1f}")
    assert result["mean_return"] >= 150, result
    if extensions:
        # TD errors came back: the priorities spread out from the one every new row starts with.
        priorities = agent.buffer.sampler.tree.leaves(np.arange(len(agent.buffer)))
        assert len(np.unique(priorities)) > 100
