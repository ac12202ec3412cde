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

__version__ = "0.1.0"

# Public names -> their modules, imported on first use (PEP 562): importing the
# package, its wrappers or its command line does not import Keras (nor TensorFlow,
# JAX or torch), so an AsyncVectorEnv worker unpickling a wrapper stays light, and
# the CLI's --backend can still pick the backend. keras.saving.load_model finds an
# agent class once it is imported: `from keras_rl_gym import DQNAgent`, or
# `import keras_rl_gym.agents` for all of them.
_EXPORTS = {
    "ActorCriticAgent": "keras_rl_gym.agents.actor_critic",
    "Agent": "keras_rl_gym.agents.base",
    "DDPGAgent": "keras_rl_gym.agents.ddpg",
    "DQNAgent": "keras_rl_gym.agents.dqn",
    "DRQNAgent": "keras_rl_gym.agents.drqn",
    "NonFiniteLossError": "keras_rl_gym.agents.base",
    "PPOAgent": "keras_rl_gym.agents.ppo",
    "QLearningAgent": "keras_rl_gym.agents.qlearning",
    "ReinforceAgent": "keras_rl_gym.agents.reinforce",
    "SACAgent": "keras_rl_gym.agents.sac",
    "TD3Agent": "keras_rl_gym.agents.td3",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        # All agents at once: every class registered for keras.saving.load_model.
        importlib.import_module("keras_rl_gym.agents")
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_rl_gym' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
