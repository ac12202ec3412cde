"""TensorFlow runtime: XLA-compiled ``tf.function``s over the Keras variables.

As on JAX, inside ``fit`` an update runs with the next ``act`` as one compiled
call (``FusedRuntime``), so each env step pays for one ``tf.function`` dispatch
instead of two.

Calls go to concrete functions cached by input shapes and dtypes: a
``tf.function`` call spends about twice as long matching its arguments to a
trace as the compiled computation itself takes on a small network. After a
trace's first call, its inputs go to it flat (``_call_flat``), without binding
them to its signature again, and NumPy inputs become tensors through
``EagerTensor`` directly: on DQN CartPole 888-946 env steps/s instead of
796-820 (A/B, interleaved, next to other jobs).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_rl_gym.backend import FusedRuntime, pack_metrics, split_groups, split_replay_batch

try:
    # TensorFlow's own fast paths, private: ``EagerTensor`` is what ``tf.convert_to_tensor``
    # ends in for a NumPy array (without its ~15 us of dispatch), and a concrete function's
    # ``_call_flat`` is its call without the argument binding. Missing (another
    # TensorFlow), the public calls are used.
    from tensorflow.python.eager import context as _context
    from tensorflow.python.eager.polymorphic_function.concrete_function import ConcreteFunction as _Concrete
    from tensorflow.python.framework.ops import EagerTensor as _EagerTensor

    _FAST_CALLS = hasattr(_Concrete, "_call_flat")
except ImportError:  # pragma: no cover - depends on the TensorFlow build
    _EagerTensor, _FAST_CALLS = None, False


def _to_tensor(x):
    if isinstance(x, tf.Tensor) or _EagerTensor is None:
        return tf.convert_to_tensor(x)
    return _EagerTensor(np.asarray(x), _context.context().device_name, None)


class TensorFlowRuntime(FusedRuntime):
    def __init__(self, agent, jit_compile: bool = True):
        super().__init__(agent)
        self.groups, self.gates = split_groups(agent.optimizer_groups())
        self.trainable = [v for _, vs in self.groups for v in vs]
        self._act = tf.function(agent.acting_graph, jit_compile=jit_compile, reduce_retracing=True)
        self._update = tf.function(self._update_fn, jit_compile=jit_compile)
        self._update_act = tf.function(self._update_act_fn, jit_compile=jit_compile, reduce_retracing=True)
        self._round = tf.function(self._round_fn, jit_compile=jit_compile)
        self._round_act = tf.function(self._round_act_fn, jit_compile=jit_compile, reduce_retracing=True)
        self._targets = {}
        self._concrete = {}  # (function, batch keys, input shapes and dtypes) -> concrete function
        self.ring = None  # the device copy of an attached replay's ring: {field: tf.Variable}

    def _call(self, function, *args):
        flat = tf.nest.flatten(args)  # dicts in sorted key order, as the concrete function orders its inputs
        keys = tuple(args[0]) if isinstance(args[0], dict) else ()  # a batch's fields
        key = (function, keys, *((x.shape, x.dtype) for x in flat))
        concrete = self._concrete.get(key)
        if concrete is None:
            concrete = self._concrete[key] = function.get_concrete_function(*args)
            # The first call goes through the public API, which checks the inputs against the trace.
            return concrete(*args)
        if _FAST_CALLS:
            # The flat call skips binding the arguments to the signature and casting them
            # again (~250 us of a ~800 us DQN update-and-act): the key above already
            # matched their shapes, dtypes and fields to this trace.
            return concrete._call_flat(flat, concrete.captured_inputs)
        return concrete(*args)

    def _replay_batch(self, batch):
        """Writes an indexed batch's new rows into the ring variables, then gathers the batch from them."""
        if "index" not in batch:
            return batch
        index, inserts, fields = split_replay_batch(batch)
        for k in fields:
            self.ring[k].scatter_nd_update(inserts["index"][:, None], inserts[k])
        # Automatic control dependencies order the gathers after the writes.
        return {k: tf.gather(v, index) for k, v in self.ring.items()}

    def _on_accelerator(self):
        return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))

    def _assign_replay(self, data):
        shapes = {k: (v.shape, v.dtype) for k, v in data.items()}
        if self.ring is None or shapes != {k: (tuple(v.shape), v.dtype.as_numpy_dtype) for k, v in self.ring.items()}:
            self.ring = {k: tf.Variable(v, trainable=False) for k, v in data.items()}
            self._concrete.clear()  # traces read the variables they were traced with
        else:
            for k, v in data.items():
                self.ring[k].assign(v)

    def _update_fn(self, batch):
        return self._update_body(batch, tf.constant(True))

    def _update_body(self, batch, ok):
        """One update; ``ok=False`` (a round's earlier non-finite loss) computes the loss but applies nothing."""
        batch = self._replay_batch(batch)
        with tf.GradientTape() as tape:
            loss, metrics = self.agent.loss_graph(batch)
        grads = tape.gradient(loss, self.trainable)
        ok = tf.logical_and(ok, tf.math.is_finite(loss))

        def apply():
            start = 0
            for (opt, variables), gate in zip(self.groups, self.gates):
                group_grads = grads[start : start + len(variables)]
                start += len(variables)
                if gate is None:
                    opt.apply(group_grads, variables)
                    continue

                # A gated group (see split_groups): applied only where its batch entry says so.
                def step(opt=opt, group_grads=group_grads, variables=variables):
                    opt.apply(group_grads, variables)
                    return tf.constant(True)

                tf.cond(batch[gate] > 0.5, step, lambda: tf.constant(False))
            return tf.constant(True)

        # A non-finite loss leaves every variable as it was (see Runtime.update).
        tf.cond(ok, apply, lambda: tf.constant(False))
        return pack_metrics(self, loss, metrics)

    def _round_fn(self, batches):
        """The updates of a round as one ``while_loop`` over the batches' first axis; metrics a row per update."""
        k = tf.shape(next(iter(batches.values())))[0]
        rows = tf.TensorArray(tf.float32, size=k)
        ok = tf.constant(True)
        for i in tf.range(k):
            metrics = self._update_body({key: value[i] for key, value in batches.items()}, ok)
            ok = tf.logical_and(ok, tf.math.is_finite(metrics[0]))
            rows = rows.write(i, metrics)
        return rows.stack()

    def _round_act_fn(self, batches, obs):
        metrics = self._round_fn(batches)
        return metrics, self.agent.acting_graph(obs)

    def _update_act_fn(self, batch, obs):
        metrics = self._update_fn(batch)
        # Automatic control dependencies order these reads after the update's writes.
        return metrics, self.agent.acting_graph(obs)

    # -- FusedRuntime hooks ------------------------------------------------------
    def _convert_batch(self, batch):
        return {k: _to_tensor(v) for k, v in batch.items()}

    def _update_now(self, batch):
        return self._call(self._update, batch)

    def _round_now(self, batches):
        return self._call(self._round, batches)

    def _round_act_now(self, batches, obs):
        return self._call(self._round_act, batches, self._convert_obs(obs))

    def _update_act_now(self, batch, obs):
        return self._call(self._update_act, batch, self._convert_obs(obs))

    def _act_now(self, obs):
        return self._call(self._act, self._convert_obs(obs))

    @staticmethod
    def _convert_obs(obs):
        return tf.nest.map_structure(_to_tensor, obs)  # an array, or a tuple (recurrent state)

    def _outputs_to_numpy(self, out):
        return out.numpy() if isinstance(out, tf.Tensor) else tf.nest.map_structure(np.asarray, out)

    def _update_targets_now(self, tau):
        if tau not in self._targets:
            self._targets[tau] = tf.function(lambda: self.agent.update_targets(tau), jit_compile=True)
        self._targets[tau]()
