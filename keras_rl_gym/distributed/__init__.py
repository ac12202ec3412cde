"""Scaling out on Ray: rollout runners for ``fit`` and hyperparameter sweeps with Ray Tune.

The only package of keras-rl-gym that imports Ray (``pip install "keras-rl-gym[ray]"``).

* :class:`RayRunners`: ``agent.fit(env, steps=..., runners=RayRunners(num_runners=4))`` steps
  the envs in Ray actors, each with its own vector env and a copy of the agent's acting network;
  the learner stays the agent, in this process.
* :func:`sweep`: Ray Tune trials over a run config's ``agent.*`` and ``train.*`` keys, each an
  MLflow run nested under one parent run; the best config is written out as a runnable config.
"""

from keras_rl_gym.distributed.runners import RayRunners
from keras_rl_gym.distributed.sweep import load_space, sweep

__all__ = ["RayRunners", "load_space", "sweep"]
