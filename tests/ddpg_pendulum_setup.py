"""DDPG's Pendulum-v1 learning check, written once.

``tests/test_ddpg.py`` runs it for seed 0 (marker ``learning``);
``benchmarks/ddpg_pendulum.py`` runs the same for several seeds (0, 1 and 2 by default).

A random policy scores about -1050 to -1270 per episode on these eval seeds (-1200 to -1400 is
the usual figure), a policy that swings the pendulum up and holds it -150 to -200. With these
settings five seeds scored -86, -147, -168, -110 and -205 (JAX, 8k steps, mean of 10 episodes),
so the threshold sits well clear of both random and the worst seed seen.
"""

from __future__ import annotations

import gymnasium as gym

ENV_ID = "Pendulum-v1"
AGENT = dict(
    actor_hidden_sizes=(64, 64),
    critic_hidden_sizes=(64, 64),
    gamma=0.98,
    batch_size=128,
    learning_starts=500,
    noise_std=0.1,
)
STEPS = 8_000  # ~7,500 updates; about 15 s on JAX on a 2-core CPU
EVAL_EPISODES = 10
THRESHOLD = -400.0  # mean greedy return over EVAL_EPISODES episodes


def eval_seed(seed: int) -> int:
    """The seed of the evaluation env's reset: apart from the training seed."""
    return 1_000 + seed


def train_and_evaluate(seed: int) -> dict:
    """Trains a fresh DDPG agent with ``AGENT`` for ``STEPS`` env steps; returns its greedy evaluation."""
    from keras_rl_gym import DDPGAgent

    env = gym.make(ENV_ID)
    agent = DDPGAgent(env.observation_space, env.action_space, seed=seed, **AGENT)
    agent.fit(env, steps=STEPS, verbose=0)
    return agent.evaluate(gym.make(ENV_ID), episodes=EVAL_EPISODES, seed=eval_seed(seed))
