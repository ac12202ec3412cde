"""Gymnasium wrappers: they import Gymnasium and NumPy only, never Keras.

* :mod:`keras_rl_gym.wrappers.discretize`: ``discretize_observation``, a ``Box``
  observation clipped and binned into one ``Discrete`` state (tabular agents).
* :mod:`keras_rl_gym.wrappers.atari`: ``make_atari_env`` / ``make_atari_vec_env``,
  the Nature DQN preprocessing chain (needs ale-py and opencv), and ``make_atari_ram_env``.
* :mod:`keras_rl_gym.wrappers.partial`: ``RemoveVelocity``, classic-control tasks without their velocities.

Every wrapper class here records its constructor's arguments (``gymnasium.utils.RecordConstructorArgs``),
as Gymnasium's own do, so ``gymnasium.make(env.spec)`` rebuilds a wrapped env.

The submodules are not imported here, so that using one does not load the others' dependencies.
"""
