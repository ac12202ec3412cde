"""On-policy storage and the return/advantage estimators, in NumPy on the host.

Arrays are laid out ``(time, env)``. ``dones`` marks the last step of an episode
(terminated *or* truncated): nothing is propagated across it. Truncation is not
termination, though: the caller folds ``gamma * V(s_final)`` into the reward of a
truncated step (see :func:`bootstrap_truncated`), so the episode's value beyond
the time limit is still counted. ``valid`` masks the non-transitions that
Gymnasium's next-step autoreset inserts after each episode end.
"""

from __future__ import annotations

import numpy as np


def bootstrap_truncated(rewards, terminated, truncated, final_values, gamma: float) -> np.ndarray:
    """``r + gamma * V(s_final)`` where an episode was truncated (not terminated), else ``r``.

    A time limit says nothing about the state: the return does not stop there,
    so its tail is estimated with the critic's value of the last observation.
    """
    rewards = np.asarray(rewards, dtype=np.float32)
    cut = np.asarray(truncated, bool) & ~np.asarray(terminated, bool)
    return np.where(cut, rewards + gamma * np.asarray(final_values, np.float32), rewards)


def discounted_returns(rewards, dones, last_value, gamma: float, valid=None) -> np.ndarray:
    """Monte-Carlo returns ``G_t = r_t + gamma * G_{t+1}``, computed backwards.

    Args:
        rewards: ``(T, N)`` (or ``(T,)``) rewards.
        dones: episode ends; ``G`` restarts from 0 after each.
        last_value: ``(N,)`` value of the state after the last step, used when
            the last step is not an episode end (0 for a complete episode).
        gamma: discount factor.
        valid: mask of real transitions (others get ``G = 0``).
    """
    rewards = np.asarray(rewards, dtype=np.float32)
    dones = np.asarray(dones, dtype=bool)
    valid = np.ones_like(dones) if valid is None else np.asarray(valid, dtype=bool)
    returns = np.zeros_like(rewards)
    running = np.asarray(last_value, dtype=np.float32) * np.ones_like(rewards[0])
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running * ~dones[t]
        running = np.where(valid[t], running, 0.0)
        returns[t] = running
    return returns


def gae(rewards, values, dones, last_value, gamma: float, lam: float, valid=None):
    """Generalized Advantage Estimation (Schulman et al., 2016).

    ``delta_t = r_t + gamma * (1 - done_t) * V(s_{t+1}) - V(s_t)`` and
    ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}``; returns ``A + V``
    are the value targets. ``lam=1`` gives Monte-Carlo advantages bootstrapped at
    the end of the rollout; ``lam=0`` the one-step TD error.

    Returns:
        ``(advantages, returns)``, both shaped like ``rewards``.
    """
    rewards = np.asarray(rewards, dtype=np.float32)
    values = np.asarray(values, dtype=np.float32)
    dones = np.asarray(dones, dtype=bool)
    valid = np.ones_like(dones) if valid is None else np.asarray(valid, dtype=bool)
    advantages = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    next_value = np.asarray(last_value, dtype=np.float32) * np.ones_like(rewards[0])
    for t in reversed(range(len(rewards))):
        live = ~dones[t]
        delta = rewards[t] + gamma * next_value * live - values[t]
        running = delta + gamma * lam * live * running
        running = np.where(valid[t], running, 0.0)
        advantages[t] = running
        next_value = values[t]
    return advantages, np.where(valid, advantages + values, 0.0)


class RolloutBuffer:
    """``T`` vector steps of ``N`` envs, stored as ``(T, N, ...)`` arrays.

    Args:
        steps: vector steps per rollout.
        num_envs: envs per vector step.
        fields: ``{name: (shape, dtype)}`` of one transition.
    """

    def __init__(self, steps: int, num_envs: int, fields: dict):
        self.steps, self.num_envs = int(steps), int(num_envs)
        self.data = {
            name: np.zeros((self.steps, self.num_envs, *shape), dtype) for name, (shape, dtype) in fields.items()
        }
        self.t = 0

    @property
    def full(self) -> bool:
        return self.t >= self.steps

    def add(self, **step) -> None:
        """Writes one vector step; every field has a leading axis of ``num_envs``."""
        for name, value in step.items():
            self.data[name][self.t] = value
        self.t += 1

    def reset(self) -> None:
        self.t = 0


def padded_size(n: int, minimum: int = 32) -> int:
    """The power of two at least ``n``: variable-length batches padded to these
    sizes compile a handful of times instead of once per length."""
    return max(minimum, 1 << max(int(n) - 1, 0).bit_length())


def standardize(x: np.ndarray, axis=None) -> np.ndarray:
    """``x`` shifted and scaled to mean 0 and standard deviation 1 (advantages, returns), along ``axis``."""
    keep = axis is not None
    return (x - x.mean(axis, keepdims=keep)) / (x.std(axis, keepdims=keep) + 1e-8)


def pad_rows(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` with zero rows appended up to ``size`` rows."""
    return np.concatenate([array, np.zeros((size - len(array), *array.shape[1:]), array.dtype)])
