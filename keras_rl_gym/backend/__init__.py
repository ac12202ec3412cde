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

import math

import keras
import numpy as np


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

    Metrics of each update are reported exactly once, in the order of the
    updates, as a dict from ``update()`` or as one of the dicts of ``drain()``:
    every non-empty dict from either is the metrics of the oldest update not yet
    reported. A caller that remembers the env step of each update it makes can
    so give every update's metrics to the step it belongs to, even when the
    runtime reports them later (see ``FusedRuntime``).
    """

    def __init__(self, agent):
        self.agent = agent

    def hold(self, steps: int | None = None) -> None:
        """Starts a training run of ``steps`` env steps: takes the state from the Keras variables."""

    def sync(self) -> None:
        """Writes any held state back into the Keras variables."""

    def release(self) -> None:
        """Ends a training run: syncs and drops any held state. Metrics not yet reported stay for ``drain()``."""
        self.sync()

    def act(self, obs):
        """Runs ``agent.act_graph`` on a NumPy batch; returns NumPy arrays."""
        raise NotImplementedError

    def update(self, batch: dict) -> dict:
        """One optimizer step on a dict of NumPy arrays.

        Returns metrics as Python floats: those of this update when it ran at
        once (always outside ``hold()``), else those of the oldest earlier
        update not yet reported, or ``{}`` (see ``FusedRuntime``). When the loss
        is not finite the step leaves every variable untouched, so the caller
        can stop training with the last finite weights intact.
        """
        raise NotImplementedError

    def drain(self, wait: bool = False) -> list[dict]:
        """The metrics of updates done but not yet reported, oldest first; ``[]`` when none are.

        ``wait=True`` first runs an update still waiting, so that every update
        made so far is reported (``fit`` does so before each log and at the end).
        """
        return []

    def update_targets(self, tau: float) -> None:
        """Moves target networks toward the online networks by ``tau``."""
        raise NotImplementedError

    def reload(self) -> None:
        """Takes any held state anew from the Keras variables, after a caller assigned them
        (``set_weights`` in a callback). Nothing to do where the compiled calls read the
        Keras variables themselves (TensorFlow, torch)."""

    def reload_learning_rates(self) -> None:
        """Takes the optimizers' learning-rate variables anew, after a callback set them
        (Keras's ``LearningRateScheduler``). Nothing to do where the compiled update reads
        the Keras variables themselves (TensorFlow, torch)."""


class FusedRuntime(Runtime):
    """A runtime that, while held, runs each update together with the next act.

    Inside ``fit`` an update is not dispatched at once: it waits for the next
    ``act`` and runs with it as one compiled call (update, then act with the new
    weights: the same order as two calls, at half the dispatch and sync cost).
    Anything else that touches the state (another update, target updates,
    ``sync``, ``release``, ``drain(wait=True)``) first runs the waiting update on
    its own. So a held ``update`` cannot return its own metrics without a device
    sync that would undo the fusion: they are reported later, once computed,
    by the next ``update`` or ``drain``, and stay for ``drain`` past ``release``.

    A non-finite loss is seen on the host only after the next update may have
    been queued; that update is then dropped, never run nor reported, as if
    the caller had stopped at once (``fit`` does): the weights stay the last finite ones.

    Metrics come back as one stacked device vector per update (one host
    transfer each), named by ``_metric_names``, which the update sets when traced.

    A backend implements the ``_..._now`` hooks (one call each, on the held
    state or on the Keras variables, returning device values), ``_convert_batch``
    and ``_outputs_to_numpy``.
    """

    def __init__(self, agent):
        super().__init__(agent)
        self._held = False
        self._pending = None  # a batch whose update waits for the next act
        self._done = []  # device metric vectors of updates done, not yet reported, oldest first
        self._metric_names = []

    # -- what a backend implements -------------------------------------------------
    def _update_now(self, batch):
        """Runs one update; returns its stacked metrics (a device vector)."""
        raise NotImplementedError

    def _update_act_now(self, batch, obs):
        """Runs one update, then acts with the new weights, in one call; returns ``(metrics, out)``."""
        raise NotImplementedError

    def _act_now(self, obs):
        raise NotImplementedError

    def _update_targets_now(self, tau: float) -> None:
        raise NotImplementedError

    def _convert_batch(self, batch):
        return batch

    def _outputs_to_numpy(self, out):
        raise NotImplementedError

    # -- the shared logic ------------------------------------------------------------
    def hold(self, steps=None):
        self._held = True
        # Metrics a previous run left undrained belong to none of this run's updates.
        self._done = []

    def sync(self):
        self._flush()

    def release(self):
        self.sync()
        self._held = False

    def _flush(self):
        """Runs a waiting update on its own."""
        if self._pending is not None:
            batch, self._pending = self._pending, None
            self._done.append(self._update_now(batch))

    def _report(self, metrics) -> dict:
        metrics = dict(zip(self._metric_names, np.asarray(metrics).tolist()))
        if not math.isfinite(metrics["loss"]):
            self._pending = None  # queued before the caller could see the failure: see the class docstring
        return metrics

    def act(self, obs):
        if self._pending is None:
            return self._outputs_to_numpy(self._act_now(obs))
        batch, self._pending = self._pending, None
        metrics, out = self._update_act_now(batch, obs)
        self._done.append(metrics)
        return self._outputs_to_numpy(out)

    def update(self, batch):
        batch = self._convert_batch(batch)
        if not self._held:
            return self._report(self._update_now(batch))
        self._flush()
        self._pending = batch
        # At most one report per call: with one update per call, reports keep up with updates.
        return self._report(self._done.pop(0)) if self._done else {}

    def drain(self, wait=False):
        if wait:
            self._flush()
        done, self._done = self._done, []
        return [self._report(metrics) for metrics in done]

    def update_targets(self, tau):
        self._flush()
        self._update_targets_now(float(tau))


def to_numpy_tree(tree):
    """Converts every backend tensor in a (possibly nested) structure to NumPy."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, tree)


def metrics_to_floats(metrics: dict) -> dict:
    return {k: float(keras.ops.convert_to_numpy(v)) for k, v in metrics.items()}
