"""JAX runtime: jitted pure functions over held state.

Between ``hold()`` and ``release()`` the agent's state lives here as a tuple
``(trainable, non_trainable, optimizer_variables)`` of JAX arrays, as Keras's
own JAX ``fit`` keeps it: each update is one jitted call that takes the state
and returns the new one (its buffers donated), with no per-call sync into the
Keras variables. ``train_on_batch`` re-syncs every call and costs ~15x more.

While state is held, an update runs with the next act as one jitted call, and
its metrics are reported after (``FusedRuntime``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from keras import StatelessScope

from keras_rl_gym.backend import FusedRuntime, pack_metrics, split_groups, split_replay_batch


class JaxRuntime(FusedRuntime):
    def __init__(self, agent):
        super().__init__(agent)
        self.trainable = list(agent.trainable_variables)
        self.non_trainable = list(agent.non_trainable_variables)
        self.groups, self.gates = split_groups(agent.optimizer_groups())
        position = {id(v): i for i, v in enumerate(self.trainable)}
        self.group_index = [[position[id(v)] for v in vs] for _, vs in self.groups]
        self.state = None
        self.ring = None  # the device copy of an attached replay's ring: {field: array}
        # The ring is donated too: its inserts then write in place.
        self._update = jax.jit(self._update_fn, donate_argnums=(0, 1))
        self._update_act = jax.jit(self._update_act_fn, donate_argnums=(0, 1))
        self._round = jax.jit(self._round_fn, donate_argnums=0)
        self._round_act = jax.jit(self._round_act_fn, donate_argnums=0)
        self._act = jax.jit(self._act_fn)
        self._targets = jax.jit(self._targets_fn, static_argnums=1, donate_argnums=0)

    # -- state -------------------------------------------------------------
    def _read_variables(self):
        # Copies: donation then invalidates only our buffers, never the ones
        # the Keras variables still point at.
        copy = lambda vs: [jnp.array(v.value, copy=True) for v in vs]  # noqa: E731
        return (
            copy(self.trainable),
            copy(self.non_trainable),
            [copy(opt.variables) for opt, _ in self.groups],
        )

    def hold(self, steps=None):
        super().hold(steps)
        self.state = self._read_variables()

    def sync(self):
        super().sync()
        if self.state is None:
            return
        # Copies again: a Keras variable keeps the array it is given, and the next
        # update, when fit goes on after a mid-fit sync (a checkpoint), donates it.
        trainable, non_trainable, opt_values = self.state
        pairs = [*zip(self.trainable, trainable), *zip(self.non_trainable, non_trainable)]
        for (opt, _), values in zip(self.groups, opt_values):
            pairs += zip(opt.variables, values)
        for v, x in pairs:
            v.assign(jnp.array(x, copy=True))

    def release(self):
        super().release()
        self.state = None

    def reload(self):
        if self.state is not None:
            self.state = self._read_variables()

    def assign(self, pairs):
        if self.state is None:
            return super().assign(pairs)
        position = {id(v): i for i, v in enumerate(self.non_trainable)}
        for variable, value in pairs:
            self.state[1][position[id(variable)]] = jnp.asarray(value, dtype=variable.dtype)

    def reload_learning_rates(self):
        if self.state is None:
            return
        for (opt, _), values in zip(self.groups, self.state[2]):
            for i, v in enumerate(opt.variables):
                if v is opt._learning_rate:  # a float rate's variable; a schedule has none
                    values[i] = jnp.array(v.value, copy=True)

    def _mapping(self, trainable, non_trainable):
        return list(zip(self.trainable, trainable)) + list(zip(self.non_trainable, non_trainable))

    def _new_non_trainable(self, scope, old):
        new = []
        for v, x in zip(self.non_trainable, old):
            value = scope.get_current_value(v)
            new.append(x if value is None else value)
        return new

    # -- pure functions ------------------------------------------------------
    def _act_fn(self, trainable, non_trainable, obs):
        with StatelessScope(state_mapping=self._mapping(trainable, non_trainable)):
            return self.agent.acting_graph(obs)

    def _loss_fn(self, trainable, non_trainable, batch):
        with StatelessScope(state_mapping=self._mapping(trainable, non_trainable)) as scope:
            loss, metrics = self.agent.loss_graph(batch)
        return loss, (metrics, self._new_non_trainable(scope, non_trainable))

    @staticmethod
    def _replay_batch(ring, batch):
        """Writes an indexed batch's new rows into the ring, then gathers the batch from it."""
        if "index" not in batch:
            return ring, batch
        index, inserts, fields = split_replay_batch(batch)
        # The mirror sends every field of the ring, or none (nothing new since the last update).
        ring = {**ring, **{k: ring[k].at[inserts["index"]].set(inserts[k]) for k in fields}}
        return ring, {k: v[index] for k, v in ring.items()}

    def _update_fn(self, state, ring, batch, ok=True):
        """One update; ``ok=False`` (a round's earlier non-finite loss) computes the loss but applies nothing."""
        ring, batch = self._replay_batch(ring, batch)
        trainable, non_trainable, opt_values = state
        grad_fn = jax.value_and_grad(self._loss_fn, has_aux=True)
        (loss, (metrics, new_non_trainable)), grads = grad_fn(trainable, non_trainable, batch)

        def apply(_):
            new_trainable = list(trainable)
            new_opt_values = []
            for (opt, _), gate, index, values in zip(self.groups, self.gates, self.group_index, opt_values):
                group_grads = [grads[i] for i in index]

                def step(operand, opt=opt, group_grads=group_grads):
                    values, params = operand
                    params, values = opt.stateless_apply(values, group_grads, params)
                    return list(params), list(values)

                operand = (list(values), [trainable[i] for i in index])
                if gate is None:
                    params, values = step(operand)
                else:  # a gated group (see split_groups): applied only where its batch entry says so
                    params, values = jax.lax.cond(batch[gate] > 0.5, step, lambda o: (o[1], o[0]), operand)
                for i, p in zip(index, params):
                    new_trainable[i] = p
                new_opt_values.append(list(values))
            return new_trainable, list(new_non_trainable), new_opt_values

        def keep(_):
            return list(trainable), list(non_trainable), [list(values) for values in opt_values]

        # A non-finite loss leaves the state as it was (see Runtime.update). A
        # conditional, not a select per leaf: selecting between old and new
        # values of donated buffers made XLA copy every optimizer slot first
        # (~15% of the update's time on a small MLP).
        new_state = jax.lax.cond(jnp.logical_and(ok, jnp.isfinite(loss)), apply, keep, None)
        # One vector: one host transfer per update instead of one per metric.
        return new_state, ring, pack_metrics(self, loss, metrics)

    def _update_act_fn(self, state, ring, batch, obs):
        state, ring, metrics = self._update_fn(state, ring, batch)
        trainable, non_trainable, _ = state
        return state, ring, metrics, self._act_fn(trainable, non_trainable, obs)

    def _round_fn(self, state, batches):
        """The updates of a round as one ``lax.scan`` over the batches' first axis; metrics a row per update."""

        def step(carry, batch):
            state, ok = carry
            state, _, metrics = self._update_fn(state, None, batch, ok)
            return (state, jnp.logical_and(ok, jnp.isfinite(metrics[0]))), metrics

        (state, _), metrics = jax.lax.scan(step, (state, jnp.bool_(True)), batches)
        return state, metrics

    def _round_act_fn(self, state, batches, obs):
        state, metrics = self._round_fn(state, batches)
        trainable, non_trainable, _ = state
        return state, metrics, self._act_fn(trainable, non_trainable, obs)

    def _targets_fn(self, state, tau):
        trainable, non_trainable, opt_values = state
        with StatelessScope(state_mapping=self._mapping(trainable, non_trainable)) as scope:
            self.agent.update_targets(tau)
        return trainable, self._new_non_trainable(scope, non_trainable), opt_values

    # -- FusedRuntime hooks ------------------------------------------------------
    def _on_state(self, function, *args):
        """``self.state, out = function(self.state, *args)``; outside ``fit``, on state taken and written back now."""
        held = self.state is not None
        if not held:
            self.state = self._read_variables()
        self.state, out = function(self.state, *args)
        if not held:
            self.release()
        return out

    def _update_now(self, batch):
        def update(state):
            state, self.ring, metrics = self._update(state, self.ring, batch)
            return state, metrics

        return self._on_state(update)

    def _on_accelerator(self):
        return jax.default_backend() != "cpu"

    def _round_now(self, batches):
        return self._on_state(self._round, batches)

    def _round_act_now(self, batches, obs):
        self.state, metrics, out = self._round_act(self.state, batches, obs)
        return metrics, out

    def _assign_replay(self, data):
        # Copies: the ring is donated, and must never alias the host's arrays.
        self.ring = {k: jnp.array(v, copy=True) for k, v in data.items()}

    def _update_targets_now(self, tau):
        self._on_state(lambda state: (self._targets(state, tau), None))

    def _update_act_now(self, batch, obs):
        self.state, self.ring, metrics, out = self._update_act(self.state, self.ring, batch, obs)
        return metrics, out

    def _act_now(self, obs):
        if self.state is None:
            return self._act([v.value for v in self.trainable], [v.value for v in self.non_trainable], obs)
        trainable, non_trainable, _ = self.state
        return self._act(trainable, non_trainable, obs)

    def _outputs_to_numpy(self, out):
        return np.asarray(out) if isinstance(out, jax.Array) else jax.tree.map(np.asarray, out)
