"""The agents: one module per algorithm family."""

from keras_rl_gym.agents.actor_critic import ActorCriticAgent
from keras_rl_gym.agents.base import Agent, NonFiniteLossError
from keras_rl_gym.agents.ddpg import DDPGAgent
from keras_rl_gym.agents.dqn import DQNAgent
from keras_rl_gym.agents.drqn import DRQNAgent
from keras_rl_gym.agents.ppo import PPOAgent
from keras_rl_gym.agents.qlearning import QLearningAgent
from keras_rl_gym.agents.reinforce import ReinforceAgent
from keras_rl_gym.agents.sac import SACAgent
from keras_rl_gym.agents.td3 import TD3Agent

__all__ = [
    "ActorCriticAgent",
    "Agent",
    "DDPGAgent",
    "DQNAgent",
    "DRQNAgent",
    "NonFiniteLossError",
    "PPOAgent",
    "QLearningAgent",
    "ReinforceAgent",
    "SACAgent",
    "TD3Agent",
]
