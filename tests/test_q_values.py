"""``agent.q_values(obs, actions)``: the public Q(s, a) of DDPG, TD3 and SAC, as DQN's is ``agent(obs)``."""

import gymnasium as gym
import numpy as np
import pytest
from keras import ops

from keras_rl_gym import DDPGAgent, SACAgent, TD3Agent


@pytest.mark.parametrize("cls, critics", [(DDPGAgent, 1), (TD3Agent, 2), (SACAgent, 2)])
def test_q_values_are_each_critics_output_on_the_normalized_action(cls, critics):
    env = gym.make("Pendulum-v1")  # actions in [-2, 2]: the critics see them halved
    agent = cls(env.observation_space, env.action_space, learning_starts=20, batch_size=8, seed=0)
    agent.fit(env, steps=40, verbose=0)  # the trained weights may be held by the backend until synced
    obs = np.stack([env.reset(seed=s)[0] for s in range(5)])
    actions = np.linspace(-2.0, 2.0, 5, dtype=np.float32)[:, None]
    values = agent.q_values(obs, actions)
    assert values.shape == (5, critics)
    nets = [agent.critic] if critics == 1 else [agent.critic1, agent.critic2]
    expected = np.concatenate([ops.convert_to_numpy(net([obs, actions / 2.0])) for net in nets], axis=-1)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    assert agent.q_values(obs[0], actions[0]).shape == (critics,)
    np.testing.assert_allclose(agent.q_values(obs[0], actions[0]), values[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"actions of shape \(5, 2\) for 5 observations; expected \(5, 1\)"):
        agent.q_values(obs, np.zeros((5, 2)))
