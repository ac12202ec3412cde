"""``Agent``: the ``keras.Model`` every algorithm subclasses, and its ``fit`` loop."""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
import random
import re
import signal
import threading
import time
import warnings
from collections import deque

import gymnasium as gym
import keras
import numpy as np
from keras import ops

from keras_rl_gym import backend as rl_backend
from keras_rl_gym.config import agent_annotations, check_type
from keras_rl_gym.loop import EpisodeLoop, as_vector_env, env_config, env_spec
from keras_rl_gym.networks import user_network
from keras_rl_gym.normalization import ObservationNormalizer, RewardScaler
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


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


# Standard Keras callbacks that cannot mean anything in an RL fit, and what to use instead.
_REFUSED_CALLBACKS = {
    "ProgbarLogger": "it counts batches of a supervised epoch; fit(verbose=1) shows a bar of env steps",
    "BackupAndRestore": "it restores epochs of a dataset; use keras_rl_gym.callbacks.Checkpoint and resume with "
    "keras.saving.load_model(path).fit(env, steps) (the CLI's --resume)",
    "OrbaxCheckpoint": "use keras.callbacks.ModelCheckpoint or keras_rl_gym.callbacks.Checkpoint (the whole agent)",
    "SwapEMAWeights": "an agent's optimizers keep no EMA weights (use_ema) to swap in",
}


class _Callbacks(keras.callbacks.CallbackList):
    """Keras's ``CallbackList``, with the RL hooks keras-rl-gym adds.

    The standard hooks mean in ``fit`` what they mean in Keras, with RL's units:
    a *batch* is one gradient update (so ``ModelCheckpoint(save_freq=N)`` counts
    N updates and ``TerminateOnNaN`` sees each update's loss), an *epoch* is one
    logged interval of ``log_every`` env steps (``EarlyStopping``, ``CSVLogger``,
    ``LearningRateScheduler`` and ``TensorBoard`` act on its logs). The RL hooks
    (``on_episode_end``, ``on_progress``, ``on_fit_error``) go to the callbacks
    that define them. Batch hooks run only when some callback overrides one:
    they would run thousands of times a second.
    """

    def __init__(self, callbacks, agent, params):
        for cb in callbacks:
            if not isinstance(cb, keras.callbacks.Callback):
                raise TypeError(f"fit's callbacks must be keras.callbacks.Callback instances, got {type(cb).__name__}.")
            why = _REFUSED_CALLBACKS.get(type(cb).__name__) if type(cb).__module__.startswith("keras.") else None
            if why:
                raise ValueError(f"{type(cb).__name__} is not supported by {type(agent).__name__}.fit: {why}.")
        super().__init__(list(callbacks), model=agent, **params)
        base = keras.callbacks.Callback
        # Keras's Callback.on_train_batch_* call on_batch_* (TerminateOnNaN overrides on_batch_end).
        self.batch_hooks = any(
            getattr(type(cb), hook) is not getattr(base, hook)
            for cb in self.callbacks
            for hook in ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
        )

    def on_batch(self, batch: int, logs: dict) -> None:
        """One update, reported: ``on_train_batch_begin`` then ``on_train_batch_end``.

        Both fire when the update's metrics come back, which on a fused runtime is
        after it ran (with the next act), so ``begin`` does not precede its computation.
        """
        if self.batch_hooks:
            self.on_train_batch_begin(batch)
            self.on_train_batch_end(batch, logs)

    def _rl_hook(self, hook, *args) -> None:
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if method is not None:
                method(*args)

    def on_episode_end(self, episode: int, logs: dict) -> None:
        self._rl_hook("on_episode_end", episode, logs)

    def on_progress(self, step: int, logs: dict) -> None:
        self._rl_hook("on_progress", step, logs)

    def due_step(self) -> float:
        """The earliest env step at which some callback asked for ``on_progress`` (its ``due_step``)."""
        return min((getattr(cb, "due_step", math.inf) for cb in self.callbacks), default=math.inf)

    def on_fit_error(self, error, logs) -> None:
        # Every callback hears of the error, even when one of them fails in turn.
        for cb in self.callbacks:
            method = getattr(cb, "on_fit_error", None)
            if method is None:
                continue
            try:
                method(error, logs)
            except Exception as cb_error:  # noqa: BLE001 - the original error is the one to raise
                warnings.warn(f"{type(cb).__name__}.on_fit_error failed: {cb_error!r}", stacklevel=3)


class _LocalSteps:
    """``fit``'s steps from an env here, through the episode loop.

    A step source gives ``fit`` its ``(actions, Step)`` pairs; Ray runners are the
    other one (``keras_rl_gym.distributed.RayRunners.connect``), with the same methods.
    """

    params = {}

    def __init__(self, agent, env):
        self.agent = agent
        self.loop = EpisodeLoop(as_vector_env(env))
        agent._check_env(self.loop.venv)
        self.num_envs = self.loop.num_envs
        self.env_id = getattr(env_spec(self.loop.venv), "id", None)
        self.env_config = env_config(env)

    def start(self, seed, end_step) -> None:
        self.loop.reset(seed)

    def step(self):
        return self.agent._explore_step(self.loop, self.agent.env_steps)

    def log_values(self) -> dict:
        return {}

    def close(self) -> None:
        """Leaves the env open: it is the caller's."""


class _Interval:
    """What ``fit`` gathers between two logs: episode returns and lengths, update metrics."""

    def __init__(self, agent, start_step: int, source_logs=dict):
        self.agent = agent
        self.source_logs = source_logs
        self.recent_returns = deque(maxlen=100)
        self.returns, self.lengths, self.metrics = [], [], {}
        self.time, self.step = time.perf_counter(), start_step
        self.last_loss = None

    def add_game(self, ret: float, length: int) -> None:
        self.returns.append(ret)
        self.lengths.append(length)
        self.recent_returns.append(ret)

    def add_metrics(self, metrics: dict) -> None:
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append(value)

    def logs(self) -> dict:
        """The interval's logs (means), as ``on_epoch_end`` gets them."""
        agent = self.agent
        logs = {"env_steps": float(agent.env_steps), "episodes": float(agent.episodes)}
        if self.returns:
            logs["episode_return"] = float(np.mean(self.returns))
            logs["episode_length"] = float(np.mean(self.lengths))
        for key, values in self.metrics.items():
            logs[key] = float(np.mean(values))
        logs.update(agent._log_values())
        logs.update(self.source_logs())
        logs["steps_per_second"] = (agent.env_steps - self.step) / max(time.perf_counter() - self.time, 1e-9)
        return logs

    def restart(self) -> None:
        self.returns, self.lengths, self.metrics = [], [], {}
        self.time, self.step = time.perf_counter(), self.agent.env_steps

    def recent_return(self) -> float:
        return float(np.mean(self.recent_returns)) if self.recent_returns else math.nan

    def progress_values(self) -> dict:
        """What a progress report shows besides the counts: the loss of the updates reported
        so far in this interval (else the last interval's), and the agent's scalars (epsilon...)."""
        losses = self.metrics.get("loss")
        if losses:
            self.last_loss = float(np.mean(losses))
        values = {} if self.last_loss is None else {"loss": self.last_loss}
        values.update(self.agent._log_values())
        return values


