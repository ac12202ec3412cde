"""OneEnvVector, fit's adapter for a plain env, behaves as a one-env SyncVectorEnv."""

import gymnasium as gym
import numpy as np
import pytest

from keras_rl_gym.loop import OneEnvVector, as_vector_env

# Gymnasium, NumPy and host code only: nothing here depends on KERAS_BACKEND, so `make test` runs it once.
pytestmark = pytest.mark.backend_independent


def _make(env_id):
    return gym.wrappers.RecordEpisodeStatistics(gym.make(env_id))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_same_steps_and_infos_as_sync_vector_env(env_id):
    ours, theirs = OneEnvVector(_make(env_id)), gym.vector.SyncVectorEnv([lambda: _make(env_id)])
    assert ours.observation_space == theirs.observation_space
    assert ours.action_space == theirs.action_space
    obs, _ = ours.reset(seed=3)
    np.testing.assert_array_equal(obs, theirs.reset(seed=3)[0])
    theirs.action_space.seed(0)
    games = 0
    for _ in range(500):
        action = theirs.action_space.sample()
        a, b = ours.step(action), theirs.step(action)
        for x, y in zip(a[:4], b[:4]):  # obs, reward, terminated, truncated: values, dtypes, shapes
            np.testing.assert_array_equal(x, y)
            assert x.dtype == y.dtype
        assert set(a[4]) == set(b[4])
        if "episode" in a[4]:  # a game's statistics, batched with their masks as Gymnasium does
            games += 1
            assert a[4]["_episode"].tolist() == [True]
            assert a[4]["episode"]["r"] == b[4]["episode"]["r"] and a[4]["episode"]["l"] == b[4]["episode"]["l"]
    assert games > 0


def test_next_step_autoreset_ignores_the_action_and_returns_the_reset_obs():
    venv = OneEnvVector(gym.make("CartPole-v1"))
    venv.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = venv.step(np.array([0]))
        done = bool(terminated[0] or truncated[0])
    obs, reward, terminated, truncated, _ = venv.step(np.array([1]))
    assert reward.tolist() == [0.0] and not terminated[0] and not truncated[0]
    assert np.all(np.abs(obs) <= 0.05)  # CartPole's reset state


def test_the_callers_env_stays_usable_and_its_obs_is_copied():
    env = gym.make("CartPole-v1")
    venv = as_vector_env(env)
    assert isinstance(venv, OneEnvVector) and venv.envs == [env]
    obs, _ = venv.reset(seed=0)
    obs[:] = 99.0  # the batch is ours, not the env's array
    venv.close()
    env.reset(seed=0)
    assert env.step(0)[0].shape == (4,)
