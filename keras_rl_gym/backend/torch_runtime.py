"""PyTorch runtime: Keras ops with autograd, ``torch.compile``d for long runs.

Keras on torch spends most of each call in per-op dispatch (~0.8 ms to act,
~3 ms per DQN update on a tiny MLP, 2-core CPU). ``torch.compile`` of the act
graph and of the loss forward brings those to ~0.26 ms and ~1.5 ms, but costs
~20 s of compilation per agent, so it is used only where it pays:

* ``KERAS_RL_GYM_TORCH_COMPILE=auto`` (default): compile when ``fit`` is asked
  for at least 20,000 env steps;
* ``KERAS_RL_GYM_TORCH_COMPILE=1`` / ``0``: always / never.

If compilation fails, the runtime warns and stays eager.

The optimizer step is compiled too (Keras's eager optimizer update was ~40% of a
step). Torch runs on one intra-op thread (``KERAS_RL_GYM_TORCH_THREADS`` overrides):
RL networks are small, and on a busy 2-core machine two threads made a DQN
update 10x slower (52 ms instead of 4.9 ms) through thread contention.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from keras_rl_gym.backend import Runtime, split_groups

COMPILE_MIN_STEPS = 20_000


def _as_tensor(x):
    return torch.as_tensor(np.asarray(x))


def _compile(function):
    # Only tensor guards (shapes, dtypes) are kept: re-checking every Keras
    # attribute the graph read cost ~0.7 ms a call. Safe because everything
    # that changes during training reaches the graph as a tensor (variables,
    # batch entries), never as a Python attribute.
    options = {}
    if hasattr(torch.compiler, "keep_tensor_guards_unsafe"):
        options["guard_filter_fn"] = torch.compiler.keep_tensor_guards_unsafe
    return torch.compile(function, dynamic=False, options=options)


class TorchRuntime(Runtime):
    def __init__(self, agent):
        super().__init__(agent)
        torch.set_num_threads(int(os.environ.get("KERAS_RL_GYM_TORCH_THREADS", "1")))
        self.groups, self.gates = split_groups(agent.optimizer_groups())
        self._act_fn = agent.act_graph
        self._loss_fn = agent.compute_rl_loss
        self._apply_fn = self._apply
        self.compiled = False

    def hold(self, steps: int | None = None):
        mode = os.environ.get("KERAS_RL_GYM_TORCH_COMPILE", "auto").lower()
        wanted = mode in ("1", "true", "yes") or (mode == "auto" and (steps or 0) >= COMPILE_MIN_STEPS)
        if wanted and not self.compiled:
            self._act_fn = _compile(self.agent.act_graph)
            self._loss_fn = _compile(self.agent.compute_rl_loss)
            self._apply_fn = _compile(self._apply)
            self.compiled = True

    def _fallback(self, error):
        warnings.warn(f"torch.compile failed ({error!r}); keras-rl-gym continues in eager mode.", stacklevel=3)
        self._act_fn = self.agent.act_graph
        self._loss_fn = self.agent.compute_rl_loss
        self._apply_fn = self._apply
        self.compiled = False

    def _apply(self, grads, active):
        """Applies each group whose gate is open (see split_groups).

        ``active`` holds a Python bool per group, or, under torch.compile, a bool tensor for a
        gated one. A Python bool cannot gate a compiled graph: _compile keeps tensor guards
        only, so the graph traced on TD3's first update (actor gate shut) was replayed on every
        later one and the actor never moved. The compiled graph takes the step, then keeps
        ``where(on, new, old)`` of the group's variables and optimizer state (moments, count).
        """
        for (opt, variables), group_grads, on in zip(self.groups, grads, active):
            if isinstance(on, bool):
                if on:
                    opt.apply(group_grads, variables)
                continue
            state = [*variables, *opt.variables]
            before = [v.value.clone() for v in state]
            opt.apply(group_grads, variables)
            for v, old in zip(state, before):
                v.assign(torch.where(on, v.value, old))

    def act(self, obs):
        obs = torch.utils._pytree.tree_map(_as_tensor, obs)  # an array, or a tuple (recurrent state)
        with torch.no_grad():
            try:
                out = self._act_fn(obs)
            except Exception as error:  # compilation errors surface at the first call
                if not self.compiled:
                    raise
                self._fallback(error)
                out = self._act_fn(obs)
        return torch.utils._pytree.tree_map(lambda t: t.detach().cpu().numpy(), out)

    def update(self, batch):
        # NumPy arrays would reach the loss as they are: convert first.
        batch = {k: _as_tensor(v) for k, v in batch.items()}
        try:
            loss, metrics = self._loss_fn(batch)
        except Exception as error:
            if not self.compiled:
                raise
            self._fallback(error)
            loss, metrics = self._loss_fn(batch)
        metrics = {"loss": loss, **metrics}
        # Per-item metrics (prioritized replay's TD errors) come back as arrays, the rest as floats.
        out = {k: float(v.detach()) if v.ndim == 0 else v.detach().cpu().numpy() for k, v in metrics.items()}
        # A non-finite loss leaves every variable as it was (see Runtime.update).
        if not np.isfinite(out["loss"]):
            return out
        for _, variables in self.groups:
            for v in variables:
                v.value.grad = None
        loss.backward()
        grads = [[v.value.grad for v in variables] for _, variables in self.groups]
        if self.compiled:
            # A loss that skips a gated group's term on its off turns (TD3's ops.cond) leaves it no
            # gradient. Zeros instead, so that the graph's inputs are tensors on every turn: the
            # tensor-only guards would not tell a None from a tensor and would replay the wrong graph.
            grads = [
                [torch.zeros_like(v.value) if g is None else g for g, v in zip(group, variables)]
                for group, (_, variables) in zip(grads, self.groups)
            ]
        if self.compiled:  # gates as tensors, taken inside the graph (see _apply)
            active = tuple(True if gate is None else batch[gate] > 0.5 for gate in self.gates)
        else:
            active = tuple(gate is None or bool(batch[gate] > 0.5) for gate in self.gates)
        with torch.no_grad():
            try:
                self._apply_fn(grads, active)
            except Exception as error:
                if not self.compiled:
                    raise
                self._fallback(error)
                self._apply_fn(grads, active)
        return out

    def update_targets(self, tau):
        with torch.no_grad():
            self.agent.update_targets(float(tau))
