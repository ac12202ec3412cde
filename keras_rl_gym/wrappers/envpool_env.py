"""EnvPool's C++ Atari envs as a Gymnasium vector env that looks like the package's Atari chain.

``make_atari_vec_env(env_id, num_envs, backend="envpool")`` lands here. EnvPool
(Weng et al., 2022) runs the emulator, frame skip, max-pooling, resizing, frame
stacking, life loss and reward clipping in C++ threads; this module only
reshapes what it returns into the conventions of
:func:`keras_rl_gym.wrappers.atari.make_atari_vec_env`'s Gymnasium chain, so
``EpisodeLoop`` (and so ``fit`` and ``evaluate``) cannot tell them apart:

* observations ``(num_envs, 84, 84, 4)`` uint8, channels last, the frame stack
  in the last axis (EnvPool stacks in the first: ``(4, 84, 84)``);
* ``NEXT_STEP`` autoreset: the step after an episode ends only resets that env;
* a life lost while training is ``terminated`` and flagged by
  ``info["life_loss"]`` / ``info["_life_loss"]``, as ``EpisodicLifeEnv`` does;
* ``info["episode"]`` / ``info["_episode"]`` hold the whole game's unclipped
  score ``r``, length ``l`` and time ``t`` at the step the game ends, as
  ``RecordEpisodeStatistics`` gives them, and never at a life loss.

This module imports Gymnasium and NumPy only; ``envpool`` is imported when a
pool is made, so ``import keras_rl_gym.wrappers.envpool_env`` costs nothing.

References:
    Weng et al., "EnvPool: A Highly Parallel Reinforcement Learning Environment
    Execution Engine", NeurIPS 2022 Datasets and Benchmarks.
"""

from __future__ import annotations

import math
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from keras_rl_gym.wrappers.atari import is_atari_env

# The ``gymnasium.make`` keyword arguments of the Gymnasium chain that have an EnvPool counterpart.
_MAKE_KWARGS = ("repeat_action_probability", "full_action_space", "max_episode_steps", "max_num_frames_per_episode")
# Seeds stay below 2**31 even after EnvPool adds the env index to them (env i is seeded with seed + i).
_SEED_RANGE = 2**31 - 2**20


def _import_envpool():
    try:
        import envpool
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "backend='envpool' needs EnvPool: pip install 'keras-rl-gym[atari]' (envpool==1.2.5)."
        ) from error
    return envpool


def envpool_task_id(env_id: str) -> str:
    """EnvPool's id for an ale-py Atari id: ``"ALE/Pong-v5"`` and ``"PongNoFrameskip-v4"`` are ``"Pong-v5"``."""
    game = gym.spec(env_id).kwargs["game"]
    return "".join(part.capitalize() for part in game.split("_")) + "-v5"


class EnvPoolAtariVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` EnvPool Atari games behind the Gymnasium chain's observations, autoreset and info.

    Made by :func:`make_envpool_atari_vec_env`, which maps the chain's
    arguments to EnvPool's; see it, and
    :func:`keras_rl_gym.wrappers.atari.make_atari_vec_env`, for what differs
    from the Gymnasium chain.

    Args:
        env_id: the ale-py id it stands for (``spec`` is that id's Gymnasium spec).
        num_envs: number of games stepped together.
        config: EnvPool's keyword arguments (``episodic_life``, ``stack_num``...), without ``num_envs`` and ``seed``.
        scale: emit float32 frames in ``[0, 1]`` rather than uint8.
        seed: EnvPool's seed for the first pool (env ``i`` gets ``seed + i``); random if None.

    Example:
        >>> venv = make_envpool_atari_vec_env("ALE/Breakout-v5", 2)
        >>> obs, info = venv.reset(seed=0)
        >>> obs.shape, obs.dtype, info["lives"].tolist()
        ((2, 84, 84, 4), dtype('uint8'), [5, 5])
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, env_id: str, num_envs: int, config: dict[str, Any], *, scale: bool = False, seed=None):
        self._envpool = _import_envpool()
        self.task_id = envpool_task_id(env_id)
        self.config = dict(config)
        self.num_envs = int(num_envs)
        self.scale = bool(scale)
        self.episodic_life = bool(self.config.get("episodic_life", False))
        self.spec = gym.spec(env_id)

        spec = self._envpool.make_spec(self.task_id, num_envs=self.num_envs, **self.config)
        stack, height, width = spec.gymnasium_observation_space.shape
        if self.scale:
            self.single_observation_space = spaces.Box(0.0, 1.0, (height, width, stack), np.float32)
        else:
            self.single_observation_space = spaces.Box(0, 255, (height, width, stack), np.uint8)
        self.single_action_space = spaces.Discrete(int(spec.gymnasium_action_space.n))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self._pool = None
        self._fresh = False  # the pool was just made and has not been reset or stepped
        self._make_pool(seed)

    def _make_pool(self, seed) -> None:
        if self._pool is not None:
            self._pool.close()
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] % _SEED_RANGE)
        self.pool_seed = int(seed) % _SEED_RANGE
        self._pool = self._envpool.make_gymnasium(
            self.task_id, num_envs=self.num_envs, seed=self.pool_seed, **self.config
        )
        self._fresh = True

    def _observation(self, obs: np.ndarray) -> np.ndarray:
        # EnvPool stacks frames first, (N, stack, H, W); the chain (and the conv network) wants them last.
        obs = np.ascontiguousarray(np.transpose(obs, (0, 2, 3, 1)))
        return obs.astype(np.float32) * np.float32(1.0 / 255.0) if self.scale else obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Resets every env; a ``seed`` rebuilds the pool with it, since EnvPool seeds its envs only when made."""
        if options:
            raise ValueError(f"The EnvPool Atari vector env takes no reset options, got {sorted(options)}.")
        if seed is not None and not (self._fresh and int(seed) % _SEED_RANGE == self.pool_seed):
            self._make_pool(seed)
        self._fresh = False
        obs, info = self._pool.reset()
        n = self.num_envs
        self._returns = np.zeros(n)
        self._lengths = np.zeros(n, dtype=np.int64)
        self._starts = np.full(n, time.perf_counter())
        self._prev_done = np.zeros(n, dtype=bool)
        return self._observation(obs), self._info(info)

    def step(self, actions):
        self._fresh = False
        # EnvPool checks the action dtype against its spec's (int32).
        obs, reward, terminated, truncated, info = self._pool.step(np.asarray(actions, dtype=np.int32))
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        # EnvPool's own flag for the real end of a game (with episodic_life, `terminated` also marks a life lost).
        game_over = np.asarray(info["terminated"], dtype=bool)
        life_loss = np.zeros(self.num_envs, dtype=bool)
        if self.episodic_life:
            # As EpisodicLifeEnv: a life lost at a truncation or at the game's end is no learning terminal of its own.
            life_loss = terminated & ~game_over & ~truncated
            terminated = game_over | life_loss
        # NEXT_STEP: the step after an episode ends is only that env's reset (no reward, no game step).
        valid = ~self._prev_done
        self._prev_done = terminated | truncated
        # EnvPool's info["reward"] is the game's own reward, before reward_clip: the true score.
        self._returns += np.where(valid, info["reward"], 0.0)
        self._lengths += valid

        out = self._info(info)
        if life_loss.any():
            out["life_loss"], out["_life_loss"] = life_loss, life_loss.copy()
        game_end = self._prev_done & ~life_loss
        if game_end.any():
            now = time.perf_counter()
            stats = {
                "r": np.where(game_end, self._returns, 0.0),
                "l": np.where(game_end, self._lengths, 0),
                "t": np.where(game_end, np.round(now - self._starts, 6), 0.0),
            }
            # The nested masks of Gymnasium's vector info, as RecordEpisodeStatistics under SyncVectorEnv gives them.
            out["episode"] = {**stats, **{f"_{key}": game_end.copy() for key in stats}}
            out["_episode"] = game_end
            self._returns[game_end] = 0.0
            self._lengths[game_end] = 0
            self._starts[game_end] = now
        return self._observation(obs), np.asarray(reward, dtype=np.float64), terminated, truncated, out

    def _info(self, info: dict) -> dict:
        lives = np.asarray(info["lives"], dtype=np.int64)
        return {"lives": lives, "_lives": np.ones(self.num_envs, dtype=bool)}

    def close_extras(self, **kwargs) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def make_envpool_atari_vec_env(
    env_id: str,
    num_envs: int,
    *,
    training: bool = True,
    frame_stack: int = 4,
    scale: bool = False,
    terminal_on_life_loss: bool | None = None,
    clip_rewards: bool | None = None,
    noop_max: int = 30,
    frame_skip: int = 4,
    screen_size: int = 84,
    fire_reset: bool = True,
    seed: int | None = None,
    num_threads: int = 0,
    **make_kwargs,
) -> EnvPoolAtariVectorEnv:
    """``make_atari_vec_env(env_id, num_envs, backend="envpool", ...)``: the chain's arguments, mapped to EnvPool's.

    The arguments from ``training`` to ``fire_reset`` mean what they mean for
    :func:`keras_rl_gym.wrappers.atari.make_atari_env`. Of its ``gymnasium.make``
    keyword arguments, ``repeat_action_probability``, ``full_action_space``,
    ``max_episode_steps`` and ``max_num_frames_per_episode`` are taken (both
    limits count emulator frames, as there; EnvPool counts agent steps, so it
    gets ``ceil(frames / frame_skip)``); the defaults are those of ``env_id``'s
    Gymnasium registration (sticky actions 0.25 for ``ALE/*-v5``, 0 for
    ``*NoFrameskip-v4``), not EnvPool's own (0).

    Args:
        seed: EnvPool's seed (env ``i`` gets ``seed + i``) until ``reset(seed=...)`` gives another.
        num_threads: EnvPool's worker threads (0: one per env, up to the cores).

    Returns:
        An :class:`EnvPoolAtariVectorEnv` of ``num_envs`` games.

    Raises:
        ValueError: ``env_id`` is no Atari id, or ``frame_stack < 1``.
        TypeError: a ``gymnasium.make`` argument EnvPool has no counterpart for (``render_mode``...).

    Example:
        >>> venv = make_envpool_atari_vec_env("ALE/Pong-v5", 8, training=False, seed=0)
        >>> venv.single_observation_space
        Box(0, 255, (84, 84, 4), uint8)
    """
    if not is_atari_env(env_id):
        raise ValueError(f"{env_id!r} is not an Atari env (an ale-py id such as 'ALE/Pong-v5').")
    if int(frame_stack) < 1:
        raise ValueError(f"frame_stack must be >= 1, got {frame_stack}.")
    unknown = sorted(set(make_kwargs) - set(_MAKE_KWARGS))
    if unknown:
        raise TypeError(
            f"backend='envpool' takes no {', '.join(unknown)} (it passes only {', '.join(_MAKE_KWARGS)} on); "
            "render_mode and videos need the default backend='gymnasium'."
        )
    spec = gym.spec(env_id)
    registered = {**spec.kwargs, "max_episode_steps": spec.max_episode_steps, **make_kwargs}
    frames = [registered[k] for k in ("max_episode_steps", "max_num_frames_per_episode") if registered.get(k)]
    training = bool(training)
    config = {
        "stack_num": int(frame_stack),
        "frame_skip": int(frame_skip),
        "noop_max": int(noop_max),
        "img_height": int(screen_size),
        "img_width": int(screen_size),
        "gray_scale": True,
        "episodic_life": training if terminal_on_life_loss is None else bool(terminal_on_life_loss),
        "reward_clip": training if clip_rewards is None else bool(clip_rewards),
        "use_fire_reset": bool(fire_reset),
        "repeat_action_probability": float(registered.get("repeat_action_probability", 0.0)),
        "full_action_space": bool(registered.get("full_action_space", False)),
        "num_threads": int(num_threads),
    }
    if frames:
        config["max_episode_steps"] = math.ceil(min(frames) / int(frame_skip))
    return EnvPoolAtariVectorEnv(env_id, num_envs, config, scale=scale, seed=seed)
