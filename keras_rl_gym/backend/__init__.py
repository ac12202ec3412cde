"""Compiled act and update functions, one implementation per Keras backend.

This package is the only place that imports TensorFlow, JAX or PyTorch. Every
agent describes its computation once, in ``keras.ops``:

* ``agent.act_graph(obs)``: what acting needs from the networks (greedy actions,
  logits, values...), for a batch of observations;
* ``agent.compute_rl_loss(batch)``: ``(loss, metrics)`` for a dict of arrays;
* ``agent.update_targets(tau)``: moves target networks toward the online ones
  with ``variable.assign``;
* ``agent.optimizer_groups()``: ``[(optimizer, variables), ...]``.

A runtime turns those into fast callables that take and return NumPy arrays.
Keras has no backend-agnostic ``train_step`` (each backend's trainer writes its
own), so neither do we: the gradient mechanics live here, once per backend, and
are shared by every algorithm.
"""

from __future__ import annotations

import keras


def make_runtime(agent):
    """Returns the compiled runtime for ``agent`` on the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        from keras_rl_gym.backend.jax_runtime import JaxRuntime

        return JaxRuntime(agent)
    if backend == "tensorflow":
        from keras_rl_gym.backend.tensorflow_runtime import TensorFlowRuntime

        return TensorFlowRuntime(agent)
    if backend == "torch":
        from keras_rl_gym.backend.torch_runtime import TorchRuntime

        return TorchRuntime(agent)
    raise NotImplementedError(
        f"keras-rl-gym supports the jax, tensorflow and torch backends, "
        f"not {backend!r}. Set KERAS_BACKEND to one of those."
    )


class Runtime:
    """The interface every backend runtime implements.

    ``hold()`` and ``release()`` bracket a training run: between them a
    runtime may keep the agent's state wherever its backend wants it (JAX keeps
    it as arrays outside the Keras variables) and ``sync()`` writes it back.
    """

    def __init__(self, agent):
        self.agent = agent

    def hold(self, steps: int | None = None) -> None:
        """Starts a training run of ``steps`` env steps: takes the state from the Keras variables."""

    def sync(self) -> None:
        """Writes any held state back into the Keras variables."""

    def release(self) -> None:
        """Ends a training run: syncs and drops any held state."""
        self.sync()

    def act(self, obs):
        """Runs ``agent.act_graph`` on a NumPy batch; returns NumPy arrays."""
        raise NotImplementedError

    def update(self, batch: dict) -> dict:
        """One optimizer step on a dict of NumPy arrays.

        Returns the metrics as Python floats. When the loss is not finite the
        step leaves every variable untouched, so the caller can stop training
        with the last finite weights intact. While state is held (inside
        ``fit``), a runtime may return the previous update's metrics instead,
        ``{}`` for the first: JAX does, to fuse each update with the next act.
        """
        raise NotImplementedError

    def update_targets(self, tau: float) -> None:
        """Moves target networks toward the online networks by ``tau``."""
        raise NotImplementedError


def to_numpy_tree(tree):
    """Converts every backend tensor in a (possibly nested) structure to NumPy."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, tree)


def metrics_to_floats(metrics: dict) -> dict:
    return {k: float(keras.ops.convert_to_numpy(v)) for k, v in metrics.items()}
