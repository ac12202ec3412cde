"""Gymnasium space helpers: (de)serialization for agent configs, and checks."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


def _compact(array: np.ndarray):
    """A scalar when every entry is equal (an 84x84x4 image box), else a list."""
    flat = np.asarray(array).ravel()
    if flat.size and np.all(flat == flat[0]):
        return flat[0].item()
    return np.asarray(array).tolist()


def space_to_config(space: spaces.Space) -> dict:
    """A JSON-friendly description of a ``Box`` or ``Discrete`` space."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": _compact(space.low),
            "high": _compact(space.high),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    raise TypeError(f"Cannot serialize a {type(space).__name__} space; Box and Discrete are supported.")


def space_from_config(config) -> spaces.Space:
    """Inverse of :func:`space_to_config`; spaces pass through unchanged."""
    if isinstance(config, spaces.Space):
        return config
    if config["type"] == "Discrete":
        return spaces.Discrete(config["n"], start=config.get("start", 0))
    if config["type"] == "Box":
        dtype = np.dtype(config["dtype"])
        shape = tuple(config["shape"])
        low = np.broadcast_to(np.asarray(config["low"], dtype=dtype), shape)
        high = np.broadcast_to(np.asarray(config["high"], dtype=dtype), shape)
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    raise ValueError(f"Unknown space type {config['type']!r}.")


def require(space: spaces.Space, kinds: tuple, agent: str, what: str) -> None:
    """Raises a ``TypeError`` naming the agent and the space it cannot handle."""
    if not isinstance(space, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise TypeError(
            f"{agent} needs a {names} {what} space, got {space}. "
            + {
                "action": "Pick an agent made for this action space (e.g. DDPG or PPO "
                "for continuous Box actions, DQN for Discrete actions).",
                "observation": "Wrap the env so that it emits the space this agent expects.",
            }[what]
        )


def same_space(a: spaces.Space, b: spaces.Space) -> bool:
    """True when two spaces are the same: type, shape, dtype and bounds (``Box``), size and ``start`` (``Discrete``).

    Bounds matter: a DDPG actor built for [-1, 1] would use half of Pendulum's [-2, 2].
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, spaces.Discrete):
        return a.n == b.n and a.start == b.start
    if isinstance(a, spaces.Box):
        return (
            a.shape == b.shape
            and a.dtype == b.dtype
            and np.array_equal(a.low, b.low, equal_nan=True)
            and np.array_equal(a.high, b.high, equal_nan=True)
        )
    return a == b


def env_spaces(env) -> tuple[spaces.Space, spaces.Space]:
    """``(observation_space, action_space)`` of one env, also for a vector env."""
    import gymnasium as gym

    if isinstance(env, gym.vector.VectorEnv):
        return env.single_observation_space, env.single_action_space
    return env.observation_space, env.action_space
