"""Gymnasium's own conventions on every env the package builds: ``check_env`` and ``gymnasium.make(env.spec)``.

Each wrapper class records its constructor's arguments (``gymnasium.utils.RecordConstructorArgs``), as
Gymnasium's own wrappers do, so ``env.spec`` names the whole chain and ``gymnasium.make(env.spec)`` rebuilds
it; ``check_env``'s close check makes a second env from the spec as well, so it fails without them.

``check_env`` is given the wrapped env, not ``env.unwrapped`` as its warning suggests: the wrappers are what
the package ships, and the raw CartPole or ALE env is Gymnasium's and ale-py's to check.
"""

import inspect
import json
import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from keras_rl_gym.wrappers.atari import make_atari_env, make_atari_ram_env
from keras_rl_gym.wrappers.discretize import discretize_observation
from keras_rl_gym.wrappers.partial import RemoveVelocity

# Gymnasium, NumPy and host code only: nothing here depends on KERAS_BACKEND, so `make test` runs it once.
pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[1]
RAM_SPACE = spaces.Box(0, 255, (128,), np.uint8)
# The checker's warnings that are not the package's to fix: it is handed a wrapped env on purpose, and
# Pendulum-v1's own action space is Box(-2, 2).
EXPECTED_WARNINGS = ("is different from the unwrapped version", "we recommend using a symmetric and normalized space")


def qlearning_cartpole_bins() -> dict:
    """The discretization of configs/qlearning-cartpole.json: ``n_bins``, ``low`` and ``high``."""
    config = json.loads((ROOT / "configs" / "qlearning-cartpole.json").read_text())
    ((name, params),) = config["wrappers"]
    assert name == "DiscretizeObservation"
    return params


ENVS = {
    "discretized-cartpole": lambda: discretize_observation(gym.make("CartPole-v1"), **qlearning_cartpole_bins()),
    "remove-velocity-cartpole": lambda: RemoveVelocity(gym.make("CartPole-v1")),
    "remove-velocity-pendulum": lambda: RemoveVelocity(gym.make("Pendulum-v1")),
    "remove-velocity-mountaincar": lambda: RemoveVelocity(gym.make("MountainCar-v0")),
    "remove-velocity-acrobot": lambda: RemoveVelocity(gym.make("Acrobot-v1")),
    # x, y and angle of the lander: an env RemoveVelocity does not know, with keep given.
    "remove-velocity-lunarlander-keep": lambda: RemoveVelocity(gym.make("LunarLander-v3"), keep=[0, 1, 4]),
    "atari-pong-training": lambda: make_atari_env("ALE/Pong-v5", training=True),
    "atari-pong-evaluation": lambda: make_atari_env("ALE/Pong-v5", training=False),
    "atari-breakout-training-no-frameskip-v4": lambda: make_atari_env("BreakoutNoFrameskip-v4", training=True),
    "ram-mspacman-v5": lambda: make_atari_ram_env("ALE/MsPacman-v5"),
    "ram-mspacman-ram-v5": lambda: make_atari_ram_env("ALE/MsPacman-ram-v5"),
    "ram-mspacman-ram-no-frameskip-v4-evaluation": lambda: make_atari_ram_env(
        "MsPacman-ramNoFrameskip-v4", training=False
    ),
}
# The Atari ones carry the marker the suite uses for ale-py (a label, not a skip).
PARAMS = [pytest.param(name, marks=[pytest.mark.atari] if "atari" in name or "ram" in name else []) for name in ENVS]


def rollout(env: gym.Env, steps: int = 8) -> tuple[list, list]:
    """Observations and rewards of a seeded reset and ``steps`` seeded random actions."""
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    observations, rewards = [obs], []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            observations.append(env.reset()[0])
    return observations, rewards


def assert_same_env(env: gym.Env, rebuilt: gym.Env) -> None:
    """``rebuilt`` has ``env``'s spaces, its wrapper chain, and plays the same seeded rollout."""
    assert rebuilt.observation_space == env.observation_space
    assert rebuilt.action_space == env.action_space
    assert [w.name for w in rebuilt.spec.additional_wrappers] == [w.name for w in env.spec.additional_wrappers]
    (obs_a, rewards_a), (obs_b, rewards_b) = rollout(env), rollout(rebuilt)
    assert rewards_a == rewards_b
    assert len(obs_a) == len(obs_b)
    for a, b in zip(obs_a, obs_b):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", PARAMS)
def test_gymnasium_check_env_passes(name):
    env = ENVS[name]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The human render mode would open a window; the close check (a second env from env.spec) stays on.
        check_env(env, skip_render_check=True)
    unexpected = [str(w.message) for w in caught if not any(text in str(w.message) for text in EXPECTED_WARNINGS)]
    assert unexpected == []


