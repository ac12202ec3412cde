"""Compiled act and update functions, one implementation per Keras backend.

This package is the only place that imports TensorFlow, JAX or PyTorch. Every
agent describes its computation once, in ``keras.ops``:

* ``agent.act_graph(obs)``: what acting needs from the networks (greedy actions,
  logits, values...), for a batch of observations;
* ``agent.compute_rl_loss(batch)``: ``(loss, metrics)`` for a dict of arrays;
* ``agent.update_targets(tau)``: moves target networks toward the online ones
  with ``variable.assign``;
* ``agent.optimizer_groups()``: ``[(optimizer, variables), ...]``; a group may
  carry a third item, the name of a batch entry that gates it (see ``split_groups``).

A runtime turns those into fast callables that take and return NumPy arrays.
Keras has no backend-agnostic ``train_step`` (each backend's trainer writes its
own), so neither do we: the gradient mechanics live here, once per backend, and
are shared by every algorithm.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np

SMALL_CPU_CORES = 4  # at most this many cores: XLA's CPU runs single-threaded Eigen (see _configure_jax)
XLA_FLAGS_BEFORE = None  # the user's XLA_FLAGS where _configure_jax added to them (child processes may want them)


def _configure_jax() -> None:
    """``KERAS_RL_GYM_JAX_ASYNC=0`` runs JAX's CPU computations on the calling thread.

    An RL loop waits for every action it asks for, so on a busy machine JAX's
    asynchronous CPU dispatch mostly costs a hand-off to a worker thread and back
    per call: inline, a DQN update plus act on CartPole took 221-271 us instead of
    577-586 us next to other jobs. On a quiet 2-core machine the asynchronous
    default was faster (DQN CartPole over 20k steps: 1586-1623 env steps/s
    against 1459-1475 inline), so it stays the default. It has to be set before
    JAX makes its CPU client, so at import; it does not touch GPU devices.
    """
    if os.environ.get("KERAS_RL_GYM_JAX_ASYNC", "1").lower() in ("0", "false", "no"):
        import jax

        jax.config.update("jax_cpu_enable_async_dispatch", False)
    # On a small CPU, XLA's multi-threaded Eigen costs more than it gives on RL-sized
    # networks: on 2 cores (benchmarks/cpu_threads.py, quiet, 20k steps) single-threaded
    # was faster for DQN (1543 vs 1504 env steps/s) and PPO (3763 vs 3364) on CartPole,
    # and no slower for conv DQN on Pong (62 vs 57 against SB3's 70 and 66). Larger CPUs
    # were not measured, so they keep XLA's default, as does anyone whose XLA_FLAGS set it.
    # XLA reads its flags when JAX makes its first computation, so this is set at import.
    global XLA_FLAGS_BEFORE
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags and (os.cpu_count() or 1) <= SMALL_CPU_CORES:
        XLA_FLAGS_BEFORE = flags
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()


if keras.backend.backend() == "jax":
    _configure_jax()


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

    def update_round(self, batches: dict) -> list[dict]:
        """``k`` optimizer steps in a row: row ``i`` of every array of ``batches`` is step ``i``'s batch.

        Where the backend allows, the whole round is one compiled call (JAX's
        ``lax.scan``, a TensorFlow ``while_loop``), not ``k``: PPO's epochs over one
        rollout, DQN's ``gradient_steps``. A non-finite loss skips its step and
        every later one of the round. Returns the metrics of these steps, a dict
        each, when they ran at once; inside ``hold()`` they may come later, from
        ``drain()``, and the result is then shorter (``[]``). Here, one
        ``update`` per row, stopping at a non-finite loss.
        """
        reported = []
        for i in range(len(next(iter(batches.values())))):
            reported.append(self.update({k: v[i] for k, v in batches.items()}))
            if not math.isfinite(reported[-1].get("loss", 0.0)):
                break
        return reported

    def drain(self, wait: bool = False) -> list[dict]:
        """The metrics of updates done but not yet reported, oldest first; ``[]`` when none are.

        ``wait=True`` first runs an update still waiting, so that every update
        made so far is reported (``fit`` does so before each log and at the end).
        """
        return []

    def update_targets(self, tau: float) -> None:
        """Moves target networks toward the online networks by ``tau``."""
        raise NotImplementedError

    def attach_replay(self, buffer) -> bool:
        """Offers a ``ReplayBuffer`` whose ring the runtime may keep a copy of on its device.

        When it does (the result is True), ``update`` also takes ``{"index": rows}``
        (from ``buffer.sample_index``): the batch is gathered from the device copy
        inside the compiled update, and the rows the host wrote since the last
        update are sent along and written there first. Where it does not, the
        caller samples on the host and passes whole batches, as always.
        """
        return False

    def assign(self, pairs) -> None:
        """Sets non-trainable variables (observation statistics) to the values given, as ``[(variable, value)]``.

        Where the runtime holds the agent's state (JAX), the held copies change; the
        compiled calls read the new values from the next call on.
        """
        for variable, value in pairs:
            variable.assign(value)

    def reload(self) -> None:
        """Takes any held state anew from the Keras variables, after a caller assigned them
        (``set_weights`` in a callback). Nothing to do where the compiled calls read the
        Keras variables themselves (TensorFlow, torch)."""

    def reload_learning_rates(self) -> None:
        """Takes the optimizers' learning-rate variables anew, after a callback set them
        (Keras's ``LearningRateScheduler``). Nothing to do where the compiled update reads
        the Keras variables themselves (TensorFlow, torch)."""


DEVICE_REPLAY_MAX_BYTES = 1 << 30  # a bigger ring stays on the host only (device memory, and the first copy)
_INSERT_MAX = 256  # more new rows than this at one update are sent as a whole new copy of the ring


class ReplayMirror:
    """Keeps a runtime's device copy of a ``ReplayBuffer``'s ring up to date, from the host ring.

    The host ring stays the one truth (saving, sampling, ``len``): each update
    carries, as ``insert.index`` and ``insert.<field>`` arrays, the rows written
    since the last one, which the compiled update writes into the device copy
    before it gathers the batch. Their count is padded to a power of two by
    repeating the last row (the same value written twice to the same place), so
    a run compiles the update for one or two sizes only. A first update, or one
    after more than ``_INSERT_MAX`` new rows (the exploration before learning
    starts), copies the whole ring instead.
    """

    def __init__(self, buffer):
        self.buffer = buffer
        self.synced = None  # buffer.written when the device copy was last brought up to date

    @staticmethod
    def wanted(buffer, accelerator: bool) -> bool:
        """Whether to keep ``buffer``'s ring on the device: ``KERAS_RL_GYM_DEVICE_REPLAY`` = ``1``, ``0`` or ``auto``.

        ``auto`` (the default) keeps it there on an accelerator only. On CPU the
        host ring is faster: XLA's CPU gather of a 32-row batch costs 20-30 us
        per field, and its scatter into a donated ring still copied the ring,
        where NumPy's ``take`` and the transfer of the batch cost a few us
        (``tests/test_device_replay.py`` checks both paths train alike).
        """
        mode = os.environ.get("KERAS_RL_GYM_DEVICE_REPLAY", "auto").lower()
        if mode in ("0", "false", "no") or (mode == "auto" and not accelerator):
            return False
        return sum(a.nbytes for a in buffer.data.values()) <= DEVICE_REPLAY_MAX_BYTES

    def inserts(self, assign_all) -> dict:
        """The batch entries that bring the device copy up to date; calls ``assign_all(data)`` for a whole copy."""
        buffer = self.buffer
        new = None if self.synced is None else buffer.written - self.synced
        self.synced = buffer.written
        if new == 0:
            return {}
        if new is None or new > _INSERT_MAX:
            assign_all(buffer.data)
            return {}
        padded = 1 << (new - 1).bit_length()
        index = (buffer.position - new + np.arange(padded).clip(max=new - 1)) % buffer.capacity
        entries = {f"insert.{name}": array[index] for name, array in buffer.data.items()}
        entries["insert.index"] = index.astype(np.int32)
        return entries


def split_replay_batch(batch: dict):
    """``(index, inserts, fields)`` of an indexed batch: the rows to gather, the ``insert.*`` entries by field."""
    inserts = {k[len("insert.") :]: v for k, v in batch.items() if k.startswith("insert.")}
    return batch["index"], inserts, [k for k in inserts if k != "index"]


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
    transfer each), named by ``_metric_names`` and ``_metric_shapes``, which the update
    sets when traced (``pack_metrics``). A metric may be a per-item vector (prioritized
    replay's TD errors of the batch): it is reported as a NumPy array.

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
        self._metric_shapes = []  # () for a scalar metric, (n,) for a per-item one
        self._mirror = None  # a ReplayMirror, while a replay is attached

    def attach_replay(self, buffer):
        self._mirror = ReplayMirror(buffer) if ReplayMirror.wanted(buffer, self._on_accelerator()) else None
        return self._mirror is not None

    def _on_accelerator(self) -> bool:
        """Whether the compiled calls run on a GPU or TPU."""
        raise NotImplementedError

    def _assign_replay(self, data: dict) -> None:
        """Makes the device copy of the ring a copy of the host arrays ``data``."""
        raise NotImplementedError

    # -- what a backend implements -------------------------------------------------
    def _update_now(self, batch):
        """Runs one update; returns its stacked metrics (a device vector)."""
        raise NotImplementedError

    def _update_act_now(self, batch, obs):
        """Runs one update, then acts with the new weights, in one call; returns ``(metrics, out)``."""
        raise NotImplementedError

    def _round_now(self, batches):
        """Runs a round of updates (see ``update_round``); returns their metrics, one stacked row each."""
        raise NotImplementedError

    def _round_act_now(self, batches, obs):
        """Runs a round of updates, then acts with the new weights, in one call; returns ``(metrics, out)``."""
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
        if self._mirror is not None:
            self._mirror.synced = None  # the host ring may have changed since (a loaded agent's)

    def sync(self):
        self._flush()

    def release(self):
        self.sync()
        self._held = False

    def _flush(self):
        """Runs a waiting update (or round) on its own."""
        if self._pending is not None:
            (batch, is_round), self._pending = self._pending, None
            self._done.append(self._round_now(batch) if is_round else self._update_now(batch))

    def _report(self, metrics) -> dict:
        metrics = unpack_metrics(self._metric_names, self._metric_shapes, np.asarray(metrics))
        if not math.isfinite(metrics["loss"]):
            self._pending = None  # queued before the caller could see the failure: see the class docstring
        return metrics

    def _reports(self, metrics) -> list[dict]:
        """The metrics of one update (a vector) or of a round (a matrix, a row per update), a dict each."""
        metrics = np.asarray(metrics)
        return [self._report(row) for row in metrics] if metrics.ndim == 2 else [self._report(metrics)]

    def act(self, obs):
        if self._pending is None:
            return self._outputs_to_numpy(self._act_now(obs))
        (batch, is_round), self._pending = self._pending, None
        metrics, out = (self._round_act_now if is_round else self._update_act_now)(batch, obs)
        self._done.append(metrics)
        return self._outputs_to_numpy(out)

    def update(self, batch):
        if not self._held:
            return self._report(self._update_now(self._with_inserts(batch)))
        # The waiting update read the ring as it was when it was sampled: it runs before this one's writes.
        self._flush()
        self._pending = (self._with_inserts(batch), False)
        # At most one report per call: with one update per call, reports keep up with updates.
        # A round's metrics wait for drain, which reports them all.
        return self._report(self._done.pop(0)) if self._done and self._done[0].ndim == 1 else {}

    def update_round(self, batches):
        batches = self._convert_batch(batches)
        if not self._held:
            return self._reports(self._round_now(batches))
        self._flush()
        self._pending = (batches, True)
        return []

    def _with_inserts(self, batch):
        if "index" in batch:
            batch = dict(batch, **self._mirror.inserts(self._assign_replay))
        return self._convert_batch(batch)

    def drain(self, wait=False):
        if wait:
            self._flush()
        done, self._done = self._done, []
        return [report for metrics in done for report in self._reports(metrics)]

    def update_targets(self, tau):
        self._flush()
        self._update_targets_now(float(tau))


def split_groups(groups):
    """``(groups, gates)``: the ``(optimizer, variables)`` pairs, and each group's gate (a batch key, or ``None``).

    A group ``(optimizer, variables, key)`` is applied in an update only where
    ``batch[key]`` (a scalar) is above 0.5; elsewhere its variables and its
    optimizer's state (moments, iteration count) stay exactly as they were. That
    is how TD3 updates its actor every ``policy_delay``-th update only: an Adam
    step on a zero gradient would still move the weights. Each runtime applies a
    gated group under a conditional (``lax.cond``, ``tf.cond``, a Python ``if``).
    """
    pairs = [(group[0], group[1]) for group in groups]
    return pairs, [group[2] if len(group) > 2 else None for group in groups]


def pack_metrics(runtime, loss, metrics: dict):
    """``loss`` and ``metrics`` as one float32 vector (one host transfer per update), in ``keras.ops``.

    Records their names and shapes on ``runtime`` (at trace time) for ``unpack_metrics``.
    Scalars take one entry each; a per-item metric (a vector over the batch) takes its length.
    """
    ops = keras.ops
    metrics = {"loss": loss, **metrics}
    runtime._metric_names = list(metrics)
    # Static shapes (None where a trace leaves a dimension open), not ops.shape's tensors.
    runtime._metric_shapes = [tuple(getattr(v, "shape", ())) for v in metrics.values()]
    return ops.concatenate([ops.reshape(ops.cast(v, "float32"), (-1,)) for v in metrics.values()])


def unpack_metrics(names, shapes, vector: np.ndarray) -> dict:
    """The dict ``pack_metrics`` packed: Python floats, and NumPy arrays for per-item metrics."""
    if not any(shapes):  # every metric a scalar: the usual case, once per update
        return dict(zip(names, vector.tolist()))
    # A dimension unknown at trace time (None) is what the vector's length leaves for it.
    known = sum(math.prod(s) for s in shapes if None not in s)
    out, start = {}, 0
    for name, shape in zip(names, shapes):
        size = math.prod(s for s in shape if s is not None) if None not in shape else len(vector) - known
        part = vector[start : start + size]
        out[name] = part.item() if shape == () else part.copy()
        start += size
    return out


def to_numpy_tree(tree):
    """Converts every backend tensor in a (possibly nested) structure to NumPy."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, tree)


def metrics_to_floats(metrics: dict) -> dict:
    return {k: float(keras.ops.convert_to_numpy(v)) for k, v in metrics.items()}
