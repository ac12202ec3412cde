"""Tabular Q-learning: the table converges to the analytic Q* of a small MDP; the update by hand; bad input."""

from pathlib import Path

import gymnasium as gym
import keras
import numpy as np
import pytest
from probe_envs import TwoStateChain

from keras_rl_gym import QLearningAgent


def test_learns_the_optimal_q_of_a_two_state_chain():
    env = gym.wrappers.TimeLimit(TwoStateChain(), max_episode_steps=20)
    agent = QLearningAgent(
        env.observation_space,
        env.action_space,
        alpha=0.5,
        alpha_decay=0.999,
        alpha_min=0.05,
        epsilon_start=1.0,
        epsilon_final=1.0,  # Q-learning is off-policy: a uniform behaviour policy still learns Q*
        gamma=0.9,
        seed=0,
    )
    agent.fit(env, steps=4_000, verbose=0)
    np.testing.assert_allclose(agent.q_table.numpy(), TwoStateChain.optimal_q(0.9), atol=0.03)
    assert agent.evaluate(env, episodes=2)["mean_return"] == 1.0


def test_one_update_is_the_tutorial_rule():
    agent = QLearningAgent(gym.spaces.Discrete(3), gym.spaces.Discrete(2), gamma=0.9, seed=0)
    table = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], np.float32)
    agent.q_table.assign(table)
    batch = {
        "obs": np.array([0, 1], np.int32),
        "action": np.array([1, 0], np.int32),
        "reward": np.array([1.0, -1.0], np.float32),
        "next_obs": np.array([2, 0], np.int32),
        "terminated": np.array([0.0, 1.0], np.float32),
        "alpha": np.float32(0.5),
    }
    agent.runtime.update(batch)
    expected = table.copy()
    expected[0, 1] += 0.5 * (1.0 + 0.9 * 5.0 - 1.0)
    expected[1, 0] += 0.5 * (-1.0 - 2.0)  # terminated: no bootstrap
    np.testing.assert_allclose(keras.ops.convert_to_numpy(agent.q_table.value), expected, rtol=1e-6)


def test_save_load_and_bad_input(tmp_path):
    agent = QLearningAgent(gym.spaces.Discrete(4), gym.spaces.Discrete(2), seed=0)
    agent.q_table.assign(np.arange(8, dtype=np.float32).reshape(4, 2)[:, ::-1].copy())
    agent.save(str(tmp_path / "q.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "q.keras"))
    np.testing.assert_array_equal(loaded.act(np.arange(4)), [0, 0, 0, 0])
    with pytest.raises(TypeError, match="Discrete observation space"):
        QLearningAgent(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))
    with pytest.raises(TypeError, match="Discrete action space"):
        QLearningAgent(gym.spaces.Discrete(4), gym.spaces.Box(-1, 1, (1,)))
    with pytest.raises(ValueError, match="alpha"):
        QLearningAgent(gym.spaces.Discrete(4), gym.spaces.Discrete(2), alpha=0.0)


@pytest.mark.learning
def test_tutorial_config_learns_cartpole():
    """The tutorial's CartPole config (8 bins, its bounds): random play scores ~22; we ask for 100."""
    from keras_rl_gym.config import load_config, make_agent, make_env

    config = load_config(Path(__file__).parents[1] / "configs" / "qlearning-cartpole.json")
    env = make_env(config)
    agent = make_agent(config, env)
    agent.fit(env, steps=30_000, verbose=0)
    result = agent.evaluate(make_env(config), episodes=10, seed=1_000)["mean_return"]
    print(f"Q-learning CartPole-v1 (tutorial config) after 30k steps: mean return {result:.1f}")
    assert result >= 100
