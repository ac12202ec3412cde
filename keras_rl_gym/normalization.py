"""Running normalization of observations and rewards, saved with the agent (SB3's ``VecNormalize``).

Observations: ``(obs - mean) / sqrt(var + eps)``, clipped to ``[-clip, clip]``, with the mean
and variance of every observation ``fit`` has stored so far. They are non-trainable Keras
variables of the agent (:class:`ObservationNormalizer`), so the compiled act and loss read
them, the ``.keras`` file saves them, and an exported or served policy applies them.
``fit`` keeps the exact statistics on the host (:class:`RunningStats`) and writes them into
the variables through the runtime after each env step (JAX's held state included);
``evaluate`` and ``act`` never change them.

Rewards: each reward the agent learns from is divided by the running standard deviation of
the discounted return ``R_t = gamma * R_{t-1} + r_t`` (restarted at each episode's end) and
clipped; the episode returns ``fit`` logs stay the env's own.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

EPSILON = 1e-8


class RunningStats:
    """The count, mean and (population) variance of every row given to :meth:`update`, exact.

    Batches combine by Chan et al.'s parallel form of Welford's algorithm: with ``n_a``
    rows of mean ``m_a`` and variance ``v_a`` so far and a batch of ``n_b``, ``m_b``, ``v_b``,

        n = n_a + n_b,   d = m_b - m_a,   m = m_a + d * n_b / n,
        v = (v_a * n_a + v_b * n_b + d^2 * n_a * n_b / n) / n.

    Example:
        >>> stats = RunningStats(())
        >>> stats.update(np.array([1.0, 2.0])); stats.update(np.array([3.0, 4.0]))
        >>> float(stats.mean), float(stats.var), stats.count
        (2.5, 1.25, 4.0)
    """

    def __init__(self, shape, mean=None, var=None, count=0.0):
        self.mean = np.zeros(shape, np.float64) if mean is None else np.asarray(mean, np.float64)
        self.var = np.ones(shape, np.float64) if var is None else np.asarray(var, np.float64)
        self.count = float(count)

    def update(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float64)
        n_b = len(rows)
        if n_b == 0:
            return
        m_b, v_b = rows.mean(axis=0), rows.var(axis=0)
        if self.count == 0:
            self.mean, self.var, self.count = m_b, v_b, float(n_b)
            return
        n_a, n = self.count, self.count + n_b
        delta = m_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.var = (self.var * n_a + v_b * n_b + delta**2 * n_a * n_b / n) / n
        self.count = n

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}


@keras.saving.register_keras_serializable(package="keras_rl_gym")
class ObservationNormalizer(keras.layers.Layer):
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` with non-trainable ``mean``, ``var`` and ``count``.

    Until the first statistics arrive (``count`` 0), mean 0 and variance 1: the identity, clipped.

    Args:
        shape: one observation's shape.
        clip: the normalized observation's bound.
    """

    def __init__(self, shape, clip: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.shape, self.clip = tuple(shape), float(clip)
        self.mean = self.add_weight(shape=self.shape, initializer="zeros", trainable=False, name="mean")
        self.var = self.add_weight(shape=self.shape, initializer="ones", trainable=False, name="var")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")
        self.built = True

    def call(self, obs):
        normalized = (ops.cast(obs, "float32") - self.mean) / ops.sqrt(self.var + EPSILON)
        return ops.clip(normalized, -self.clip, self.clip)

    def stats(self) -> RunningStats:
        """The statistics the variables hold, as host ``RunningStats`` to go on from."""
        mean, var, count = (ops.convert_to_numpy(v) for v in (self.mean, self.var, self.count))
        return RunningStats(self.shape, mean, var, float(count))

    def values(self, stats: RunningStats) -> list:
        """``[(variable, value), ...]`` that make the variables hold ``stats``."""
        return [
            (self.mean, stats.mean.astype(np.float32)),
            (self.var, stats.var.astype(np.float32)),
            (self.count, np.float32(stats.count)),
        ]

    def get_config(self):
        return {**super().get_config(), "shape": list(self.shape), "clip": self.clip}


class RewardScaler:
    """Scales rewards by the running standard deviation of the discounted return, as SB3's ``norm_reward``.

    Per env, ``R <- gamma * R + r`` (restarted after an episode's end); the statistics of
    ``R`` over every step give ``sigma``, and each reward becomes ``clip(r / sqrt(sigma^2 + eps))``.
    """

    # SB3's prior for the return's statistics: variance 1 with the weight of 1e-4 samples. As in SB3,
    # the first few rewards of a run, whose returns have almost no spread yet, come out at the clip.
    PRIOR = {"mean": 0.0, "var": 1.0, "count": 1e-4}

    def __init__(self, gamma: float, clip: float = 10.0, stats: dict | None = None):
        self.gamma, self.clip = gamma, clip
        self.stats = RunningStats((), **(stats or self.PRIOR))
        self.returns = None

    def __call__(self, reward, done, valid) -> np.ndarray:
        reward = np.asarray(reward, np.float64)
        if self.returns is None or len(self.returns) != len(reward):
            self.returns = np.zeros(len(reward))
        self.returns = np.where(valid, self.gamma * self.returns + reward, self.returns)
        self.stats.update(self.returns[valid])
        scaled = np.clip(reward / np.sqrt(self.stats.var + EPSILON), -self.clip, self.clip)
        self.returns[np.asarray(done, bool) & valid] = 0.0
        return scaled.astype(np.float32)
