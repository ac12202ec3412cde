"""The one episode loop: stepping a Gymnasium vector env and keeping its episode bookkeeping.

``Agent.fit`` and ``Agent.evaluate`` (and anything else that plays episodes)
step their env through :class:`EpisodeLoop`, so the Gymnasium semantics are
written once:

* **Autoreset.** In ``NEXT_STEP`` mode (Gymnasium's default) the step after an
  episode ends only resets that env and ignores its action: it is not a
  transition (``valid`` is False there). In ``SAME_STEP`` mode the reset
  happens inside the step that ends the episode, and the true last observation
  is in ``info["final_obs"]``.
* **Final observation.** ``Step.next_obs`` is always the observation the
  transition led to, the episode's last one at an episode end; ``Step.obs_after``
  is what the agent acts on next.
* **Life loss vs game end.** An Atari life lost under ``EpisodicLifeEnv`` ends
  an episode for learning (``terminated``), flagged by ``info["life_loss"]``,
  but it is not the end of the game: ``Step.games`` lists only whole games.
* **Game statistics.** A game's return and length come from
  ``RecordEpisodeStatistics`` (true, unclipped scores) when the env has it,
  else from the loop's own sums over valid steps.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np


def as_vector_env(env) -> gym.vector.VectorEnv:
    """Returns ``env`` as a vector env: a :class:`OneEnvVector` for a plain env.

    A string is made with ``gymnasium.make``. The wrapper is never closed by
    keras-rl-gym, so the caller's env stays usable.
    """
    if isinstance(env, str):
        env = gym.make(env)
    if isinstance(env, gym.vector.VectorEnv):
        return env
    if isinstance(env, gym.Env):
        return OneEnvVector(env)
    raise TypeError(f"Expected a gymnasium.Env, a gymnasium.vector.VectorEnv or an env id, got {type(env).__name__}.")


def env_spec(env):
    """``env``'s ``EnvSpec``, else (a vector env made of envs) its first env's; ``None`` if it has none."""
    spec = getattr(env, "spec", None)
    if spec is None and isinstance(env, gym.vector.VectorEnv):
        spec = getattr(getattr(env, "envs", [None])[0], "spec", None)
    return spec


def env_config(env) -> dict | None:
    """What remakes ``env`` (an id, or a ``gymnasium.make``'d env's spec with its wrappers), as JSON data."""
    if isinstance(env, str):
        return {"env": env}
    spec = env_spec(env)
    if spec is None:
        return None
    try:
        return {"env": spec.id, "spec": spec.to_json()}
    except (TypeError, ValueError, gym.error.Error):  # a wrapper whose arguments are not JSON
        return {"env": spec.id}


def env_name(env) -> str:
    """An env's id, else its class name (the innermost env's, under wrappers), for error messages."""
    spec = env_spec(env)
    if spec is not None:
        return spec.id
    if isinstance(env, gym.vector.VectorEnv):
        env = getattr(env, "envs", [env])[0]
    return type(getattr(env, "unwrapped", env)).__name__


class OneEnvVector(gym.vector.VectorEnv):
    """One env as a vector env of size 1, with ``SyncVectorEnv``'s NEXT_STEP semantics and infos.

    ``SyncVectorEnv([lambda: env])`` costs ~43 us a step over the env's own
    (space checks, deep copies, batching through the space), four CartPole
    steps' worth; this adapter only adds a leading axis. Observations are
    copied (an env may reuse its observation array), and infos are batched by
    Gymnasium's own ``_add_info`` (with their ``_key`` masks), only when there are any.

    Example:
        >>> venv = OneEnvVector(gym.make("CartPole-v1"))
        >>> obs, info = venv.reset(seed=0)
        >>> obs.shape, venv.step(np.array([1]))[1]
        ((1, 4), array([1.]))
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, env: gym.Env):
        self.env = env
        self.envs = [env]  # as SyncVectorEnv names them
        self.num_envs = 1
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        self.observation_space = gym.vector.utils.batch_space(env.observation_space, 1)
        self.action_space = gym.vector.utils.batch_space(env.action_space, 1)
        self.metadata = dict(env.metadata, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        self.render_mode = env.render_mode
        self.spec = env.spec
        self._ended = False
        self._discrete = isinstance(env.action_space, gym.spaces.Discrete)

    def _batched(self, info: dict) -> dict:
        return self._add_info({}, info, 0) if info else {}

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._ended = False
        return np.array(obs)[None], self._batched(info)

    def step(self, actions):
        if self._ended:
            # NEXT_STEP autoreset: the step after an episode's end only resets (its action is ignored).
            obs, info = self.env.reset()
            reward, terminated, truncated = 0.0, False, False
        else:
            # A Python int for a Discrete space: its contains() check is ~10 us faster than for np.int64.
            action = int(actions[0]) if self._discrete else actions[0]
            obs, reward, terminated, truncated, info = self.env.step(action)
            if not isinstance(reward, (int, float)) and np.ndim(reward) != 0:
                # Refused as SyncVectorEnv refuses it; wrapped in one more axis it would only fail later.
                raise ValueError(
                    f"{env_name(self.env)}.step() returned a reward of shape {np.shape(reward)}; a Gymnasium "
                    "env's reward must be a scalar (a float), e.g. float(reward) or reward.item()."
                )
        self._ended = bool(terminated or truncated)
        return (
            np.array(obs)[None],
            np.array([reward], dtype=np.float64),
            np.array([terminated], dtype=bool),
            np.array([truncated], dtype=bool),
            self._batched(info),
        )

    def render(self):
        return self.env.render()

    def close_extras(self, **kwargs):
        """Leaves the env open: it is the caller's."""


def autoreset_mode(venv) -> str:
    """``"NextStep"`` or ``"SameStep"``; any other mode is refused."""
    mode = venv.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    mode = getattr(mode, "value", mode)
    if mode not in ("NextStep", "SameStep"):
        raise ValueError(
            f"Vector env autoreset mode {mode!r} is not supported; use NEXT_STEP (the default) or SAME_STEP."
        )
    return mode


class Step(NamedTuple):
    """One vector step, as the learner sees it (arrays of length ``num_envs``)."""

    obs: np.ndarray  # what the agent acted on
    reward: np.ndarray
    next_obs: np.ndarray  # where each transition led: the episode's last obs at an episode end
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray  # rows that are real transitions (not NEXT_STEP autoreset steps)
    restart: np.ndarray  # rows whose next obs starts a new episode, or that only reset: recurrent state restarts
    n_valid: int
    games: list  # (env index, return, length) of every whole game that ended at this step


def _ended_info(info: dict, mode: str) -> dict:
    # SAME_STEP vector envs put the info of an episode's last step under "final_info".
    return info.get("final_info", info) if mode == "SameStep" else info


class EpisodeLoop:
    """Steps a vector env and keeps per-env episode bookkeeping.

    Args:
        venv: a ``gymnasium.vector.VectorEnv`` (see :func:`as_vector_env`).

    Example:
        >>> import gymnasium as gym
        >>> loop = EpisodeLoop(gym.make_vec("CartPole-v1", num_envs=2))
        >>> loop.reset(seed=0)
        >>> step = loop.step(loop.venv.action_space.sample())
        >>> step.n_valid
        2
    """

    def __init__(self, venv: gym.vector.VectorEnv):
        self.venv = venv
        self.num_envs = venv.num_envs
        self.mode = autoreset_mode(venv)
        self.obs = None
        # What each batch of observations must be: checked at every step (a tuple compare), so that
        # an env's fault is named here rather than met as a broadcast error in the agent.
        space = venv.single_observation_space
        self._obs_shape = None if space.shape is None else (self.num_envs, *space.shape)
        self._float_obs = np.dtype(space.dtype).kind == "f" if getattr(space, "dtype", None) is not None else False
        self.steps = 0  # vector steps since the last reset, for messages

    def _check_obs(self, obs, call: str) -> None:
        """Refuses observations of another shape than the space's, or non-finite ones, naming the env."""
        shape = getattr(obs, "shape", None)
        if self._obs_shape is not None and shape != self._obs_shape:
            space = self.venv.single_observation_space
            if shape is not None and len(shape) and shape[0] == self.num_envs:
                got = f"an observation of shape {shape[1:]}"
            else:
                got = f"observations of shape {shape} for {self.num_envs} env(s), not {self._obs_shape}"
            raise ValueError(
                f"{env_name(self.venv)}.{call}() returned {got}; its observation space {space} has shape {space.shape}."
            )
        # One pass without a temporary: a NaN or inf makes the sum non-finite; a finite sum that
        # overflowed is told apart by the exact test.
        if self._float_obs and not np.isfinite(obs.sum()) and not np.isfinite(obs).all():
            bad = np.flatnonzero(~np.isfinite(obs.reshape(self.num_envs, -1)).all(axis=1)).tolist()
            raise ValueError(
                f"{env_name(self.venv)}.{call}() returned a non-finite observation (NaN or inf) at step "
                f"{self.steps} after the loop's reset (env index {bad[0] if len(bad) == 1 else bad}): "
                "the agent cannot act on it; fix the env or wrap it to replace such values."
            )

    def reset(self, seed: int | None = None) -> None:
        n = self.num_envs
        self.obs, _ = self.venv.reset(seed=seed)
        self.steps = 0
        self._check_obs(self.obs, "reset")
        self.returns = np.zeros(n)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.prev_done = np.zeros(n, dtype=bool)
        self._prev_any_done = False
        self._all_valid = np.ones(n, dtype=bool)

    def step(self, actions) -> Step:
        obs = self.obs
        next_obs, reward, terminated, truncated, info = self.venv.step(actions)
        self.steps += 1
        self._check_obs(next_obs, "step")
        reward = np.asarray(reward)
        if reward.shape != (self.num_envs,):
            raise ValueError(
                f"{env_name(self.venv)}.step() returned rewards of shape {reward.shape}; a vector env of "
                f"{self.num_envs} env(s) gives one scalar reward per env, shape ({self.num_envs},)."
            )
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        any_done = bool(done.any())
        # Most steps end no episode and follow none: every row is then a transition,
        # and the masks below are not computed (this runs once per env step).
        valid, restart, n_valid = self._all_valid, done, self.num_envs
        final_next = next_obs
        if self.mode == "SameStep":
            # The returned obs of a finished env already starts its next episode.
            if any_done:
                final_next = next_obs.copy()
                for i in np.flatnonzero(done):
                    final_next[i] = info["final_obs"][i]
        else:
            # NEXT_STEP: the step after an episode ends only resets that env.
            if self._prev_any_done:
                valid = ~self.prev_done
                restart = done | self.prev_done
                n_valid = int(valid.sum())
            self.prev_done, self._prev_any_done = done, any_done
        self.obs = next_obs

        if n_valid == self.num_envs:
            self.returns += reward
            self.lengths += 1
        else:
            self.returns += np.where(valid, reward, 0.0)
            self.lengths += valid
        games = []
        if any_done:
            ended = done & valid
            if ended.any():
                games = self._games(ended, _ended_info(info, self.mode))
        return Step(obs, reward, final_next, terminated, truncated, valid, restart, n_valid, games)

    def _games(self, ended: np.ndarray, info: dict) -> list:
        n = self.num_envs
        if "life_loss" in info:
            # A life lost (EpisodicLifeEnv) is a terminal for learning, not a game's end.
            lost = np.asarray(info["_life_loss"], bool) & np.asarray(info["life_loss"], bool)
            ended = ended & ~lost
        stats, has_stats = info.get("episode"), info.get("_episode", np.ones(n, bool))
        games = []
        for i in np.flatnonzero(ended):
            if stats is not None and has_stats[i]:
                games.append((int(i), float(stats["r"][i]), int(stats["l"][i])))
            else:
                games.append((int(i), float(self.returns[i]), int(self.lengths[i])))
            self.returns[i] = 0.0
            self.lengths[i] = 0
        return games