class _DeferredSignals:
    """Holds SIGINT (and SIGTERM, when a Python handler is set) until the loop reaches a safe point.

    A ``KeyboardInterrupt`` raised between two bytecodes of an update can
    leave a backend's held state half-swapped (JAX donates the old buffers), and
    then nothing good could be saved. Inside ``fit`` the first such signal only
    sets a flag; the loop calls the original handler at the top of its next
    step, where every variable is consistent. A second signal is not deferred:
    Ctrl-C twice stops at once. Outside the main thread nothing is deferred.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.pending = None
        self.saved = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            handler = signal.getsignal(signum) if signum is not None else None
            if callable(handler):  # a Python handler, which raises (SIG_DFL/SIG_IGN are left alone)
                self.saved[signum] = handler
                signal.signal(signum, self._defer)
        return self

    def _defer(self, signum, frame):
        if self.pending is not None:
            self.saved[signum](signum, frame)  # the second signal: stop now
        self.pending = (signum, frame)

    def check(self) -> None:
        """Runs the original handler of a deferred signal (it raises), here and now."""
        if self.pending is not None:
            (signum, frame), self.pending = self.pending, None
            self.saved[signum](signum, frame)

    def __exit__(self, *exc):
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)
        return False


# Seconds between ``on_progress`` calls.
PROGRESS_INTERVAL = 0.05

# Host-side counters and schedules change every env step; Keras's tracked
# ``Layer.__setattr__`` costs ~14 us a call, which these types do not need.
_UNTRACKED = (bool, int, float, type(None), np.integer, np.floating, np.bool_, np.ndarray)

TRAINING_STATE_FILE = "training_state.json"
REPLAY_FILE = "replay.npz"


# Rules on a hyperparameter's value, beyond its annotated type: (test, what it must be).
POSITIVE = (lambda v: v > 0, "> 0")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
ALL_POSITIVE = (lambda v: all(x > 0 for x in v), "a sequence of positive numbers")
# A learning rate: a positive number, or a keras.optimizers.schedules.LearningRateSchedule.
POSITIVE_RATE = (lambda v: not isinstance(v, numbers.Real) or v > 0, "> 0")


def between(low: float, high: float, *, open_low: bool = False, open_high: bool = False):
    """The rule ``low <= v <= high``, with either end open on request."""

    def test(v):
        return (low < v if open_low else low <= v) and (v < high if open_high else v <= high)

    return test, f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"


def one_of(*choices):
    return (lambda v: v in choices), f"one of {choices}"


def network_kind(*kinds):
    """A network argument: one of the named ``kinds``, or a user's model (or function) checked when built."""
    return (lambda v: not isinstance(v, str) or v in kinds), f"one of {kinds}, a keras.Model or a function"


