"""TD3's and SAC's Pendulum-v1 learning checks, written once (as ``ddpg_pendulum_setup`` is for DDPG).

``tests/test_td3.py`` and ``tests/test_sac.py`` run them for seed 0 (marker ``learning``).
A random policy scores about -1200 per episode; one that swings up and holds, -150 to -200.
``save_load_round_trip`` is the save/load check DDPG, TD3 and SAC share.
"""

from __future__ import annotations

import gymnasium as gym

ENV_ID = "Pendulum-v1"
COMMON = dict(actor_hidden_sizes=(64, 64), critic_hidden_sizes=(64, 64), gamma=0.98, batch_size=128)
AGENTS = {
    "TD3Agent": dict(COMMON, learning_starts=500, noise_std=0.1),
    "SACAgent": dict(COMMON, learning_starts=500, actor_learning_rate=1e-3, critic_learning_rate=1e-3),
}
# Measured here (mean greedy return, seeds 0/1/2): SAC at 4k steps -89/-164/-186 on JAX,
# -89/-163 on TF and -91/-163 on torch (seeds 0/1). TD3 (seed 0) is still unsettled at
# 8-10k: -92/-683/-171 at 8k and -520/-88 (jax/tf) at 10k, some starts never swung up;
# at 12k -87/-95/-92 on jax/tf/torch.
STEPS = {"TD3Agent": 12_000, "SACAgent": 4_000}
EVAL_EPISODES = 10
THRESHOLD = -400.0  # mean greedy return over EVAL_EPISODES episodes


def train_and_evaluate(name: str, seed: int = 0) -> dict:
    """Trains a fresh ``name`` agent for ``STEPS[name]`` env steps; returns its greedy evaluation."""
    import keras_rl_gym

    env = gym.make(ENV_ID)
    cls = getattr(keras_rl_gym, name)
    agent = cls(env.observation_space, env.action_space, seed=seed, **AGENTS[name])
    agent.fit(env, steps=STEPS[name], verbose=0)
    return agent.evaluate(gym.make(ENV_ID), episodes=EVAL_EPISODES, seed=1_000 + seed)


def save_load_round_trip(agent, path, optimizers=("actor_optimizer", "critic_optimizer")):
    """Saves ``agent`` to ``path`` and loads it back: checks the class, config, actions,
    weights and each optimizer's step count, and returns the loaded agent."""
    import keras
    import numpy as np

    agent.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(agent) and loaded.get_config() == agent.get_config()
    obs = np.random.default_rng(0).normal(size=(32,) + agent.observation_space.shape).astype("float32")
    np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))
    for a, b in zip(loaded.get_weights(), agent.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for name in optimizers:
        steps = [int(keras.ops.convert_to_numpy(getattr(x, name).iterations)) for x in (loaded, agent)]
        assert steps[0] == steps[1] > 0, (name, steps)
    return loaded
