"""TensorFlow runtime: XLA-compiled ``tf.function``s over the Keras variables."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_rl_gym.backend import Runtime, metrics_to_floats


class TensorFlowRuntime(Runtime):
    def __init__(self, agent, jit_compile: bool = True):
        super().__init__(agent)
        self.groups = agent.optimizer_groups()
        self.trainable = [v for _, vs in self.groups for v in vs]
        self._act = tf.function(agent.act_graph, jit_compile=jit_compile, reduce_retracing=True)
        self._update = tf.function(self._update_fn, jit_compile=jit_compile)
        self._targets = {}

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
        return {"loss": loss, **metrics}

    def act(self, obs):
        out = self._act(tf.convert_to_tensor(obs))
        return tf.nest.map_structure(np.asarray, out)

    def update(self, batch):
        return metrics_to_floats(self._update(batch))

    def update_targets(self, tau):
        tau = float(tau)
        if tau not in self._targets:
            self._targets[tau] = tf.function(lambda: self.agent.update_targets(tau), jit_compile=True)
        self._targets[tau]()
