"""PyTorch runtime: each computation traced once to a graph of ATen ops, compiled for long runs.

Keras on torch spends most of an eager call in Python: every ``keras.ops`` call
and layer call goes through Keras's dispatch before it reaches a torch kernel
(~15 ms per TD3 update on Pendulum's 400-300 networks, ~3 ms per DQN update on
a tiny MLP, 2-core CPU). So, as the JAX runtime does with ``jax.jit``, each
computation is written as a pure function of the variables' values, run once
under ``make_fx`` to record the ATen ops it reaches, and replayed from then on:

* the gradient: ``loss_graph`` (``compute_rl_loss``) in a ``StatelessScope`` over the given
  values, and ``torch.autograd.grad`` of it (the backward ops are recorded too);
* the optimizer step: Keras's own ``stateless_apply`` of each group, written
  into the variables in place (Keras's torch optimizers update ``foreach``-wise);
* the target update and the act.

A graph is recorded for each input signature (shapes, dtypes and the values of
the gates, see ``split_groups``) in ~0.1-0.5 s; batches are padded to a few
sizes, so a run records a handful. Replaying a recorded graph skips Keras's
Python: a TD3 update on Pendulum went from ~15 ms eager to ~7 ms, and recording
it cost 0.2 s against ~20 s for ``torch.compile`` tracing Keras's code itself.

``torch.compile`` (Inductor) of the recorded graphs fuses their kernels; it pays
on long runs only:

* ``KERAS_RL_GYM_TORCH_COMPILE=auto`` (default): compile when ``fit`` is asked
  for at least 20,000 env steps;
* ``KERAS_RL_GYM_TORCH_COMPILE=1`` / ``0``: always / never.

A function that cannot be recorded (Python control flow on a tensor's value,
such as a user network with dropout, whose seed Keras reads as a Python int)
runs eagerly through Keras instead, with a warning. Torch runs on one intra-op
thread (``KERAS_RL_GYM_TORCH_THREADS`` overrides): RL networks are small, and
on a busy 2-core machine two threads made a DQN update 10x slower (52 ms
instead of 4.9 ms) through thread contention.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
import torch
from keras import StatelessScope
from torch.fx.experimental.proxy_tensor import make_fx

from keras_rl_gym.backend import Runtime, split_groups

COMPILE_MIN_STEPS = 20_000


def _as_tensor(x):
    return torch.as_tensor(np.asarray(x))


def _signature(tree) -> tuple:
    """The keys, shapes and dtypes of a tensor, a tuple or a dict of them: what a recorded graph is specialized to."""
    if isinstance(tree, torch.Tensor):
        return tuple(tree.shape), tree.dtype
    if isinstance(tree, dict):
        return tuple((k, *_signature(v)) for k, v in tree.items())
    return tuple(_signature(t) for t in tree)


def _compile(graph):
    # Only tensor guards (shapes, dtypes): a recorded graph reads nothing but its inputs.
    options = {}
    if hasattr(torch.compiler, "keep_tensor_guards_unsafe"):
        options["guard_filter_fn"] = torch.compiler.keep_tensor_guards_unsafe
    return torch.compile(graph, dynamic=False, options=options)


def _write(targets, values) -> None:
    """Copies each new value into its variable's tensor, unless it is that tensor (updated in place)."""
    pairs = [(t, v) for t, v in zip(targets, values) if v is not None and v is not t]
    if pairs:
        torch._foreach_copy_([t for t, _ in pairs], [v for _, v in pairs])


