"""``Agent``: the ``keras.Model`` every algorithm subclasses, and its ``fit`` loop."""

from __future__ import annotations

import math
import os
import time
from collections import deque

import gymnasium as gym
import keras
import numpy as np

from keras_rl_gym import backend as rl_backend
from keras_rl_gym.spaces import same_space, space_from_config, space_to_config


def masked_mean(x, mask):
    """Mean of ``x`` (in ``keras.ops``) over the entries where ``mask`` is 1 (padding has mask 0)."""
    mask = keras.ops.cast(mask, x.dtype)
    return keras.ops.sum(x * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


class NonFiniteLossError(FloatingPointError):
    """Raised by ``fit`` when a loss is NaN or infinite.

    The offending update is not applied; the agent keeps its last finite
    weights, and ``fit`` saves them to ``checkpoint_path`` before raising.
    """

    def __init__(self, message: str, checkpoint_path: str | None = None):
        super().__init__(message)
        self.checkpoint_path = checkpoint_path


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


def _env_id(venv) -> str | None:
    spec = venv.spec or getattr(getattr(venv, "envs", [None])[0], "spec", None)
    return getattr(spec, "id", None)


def _autoreset_mode(venv) -> str:
    mode = venv.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    mode = getattr(mode, "value", mode)
    if mode not in ("NextStep", "SameStep"):
        raise ValueError(
            f"Vector env autoreset mode {mode!r} is not supported; use NEXT_STEP (the default) or SAME_STEP."
        )
    return mode


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    return int(steps)


class _Callbacks:
    """Dispatches Keras callback hooks and the RL hooks keras-rl-gym adds.

    Plain ``keras.callbacks.Callback``s work unchanged; the RL hooks
    (``on_episode_end``, ``on_progress``, ``on_fit_error``) are called only on
    callbacks that define them.
    """

    def __init__(self, callbacks, agent, params):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(agent)
            cb.set_params(params)

    def __call__(self, hook, *args, **kwargs):
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if method is not None:
                method(*args, **kwargs)


# Host-side counters and schedules change every env step; Keras's tracked
# ``Layer.__setattr__`` costs ~14 us a call, which these types do not need.
# Seconds between ``on_progress`` calls.
PROGRESS_INTERVAL = 0.05

_UNTRACKED = (bool, int, float, type(None), np.integer, np.floating, np.bool_, np.ndarray)


class Agent(keras.Model):
    """Base class of every keras-rl-gym agent: a ``keras.Model`` that can ``fit`` an env.

    An algorithm subclasses ``Agent`` and writes, in ``keras.ops``:

    * ``call(obs)``: the network output (Q-values, logits...);
    * ``act_graph(obs)``: what acting needs from the networks, compiled by the backend;
    * ``compute_rl_loss(batch)``: ``(loss, metrics)`` on a dict of arrays;
    * ``update_targets(tau)`` if it has target networks;

    and, on the host in NumPy, how it explores (``_explore``), what it stores
    (``_observe``) and when it trains (``_train``). ``fit`` runs the loop that
    ties these together, the same for every algorithm.

    Args:
        observation_space: the env's (single) observation space.
        action_space: the env's (single) action space.
        gamma: discount factor.
        seed: seeds weights (``keras.utils.set_random_seed``), exploration and
            the env's first reset in ``fit``, so a run is reproducible on one backend.
    """

    def __init__(self, observation_space, action_space, *, gamma: float = 0.99, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.observation_space = space_from_config(observation_space)
        self.action_space = space_from_config(action_space)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
        self.gamma = float(gamma)
        self.seed = seed
        if seed is not None:
            keras.utils.set_random_seed(seed)
        self.rng = np.random.default_rng(seed)
        self._runtime = None
        self.env_steps = 0
        self.updates = 0

    # Host-side attributes holding NumPy data in lists or dicts (rollouts in
    # progress...): Keras would wrap them in tracked containers.
    _host_attributes = frozenset()

    def __setattr__(self, name, value):
        if name in self._host_attributes or (isinstance(value, _UNTRACKED) and name in self.__dict__):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- what an algorithm writes ---------------------------------------------
    def act_graph(self, obs):
        raise NotImplementedError

    def compute_rl_loss(self, batch):
        raise NotImplementedError

    def update_targets(self, tau: float):
        """Moves target networks toward the online ones; no targets by default."""

    def optimizer_groups(self):
        """``[(optimizer, variables)]``: one optimizer over every trainable variable by default."""
        return [(self.optimizer, self.trainable_variables)]

    def _explore(self, obs: np.ndarray, step: int) -> np.ndarray:
        """Actions to take while training, for a batch of observations."""
        raise NotImplementedError

    def _on_fit_begin(self, num_envs: int, steps: int) -> None:
        """Allocates whatever the algorithm stores (replay, rollout)."""

    def _observe(self, obs, action, reward, next_obs, terminated, truncated, valid) -> None:
        """Stores the transitions of one vector step; ``valid`` masks real ones."""
        raise NotImplementedError

    def _train(self, step: int, new_steps: int):
        """Yields the metrics of each update due at env step ``step`` (``new_steps`` just taken)."""
        return iter(())

    def _log_values(self) -> dict:
        """Scalars to log at each interval besides returns and losses (epsilon...)."""
        return {}

    # -- runtime ------------------------------------------------------------------
    @property
    def runtime(self):
        if self._runtime is None:
            self._runtime = rl_backend.make_runtime(self)
        return self._runtime

    def sync_weights(self) -> None:
        """Writes any state the backend holds during ``fit`` back into the Keras variables.

        Callbacks that read or save weights in the middle of ``fit`` call this first.
        """
        if self._runtime is not None:
            self._runtime.sync()

    def act(self, obs, training: bool = False):
        """Actions for ``obs``: one observation or a batch.

        ``training=False`` gives the greedy (deterministic) policy;
        ``training=True`` the exploring one used by ``fit``.
        """
        obs = np.asarray(obs)
        single = obs.shape == self.observation_space.shape
        batch = obs[None] if single else obs
        actions = self._explore(batch, self.env_steps) if training else self._greedy(batch)
        return actions[0] if single else actions

    def _greedy(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.runtime.act(obs))

    # -- the loop ------------------------------------------------------------------
    def fit(
        self,
        env=None,
        steps: int | None = None,
        *,
        callbacks=None,
        verbose: int = 1,
        log_every: int = 1000,
        seed: int | None = None,
        checkpoint_path: str | None = None,
        **kwargs,
    ):
        """Trains the agent on ``env`` for ``steps`` environment steps.

        Args:
            env: a ``gymnasium.Env``, a ``gymnasium.vector.VectorEnv`` (N envs
                stepped together; every sub-env step counts) or an env id.
            steps: number of environment transitions to train on.
            callbacks: ``keras.callbacks.Callback``s; keras-rl-gym's own also get
                ``on_episode_end`` and ``on_progress``.
            verbose: 1 shows a progress bar, 0 is silent.
            log_every: env steps between logged intervals (one ``History`` entry each).
            seed: seed of the env's first reset (defaults to the agent's seed).
            checkpoint_path: where a non-finite loss saves the last finite
                weights before ``fit`` raises; defaults to ``{name}-last-finite.keras``.

        Returns:
            A ``keras.callbacks.History`` whose ``history`` maps each logged
            metric (``episode_return``, ``loss``, ``epsilon``...) to one value per interval.

        Raises:
            NonFiniteLossError: a loss was NaN or infinite.
        """
        if not isinstance(env, (gym.Env, gym.vector.VectorEnv, str)):
            # Anything else is the supervised Keras API, which an agent does not offer.
            raise TypeError(
                f"{type(self).__name__}.fit expects a Gymnasium env as its first argument "
                f"(agent.fit(env, steps=...)), got {type(env).__name__}."
            )
        if kwargs:
            raise TypeError(f"Unknown argument(s) to fit: {sorted(kwargs)}.")
        steps = _check_steps(steps)
        venv = as_vector_env(env)
        self._check_env(venv)
        mode = _autoreset_mode(venv)
        n = venv.num_envs
        seed = self.seed if seed is None else seed

        history = keras.callbacks.History()
        cbs = [history, *(callbacks or [])]
        if verbose:
            from keras_rl_gym.callbacks import ProgressBar

            cbs.append(ProgressBar())
        params = {"steps": steps, "num_envs": n, "env_id": _env_id(venv), "seed": seed, "log_every": log_every}
        cbs = _Callbacks(cbs, self, params)

        self.stop_training = False
        self._on_fit_begin(n, steps)
        self._reset_policy_state(n)
        runtime = self.runtime
        runtime.hold(steps)

        obs, _ = venv.reset(seed=seed)
        episode_return = np.zeros(n)
        episode_length = np.zeros(n, dtype=np.int64)
        prev_done = np.zeros(n, dtype=bool)
        recent_returns = deque(maxlen=100)
        interval = {"returns": [], "lengths": [], "metrics": {}}
        episodes = 0
        start_step = self.env_steps
        step = 0
        epoch = 0
        next_log = log_every
        t_interval = time.perf_counter()
        next_progress = t_interval
        steps_at_interval = 0
        logs = {}

        def flush_interval():
            nonlocal t_interval, steps_at_interval, epoch, logs
            now = time.perf_counter()
            logs = {"env_steps": float(self.env_steps), "episodes": float(episodes)}
            if interval["returns"]:
                logs["episode_return"] = float(np.mean(interval["returns"]))
                logs["episode_length"] = float(np.mean(interval["lengths"]))
            for key, values in interval["metrics"].items():
                logs[key] = float(np.mean(values))
            logs.update(self._log_values())
            logs["steps_per_second"] = (step - steps_at_interval) / max(now - t_interval, 1e-9)
            cbs("on_epoch_end", epoch, logs)
            epoch += 1
            t_interval, steps_at_interval = now, step
            interval["returns"].clear()
            interval["lengths"].clear()
            interval["metrics"].clear()

        cbs("on_train_begin")
        try:
            while step < steps and not self.stop_training:
                actions = self._explore(obs, self.env_steps)
                next_obs, reward, terminated, truncated, info = venv.step(actions)
                terminated = np.asarray(terminated, dtype=bool)
                truncated = np.asarray(truncated, dtype=bool)
                done = terminated | truncated
                if mode == "SameStep":
                    # The returned obs of a finished env is already the next
                    # episode's first one; the true last obs is in info.
                    valid = np.ones(n, dtype=bool)
                    final_next = next_obs.copy()
                    for i in np.flatnonzero(done):
                        final_next[i] = info["final_obs"][i]
                else:
                    # NEXT_STEP: the step after an episode ends only resets that
                    # env (its action is ignored), so it is not a transition.
                    valid = ~prev_done
                    final_next = next_obs
                self._observe(obs, actions, reward, final_next, terminated, truncated, valid)

                episode_return += np.where(valid, reward, 0.0)
                episode_length += valid
                ended = done & valid
                if ended.any() and "life_loss" in info:
                    # A life lost in an Atari game (EpisodicLifeEnv) is a terminal
                    # for learning, not the end of the game that is logged.
                    ended &= ~(np.asarray(info["_life_loss"], bool) & np.asarray(info["life_loss"], bool))
                if ended.any():
                    # RecordEpisodeStatistics reports the true (unclipped) return
                    # when present; otherwise count it ourselves.
                    stats = info.get("episode") if isinstance(info, dict) else None
                    for i in np.flatnonzero(ended):
                        if stats is not None and info.get("_episode", np.ones(n, bool))[i]:
                            ret, length = float(stats["r"][i]), int(stats["l"][i])
                        else:
                            ret, length = float(episode_return[i]), int(episode_length[i])
                        episodes += 1
                        recent_returns.append(ret)
                        interval["returns"].append(ret)
                        interval["lengths"].append(length)
                        cbs(
                            "on_episode_end",
                            episodes - 1,
                            {"episode_return": ret, "episode_length": length, "env_steps": self.env_steps + 1},
                        )
                    episode_return[ended] = 0.0
                    episode_length[ended] = 0
                # Recurrent state restarts with each episode (and skips autoreset steps).
                self._episode_ended(done | ~valid)
                prev_done = done if mode == "NextStep" else np.zeros(n, dtype=bool)
                obs = next_obs

                n_valid = int(valid.sum())
                step += n_valid
                self.env_steps += n_valid
                for metrics in self._train(self.env_steps, n_valid):
                    self._check_finite(metrics, checkpoint_path, cbs)
                    for key, value in metrics.items():
                        interval["metrics"].setdefault(key, []).append(value)

                if step >= next_log or step >= steps:
                    flush_interval()
                    next_log += log_every
                # Progress goes out a few times a second, not every step: the
                # mean over recent returns alone costs more than a CartPole step.
                if n_valid and (step >= steps or time.perf_counter() >= next_progress):
                    next_progress = time.perf_counter() + PROGRESS_INTERVAL
                    cbs(
                        "on_progress",
                        step,
                        {
                            "episodes": episodes,
                            "recent_return": float(np.mean(recent_returns)) if recent_returns else math.nan,
                            "steps": steps,
                        },
                    )
        except BaseException:
            runtime.release()
            raise
        runtime.release()
        logs = dict(logs, trained_steps=float(self.env_steps - start_step))
        cbs("on_train_end", logs)
        return history

    def _check_env(self, venv) -> None:
        if not same_space(venv.single_observation_space, self.observation_space):
            raise ValueError(
                f"The env's observation space {venv.single_observation_space} does not match "
                f"the agent's {self.observation_space}."
            )
        if not same_space(venv.single_action_space, self.action_space):
            raise ValueError(
                f"The env's action space {venv.single_action_space} does not match the agent's {self.action_space}."
            )

    def _check_finite(self, metrics: dict, checkpoint_path, cbs) -> None:
        loss = metrics.get("loss", 0.0)
        if math.isfinite(loss):
            return
        # The runtime skipped this update, so the weights are the last finite ones.
        self.runtime.sync()
        path = checkpoint_path or f"{self.name}-last-finite.keras"
        self.save(path)
        error = NonFiniteLossError(
            f"Non-finite loss ({loss}) at env step {self.env_steps}: training stopped. "
            f"The last finite weights were saved to {os.path.abspath(path)}. "
            "Lower the learning rate, clip gradients or rewards, or check the env's rewards.",
            checkpoint_path=path,
        )
        cbs("on_fit_error", error)
        raise error

    # -- evaluation ------------------------------------------------------------
    def evaluate(self, env=None, episodes: int = 10, *, seed: int | None = None, **kwargs) -> dict:
        """Runs the greedy policy for ``episodes`` full episodes.

        Args:
            env: a ``gymnasium.Env``, vector env or env id.
            episodes: number of complete episodes to average over.
            seed: seed of the first reset.

        Returns:
            ``{"mean_return", "std_return", "mean_length", "returns"}``.
        """
        if kwargs:
            raise TypeError(f"Unknown argument(s) to evaluate: {sorted(kwargs)}.")
        if not isinstance(episodes, (int, np.integer)) or episodes <= 0:
            raise ValueError(f"episodes must be a positive integer, got {episodes!r}.")
        venv = as_vector_env(env)
        self._check_env(venv)
        returns, lengths = self._run_episodes(venv, episodes, seed)
        return {
            "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)),
            "mean_length": float(np.mean(lengths)),
            "returns": [float(r) for r in returns],
        }

    def _run_episodes(self, venv, episodes: int, seed):
        n = venv.num_envs
        mode = _autoreset_mode(venv)
        obs, _ = venv.reset(seed=seed)
        self._reset_policy_state(n)
        ret = np.zeros(n)
        length = np.zeros(n, dtype=np.int64)
        prev_done = np.zeros(n, dtype=bool)
        returns, lengths = [], []
        while len(returns) < episodes:
            obs, reward, terminated, truncated, info = venv.step(self._greedy(obs))
            done = np.asarray(terminated) | np.asarray(truncated)
            valid = ~prev_done
            ret += np.where(valid, reward, 0.0)
            length += valid
            for i in np.flatnonzero(done & valid):
                stats = info.get("episode")
                if stats is not None and info.get("_episode", np.ones(n, bool))[i]:
                    returns.append(float(stats["r"][i]))
                    lengths.append(int(stats["l"][i]))
                else:
                    returns.append(float(ret[i]))
                    lengths.append(int(length[i]))
            ret[done] = 0.0
            length[done] = 0
            self._episode_ended(done | ~valid)
            prev_done = done if mode == "NextStep" else np.zeros(n, dtype=bool)
        return returns[:episodes], lengths[:episodes]

    def _reset_policy_state(self, num_envs: int) -> None:
        """Resets recurrent state before evaluation; nothing for feed-forward agents."""

    def _episode_ended(self, mask: np.ndarray) -> None:
        """Resets the recurrent state of the envs in ``mask``; nothing for feed-forward agents."""

    # -- serialization -------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "observation_space": space_to_config(self.observation_space),
            "action_space": space_to_config(self.action_space),
            "gamma": self.gamma,
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def save(self, filepath, *args, **kwargs):
        """Saves the agent (config, weights, optimizer state) in the ``.keras`` format."""
        self.sync_weights()
        return super().save(filepath, *args, **kwargs)
