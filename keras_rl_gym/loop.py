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
    """Returns ``env`` as a vector env: a one-env ``SyncVectorEnv`` for a plain env.

    A string is made with ``gymnasium.make``. The wrapper is never closed by
    keras-rl-gym, so the caller's env stays usable.
    """
    if isinstance(env, str):
        env = gym.make(env)
    if isinstance(env, gym.vector.VectorEnv):
        return env
    if isinstance(env, gym.Env):
        return gym.vector.SyncVectorEnv([lambda: env])
    raise TypeError(f"Expected a gymnasium.Env, a gymnasium.vector.VectorEnv or an env id, got {type(env).__name__}.")


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

    def reset(self, seed: int | None = None) -> None:
        n = self.num_envs
        self.obs, _ = self.venv.reset(seed=seed)
        self.returns = np.zeros(n)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.prev_done = np.zeros(n, dtype=bool)
        self._all_valid = np.ones(n, dtype=bool)

    def step(self, actions) -> Step:
        obs = self.obs
        next_obs, reward, terminated, truncated, info = self.venv.step(actions)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        if self.mode == "SameStep":
            # The returned obs of a finished env already starts its next episode.
            valid = self._all_valid
            final_next = next_obs
            if done.any():
                final_next = next_obs.copy()
                for i in np.flatnonzero(done):
                    final_next[i] = info["final_obs"][i]
            restart = done
        else:
            # NEXT_STEP: the step after an episode ends only resets that env.
            valid = ~self.prev_done
            final_next = next_obs
            restart = done | self.prev_done
            self.prev_done = done
        self.obs = next_obs

        self.returns += np.where(valid, reward, 0.0)
        self.lengths += valid
        games = []
        ended = done & valid
        if ended.any():
            games = self._games(ended, _ended_info(info, self.mode))
        return Step(obs, reward, final_next, terminated, truncated, valid, restart, int(valid.sum()), games)

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
