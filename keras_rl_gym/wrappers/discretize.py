"""Discretize a continuous ``Box`` observation into one ``Discrete`` state, for tabular agents.

Gymnasium's own :class:`gymnasium.wrappers.DiscretizeObservation` does the
binning; it refuses infinite bounds (CartPole's velocities are unbounded), so
the observation is first clipped into the user's finite ``[low, high]`` box.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import DiscretizeObservation, TransformObservation


def discretize_observation(
    env: gym.Env,
    n_bins: int | Sequence[int],
    low: float | Sequence[float] | None = None,
    high: float | Sequence[float] | None = None,
) -> DiscretizeObservation:
    """Wraps ``env`` so that it emits one integer state in ``Discrete(prod(n_bins))``.

    Each observation dimension ``i`` is clipped into ``[low[i], high[i]]`` and
    cut into ``n_bins[i]`` equal-width bins; the bin indices are then
    flattened (row-major) into one integer. Values at or beyond a bound land in
    the first or last bin, so every emitted code lies in the declared space,
    and every code of that space can be emitted: its ``n`` is exactly the
    number of states.

    This is the tutorial's ``DiscretizedObservationWrapper``, built on
    Gymnasium's ``DiscretizeObservation``, and registered in run configs under
    both names.

    Args:
        env: an env with a ``Box`` observation space.
        n_bins: bins per dimension: one int for every dimension, or one per dimension.
        low: lower clipping bound per dimension (a scalar applies to all);
            ``None`` uses the space's own bound, which must then be finite.
        high: upper clipping bound per dimension, as ``low``.

    Returns:
        The wrapped env (a ``gymnasium.wrappers.DiscretizeObservation``).

    Raises:
        ValueError: the observation space is not a ``Box``; ``low``/``high`` do not
            have one value per observation dimension, are not finite, or
            ``low >= high`` somewhere; or a bin count is below 1.

    Example:
        >>> import gymnasium as gym
        >>> env = discretize_observation(
        ...     gym.make("CartPole-v1"), n_bins=8, low=[-2.4, -2.0, -0.42, -3.5], high=[2.4, 2.0, 0.42, 3.5]
        ... )
        >>> env.observation_space
        Discrete(4096)
        >>> obs, _ = env.reset(seed=0)
        >>> 0 <= obs < 4096
        True
    """
    space = env.observation_space
    if not isinstance(space, spaces.Box):
        raise ValueError(f"discretize_observation needs a Box observation space, got {type(space).__name__} ({space}).")
    n_dims = int(np.prod(space.shape))
    dtype = space.dtype if np.issubdtype(space.dtype, np.floating) else np.dtype(np.float32)
    low = _bounds(low, space.low, n_dims, "low", space)
    high = _bounds(high, space.high, n_dims, "high", space)
    bad = np.flatnonzero(low >= high)
    if bad.size:
        raise ValueError(
            f"discretize_observation needs low < high in every dimension; "
            f"dimension(s) {bad.tolist()} have low={low[bad].tolist()} >= high={high[bad].tolist()}."
        )
    bins = _bins(n_bins, n_dims)

    low = low.astype(dtype).reshape(space.shape)
    high = high.astype(dtype).reshape(space.shape)
    clipped_space = spaces.Box(low=low, high=high, shape=space.shape, dtype=dtype)
    # A partial of a module-level function, not a closure: ``env.spec`` holds it, and then pickles.
    clip = functools.partial(_clip, low=low, high=high, dtype=dtype)

    # DiscretizeObservation bins the space's own bounds: give it the finite, clipped box.
    env = TransformObservation(env, clip, clipped_space)
    return DiscretizeObservation(env, bins=bins)


def _clip(obs, *, low: np.ndarray, high: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``obs`` as ``dtype``, clipped into ``[low, high]``."""
    return np.clip(np.asarray(obs, dtype=dtype), low, high)


def _bounds(value, default, n_dims: int, name: str, space) -> np.ndarray:
    """One finite float64 bound per flattened observation dimension."""
    if value is None:
        value = np.ravel(default)
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(n_dims, float(array))
    array = np.ravel(array)
    if array.size != n_dims:
        raise ValueError(
            f"discretize_observation: {name} has {array.size} value(s) but the observation space {space} "
            f"has {n_dims} dimension(s); give one {name} per dimension."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"discretize_observation: {name}={array.tolist()} is not finite; pass finite bounds "
            "(the observation is clipped into them before binning)."
        )
    return array


def _bins(n_bins, n_dims: int) -> int | tuple[int, ...]:
    """``n_bins`` checked: an int >= 1, or one such int per dimension."""
    if np.ndim(n_bins) == 0:
        values = [n_bins] * n_dims
    else:
        values = list(n_bins)
        if len(values) != n_dims:
            raise ValueError(
                f"discretize_observation: n_bins has {len(values)} values but the observation has {n_dims} dimensions."
            )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"discretize_observation: n_bins must be integers >= 1, got {n_bins!r}.")
    return int(values[0]) if np.ndim(n_bins) == 0 else tuple(int(v) for v in values)
