"""The agents: one module per algorithm family."""

from keras_rl_gym.agents.base import Agent, NonFiniteLossError
from keras_rl_gym.agents.ddpg import DDPGAgent
from keras_rl_gym.agents.dqn import DQNAgent

__all__ = ["Agent", "DDPGAgent", "DQNAgent", "NonFiniteLossError"]
