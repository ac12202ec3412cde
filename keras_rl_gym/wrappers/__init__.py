"""Gymnasium wrappers: they import Gymnasium and NumPy only, never Keras.

* :mod:`keras_rl_gym.wrappers.discretize`: ``discretize_observation``, a ``Box``
  observation clipped and binned into one ``Discrete`` state (tabular agents).
* :mod:`keras_rl_gym.wrappers.atari`: ``make_atari_env`` / ``make_atari_vec_env``,
  the Nature DQN preprocessing chain (needs ale-py and opencv), and ``make_atari_ram_env``.
* :mod:`keras_rl_gym.wrappers.envpool_env`: ``make_envpool_atari_vec_env``, the same
  chain from EnvPool's C++ envs (``make_atari_vec_env(..., backend="envpool")``).
* :mod:`keras_rl_gym.wrappers.partial`: ``RemoveVelocity``, classic-control tasks without their velocities.

Every wrapper class here records its constructor's arguments (``gymnasium.utils.RecordConstructorArgs``),
as Gymnasium's own do, so ``gymnasium.make(env.spec)`` rebuilds a wrapped env.

The public names import from here (``from keras_rl_gym.wrappers import RemoveVelocity``), each on first
use from its own submodule (PEP 562), so that using one does not load the others' dependencies.
"""

import importlib

# Public name -> the submodule that defines it.
_EXPORTS = {
    "discretize_observation": "discretize",
    "is_atari_env": "atari",
    "make_atari_env": "atari",
    "make_atari_ram_env": "atari",
    "make_atari_vec_env": "atari",
    "ChannelsLastObservation": "atari",
    "EpisodicLifeEnv": "atari",
    "FireResetEnv": "atari",
    "EnvPoolAtariVectorEnv": "envpool_env",
    "make_envpool_atari_vec_env": "envpool_env",
    "RemoveVelocity": "partial",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
