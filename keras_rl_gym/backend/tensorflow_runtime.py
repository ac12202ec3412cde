"""TensorFlow runtime: XLA-compiled ``tf.function``s over the Keras variables.

As on JAX, inside ``fit`` an update waits for the next ``act`` and runs with it
as one compiled call (update, then act with the new weights), so each env step
pays for one ``tf.function`` dispatch instead of two; ``update`` then returns the
previous update's metrics. Metrics come back as one stacked vector.

Calls go to concrete functions cached by input shapes and dtypes: a
``tf.function`` call spends about twice as long matching its arguments to a
trace as the compiled computation itself takes on a small network.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_rl_gym.backend import Runtime


class TensorFlowRuntime(Runtime):
    def __init__(self, agent, jit_compile: bool = True):
        super().__init__(agent)
        self.groups = agent.optimizer_groups()
        self.trainable = [v for _, vs in self.groups for v in vs]
        self._act = tf.function(agent.act_graph, jit_compile=jit_compile, reduce_retracing=True)
        self._update = tf.function(self._update_fn, jit_compile=jit_compile)
        self._update_act = tf.function(self._update_act_fn, jit_compile=jit_compile, reduce_retracing=True)
        self._targets = {}
        self._concrete = {}  # (function, input shapes and dtypes) -> concrete function
        self._metric_names = []  # set when the update is traced
        self._held = False
        self._pending = None  # a batch whose update waits for the next act
        self._last_metrics = None  # the last update's stacked metrics

    def _call(self, function, *args):
        key = (function, *((x.shape, x.dtype) for x in tf.nest.flatten(args)))
        concrete = self._concrete.get(key)
        if concrete is None:
            concrete = self._concrete[key] = function.get_concrete_function(*args)
        return concrete(*args)

    def _update_fn(self, batch):
        with tf.GradientTape() as tape:
            loss, metrics = self.agent.compute_rl_loss(batch)
        grads = tape.gradient(loss, self.trainable)
        ok = tf.math.is_finite(loss)

        def apply():
            start = 0
            for opt, variables in self.groups:
                opt.apply(grads[start : start + len(variables)], variables)
                start += len(variables)
            return tf.constant(True)

        # A non-finite loss leaves every variable as it was (see Runtime.update).
        tf.cond(ok, apply, lambda: tf.constant(False))
        metrics = {"loss": loss, **metrics}
        self._metric_names = list(metrics)
        return tf.stack([tf.cast(v, tf.float32) for v in metrics.values()])

    def _update_act_fn(self, batch, obs):
        metrics = self._update_fn(batch)
        # Automatic control dependencies order these reads after the update's writes.
        return metrics, self.agent.act_graph(obs)

    def hold(self, steps=None):
        self._held = True

    def sync(self):
        self._flush()

    def release(self):
        self._flush()
        self._held = False
        self._last_metrics = None

    def _flush(self):
        if self._pending is not None:
            batch, self._pending = self._pending, None
            self._last_metrics = self._call(self._update, batch)

    def _take_metrics(self):
        metrics, self._last_metrics = self._last_metrics, None
        return {} if metrics is None else dict(zip(self._metric_names, metrics.numpy().tolist()))

    def act(self, obs):
        obs = tf.nest.map_structure(tf.convert_to_tensor, obs)  # an array, or a tuple (recurrent state)
        if self._pending is not None:
            batch, self._pending = self._pending, None
            self._last_metrics, out = self._call(self._update_act, batch, obs)
        else:
            out = self._call(self._act, obs)
        return out.numpy() if isinstance(out, tf.Tensor) else tf.nest.map_structure(np.asarray, out)

    def update(self, batch):
        batch = {k: tf.convert_to_tensor(v) for k, v in batch.items()}
        if not self._held:
            self._last_metrics = self._call(self._update, batch)
            return self._take_metrics()
        self._flush()
        self._pending = batch
        return self._take_metrics()

    def update_targets(self, tau):
        self._flush()
        tau = float(tau)
        if tau not in self._targets:
            self._targets[tau] = tf.function(lambda: self.agent.update_targets(tau), jit_compile=True)
        self._targets[tau]()
