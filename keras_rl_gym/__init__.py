"""keras-rl-gym: deep reinforcement learning agents as Keras 3 models.

Pick the backend with ``KERAS_BACKEND`` (``tensorflow``, ``jax`` or ``torch``)
before importing.

Example:
    >>> import gymnasium as gym
    >>> from keras_rl_gym import DQNAgent
    >>> env = gym.make("CartPole-v1")
    >>> agent = DQNAgent(env.observation_space, env.action_space)
    >>> history = agent.fit(env, steps=1_000, verbose=0)
"""

import os

# MLflow telemetry stays off unless the user asked for it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from keras_rl_gym.agents import (  # noqa: E402
    ActorCriticAgent,
    Agent,
    DDPGAgent,
    DQNAgent,
    NonFiniteLossError,
    PPOAgent,
    QLearningAgent,
    ReinforceAgent,
)

__version__ = "0.1.0"

__all__ = [
    "ActorCriticAgent",
    "Agent",
    "DDPGAgent",
    "DQNAgent",
    "NonFiniteLossError",
    "PPOAgent",
    "QLearningAgent",
    "ReinforceAgent",
    "__version__",
]
