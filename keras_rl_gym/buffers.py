"""Replay and rollout storage, in NumPy on the host."""

from __future__ import annotations

import numpy as np


class ReplayBuffer:
    """A fixed-size ring buffer of transitions, sampled uniformly.

    Each field is one preallocated NumPy array; ``add`` writes a batch of
    transitions (one per vector-env slot) and overwrites the oldest when full.

    Args:
        capacity: number of transitions kept.
        fields: ``{name: (shape, dtype)}`` of one transition.
        seed: seed of the sampling generator.

    Example:
        >>> buf = ReplayBuffer(100, {"obs": ((4,), "float32"), "action": ((), "int64")})
        >>> buf.add(obs=np.zeros((2, 4)), action=np.array([0, 1]))
        >>> len(buf), buf.sample(8)["obs"].shape
        (2, (8, 4))
    """

    def __init__(self, capacity: int, fields: dict, seed: int | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}.")
        self.capacity = int(capacity)
        self.data = {name: np.zeros((self.capacity, *shape), dtype=dtype) for name, (shape, dtype) in fields.items()}
        self.position = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, **batch) -> None:
        """Appends ``n`` transitions; every field has a leading axis of length ``n``."""
        n = len(next(iter(batch.values())))
        index = (self.position + np.arange(n)) % self.capacity
        for name, array in self.data.items():
            array[index] = batch[name]
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> dict:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")
        index = self.rng.integers(0, self.size, size=batch_size)
        return {name: array[index] for name, array in self.data.items()}