# Epsilon-greedy exploration's arguments, shared by the agents that explore so.
EPSILON_RULES = {
    "epsilon_start": between(0, 1),
    "epsilon_final": between(0, 1),
    "exploration_fraction": between(0, 1),
    "epsilon_schedule": one_of("linear", "exponential"),
}


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

    The runtimes compile ``acting_graph`` and ``loss_graph``: the algorithm's own
    ``act_graph`` and ``compute_rl_loss`` on normalized observations, where the
    agent normalizes them (``normalize_observations``).

    Args:
        observation_space: the env's (single) observation space.
        action_space: the env's (single) action space.
        gamma: discount factor.
        normalize_observations: normalize each observation by the running mean and
            variance of those ``fit`` has seen (SB3's ``VecNormalize``), inside the
            compiled act and loss; the statistics are saved with the agent and applied
            by ``act``, ``evaluate``, export and MLflow serving. ``Box`` observations only.
        normalize_rewards: divide the rewards the agent learns from by the running
            standard deviation of the discounted return (SB3's ``norm_reward``); saved too.
        normalization_clip: normalized observations and rewards are clipped to ``[-c, c]``.
        seed: seeds the weights, exploration and the env's first reset in ``fit``,
            so a run is reproducible on one backend. Only the agent's own
            generators are seeded: the process's global random state is left as it was.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _seeded_init(cls.__init__)

    def __init__(
        self,
        observation_space,
        action_space,
        *,
        gamma: float = 0.99,
        normalize_observations: bool = False,
        normalize_rewards: bool = False,
        normalization_clip: float = 10.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.observation_space = space_from_config(observation_space)
        self.action_space = space_from_config(action_space)
        # Algorithms act in 0-based indices; a Discrete(n, start=s) env gets index + s.
        self._action_start = int(self.action_space.start) if isinstance(self.action_space, gym.spaces.Discrete) else 0
        # A plain dict: Keras would track a user's network in it, ahead of the agent's own networks.
        object.__setattr__(self, "_hyperparameters", {})
        self._set_hyperparameters(
            gamma=gamma,
            normalize_observations=normalize_observations,
            normalize_rewards=normalize_rewards,
            normalization_clip=normalization_clip,
            seed=seed,
        )
        self.obs_normalizer = None
        if normalize_observations:
            if not isinstance(self.observation_space, gym.spaces.Box):
                raise ValueError(
                    f"{type(self).__name__}: normalize_observations needs Box observations, "
                    f"got {self.observation_space}."
                )
            self.obs_normalizer = ObservationNormalizer(
                self.observation_space.shape, normalization_clip, name="obs_normalizer"
            )
        self._reward_scaler = None  # a RewardScaler while fitting with normalize_rewards
        self.reward_stats = None  # its statistics of the discounted return, saved with the agent
        self.rng = np.random.default_rng(seed)
        self._runtime = None
        # Training state, saved with the agent (see ``save``): a loaded agent resumes from it.
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.total_steps = None  # the horizon schedules span; set by the first fit
        # The env it was trained on, as `keras-rl-gym evaluate` rebuilds it: {"config": a run config's env
        # keys} (config.run) or {"env": id, "spec": gymnasium's EnvSpec as JSON, wrappers included} (fit).
        self.env_config = None
        self._state = None  # the acting state carried between steps (a recurrent net's h, c)
        self._save_replay = False
        self.last_checkpoint = None  # where the last failed fit saved the agent
        object.__setattr__(self, "_mlflow_run", None)  # (tracking URI, run id) of the last fit MLflowLogger logged

    # Host-side attributes holding NumPy data in lists or dicts (rollouts in
    # progress...): Keras would wrap them in tracked containers.
    _host_attributes = frozenset({"_state", "env_config", "reward_stats", "_reward_scaler"})

    def __setattr__(self, name, value):
        if name in self._host_attributes or (isinstance(value, _UNTRACKED) and name in self.__dict__):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- hyperparameters ---------------------------------------------------------
    # Each constructor argument is written once, in the signature: its annotation
    # is its type, ``hyperparameter_rules`` (merged along the class hierarchy)
    # says what values it takes, and ``get_config`` gives back what was set.
    hyperparameter_rules = {"gamma": between(0.0, 1.0), "normalization_clip": (lambda v: v > 0, "> 0")}
    # Arguments stored under another attribute name (``loss`` is keras.Model's).
    _attribute_names = {}
    # A base class's arguments that a subclass sets itself (PPO always has a critic):
    # neither a config nor get_config names them.
    _derived_hyperparameters = ()

    def _set_hyperparameters(self, values: dict | None = None, **more) -> None:
        """Checks, normalizes and stores constructor arguments (pass ``locals()``).

        Each one is checked against its annotation (``int``, ``float``, ``bool``,
        sequences, ``X | None``) and its rule, with a one-line error naming it;
        ints and floats become Python ``int``/``float``, sequences tuples. The
        value is set as an attribute and kept for ``get_config``.
        """
        cls = type(self)
        annotations, rules = _class_hyperparameters(cls)
        for name, value in {**(values or {}), **more}.items():
            if name in cls._derived_hyperparameters:
                setattr(self, name, value)
                continue
            if name not in annotations or name in ("self", "kwargs", "name"):
                continue
            check_type(f"{cls.__name__}: {name}", value, annotations[name])
            value = _normalized(value, annotations[name])
            test, what = rules.get(name, (None, None))
            if test is not None and value is not None and not test(value):
                raise ValueError(f"{cls.__name__}: {name} must be {what}, got {value!r}.")
            attribute = self._attribute_names.get(name, name)
            if isinstance(value, keras.layers.Layer):
                # A user's network: tracked by Keras only where the agent keeps it (q_network, actor...).
                object.__setattr__(self, attribute, value)
            else:
                setattr(self, attribute, value)
            self._hyperparameters[name] = value

    def _network(self, role: str, spec, default, *, inputs, output_shape) -> keras.Model:
        """The network for the constructor argument ``role``: ``default()`` for a named kind, else the user's.

        A user's network (a ``keras.Model`` or a function building one from the
        spaces) is checked on the inputs the agent feeds it and the output shape
        it reads, and is kept for ``get_config`` as the model itself, so that a
        saved agent rebuilds it without the function.
        """
        if isinstance(spec, str):
            return default()
        model = user_network(
            spec,
            self.observation_space,
            self.action_space,
            inputs=inputs,
            output_shape=output_shape,
            role=role,
            agent=type(self).__name__,
        )
        self._hyperparameters[role] = model
        return model

    # -- observation normalization (keras.ops) ------------------------------------
    def normalized(self, obs):
        """``obs`` as the networks see it: normalized where the agent normalizes observations."""
        return obs if self.obs_normalizer is None else self.obs_normalizer(obs)

    def acting_graph(self, obs):
        """What the runtimes compile to act: ``act_graph`` on normalized observations.

        A recurrent agent's ``obs`` is ``(observations, *state)``: only the observations are normalized.
        """
        if isinstance(obs, (tuple, list)):
            return self.act_graph((self.normalized(obs[0]), *obs[1:]))
        return self.act_graph(self.normalized(obs))

    # The batch entries that hold observations (a replay's obs and next_obs).
    _OBSERVATION_KEYS = ("obs", "next_obs")

    def loss_graph(self, batch):
        """What the runtimes compile to learn: ``compute_rl_loss`` on normalized observations."""
        if self.obs_normalizer is not None:
            batch = {k: self.normalized(v) if k in self._OBSERVATION_KEYS else v for k, v in batch.items()}
        return self.compute_rl_loss(batch)

    def greedy_graph(self, obs):
        """The greedy policy in ``keras.ops``: a batch of observations to the env's actions, as ``act`` gives them.

        Observations in, actions out, with everything between (the observation
        normalization, an argmax and a ``Discrete`` space's ``start``, the scaling
        of a tanh to the action bounds): what an exported policy and an
        MLflow-served model compute. An algorithm writes ``_greedy_graph`` on
        normalized observations.
        """
        return self._greedy_graph(self.normalized(obs))

    # -- what an algorithm writes ---------------------------------------------
    def act_graph(self, obs):
        raise NotImplementedError

    def _greedy_graph(self, obs):
        raise NotImplementedError(f"{type(self).__name__} has no stateless greedy policy to export or serve.")

    def _discrete_actions_graph(self, scores):
        """``argmax(scores) + start``, as the env's ``Discrete`` space takes them (int64).

        The argmax is taken of an integer mask of the maxima (the first of equal maxima, as a
        float argmax picks): Keras's float argmax on TensorFlow and JAX first tests the sign bit
        of -0.0 (``Bitcast``), which the ONNX converters write as ops ONNX Runtime rejects, and
        ``top_k`` does not go through jax2tf into a SavedModel.
        """
        best = ops.cast(ops.equal(scores, ops.max(scores, axis=-1, keepdims=True)), "int32")
        return ops.cast(ops.argmax(best, axis=-1), "int64") + self._action_start

    def _box_actions_graph(self, actions):
        """``actions`` clipped to the ``Box`` action space's bounds, in its dtype."""
        space = self.action_space
        low, high = ops.convert_to_tensor(space.low), ops.convert_to_tensor(space.high)
        return ops.cast(ops.clip(actions, low, high), str(space.dtype))

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

    def _start_acting(self, num_envs: int) -> None:
        """Sets up exploration for a run over ``num_envs`` envs (schedules along ``total_steps``, noise state).

        Apart from ``_on_fit_begin``: a Ray runner's copy of the agent explores without storing anything.
        """

    # What ``_explore`` leaves on the agent for ``_observe`` besides the actions (a policy's
    # log-probabilities and values): a Ray runner sends these along with each step.
    _acting_outputs = ()
    # Learns only from steps taken with its current weights (PPO, A2C, REINFORCE): Ray runners
    # then collect in synchronous rounds.
    on_policy = False

    def _explore_step(self, loop, step: int):
        """One exploring step of ``loop``'s vector env: ``(actions, Step)``, the actions as ``_observe`` takes them.

        What ``fit`` does each step here, and a Ray runner in its own process.
        """
        actions = self._explore(loop.obs, step)
        t = loop.step(self._to_env(actions))
        self.reset_state(t.restart)  # recurrent state restarts with each episode
        return actions, t

    def _observe(self, obs, action, reward, next_obs, terminated, truncated, valid) -> None:
        """Stores the transitions of one vector step; ``valid`` masks real ones."""
        raise NotImplementedError

    def _train(self, step: int, new_steps: int):
        """Yields the metrics of each update due at env step ``step`` (``new_steps`` just taken)."""
        return iter(())

    def _on_update_reported(self, metrics: dict) -> dict:
        """Takes an update's metrics as they come back (in update order); returns those to log.

        Per-item metrics (NumPy arrays over the batch, such as prioritized replay's TD errors)
        are the agent's to use here; what ``fit`` logs and gives callbacks is the scalars.
        """
        return {k: v for k, v in metrics.items() if not isinstance(v, np.ndarray)}

    def _log_values(self) -> dict:
        """Scalars to log at each interval besides returns and losses (epsilon...)."""
        return {}

    # -- runtime ------------------------------------------------------------------
    @property
    def replay_seed(self) -> np.random.SeedSequence | None:
        """The replay buffer's random stream, a child of ``seed`` (``SeedSequence(seed).spawn``).

        The agent's own generator is ``default_rng(seed)``: a buffer seeded with ``seed`` too
        would draw the very same numbers (its sample indices in step with the epsilon coin flips).
        A spawned child is a statistically independent stream, still fixed by ``seed``.
        """
        return None if self.seed is None else np.random.SeedSequence(self.seed).spawn(1)[0]

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

    # Keras's weight accessors, also in the middle of fit (a callback's): held state is
    # written back before a read, and taken anew after a write.
    def get_weights(self):
        self.sync_weights()
        return super().get_weights()

    def set_weights(self, weights):
        self.sync_weights()
        super().set_weights(weights)
        if self._runtime is not None:
            self._runtime.reload()

    def save_weights(self, filepath, *args, **kwargs):
        self.sync_weights()
        return super().save_weights(filepath, *args, **kwargs)

    def load_weights(self, filepath, *args, **kwargs):
        self.sync_weights()
        super().load_weights(filepath, *args, **kwargs)
        if self._runtime is not None:
            self._runtime.reload()

    def act(self, obs, training: bool = False):
        """Actions for ``obs``: one observation or a batch.

        ``training=False`` gives the greedy (deterministic) policy;
        ``training=True`` the exploring one used by ``fit``.

        Raises:
            ValueError: an observation holds NaN or inf.
        """
        obs = np.asarray(obs)
        if obs.dtype.kind in "fc" and not np.isfinite(obs).all():
            # The network would return NaN scores, and their argmax a plausible action 0.
            raise ValueError(
                f"{type(self).__name__}.act: non-finite observation (NaN or inf) in "
                f"{np.size(obs) - int(np.isfinite(obs).sum())} of {np.size(obs)} values, shape {obs.shape}."
            )
        single = obs.shape == self.observation_space.shape
        batch = obs[None] if single else obs
        actions = self._to_env(self._explore(batch, self.env_steps) if training else self._greedy(batch))
        return actions[0] if single else actions

    def _to_env(self, actions):
        """Actions as the env takes them: a ``Discrete`` space's ``start`` added to the indices."""
        return actions + self._action_start if self._action_start else actions

    def _greedy(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.runtime.act(obs))

    def train_step(self, batch: dict) -> dict:
        """One gradient update of the agent's loss on ``batch``: the hook Keras users look for.

        ``batch`` is a dict of arrays as the algorithm's ``compute_rl_loss`` reads it
        (DQN: ``obs``, ``action``, ``reward``, ``next_obs``, ``terminated``). The update
        is the backend runtime's compiled one (``jax.jit``, XLA ``tf.function`` or
        ``torch.compile``): it differentiates ``compute_rl_loss``, written once in
        ``keras.ops``, and applies the agent's optimizer(s). A non-finite loss leaves
        every variable as it was. ``fit`` calls this for each update, or runs several in a
        row as one compiled round (PPO's epochs, DQN's ``gradient_steps``); inside ``fit``
        the runtime may dispatch an update together with the next action.

        Returns:
            The update's metrics (``loss`` first) as floats.
        """
        self.updates += 1
        return self.runtime.update(batch)

    def _train_round(self, batches: dict):
        """:meth:`train_step` on each row of ``batches`` (arrays stacked along a first axis), in one compiled call.

        What ``fit`` does with several updates in a row (PPO's epochs over a rollout,
        DQN's ``gradient_steps``): one dispatch, not one per update. Yields one item per
        update, as ``_train`` does: its metrics, or ``{}`` when they come later (``drain``).
        """
        reported = self.runtime.update_round(batches)
        for i in range(len(next(iter(batches.values())))):
            self.updates += 1
            yield reported[i] if i < len(reported) else {}

    def train_on_batch(self, x=None, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """Keras's ``train_on_batch``: one :meth:`train_step` on the dict of arrays ``x``.

        Example:
            >>> from keras_rl_gym import DQNAgent
            >>> env = gym.make("CartPole-v1")
            >>> agent = DQNAgent(env.observation_space, env.action_space)
            >>> history = agent.fit(env, steps=100, verbose=0)  # fills the replay buffer
            >>> metrics = agent.train_on_batch(agent.buffer.sample(32), return_dict=True)
            >>> sorted(metrics)[:1]
            ['loss']
        """
        if not isinstance(x, dict) or y is not None or sample_weight is not None or class_weight is not None:
            raise TypeError(
                f"{type(self).__name__}.train_on_batch takes one dict of arrays (the algorithm's batch, e.g. "
                f"a replay sample), not x/y/sample_weight; got {type(x).__name__}."
            )
        metrics = self.train_step(x)
        return metrics if return_dict else list(metrics.values())

    def predict(self, x, *args, **kwargs):
        """Keras's ``predict`` of the agent's network output (Q-values, logits...), also for one observation.

        The input is checked first: on JAX a failing ``predict`` would leave the
        model's variables purged, and the agent unusable.
        """
        if isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__"):
            x = np.asarray(x)
            shape = self.observation_space.shape
            if x.shape == shape:
                return super().predict(x[None], *args, **kwargs)[0]
            if x.shape[1:] != shape:
                raise ValueError(
                    f"{type(self).__name__}.predict expects one observation of shape {shape} "
                    f"or a batch (n, {', '.join(map(str, shape))}), got shape {x.shape}."
                )
        return super().predict(x, *args, **kwargs)

    def export(self, filepath, format="tf_saved_model", verbose=None, **kwargs):
        """Exports the greedy policy: observations in, the env's actions out (see ``greedy_graph``).

        Not the raw network: the argmax, the scaling to the action bounds and any observation
        normalization are inside. ``format`` is Keras's: ``"tf_saved_model"`` or ``"onnx"``
        (see :func:`keras_rl_gym.serving.export_policy` for which backend exports which).
        """
        from keras_rl_gym.serving import export_policy

        return export_policy(self, filepath, format=format, verbose=verbose, **kwargs)

    def compile(self, *args, **kwargs):
        """Refused: an agent builds its own optimizers and loss from its constructor arguments.

        ``learning_rate=`` (a float or a ``keras.optimizers.schedules.LearningRateSchedule``),
        ``max_grad_norm=`` and the algorithm's own arguments set them; ``fit(env, steps=...)`` trains.
        """
        raise TypeError(
            f"{type(self).__name__} builds its own optimizer and loss: set them with its constructor "
            "arguments (learning_rate=..., max_grad_norm=...), then call fit(env, steps=...); compile() is not used."
        )

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
        total_steps: int | None = None,
        reset_num_steps: bool = False,
        runners=None,
        **kwargs,
    ):
        """Trains the agent on ``env`` for ``steps`` environment steps.

        A second ``fit`` (or one on a loaded agent) continues the first: the
        counters (``env_steps``, ``updates``, ``episodes``) go on, and schedules
        (epsilon, exploration noise, clip range) continue along the run's
        horizon ``total_steps`` instead of starting again. The env is reset at
        the start, with a seed that continues the run's seed stream.

        Whatever stops ``fit`` early (an env error, ``KeyboardInterrupt``, a
        failing callback, a non-finite loss) goes through one path: held
        weights are written back, the agent is saved to ``checkpoint_path``,
        every callback's ``on_fit_error(error, logs)`` hears of it with the
        partial interval's logs, and the error is raised again.

        Args:
            env: a ``gymnasium.Env``, a ``gymnasium.vector.VectorEnv`` (N envs
                stepped together; every sub-env step counts) or an env id.
            steps: number of environment transitions to train on.
            callbacks: ``keras.callbacks.Callback``s, called as Keras's
                ``CallbackList`` calls them: a batch is one gradient update, an
                epoch one interval of ``log_every`` env steps. ``ModelCheckpoint``,
                ``EarlyStopping``, ``CSVLogger``, ``LearningRateScheduler``,
                ``ReduceLROnPlateau``, ``TerminateOnNaN`` (which makes a NaN loss
                end ``fit`` normally instead of raising), ``TensorBoard`` and
                ``LambdaCallback``, ``RemoteMonitor`` work; ``ProgbarLogger``, ``BackupAndRestore``,
                ``OrbaxCheckpoint`` and ``SwapEMAWeights`` are refused with the
                reason. keras-rl-gym's own also get ``on_episode_end``,
                ``on_progress`` and ``on_fit_error``.
            verbose: 1 shows a progress bar, 0 is silent.
            log_every: env steps between logged intervals (one ``History`` entry each).
            seed: seed of the env's reset (defaults to one derived from the
                agent's seed and ``env_steps``: the agent's seed for a first fit).
            checkpoint_path: where a failure saves the agent (its last finite
                weights) before ``fit`` raises; defaults to ``{name}-last-finite.keras``.
            total_steps: the horizon schedules span, saved with the agent;
                defaults to the one saved, or to ``env_steps + steps`` for a first fit.
            reset_num_steps: start the counters (env steps, episodes) and the
                horizon afresh, as a new run; the weights and optimizer are kept.
            runners: where the env steps are taken: ``None`` here, or
                ``keras_rl_gym.distributed.RayRunners(...)``, Ray actors stepping their own
                copies of ``env`` (an env id, a function making the env, or an env whose
                ``spec`` remakes it) with copies of the agent's acting network. The rest
                of ``fit`` (callbacks, History, progress, checkpoints) is unchanged.

        Returns:
            A ``keras.callbacks.History`` whose ``history`` maps each logged
            metric (``episode_return``, ``loss``, ``epsilon``...) to one value per interval.

        Raises:
            NonFiniteLossError: a loss was NaN or infinite.
        """
        if not isinstance(env, (gym.Env, gym.vector.VectorEnv, str)) and not (runners is not None and callable(env)):
            # Anything else is the supervised Keras API, which an agent does not offer.
            raise TypeError(
                f"{type(self).__name__}.fit expects a Gymnasium env as its first argument "
                f"(agent.fit(env, steps=...)), got {type(env).__name__}."
            )
        if kwargs:
            raise TypeError(f"Unknown argument(s) to fit: {sorted(kwargs)}.")
        steps = _check_positive("steps", steps)
        log_every = _check_positive("log_every", log_every)
        from keras_rl_gym.callbacks import check_output_paths

        # Every file fit will write, checked now rather than found unwritable after the whole run.
        check_output_paths(checkpoint_path, callbacks)
        # Where the steps come from: the env here, or Ray runners stepping their own copies of it.
        source = _LocalSteps(self, env) if runners is None else runners.connect(self, env)
        # The env saved with the agent: a run config's (config.run sets it) while it is that env.
        saved = (self.env_config or {}).get("config", {})
        if saved.get("env") != source.env_id:
            self.env_config = getattr(source, "env_config", None) or ({"env": source.env_id} if source.env_id else None)
        if reset_num_steps:
            self.env_steps, self.episodes, self.total_steps = 0, 0, None
        if total_steps is not None:
            self.total_steps = _check_positive("total_steps", total_steps)
        elif self.total_steps is None:
            self.total_steps = self.env_steps + steps
        n, start, end = source.num_envs, self.env_steps, self.env_steps + steps
        seed = self._reset_seed() if seed is None else seed
        checkpoint_path = os.fspath(checkpoint_path or f"{self.name}-last-finite.keras")

        object.__setattr__(self, "_mlflow_run", None)  # an MLflowLogger among the callbacks sets it at the end
        history = keras.callbacks.History()
        cbs = [history, *(callbacks or [])]
        if verbose:
            from keras_rl_gym.callbacks import ProgressBar

            cbs.append(ProgressBar())
        params = {"steps": steps, "num_envs": n, "env_id": source.env_id, "seed": seed, "log_every": log_every}
        cbs = _Callbacks(cbs, self, {**params, **source.params})
        interval = _Interval(self, start, source.log_values)
        self.stop_training = False
        self.last_checkpoint = None
        # Env steps of the updates whose metrics have not come back yet: a fused runtime
        # reports them an update later, and each belongs to the step it was made at.
        updates, epoch_start = deque(), self.updates

        def take(reported):
            # Each non-empty dict is the metrics of the oldest update not yet reported.
            for metrics in filter(None, reported):
                step = updates.popleft()
                metrics = self._on_update_reported(metrics)
                cbs.on_batch(self.updates - len(updates) - 1 - epoch_start, metrics)
                if math.isfinite(metrics.get("loss", 0.0)):
                    interval.add_metrics(metrics)
                elif self.stop_training:
                    # A callback (TerminateOnNaN) chose to stop: fit ends normally on the
                    # last finite weights (the runtime skipped this update and any after it).
                    warnings.warn(f"Non-finite loss at env step {step}: training stopped by a callback.", stacklevel=3)
                    return
                else:
                    self._raise_non_finite(metrics, step, checkpoint_path)

        with _DeferredSignals() as signals:
            try:
                self._on_fit_begin(n, steps)
                self._start_acting(n)
                # Normalization statistics go on from the saved ones (exact sums, on the host).
                obs_stats = None if self.obs_normalizer is None else self.obs_normalizer.stats()
                if self.normalize_rewards:
                    self._reward_scaler = RewardScaler(self.gamma, self.normalization_clip, self.reward_stats)
                self._state = self.initial_state(n)
                self.runtime.hold(steps)
                source.start(seed, end)
                cbs.on_train_begin()
                cbs.on_epoch_begin(0)
                epoch, next_log, next_progress, due = 0, start + log_every, 0.0, cbs.due_step()
                while self.env_steps < end and not self.stop_training:
                    signals.check()
                    actions, t = source.step()
                    take(self.runtime.drain())  # the act ran a waiting update: check it now
                    reward = t.reward
                    if obs_stats is not None and t.n_valid:
                        # Every observation stored counts once; the act and the loss read the new statistics.
                        obs_stats.update(t.obs[t.valid])
                        self.runtime.assign(self.obs_normalizer.values(obs_stats))
                    if self._reward_scaler is not None:
                        reward = self._reward_scaler(t.reward, t.terminated | t.truncated, t.valid)
                    self._observe(t.obs, actions, reward, t.next_obs, t.terminated, t.truncated, t.valid)
                    self.env_steps += t.n_valid
                    for _, ret, length in t.games:
                        self.episodes += 1
                        interval.add_game(ret, length)
                        game = {"episode_return": ret, "episode_length": length, "env_steps": self.env_steps}
                        cbs.on_episode_end(self.episodes - 1, game)
                    # After a batch callback's stop (TerminateOnNaN) no update runs, and the round ends, as in Keras.
                    for metrics in () if self.stop_training else self._train(self.env_steps, t.n_valid):
                        updates.append(self.env_steps)
                        take([metrics])
                        if self.stop_training:
                            break
                    if self.env_steps >= next_log or self.env_steps >= end or self.stop_training:
                        take(self.runtime.drain(wait=True))
                        # Epoch callbacks (EarlyStopping's best weights, a user's) read the Keras variables.
                        self.runtime.sync()
                        cbs.on_epoch_end(epoch, interval.logs())
                        interval.restart()
                        epoch, next_log, epoch_start = epoch + 1, next_log + log_every, self.updates
                        if self.env_steps < end and not self.stop_training:
                            cbs.on_epoch_begin(epoch)
                        # A rate an epoch callback set (LearningRateScheduler, ReduceLROnPlateau)
                        # is the one held state goes on with, and the one release writes back.
                        self.runtime.reload_learning_rates()
                    # Progress goes out a few times a second (and at steps callbacks
                    # asked for), not every step: the mean of recent returns alone
                    # costs more than a CartPole step.
                    now = time.perf_counter()
                    if t.n_valid and (now >= next_progress or self.env_steps >= due or self.env_steps >= end):
                        next_progress = now + PROGRESS_INTERVAL
                        progress = {"episodes": self.episodes, "recent_return": interval.recent_return()}
                        progress.update(interval.progress_values())
                        cbs.on_progress(self.env_steps - start, dict(progress, steps=steps))
                        due = cbs.due_step()
                take(self.runtime.drain(wait=True))  # the last update's metrics: a NaN there still stops fit
                signals.check()
                source.close()
            except BaseException as error:
                source.close()
                self._fit_failed(error, cbs, interval.logs(), checkpoint_path)
                raise
        self.runtime.release()
        logs = dict(interval.logs(), trained_steps=float(self.env_steps - start))
        cbs.on_train_end(logs)
        return history

    def _reset_seed(self) -> int | None:
        """The seed of ``fit``'s env reset: the agent's seed first, then new ones along the run.

        Derived from ``(seed, env_steps)``, so a second ``fit``, in this process or
        after loading, starts from new states, and the same ones every time.
        """
        if self.seed is None or self.env_steps == 0:
            return self.seed
        return int(np.random.SeedSequence([int(self.seed), int(self.env_steps)]).generate_state(1)[0] >> 1)

    def _fit_failed(self, error, cbs, logs, checkpoint_path) -> None:
        """The one path out of a ``fit`` that did not end: sync, save, tell every callback."""
        try:
            self.runtime.release()
        except Exception as sync_error:  # noqa: BLE001
            warnings.warn(f"Could not write the held weights back after {error!r}: {sync_error!r}", stacklevel=3)
        from keras_rl_gym.callbacks import save_agent

        # Elsewhere (the working or temporary directory, with a warning) where the path fails.
        self.last_checkpoint = save_agent(self, checkpoint_path)
        cbs.on_fit_error(error, dict(logs, checkpoint_path=self.last_checkpoint))

    def _check_env(self, venv) -> None:
        # Actions first: a DQN on a continuous-control env is refused for its actions.
        if not same_space(venv.single_action_space, self.action_space):
            raise ValueError(
                f"The env's action space {venv.single_action_space} does not match the agent's {self.action_space}."
            )
        if not same_space(venv.single_observation_space, self.observation_space):
            raise ValueError(
                f"The env's observation space {venv.single_observation_space} does not match "
                f"the agent's {self.observation_space}."
            )

    def _raise_non_finite(self, metrics: dict, step: int, checkpoint_path: str) -> None:
        loss = metrics["loss"]
        # The runtime skipped this update, so the weights are the last finite ones;
        # fit's failure path saves them.
        raise NonFiniteLossError(
            f"Non-finite loss ({loss}) at env step {step}: training stopped. "
            f"The last finite weights are saved to {os.path.abspath(checkpoint_path)}. "
            "Lower the learning rate, clip gradients or rewards, or check the env's rewards.",
            checkpoint_path=checkpoint_path,
        )

    # -- evaluation ------------------------------------------------------------
    def evaluate(self, env=None, episodes: int = 10, *, seed: int | None = None, log: bool = True, **kwargs) -> dict:
        """Runs the greedy policy for ``episodes`` whole episodes (games, on Atari).

        Over a vector env of N envs, env ``i`` plays ``(episodes + i) // N`` of
        them (as SB3's ``evaluate_policy``), so short episodes, which end
        first, are not over-counted. Nothing of training is touched: counters,
        random streams and the recurrent state ``fit`` carries stay as they were.
        After a ``fit`` that logged to MLflow (``MLflowLogger``), the result goes
        into that run too, as ``eval/*`` metrics at the agent's env step.

        Args:
            env: a ``gymnasium.Env``, vector env or env id.
            episodes: number of complete episodes to average over.
            seed: seed of the reset.
            log: log the result into the MLflow run of the last ``fit``, if it had one.

        Returns:
            ``{"mean_return", "std_return", "mean_length", "returns"}``.
        """
        if kwargs:
            raise TypeError(f"Unknown argument(s) to evaluate: {sorted(kwargs)}.")
        episodes = _check_positive("episodes", episodes)
        loop = EpisodeLoop(as_vector_env(env))
        self._check_env(loop.venv)
        n = loop.num_envs
        targets = np.array([(episodes + i) // n for i in range(n)])
        counts = np.zeros(n, dtype=np.int64)
        returns, lengths = [], []
        saved_state = self._state
        try:
            self._state = self.initial_state(n)
            loop.reset(seed)
            while (counts < targets).any():
                t = loop.step(self._to_env(self._greedy(loop.obs)))
                self.reset_state(t.restart)
                for i, ret, length in t.games:
                    if counts[i] < targets[i]:
                        counts[i] += 1
                        returns.append(ret)
                        lengths.append(length)
        finally:
            self._state = saved_state
        result = {
            "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)),
            "mean_length": float(np.mean(lengths)),
            "returns": [float(r) for r in returns],
        }
        if log and self._mlflow_run is not None:
            from keras_rl_gym.callbacks import log_evaluation

            uri, run_id = self._mlflow_run
            log_evaluation(run_id, result, self.env_steps, uri=uri)
        return result

    # -- recurrent state -------------------------------------------------------------
    # An agent whose acting carries state from one env step to the next (DRQN's LSTM h, c)
    # overrides ``initial_state``, and its ``_greedy`` reads and writes ``_state`` (writable
    # arrays, one row per env). The loop of fit and evaluate starts the state with
    # ``initial_state`` and, after each vector step, restarts the rows of the envs whose
    # next observation begins an episode with ``reset_state``. Feed-forward agents keep
    # ``None`` and these do nothing.
    @property
    def recurrent_state(self) -> tuple[np.ndarray, ...] | None:
        """The acting state carried between env steps: a tuple of arrays, one row per env; ``None`` if none."""
        return self._state

    def initial_state(self, num_envs: int) -> tuple[np.ndarray, ...] | None:
        """The acting state at an episode's start, for ``num_envs`` envs; ``None`` for feed-forward agents."""
        return None

    def reset_state(self, mask) -> None:
        """Restarts the acting state of the envs where ``mask`` is true, as at an episode's start.

        ``act`` carries a recurrent agent's state from call to call: a loop of
        one's own calls this for the envs it resets (whose next observation starts an episode).
        """
        if self._state is None:
            return
        mask = np.asarray(mask, bool)
        if mask.any():
            for rows, start in zip(self._state, self.initial_state(int(mask.sum()))):
                rows[mask] = start

    # -- serialization -------------------------------------------------------------
    def get_config(self) -> dict:
        """The spaces, the name and every constructor argument as it was set (sequences as lists, models serialized)."""
        config = {
            "observation_space": space_to_config(self.observation_space),
            "action_space": space_to_config(self.action_space),
            "name": self.name,
        }
        for key, value in self._hyperparameters.items():
            if isinstance(value, keras.layers.Layer):  # a user's network, rebuilt by from_config
                value = keras.saving.serialize_keras_object(value)
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config):
        # Keras objects in the config (a learning-rate schedule) come back serialized.
        config = {
            key: keras.saving.deserialize_keras_object(value)
            if isinstance(value, dict) and "class_name" in value
            else value
            for key, value in config.items()
        }
        return cls(**config)

    def save(self, filepath, *args, save_replay: bool = False, **kwargs):
        """Saves the agent in the ``.keras`` format: config, weights, optimizer state and training state.

        The training state (``env_steps``, ``updates``, ``episodes``, the
        horizon ``total_steps``, schedule positions and the exploration random
        stream) lets ``keras.saving.load_model(path).fit(env, steps)`` continue
        the run. ``save_replay=True`` also stores the replay buffer (off by
        default: on Atari it can take gigabytes).
        """
        self.sync_weights()
        self._save_replay = bool(save_replay)
        try:
            return super().save(filepath, *args, **kwargs)
        finally:
            self._save_replay = False

    # Host attributes saved with the agent, besides the base counters and the random stream.
    _saved_state = ()

    def save_assets(self, dir_path):
        """Keras's saving hook: writes the training state (and the replay, if asked) next to the weights."""
        if self._reward_scaler is not None:
            self.reward_stats = self._reward_scaler.stats.state()
        names = ("env_steps", "updates", "episodes", "total_steps", "env_config", "reward_stats", *self._saved_state)
        state = {name: _json_number(getattr(self, name)) for name in names}
        state["rng"] = self.rng.bit_generator.state
        with open(os.path.join(dir_path, TRAINING_STATE_FILE), "w") as f:
            json.dump(state, f)
        buffer = getattr(self, "buffer", None)
        if self._save_replay and buffer is not None:
            from keras_rl_gym.buffers import save_buffer

            save_buffer(buffer, os.path.join(dir_path, REPLAY_FILE))

    def load_assets(self, dir_path):
        """Keras's loading hook: restores what ``save_assets`` wrote, checked against a fixed schema.

        The training state is data from a file: only the names this class saves are set, each
        checked for its type and range (:data:`TRAINING_STATE_SCHEMA`); an unknown or private
        key, or a bad value, is an error naming the file and the key. Nothing that touches
        logging, Keras's own attributes or the networks can be set this way.
        """
        path = os.path.join(dir_path, TRAINING_STATE_FILE)
        if not os.path.exists(path):
            return  # saved before training state was kept: counters start at 0
        for name, value in read_training_state(path, type(self)).items():
            if name == "rng":
                self.rng.bit_generator.state = value
            else:
                setattr(self, name, value)
        replay = os.path.join(dir_path, REPLAY_FILE)
        if os.path.exists(replay):
            from keras_rl_gym.buffers import load_buffer

            self.buffer = load_buffer(replay)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value) -> bool:
    return _finite(value) or (isinstance(value, list) and all(_numbers(v) for v in value))


def _rng_state(value) -> bool:
    # NumPy's own setter checks the generator's name and the state's fields; this checks it is plain data.
    return isinstance(value, dict) and value.get("bit_generator") == "PCG64" and isinstance(value.get("state"), dict)


def _reward_stats(value) -> bool:
    return value is None or (
        isinstance(value, dict)
        and set(value) == {"mean", "var", "count"}
        and _numbers(value["mean"])
        and _numbers(value["var"])
        and _finite(value["count"])
    )


def _env_config(value) -> bool:
    # Plain JSON data: only `keras-rl-gym evaluate` reads it, and rebuilds an env from it only through
    # keras_rl_gym.saved_env, which refuses anything but registered ids and the package's own code.
    return value is None or (isinstance(value, dict) and set(value) <= {"config", "env", "spec"})


# What a saved training state may hold: (test, what it must be) per name. An agent restores
# the base names and those of its class's ``_saved_state``, nothing else.
TRAINING_STATE_SCHEMA = {
    "env_steps": (_count, "an integer >= 0"),
    "updates": (_count, "an integer >= 0"),
    "episodes": (_count, "an integer >= 0"),
    "total_steps": (lambda v: v is None or _count(v), "null or an integer >= 0"),
    "env_config": (_env_config, "null or a mapping of config, env and spec"),
    "reward_stats": (_reward_stats, "null or running statistics (mean, var, count)"),
    "rng": (_rng_state, "a NumPy PCG64 generator state"),
    "epsilon": (lambda v: _finite(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "current_alpha": (lambda v: _finite(v) and v >= 0, "a number >= 0"),
    "current_clip_range": (lambda v: _finite(v) and v > 0, "a number > 0"),
    "current_noise_std": (lambda v: _finite(v) and v >= 0, "a number >= 0"),
    "_steps_since_train": (_count, "an integer >= 0"),
    "_steps_since_target": (_count, "an integer >= 0"),
}
_BASE_STATE = ("env_steps", "updates", "episodes", "total_steps", "env_config", "reward_stats")


def read_training_state(path, cls) -> dict:
    """The training state in ``path`` as ``cls`` saves it, checked name by name.

    Raises:
        ValueError: naming the file and the key, for a key ``cls`` does not save (``_mlflow_run``,
            ``trainable``) or a value of the wrong type or range; or if the file is not JSON.
    """
    allowed = {*_BASE_STATE, "rng", *cls._saved_state}
    where = f"{TRAINING_STATE_FILE} in the saved {cls.__name__}"
    try:
        with open(path) as f:
            state = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where} is not valid JSON ({error}).") from None
    if not isinstance(state, dict):
        raise ValueError(f"{where} must hold a mapping, got {type(state).__name__}.")
    for key, value in state.items():
        if key not in allowed:
            raise ValueError(f"{where} has key {key!r}, which is not part of a {cls.__name__}'s training state.")
        test, what = TRAINING_STATE_SCHEMA[key]
        if not test(value):
            raise ValueError(f"{where}: {key} must be {what}, got {value!r:.80}.")
    return state


_constructing = threading.local()


def _seeded_init(init):
    """Wraps an agent's ``__init__`` so that its weights are drawn from its own seed.

    Keras initializers without a seed draw one from Python's global ``random``.
    ``keras.utils.set_random_seed`` would reseed every global generator of the
    process (Python, NumPy, the backend), also on each ``load_model``; instead
    ``random`` is seeded for the outermost constructor only, and its state put back after.
    """

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        seed = kwargs.get("seed")
        if seed is None or getattr(_constructing, "active", False):
            return init(self, *args, **kwargs)
        state = random.getstate()
        _constructing.active = True
        try:
            random.seed(seed)
            return init(self, *args, **kwargs)
        finally:
            _constructing.active = False
            random.setstate(state)

    return wrapper


def _json_number(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


@functools.cache
def _class_hyperparameters(cls) -> tuple[dict, dict]:
    """A class's constructor annotations and its rules merged along the hierarchy: read once per class,
    not at each of the ``_set_hyperparameters`` calls every level of a constructor makes."""
    rules = {}
    for klass in reversed(cls.__mro__):
        rules.update(getattr(klass, "hyperparameter_rules", {}))
    return agent_annotations(cls), rules


def _normalized(value, annotation):
    """Python ``int``/``float`` for numbers (NumPy ones too), a tuple for a sequence; else as given."""
    text = str(annotation)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, bool) or value is None:
        return value
    if re.match(r"^(int)\b", text) and isinstance(value, numbers.Integral):
        return int(value)
    if re.match(r"^(float)\b", text) and isinstance(value, numbers.Real):
        return float(value)
    return value
