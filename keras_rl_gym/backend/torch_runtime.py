"""PyTorch runtime: eager Keras ops with autograd, under ``torch.no_grad`` to act."""

from __future__ import annotations

import numpy as np
import torch

from keras_rl_gym.backend import Runtime


def _as_tensor(x):
    return torch.as_tensor(np.asarray(x))


class TorchRuntime(Runtime):
    def __init__(self, agent):
        super().__init__(agent)
        self.groups = agent.optimizer_groups()

    def act(self, obs):
        with torch.no_grad():
            out = self.agent.act_graph(_as_tensor(obs))
        return torch.utils._pytree.tree_map(lambda t: t.detach().cpu().numpy(), out)

    def update(self, batch):
        # NumPy arrays would reach the loss as they are: convert first.
        batch = {k: _as_tensor(v) for k, v in batch.items()}
        loss, metrics = self.agent.compute_rl_loss(batch)
        metrics = {"loss": loss, **metrics}
        out = {k: float(v.detach()) for k, v in metrics.items()}
        # A non-finite loss leaves every variable as it was (see Runtime.update).
        if not np.isfinite(out["loss"]):
            return out
        for _, variables in self.groups:
            for v in variables:
                v.value.grad = None
        loss.backward()
        with torch.no_grad():
            for opt, variables in self.groups:
                opt.apply([v.value.grad for v in variables], variables)
        return out

    def update_targets(self, tau):
        with torch.no_grad():
            self.agent.update_targets(float(tau))