@pytest.mark.parametrize("name", PARAMS)
def test_gymnasium_make_of_the_spec_rebuilds_the_env(name):
    env = ENVS[name]()
    # Every wrapper in the chain recorded its arguments: None would make gymnasium.make refuse the spec.
    assert all(w.kwargs is not None for w in env.spec.additional_wrappers), env.spec.additional_wrappers
    assert_same_env(env, gym.make(env.spec))


@pytest.mark.parametrize("name", PARAMS)
def test_the_spec_pickles_and_still_rebuilds_the_env(name):
    # What the spec holds (the reward clip, the discretizer's clip) is named by module, not a lambda or closure.
    env = ENVS[name]()
    assert_same_env(env, gym.make(pickle.loads(pickle.dumps(env.spec))))


@pytest.mark.parametrize("name", [p for p in PARAMS if p.values[0].startswith(("remove-velocity", "atari"))])
def test_package_wrappers_record_exactly_their_constructor_arguments(name):
    # The discretizer and the RAM env are Gymnasium's own wrappers; these chains hold the package's.
    env = ENVS[name]()
    ours = [w for w in env.spec.additional_wrappers if w.entry_point.startswith("keras_rl_gym.")]
    assert ours
    for wrapper_spec in ours:
        cls = gym.envs.registration.load_env_creator(wrapper_spec.entry_point)
        assert issubclass(cls, gym.utils.RecordConstructorArgs)
        params = set(inspect.signature(cls.__init__).parameters) - {"self", "env"}
        assert set(wrapper_spec.kwargs) == params, wrapper_spec


def test_remove_velocity_records_keep_as_given():
    env = RemoveVelocity(gym.make("CartPole-v1"), keep=[2])
    (wrapper_spec,) = env.spec.additional_wrappers
    assert wrapper_spec.kwargs == {"keep": [2]}
    rebuilt = gym.make(env.spec)
    assert rebuilt.observation_space.shape == (1,)
    np.testing.assert_array_equal(rebuilt.reset(seed=3)[0], gym.make("CartPole-v1").reset(seed=3)[0][[2]])


@pytest.mark.atari
@pytest.mark.parametrize(
    "env_id, game_id",
    [
        ("ALE/MsPacman-v5", "ALE/MsPacman-v5"),
        ("ALE/MsPacman-ram-v5", "ALE/MsPacman-v5"),
        ("ALE/Pong-ram-v5", "ALE/Pong-v5"),
        ("ALE/Breakout-ram-v5", "ALE/Breakout-v5"),
        ("MsPacman-ramNoFrameskip-v4", "MsPacmanNoFrameskip-v4"),
        ("MsPacman-ram-v4", "MsPacman-v4"),
    ],
)
def test_ram_env_takes_ram_ids_and_plain_ids_alike(env_id, game_id):
    env = make_atari_ram_env(env_id, repeat_action_probability=0.0)
    assert env.observation_space == RAM_SPACE
    assert env.spec.id == game_id and env.spec.kwargs["obs_type"] == "ram"
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    # The -ram id is the same game as the plain one: the same seed gives the same RAM.
    plain = make_atari_ram_env(game_id, repeat_action_probability=0.0)
    np.testing.assert_array_equal(obs, plain.reset(seed=0)[0])


@pytest.mark.atari
@pytest.mark.parametrize("env_id", ["CartPole-v1", "CartPole-ram-v1", "ALE/NoSuchGame-ram-v5"])
def test_ram_env_refuses_a_non_atari_id_in_one_line(env_id):
    with pytest.raises(ValueError, match="is not an Atari env") as error:
        make_atari_ram_env(env_id)
    message = str(error.value)
    assert "\n" not in message and repr(env_id) in message


def test_every_wrapper_class_of_the_package_records_its_constructor_arguments():
    # A future wrapper class in these modules must follow the convention too, even before a test builds it.
    import keras_rl_gym.wrappers.atari as atari
    import keras_rl_gym.wrappers.discretize as discretize
    import keras_rl_gym.wrappers.partial as partial

    classes = [
        cls
        for module in (atari, discretize, partial)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and issubclass(cls, gym.Wrapper)
    ]
    names = {cls.__name__ for cls in classes}
    assert names >= {"EpisodicLifeEnv", "FireResetEnv", "ChannelsLastObservation", "RemoveVelocity"}
    assert [cls.__name__ for cls in classes if not issubclass(cls, gym.utils.RecordConstructorArgs)] == []
