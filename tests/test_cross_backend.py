"""An agent saved on one Keras backend loads on another and acts the same.

One subprocess on the other backend trains and saves one agent per family (value,
deterministic actor, twin-critic actor, squashed-Gaussian actor, on-policy), and
writes the actions it takes on fixed observations; this process loads each file and
acts on the same observations. Discrete actions must match exactly; continuous ones
to float32 rounding, since two backends' kernels may round differently.
"""

import os
import subprocess
import sys

import keras
import numpy as np

# Loading finds the classes by their registered names; issue 17 makes that work unimported.
from keras_rl_gym import DDPGAgent, DQNAgent, PPOAgent, SACAgent, TD3Agent  # noqa: F401

SAVE_SCRIPT = """
import sys, numpy as np, gymnasium as gym
from keras_rl_gym import DDPGAgent, DQNAgent, PPOAgent, SACAgent, TD3Agent

cartpole, pendulum = gym.make("CartPole-v1"), gym.make("Pendulum-v1")
small = dict(learning_starts=50, batch_size=32, seed=4)
continuous = dict(small, actor_hidden_sizes=(16, 16), critic_hidden_sizes=(16, 16))
agents = {
    "dqn": (DQNAgent, cartpole, dict(small, dueling=True, hidden_sizes=(16, 16))),
    "ddpg": (DDPGAgent, pendulum, continuous),
    "td3": (TD3Agent, pendulum, continuous),
    "sac": (SACAgent, pendulum, continuous),
    "ppo": (PPOAgent, cartpole, dict(n_steps=64, batch_size=32, hidden_sizes=(16, 16), seed=4)),
}
refs = {}
for name, (cls, env, kwargs) in agents.items():
    agent = cls(env.observation_space, env.action_space, **kwargs)
    agent.fit(env, steps=150, verbose=0)
    agent.save(f"{name}.keras")
    obs = np.random.default_rng(1).normal(size=(64,) + env.observation_space.shape).astype("float32")
    refs[f"{name}_obs"], refs[f"{name}_actions"] = obs, agent.act(obs)
    refs[f"{name}_updates"] = agent.updates
np.savez("ref.npz", **refs)
"""


def test_agents_saved_on_another_backend_load_with_same_actions(tmp_path, backend):
    # One test, not one per agent: the subprocess (an import of the other backend and
    # five short fits) is most of the cost, and xdist could run parametrized cases apart.
    other = {"jax": "torch", "torch": "tensorflow", "tensorflow": "jax"}[backend]
    env = dict(os.environ, KERAS_BACKEND=other)
    subprocess.run([sys.executable, "-c", SAVE_SCRIPT], check=True, env=env, cwd=tmp_path)
    ref = np.load(tmp_path / "ref.npz")
    for name in ("dqn", "ddpg", "td3", "sac", "ppo"):
        assert ref[f"{name}_updates"] > 0, name  # the saved weights moved from their initialization
        agent = keras.saving.load_model(tmp_path / f"{name}.keras")
        actions, expected = agent.act(ref[f"{name}_obs"]), ref[f"{name}_actions"]
        if name in ("dqn", "ppo"):
            np.testing.assert_array_equal(actions, expected, err_msg=name)
        else:
            np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5, err_msg=name)
