"""The Atari preprocessing chain of Nature DQN, from Gymnasium's own wrappers plus three small ones.

``make_atari_env("ALE/Pong-v5")`` returns an env whose observations are four
stacked 84x84 grayscale frames, channels last, ``(84, 84, 4)`` uint8: the
input of the conv Q-network. The chain, innermost first::

    gym.make(env_id, frameskip=1)        ALE emulator, one frame per step
    AtariPreprocessing                   no-op reset, frame skip 4 with max-pooling, grayscale 84x84
    RecordEpisodeStatistics              true game score and length in info["episode"]
    EpisodicLifeEnv        (training)    life loss -> terminated, but the game goes on
    FireResetEnv                         press FIRE after each reset (games that need it)
    TransformReward(sign)  (training)    rewards clipped to {-1, 0, 1}
    FrameStackObservation(4)             (4, 84, 84)
    ChannelsLastObservation              (84, 84, 4)

``RecordEpisodeStatistics`` sits inside the life-loss and reward-clipping
wrappers, so the returns it reports are whole games, unclipped.

``make_atari_vec_env(..., backend="envpool")`` gives the same observations and
info from EnvPool's C++ envs (:mod:`keras_rl_gym.wrappers.envpool_env`).

This module imports Gymnasium, NumPy and ale-py only, never Keras (EnvPool only
when that backend is asked for).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, RecordEpisodeStatistics, TransformReward


def _register_ale() -> None:
    """Registers the ``ALE/*`` and ``*NoFrameskip-v4`` ids (idempotent)."""
    try:
        import ale_py
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("Atari envs need ale-py: pip install 'gymnasium[atari,other]'.") from error
    gym.register_envs(ale_py)


def is_atari_env(env_id: str) -> bool:
    """Whether ``env_id`` is registered as an ale-py Atari env."""
    _register_ale()
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return False
    entry = spec.entry_point
    module = entry if isinstance(entry, str) else getattr(entry, "__module__", "")
    return module.startswith("ale_py")


# ``-ram`` in an old-style id, before its optional ``NoFrameskip``/``Deterministic`` suffix and its version.
_RAM_ID = re.compile(r"-ram(?=(NoFrameskip|Deterministic)?-v\d+$)")


def _sign_reward(reward: float) -> float:
    """The reward's sign, -1, 0 or 1: Nature DQN's reward clipping.

    A module-level function, not a lambda, so that ``env.spec`` (which holds
    ``TransformReward``'s ``func``) pickles and prints by name.
    """
    return float(np.sign(reward))


class EpisodicLifeEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Ends an episode on each life lost, while the game itself goes on (as SB3's ``EpisodicLifeEnv``).

    ``step`` reports ``terminated=True`` when a life is lost, so value
    targets do not bootstrap across a death. The following ``reset`` does not
    restart the game: it takes one no-op step and returns its observation, so
    the next "episode" is the next life. Only when the game is really over (or
    truncated), or when ``reset`` is given a seed or options, does ``reset``
    reset the env below.

    Gymnasium's ``AtariPreprocessing(terminal_on_life_loss=True)`` also
    reports a terminal on life loss, but its next ``reset`` restarts the whole
    game: the agent would never play past its first life, and a
    ``RecordEpisodeStatistics`` outside it would report one life's return.
    Placed outside ``RecordEpisodeStatistics``, this wrapper leaves the game
    statistics intact: ``info["episode"]`` appears only at the real game end.
    """

    def __init__(self, env: gym.Env):
        # As Gymnasium's own wrappers: recorded in ``env.spec``, so ``gym.make(env.spec)`` rebuilds the chain.
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self.lives = 0
        self.was_real_done = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.was_real_done = bool(terminated or truncated)
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives and not self.was_real_done:
            # A life lost, the game not over: a terminal for the learner only.
            # ``info["life_loss"]`` tells ``fit`` not to log it as an episode.
            terminated = True
            info = {**info, "life_loss": True}
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self.was_real_done or seed is not None or options is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            # The game continues: a no-op step stands in for the reset.
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(seed=seed, options=options)
        self.was_real_done = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireResetEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Presses FIRE once after each reset, for games that wait for it (Breakout launches the ball).

    Only applies when the game's action meanings include ``"FIRE"``; otherwise
    ``reset`` passes through. Without it, an agent can stall at the start of
    a game (or of a life, with ``EpisodicLifeEnv``) by never firing.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        meanings = env.unwrapped.get_action_meanings()
        self.fire_action = meanings.index("FIRE") if "FIRE" in meanings else None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self.fire_action is None:
            return obs, info
        obs, _, terminated, truncated, step_info = self.env.step(self.fire_action)
        info = {**info, **step_info}
        if terminated or truncated:
            obs, info = self.env.reset(seed=seed, options=options)
        return obs, info


class ChannelsLastObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Moves the stack axis of ``FrameStackObservation``'s ``(C, H, W)`` frames last: ``(H, W, C)``.

    Keras convolutions default to channels-last, so the Q-network reads the
    stacked frames as channels.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 3:
            raise ValueError(f"ChannelsLastObservation needs a (C, H, W) Box observation space, got {space}.")
        self.observation_space = spaces.Box(
            low=np.moveaxis(space.low, 0, -1), high=np.moveaxis(space.high, 0, -1), dtype=space.dtype
        )

    def observation(self, observation):
        return np.ascontiguousarray(np.moveaxis(np.asarray(observation), 0, -1))


def make_atari_env(
    env_id: str,
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
    **make_kwargs,
) -> gym.Env:
    """An Atari env preprocessed as in Nature DQN: ``(84, 84, frame_stack)`` stacked grayscale frames.

    Works with the ``ALE/*-v5`` ids (made with ``frameskip=1``, since
    ``AtariPreprocessing`` skips frames itself and max-pools the last two;
    their sticky actions, ``repeat_action_probability=0.25``, are kept unless
    you pass another value) and the ``*NoFrameskip-v4`` ids.

    Training and evaluation differ only in the two learning aids, which both
    default to ``training``: life loss as a terminal, and reward sign clipping.
    The returns in ``info["episode"]`` are always whole-game, unclipped scores.

    Args:
        env_id: an ale-py env id, e.g. ``"ALE/Pong-v5"`` or ``"PongNoFrameskip-v4"``.
        training: whether the env is for training (see the two flags below).
        frame_stack: frames stacked into the channel axis (1 keeps one frame, ``(84, 84, 1)``).
        scale: emit float32 frames in ``[0, 1]`` instead of uint8 (4x the memory; the
            conv network rescales uint8 itself, so the default is better).
        terminal_on_life_loss: report ``terminated`` on each life lost (``EpisodicLifeEnv``);
            defaults to ``training``.
        clip_rewards: clip rewards to their sign; defaults to ``training``.
        noop_max: up to this many random no-ops after a reset.
        frame_skip: emulator frames per agent step.
        screen_size: side of the square resized frame.
        fire_reset: press FIRE after reset in games that have it.
        **make_kwargs: passed to ``gymnasium.make`` (``repeat_action_probability``,
            ``full_action_space``, ``max_episode_steps``, ``render_mode``...).

    Returns:
        The wrapped env.

    Raises:
        ValueError: ``env_id`` is not an Atari env, or ``frame_stack < 1``.

    Example:
        >>> env = make_atari_env("ALE/Pong-v5")
        >>> obs, _ = env.reset(seed=0)
        >>> obs.shape, obs.dtype
        ((84, 84, 4), dtype('uint8'))
    """
    if not is_atari_env(env_id):
        raise ValueError(
            f"{env_id!r} is not an Atari env (an ale-py id such as 'ALE/Pong-v5' or 'PongNoFrameskip-v4'); "
            "make_atari_env only wraps Atari games."
        )
    if int(frame_stack) < 1:
        raise ValueError(f"frame_stack must be >= 1, got {frame_stack}.")
    terminal_on_life_loss = training if terminal_on_life_loss is None else terminal_on_life_loss
    clip_rewards = training if clip_rewards is None else clip_rewards

    # AtariPreprocessing does the frame skipping; the emulator must not skip as well.
    make_kwargs.setdefault("frameskip", 1)
    env = gym.make(env_id, **make_kwargs)
    env = AtariPreprocessing(
        env,
        noop_max=noop_max,
        frame_skip=frame_skip,
        screen_size=screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        scale_obs=scale,
    )
    # Before life loss and clipping: the statistics are whole games, true scores.
    env = RecordEpisodeStatistics(env)
    if terminal_on_life_loss:
        env = EpisodicLifeEnv(env)
    if fire_reset and "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    if clip_rewards:
        env = TransformReward(env, _sign_reward)
    env = FrameStackObservation(env, int(frame_stack))
    return ChannelsLastObservation(env)


def make_atari_vec_env(
    env_id: str, num_envs: int, vectorization_mode: str = "sync", *, backend: str = "gymnasium", **kwargs
) -> gym.vector.VectorEnv:
    """``num_envs`` Atari games preprocessed as :func:`make_atari_env` does, stepped together.

    Two backends give the same vector env as far as the learner can tell:
    observations ``(num_envs, 84, 84, frame_stack)`` uint8 (channels last, the
    frame stack in the last axis) with the same spaces, ``NEXT_STEP``
    autoreset, life loss while training as ``terminated`` flagged by
    ``info["life_loss"]``/``["_life_loss"]``, rewards sign-clipped while
    training, and the whole game's unclipped score and length in
    ``info["episode"]``/``["_episode"]`` only at the step the game ends.

    * ``backend="gymnasium"`` (the default): ``num_envs`` copies of
      ``make_atari_env(env_id, **kwargs)`` in a ``SyncVectorEnv`` or
      ``AsyncVectorEnv``.
    * ``backend="envpool"``: EnvPool's C++ Atari envs on its own threads
      (``pip install envpool``, part of the ``atari`` extra), through
      :class:`~keras_rl_gym.wrappers.envpool_env.EnvPoolAtariVectorEnv`.
      It takes ``make_atari_env``'s arguments plus ``seed`` and
      ``num_threads``; of the ``gymnasium.make`` ones only
      ``repeat_action_probability``, ``full_action_space``,
      ``max_episode_steps`` and ``max_num_frames_per_episode``. Sticky actions
      default to ``env_id``'s registration, as for the Gymnasium chain (0.25
      for ``ALE/*-v5``, 0 for ``*NoFrameskip-v4``), not to EnvPool's 0.

    What differs with ``backend="envpool"``:

    * Pixels: EnvPool resizes and max-pools in C++, and its games restart
      after a life loss its own way, so frames differ from the chain's.
    * ``info["episode"]["l"]`` counts the agent's steps in the game; the
      chain's also counts the no-op and FIRE steps its resets take (one or
      two per life), so its lengths run a few steps longer. ``info`` holds
      ``lives``, ``life_loss`` and ``episode`` only (no ``frame_number``).
    * Seeds: EnvPool seeds its envs when the pool is made, so
      ``reset(seed=s)`` rebuilds the pool (env ``i`` gets ``s + i``); runs
      are reproducible, but not the same games as the chain with that seed.
    * Time limits are counted in agent steps, ``ceil(frames / frame_skip)``
      of the frames the chain counts.
    * No ``render_mode`` (no evaluation videos: evaluate on the Gymnasium
      chain), no reset ``options``, and ``vectorization_mode`` must stay
      ``"sync"`` (EnvPool's ``num_threads`` do the parallel stepping).

    Args:
        env_id: an ale-py env id.
        num_envs: number of envs.
        vectorization_mode: ``"sync"`` (one process, ``SyncVectorEnv``) or
            ``"async"`` (one process per env, ``AsyncVectorEnv``); Gymnasium backend only.
        backend: ``"gymnasium"`` or ``"envpool"``.
        **kwargs: passed to :func:`make_atari_env` (or, for EnvPool, to
            :func:`~keras_rl_gym.wrappers.envpool_env.make_envpool_atari_vec_env`).

    Raises:
        ValueError: an unknown ``backend`` or ``vectorization_mode``, ``num_envs < 1``, a non-Atari ``env_id``.

    Example:
        >>> venv = make_atari_vec_env("ALE/Breakout-v5", 2)
        >>> venv.reset(seed=0)[0].shape
        (2, 84, 84, 4)
        >>> venv = make_atari_vec_env("ALE/Breakout-v5", 2, backend="envpool")
        >>> venv.reset(seed=0)[0].shape
        (2, 84, 84, 4)
    """
    if backend not in ("gymnasium", "envpool"):
        raise ValueError(f"backend must be 'gymnasium' or 'envpool', got {backend!r}.")
    if vectorization_mode not in ("sync", "async"):
        raise ValueError(f"vectorization_mode must be 'sync' or 'async', got {vectorization_mode!r}.")
    if int(num_envs) < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
    if not is_atari_env(env_id):
        raise ValueError(f"{env_id!r} is not an Atari env (an ale-py id such as 'ALE/Pong-v5').")
    if backend == "envpool":
        if vectorization_mode != "sync":
            raise ValueError(
                "vectorization_mode applies to backend='gymnasium' only: EnvPool steps its envs on its own "
                "threads (num_threads=...)."
            )
        # Imported here: EnvPool is optional, and only this backend loads it.
        from keras_rl_gym.wrappers.envpool_env import make_envpool_atari_vec_env

        return make_envpool_atari_vec_env(env_id, int(num_envs), **kwargs)
    # A partial, not a lambda: AsyncVectorEnv pickles the constructors.
    make_one = functools.partial(make_atari_env, env_id, **kwargs)
    vector_cls = gym.vector.AsyncVectorEnv if vectorization_mode == "async" else gym.vector.SyncVectorEnv
    return vector_cls([make_one for _ in range(int(num_envs))])


def make_atari_ram_env(
    env_id: str, *, training: bool = True, clip_rewards: bool | None = None, **make_kwargs
) -> gym.Env:
    """An Atari env observing the console's 128 bytes of RAM (``Box(0, 255, (128,), uint8)``).

    Takes an Atari id with or without ``-ram``: ``"ALE/MsPacman-v5"`` and
    ``"ALE/MsPacman-ram-v5"`` make the same env, as do ``"MsPacmanNoFrameskip-v4"``
    and ``"MsPacman-ramNoFrameskip-v4"``. Recent ale-py releases register no
    ``-ram`` ids: RAM is their ``obs_type="ram"``, so a ``-ram`` id is made as
    the id without it, and ``env.spec`` names that id. The tutorial's
    ``MsPacman-ram-v0`` is ``make_atari_ram_env("ALE/MsPacman-ram-v5")``.
    The game's own frame skip (4 for ``-v5``) and sticky actions are kept.
    ``RecordEpisodeStatistics`` reports whole-game, unclipped scores; rewards
    are sign-clipped while training (``clip_rewards`` defaults to ``training``).

    Args:
        env_id: an ale-py Atari id, e.g. ``"ALE/MsPacman-v5"`` or ``"ALE/MsPacman-ram-v5"``.
        training: whether the env is for training (rewards sign-clipped unless ``clip_rewards`` says otherwise).
        clip_rewards: clip rewards to their sign; defaults to ``training``.
        **make_kwargs: passed to ``gymnasium.make`` (``repeat_action_probability``, ``render_mode``...).

    Returns:
        The wrapped env.

    Raises:
        ValueError: ``env_id`` is not an Atari id.

    Example:
        >>> env = make_atari_ram_env("ALE/MsPacman-ram-v5")
        >>> env.observation_space, env.spec.id
        (Box(0, 255, (128,), uint8), 'ALE/MsPacman-v5')
    """
    _register_ale()
    if not is_atari_env(env_id):
        # A Gymnasium user's ``-ram`` id: the game's id without it, made with obs_type="ram" below.
        game_id = _RAM_ID.sub("", env_id)
        if game_id == env_id or not is_atari_env(game_id):
            raise ValueError(
                f"{env_id!r} is not an Atari env (expected an ale-py id such as 'ALE/MsPacman-v5' or "
                "'ALE/MsPacman-ram-v5')."
            )
        env_id = game_id
    env = RecordEpisodeStatistics(gym.make(env_id, obs_type="ram", **make_kwargs))
    if training if clip_rewards is None else clip_rewards:
        env = TransformReward(env, _sign_reward)
    return env
