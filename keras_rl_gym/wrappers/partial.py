"""Partially observable variants of Gymnasium tasks, for testing agents with memory."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

# Position components (velocities dropped) of the classic-control tasks.
POSITION_INDICES = {
    "CartPole": (0, 2),  # cart position, pole angle (drops cart and pole velocities)
    "MountainCar": (0,),  # position (drops velocity)
    "Pendulum": (0, 1),  # cos and sin of the angle (drops angular velocity)
    "Acrobot": (0, 1, 2, 3),  # cos/sin of both joint angles (drops both angular velocities)
}


class RemoveVelocity(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Keeps only the position components of a ``Box`` observation: velocities must be inferred from history.

    CartPole-v1 observes ``[x, x_dot, theta, theta_dot]``; without the velocities
    a memoryless policy cannot tell which way the pole is falling, while a
    recurrent one can difference consecutive observations.

    Args:
        env: the env to wrap.
        keep: indices of the observation to keep; by default the positions of
            a known classic-control task (CartPole, MountainCar, Pendulum, Acrobot).

    Example:
        >>> env = RemoveVelocity(gym.make("CartPole-v1"))
        >>> env.observation_space.shape
        (2,)
        >>> gym.make(env.spec).observation_space == env.observation_space  # the spec rebuilds the wrapper
        True
    """

    def __init__(self, env: gym.Env, keep: Sequence[int] | None = None):
        # Recorded first, as Gymnasium's wrappers do: ``env.spec`` then carries ``keep``, so
        # ``gym.make(env.spec)`` (and ``check_env``'s close check) can rebuild this wrapper.
        gym.utils.RecordConstructorArgs.__init__(self, keep=keep)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"RemoveVelocity needs a 1-D Box observation space, got {space}.")
        if keep is None:
            name = env.spec.name if env.spec is not None else type(env.unwrapped).__name__
            matches = [v for k, v in POSITION_INDICES.items() if name.startswith(k)]
            if not matches:
                raise ValueError(
                    f"RemoveVelocity does not know which components of {name!r} are velocities: pass keep=[...]. "
                    f"Known: {sorted(POSITION_INDICES)}."
                )
            keep = matches[0]
        keep = np.asarray(keep, dtype=np.int64)
        if keep.ndim != 1 or keep.size == 0 or keep.min() < 0 or keep.max() >= space.shape[0]:
            raise ValueError(f"keep must be indices into an observation of size {space.shape[0]}, got {keep.tolist()}.")
        self.keep = keep
        self.observation_space = gym.spaces.Box(space.low[keep], space.high[keep], dtype=space.dtype)

    def observation(self, observation):
        return np.asarray(observation)[self.keep]