class TorchRuntime(Runtime):
    def __init__(self, agent):
        super().__init__(agent)
        torch.set_num_threads(int(os.environ.get("KERAS_RL_GYM_TORCH_THREADS", "1")))
        self.trainable = list(agent.trainable_variables)
        self.non_trainable = list(agent.non_trainable_variables)
        self.groups, self.gates = split_groups(agent.optimizer_groups())
        position = {id(v): i for i, v in enumerate(self.trainable)}
        self.group_index = [[position[id(v)] for v in variables] for _, variables in self.groups]
        self.compiled = False  # Inductor over the recorded graphs (hold decides)
        self._graphs = {}  # (function name, signature) -> recorded graph, or None where recording failed

    def hold(self, steps: int | None = None):
        mode = os.environ.get("KERAS_RL_GYM_TORCH_COMPILE", "auto").lower()
        wanted = mode in ("1", "true", "yes") or (mode == "auto" and (steps or 0) >= COMPILE_MIN_STEPS)
        if wanted and not self.compiled:
            self.compiled = True
            self._graphs.clear()  # recorded again, then compiled

    # -- recording -------------------------------------------------------------------
    def _values(self):
        return [v.value for v in self.trainable], [v.value for v in self.non_trainable]

    def _mapping(self, trainable, non_trainable):
        return list(zip(self.trainable, trainable)) + list(zip(self.non_trainable, non_trainable))

    def _graph(self, name, function, args, key):
        """The graph of ``function(*args)`` recorded for ``key``; ``None`` if it cannot be recorded.

        ``key`` holds what the graph is specialized to besides the variables, whose
        shapes never change: the batch's or observation's shapes, host values.
        The graph runs under ``torch.no_grad``: it holds its backward ops itself.
        """
        graph = self._graphs.get((name, key), False)
        if graph is False:
            graph = self._graphs[name, key] = self._record(name, function, args)
        return graph

    def _record(self, name, function, args):
        try:
            with torch.enable_grad():
                # On fake tensors: nothing runs, and a function that writes into its inputs writes nowhere.
                graph = make_fx(lambda *a: function(*a), tracing_mode="fake")(*args)
        except Exception as error:  # noqa: BLE001 - any failure: this function runs eagerly
            warnings.warn(
                f"keras-rl-gym could not record {type(self.agent).__name__}'s {name} as a torch graph "
                f"({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}); "
                "it runs eagerly through Keras, slower.",
                stacklevel=4,
            )
            return None
        return _compile(graph) if self.compiled else graph

    # -- the pure functions recorded ------------------------------------------------------
    def _gradient_fn(self, trainable, non_trainable, batch, gates):
        """``(loss, metrics, gradients, new non-trainable values)`` at the given values."""
        trainable = [t.detach().requires_grad_(True) for t in trainable]
        with StatelessScope(state_mapping=self._mapping(trainable, non_trainable)) as scope:
            loss, metrics = self.agent.loss_graph({**batch, **gates})
        grads = torch.autograd.grad(loss, trainable, allow_unused=True)
        # A term the loss skipped (TD3's actor on a critic-only turn) leaves no gradient; its group is
        # not applied then, and zeros keep the graph's outputs all tensors.
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, trainable)]
        new = [scope.get_current_value(v) for v in self.non_trainable]
        new = [x if n is None else n for n, x in zip(new, non_trainable)]
        return loss.detach(), {k: v.detach() for k, v in metrics.items()}, grads, new

    def _apply_fn(self, trainable, opt_values, grads, active):
        """Each open group's optimizer step, written into ``trainable`` and ``opt_values`` in place."""
        for (opt, _), on, index, values in zip(self.groups, active, self.group_index, opt_values):
            if not on:
                continue  # a shut gate: its variables and optimizer state stay exactly as they were
            params = [trainable[i] for i in index]
            new_params, new_values = opt.stateless_apply(values, [grads[i] for i in index], params)
            for targets, new in ((params, new_params), (values, new_values)):
                for t, n in zip(targets, new):
                    if n is not t:
                        t.copy_(n)

    def _targets_fn(self, trainable, non_trainable, tau):
        with StatelessScope(state_mapping=self._mapping(trainable, non_trainable)) as scope:
            self.agent.update_targets(tau)
        for x, v in zip(non_trainable, self.non_trainable):
            new = scope.get_current_value(v)
            if new is not None and new is not x:
                x.copy_(new)

    def _act_fn(self, trainable, non_trainable, obs):
        with StatelessScope(state_mapping=self._mapping(trainable, non_trainable)):
            return self.agent.acting_graph(obs)

    # -- Runtime ---------------------------------------------------------------------
    def act(self, obs):
        obs = torch.utils._pytree.tree_map(_as_tensor, obs)  # an array, or a tuple (recurrent state)
        args = (*self._values(), obs)
        graph = self._graph("act", self._act_fn, args, _signature(obs))
        with torch.no_grad():
            out = self.agent.acting_graph(obs) if graph is None else graph(*args)
        return torch.utils._pytree.tree_map(lambda t: t.detach().cpu().numpy(), out)

    def update(self, batch):
        # The gates are host values (see split_groups): each setting gets its own graph.
        gates = {gate: float(np.asarray(batch[gate])) for gate in self.gates if gate is not None}
        tensors = {k: _as_tensor(v) for k, v in batch.items() if k not in gates}
        active = tuple(gate is None or gates[gate] > 0.5 for gate in self.gates)
        key = (tuple(sorted(gates.items())), _signature(tensors))
        trainable, non_trainable = self._values()
        gradient = functools.partial(self._gradient_fn, gates={k: np.float32(v) for k, v in gates.items()})
        args = (trainable, non_trainable, tensors)
        graph = self._graph("gradient", gradient, args, key)
        if graph is None:
            return self._update_eagerly(tensors, gates, active)
        with torch.no_grad():
            loss, metrics, grads, new_non_trainable = graph(*args)
        reported = self._to_floats(loss, metrics)
        # A non-finite loss leaves every variable as it was (see Runtime.update).
        if not np.isfinite(reported["loss"]):
            return reported
        _write(non_trainable, new_non_trainable)
        opt_values = [[v.value for v in opt.variables] for opt, _ in self.groups]
        args = (trainable, opt_values, list(grads))
        apply = functools.partial(self._apply_fn, active=active)
        graph = self._graph("apply", apply, args, active)
        with torch.no_grad():
            (apply if graph is None else graph)(*args)
        return reported

    def _update_eagerly(self, batch, gates, active):
        """The update through Keras's eager ops, for a loss that could not be recorded."""
        loss, metrics = self.agent.loss_graph({**batch, **{k: np.float32(v) for k, v in gates.items()}})
        reported = self._to_floats(loss, metrics)
        if not np.isfinite(reported["loss"]):
            return reported
        for _, variables in self.groups:
            for v in variables:
                v.value.grad = None
        loss.backward()
        with torch.no_grad():
            for (opt, variables), on in zip(self.groups, active):
                if on:
                    opt.apply([v.value.grad for v in variables], variables)
        return reported

    @staticmethod
    def _to_floats(loss, metrics) -> dict:
        # Per-item metrics (prioritized replay's TD errors) come back as arrays, the rest as floats.
        metrics = {"loss": loss, **metrics}
        return {k: float(v.detach()) if v.ndim == 0 else v.detach().cpu().numpy() for k, v in metrics.items()}

    def update_targets(self, tau):
        tau = float(tau)
        args = self._values()
        graph = self._graph("targets", functools.partial(self._targets_fn, tau=tau), args, tau)
        with torch.no_grad():
            if graph is None:
                self.agent.update_targets(tau)
            else:
                graph(*args)
