"""Rollout runners on Ray: ``fit``'s env steps taken by Ray actors, the learner kept in this process.

Each runner is a Ray actor holding its own Gymnasium vector env of ``envs_per_runner``
envs and a copy of the agent, rebuilt from its Keras config on the same Keras backend
(``KERAS_BACKEND`` travels in the actor's ``runtime_env``). It steps its envs through
the same episode loop and the same ``_explore`` as ``fit`` does locally
(``Agent._explore_step``), and returns NumPy arrays: each step's actions, observations,
rewards, flags, the acting outputs ``_observe`` needs (a policy's log-probabilities and
values) and the games that ended.

The learner works in rounds. In each, every runner takes ``rollout_steps`` vector steps;
the learner lays the runners' envs side by side (runner ``r``'s env ``i`` is env
``r * envs_per_runner + i`` of one vector env of ``num_runners * envs_per_runner``), and
feeds the steps, in order, to the same ``_observe`` and ``_train`` as a local ``fit``.
So the step accounting, the truncation bootstrap, the autoreset handling, n-step windows
and frame stacks per env are the local path's, and the ratio of updates to env steps
(``train_freq``, ``gradient_steps``) holds per transition received. ``env_steps`` counts
only transitions the learner received, and ``fit`` stops at ``steps`` within a round.

* On-policy agents (PPO, A2C, REINFORCE) run synchronous rounds: each round is collected
  with the weights the learner has when it starts (PPO's and A2C's rounds are their
  ``n_steps``), as the local vector env would.
* Off-policy agents (DQN, DRQN, DDPG, TD3, SAC, Q-learning) overlap the two: the runners
  collect the next round, with the weights of the last sync, while the learner trains on
  this one (Ape-X's decoupling of acting and learning). Weights go out through the object
  store (``ray.put``) at most every ``weight_sync_every`` updates.

A runner that dies (its process killed) is restarted by Ray (``max_restarts``) with fresh
envs; its unfinished round is never counted and is collected again. Each death counts in
``ray/restarts``, one before the runner's first round too. A runner that dies more often
than that stops ``fit`` with an error, through ``fit``'s failure path (the agent saved, the
MLflow run FAILED).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import warnings

import gymnasium as gym
import numpy as np
import ray

from keras_rl_gym.loop import EpisodeLoop, Step, as_vector_env, env_config

# Vector steps per runner per round for off-policy agents (and REINFORCE, which has no n_steps).
DEFAULT_ROUND_STEPS = 32
# Environment variables the runners need to match the learner (backend, runtime switches).
_FORWARDED = ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "MLFLOW_DISABLE_TELEMETRY")
_FORWARDED_PREFIXES = ("KERAS_RL_GYM_",)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class RayRunners:
    """Where ``fit`` takes its env steps: Ray actors, each stepping its own copy of the env.

    Args:
        num_runners: Ray actors stepping envs.
        envs_per_runner: envs in each runner's vector env. ``fit`` then trains as on one
            vector env of ``num_runners * envs_per_runner`` envs.
        address: the Ray cluster: ``None`` for the one this process is connected to, or a
            new local one; ``"auto"`` for the cluster ``ray start`` runs on this machine;
            ``"host:port"`` or ``"ray://host:port"`` for a remote one.
        rollout_steps: vector steps each runner takes per round; defaults to the agent's
            ``n_steps`` (PPO, A2C), else 32.
        weight_sync_every: off-policy agents: updates between weight broadcasts to the runners.
        max_restarts: how often Ray restarts each runner that dies before ``fit`` gives up.
        num_cpus_per_runner: CPUs Ray reserves for each runner (fractions allowed).
        vectorization_mode: each runner's vector env: ``"sync"`` or ``"async"`` (subprocesses).
        spread: place the runners on as many nodes as possible (Ray's ``SPREAD`` strategy).

    Example:
        >>> from keras_rl_gym import PPOAgent
        >>> from keras_rl_gym.distributed import RayRunners
        >>> env = gym.make("CartPole-v1")
        >>> agent = PPOAgent(env.observation_space, env.action_space, n_steps=64)
        >>> runners = RayRunners(num_runners=2, envs_per_runner=2)  # a round: 2 x 2 envs x 64 steps
        >>> history = agent.fit("CartPole-v1", steps=512, runners=runners, verbose=0)
        >>> agent.env_steps >= 512  # fit ends at the first step of all 4 envs that reaches it
        True
        >>> ray.shutdown()  # the local cluster fit started

    On the command line: ``keras-rl-gym train CONFIG --ray-runners 4 [--ray-address auto]``.
    """

    def __init__(
        self,
        num_runners: int = 2,
        envs_per_runner: int = 1,
        *,
        address: str | None = None,
        rollout_steps: int | None = None,
        weight_sync_every: int = 1,
        max_restarts: int = 3,
        num_cpus_per_runner: float = 1.0,
        vectorization_mode: str = "sync",
        spread: bool = True,
    ):
        for name, value in (
            ("num_runners", num_runners),
            ("envs_per_runner", envs_per_runner),
            ("weight_sync_every", weight_sync_every),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RayRunners: {name} must be a positive integer, got {value!r}.")
        if rollout_steps is not None and (isinstance(rollout_steps, bool) or int(rollout_steps) != rollout_steps):
            raise ValueError(f"RayRunners: rollout_steps must be a positive integer or None, got {rollout_steps!r}.")
        if rollout_steps is not None and rollout_steps < 1:
            raise ValueError(f"RayRunners: rollout_steps must be a positive integer or None, got {rollout_steps!r}.")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"RayRunners: max_restarts must be an integer >= 0, got {max_restarts!r}.")
        if not num_cpus_per_runner > 0:
            raise ValueError(f"RayRunners: num_cpus_per_runner must be > 0, got {num_cpus_per_runner!r}.")
        if vectorization_mode not in ("sync", "async"):
            raise ValueError(f"RayRunners: vectorization_mode must be 'sync' or 'async', got {vectorization_mode!r}.")
        self.num_runners = num_runners
        self.envs_per_runner = envs_per_runner
        self.address = address
        self.rollout_steps = rollout_steps
        self.weight_sync_every = weight_sync_every
        self.max_restarts = max_restarts
        self.num_cpus_per_runner = float(num_cpus_per_runner)
        self.vectorization_mode = vectorization_mode
        self.spread = spread
        self.actors = []  # the runners of the fit under way: Ray actor handles, in env order

    def connect(self, agent, env) -> _RaySteps:
        """Checks everything a run needs, before it starts: the env, the agent, the cluster.

        Returns the step source ``fit`` draws from. Raises ``ConnectionError`` for a cluster
        that cannot be reached and ``ValueError`` for one without the CPUs the runners need.
        """
        make_env = env_factory(env)
        probe = make_env()
        try:
            agent._check_env(as_vector_env(probe))
            env_id = getattr(probe.spec, "id", None)
        finally:
            probe.close()
        address = connect(self.address)
        needed = self.num_runners * self.num_cpus_per_runner
        available = ray.cluster_resources().get("CPU", 0.0)
        if needed > available:
            raise ValueError(
                f"RayRunners needs {needed:g} CPUs ({self.num_runners} runners x {self.num_cpus_per_runner:g}), "
                f"the Ray cluster has {available:g}: lower num_runners or num_cpus_per_runner, or add nodes."
            )
        steps = _RaySteps(self, agent, make_env, env_id, address)
        steps.env_config = env_config(env) if not callable(env) or isinstance(env, (str, gym.Env)) else None
        return steps


def env_factory(env):
    """A picklable function making one env like ``env``: an env id, a function, or an env whose ``spec`` remakes it."""
    if isinstance(env, str):
        return _MakeById(env)
    if isinstance(env, gym.vector.VectorEnv):
        raise TypeError(
            "With Ray runners, give fit an env id or a function making one env (each runner builds its own "
            "vector env of envs_per_runner envs), not a vector env."
        )
    if isinstance(env, gym.Env):
        spec = env.spec
        if spec is None:
            raise TypeError(
                f"With Ray runners, fit needs an env id, a function making the env, or an env made by "
                f"gymnasium.make (whose spec remakes it); {type(env).__name__} has no spec."
            )
        return _MakeBySpec(spec)
    if callable(env):
        return env
    raise TypeError(f"Expected an env id, a function making an env, or a gymnasium.Env; got {type(env).__name__}.")


class _MakeById:
    def __init__(self, env_id):
        self.env_id = env_id

    def __call__(self):
        return gym.make(self.env_id)


class _MakeBySpec:
    def __init__(self, spec):
        self.spec = spec

    def __call__(self):
        # The spec holds the wrappers applied on top of gymnasium.make (RecordConstructorArgs ones).
        return gym.make(self.spec)


def connect(address: str | None) -> str:
    """Connects this process to the Ray cluster at ``address`` (see :class:`RayRunners`); returns its address.

    A cluster that cannot be reached is a ``ConnectionError`` with one line saying so, raised
    before anything trains (a closed port is found out in a second, not after Ray's retries).
    """
    if address not in (None, "auto", "local"):
        host, port = _host_port(address)
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as error:
            raise ConnectionError(
                f"Cannot reach the Ray cluster at {address}: {error.strerror or error}. "
                "Start one with `ray start --head` there, or check the address."
            ) from None
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", "local") and _host_port(address) != _host_port(current):
            raise ValueError(
                f"This process is connected to the Ray cluster at {current}, not {address}: "
                "call ray.shutdown() first, or leave address unset to use the connected one."
            )
        return current
    try:
        with _signal_handlers_kept():
            ray.init(address=address, include_dashboard=False, configure_logging=False)
    except ConnectionError as error:
        raise ConnectionError(f"Cannot reach the Ray cluster at {address or 'auto'}: {first_line(error)}") from None
    return ray.get_runtime_context().gcs_address


@contextlib.contextmanager
def _signal_handlers_kept():
    """Puts back the SIGINT and SIGTERM handlers this process had, after the block.

    ``ray.init`` installs its own SIGTERM handler (``sys.exit(15)``), over the one the
    command line set to stop training as Ctrl-C does (the agent saved, the MLflow run
    KILLED, exit 143). Ray's own processes are still stopped: this process exits
    normally, and ``ray.shutdown`` runs at exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread sets handlers, in Ray as here
        return
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signum, handler)


def _host_port(address: str) -> tuple[str, int]:
    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"A Ray address is 'auto', 'host:port' or 'ray://host:port', got {address!r}.")
    return host, int(port)


def _runtime_env() -> dict:
    """The environment variables the runners need to act as the learner does (its backend first)."""
    import keras

    from keras_rl_gym import backend

    env = {name: os.environ[name] for name in _FORWARDED if name in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_PREFIXES)})
    env["KERAS_BACKEND"] = keras.backend.backend()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The user's XLA flags, not the ones the learner's import added (a runner's import adds its own).
    flags = backend.XLA_FLAGS_BEFORE if backend.XLA_FLAGS_BEFORE is not None else os.environ.get("XLA_FLAGS")
    if flags:
        env["XLA_FLAGS"] = flags
    return {"env_vars": env}


class Runner:
    """One rollout runner (a Ray actor): a vector env and a copy of the agent that explores in it.

    Args:
        agent_config: the agent as ``keras.saving.serialize_keras_object`` gives it.
        make_env: a function making one env.
        num_envs: envs in this runner's vector env.
        vectorization_mode: ``"sync"`` or ``"async"``.
        index: this runner's place among the runners (its envs' seeds derive from it).
    """

    def __init__(self, agent_config, make_env, num_envs, vectorization_mode, index):
        import keras

        import keras_rl_gym.agents  # noqa: F401 - registers the agent classes for deserialization

        self.agent = keras.saving.deserialize_keras_object(agent_config)
        self.make_env, self.num_envs, self.mode, self.index = make_env, num_envs, vectorization_mode, index
        self.loop = None
        self.incarnation = None  # the learner's count of this runner's restarts when its envs were made
        self.version = None  # the learner's weight version this copy holds
        self.restarted = None  # whether Ray started this process again for this runner (asked once: a GCS query)

    def _start(self, seed, incarnation, total_steps):
        """Fresh envs (a new process after a restart gets new ones, with a seed that says so)."""
        if self.loop is not None:
            self.loop.venv.close()
        makers = [self.make_env] * self.num_envs
        cls = gym.vector.AsyncVectorEnv if self.mode == "async" else gym.vector.SyncVectorEnv
        self.loop = EpisodeLoop(cls(makers))
        entropy = [seed, self.index, incarnation]
        if ray.get_runtime_context().was_current_actor_reconstructed:
            entropy.append(os.getpid())  # restarted while idle: the learner's count does not know yet
        seeds = None if seed is None else np.random.SeedSequence(entropy).generate_state(2)
        self.loop.reset(None if seeds is None else int(seeds[0] >> 1))
        agent = self.agent
        agent.rng = np.random.default_rng(None if seeds is None else int(seeds[1]))
        agent.total_steps = total_steps
        agent._start_acting(self.num_envs)
        agent._state = agent.initial_state(self.num_envs)
        self.incarnation = incarnation

    def collect(self, version, weights, steps, step, stride, total_steps, seed, incarnation):
        """Takes ``steps`` vector steps; returns them as arrays with a leading axis of steps.

        ``step`` is the learner's env-step count, from which the exploration schedules
        read (``stride`` more per vector step: every runner's envs count).
        """
        start = time.perf_counter()
        if incarnation != self.incarnation:
            self._start(seed, incarnation, total_steps)
        if version != self.version:
            self.agent.set_weights(weights)
            self.version = version
        agent = self.agent
        agent.total_steps = total_steps
        records = []
        for k in range(steps):
            actions, t = agent._explore_step(self.loop, step + k * stride)
            records.append((actions, t, [getattr(agent, name) for name in agent._acting_outputs]))
        chunk = {
            "actions": np.stack([r[0] for r in records]),
            "extras": [np.stack([r[2][j] for r in records]) for j in range(len(agent._acting_outputs))],
            "games": [(k, i, ret, length) for k, r in enumerate(records) for i, ret, length in r[1].games],
            "env_steps": int(sum(r[1].n_valid for r in records)),
            "seconds": time.perf_counter() - start,
            "pid": os.getpid(),
            # How the learner learns of a death before the runner's first round.
            "restarted": self._restarted(),
        }
        for field in ("obs", "reward", "next_obs", "terminated", "truncated", "valid", "restart"):
            chunk[field] = np.stack([getattr(r[1], field) for r in records])
        return chunk

    def _restarted(self) -> bool:
        if self.restarted is None:
            self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        return self.restarted

    def close(self):
        if self.loop is not None:
            self.loop.venv.close()


_STEP_FIELDS = ("obs", "reward", "next_obs", "terminated", "truncated", "valid", "restart")


class _RaySteps:
    """``fit``'s step source over Ray runners (see the module docstring)."""

    def __init__(self, runners: RayRunners, agent, make_env, env_id, address):
        self.runners, self.agent, self.make_env = runners, agent, make_env
        self.env_id = env_id
        self.num_envs = runners.num_runners * runners.envs_per_runner
        self.params = {
            "ray_runners": runners.num_runners,
            "ray_envs_per_runner": runners.envs_per_runner,
            "ray_address": address,
        }
        self.on_policy = agent.on_policy
        n_steps = getattr(agent, "n_steps", None) if self.on_policy else None
        if n_steps and runners.rollout_steps not in (None, n_steps):
            raise ValueError(
                f"RayRunners: rollout_steps={runners.rollout_steps} for {type(agent).__name__}, whose rollouts are "
                f"n_steps={n_steps}: a round is one rollout, collected with the weights it trains (leave it unset)."
            )
        self.round_steps = runners.rollout_steps or n_steps or DEFAULT_ROUND_STEPS
        # An on-policy round must be collected with the current weights: they go out every round.
        self.sync_every = 1 if self.on_policy else runners.weight_sync_every
        self.restarts = [0] * runners.num_runners
        self._pids = [None] * runners.num_runners  # each runner's process, as its last round said
        self._counted = [False] * runners.num_runners  # a death already counted, its new process not seen yet
        self._rates = [[0, 0.0] for _ in range(runners.num_runners)]  # env steps, seconds since the last log
        self._waits = []  # per round since the last log: (seconds the learner waited, slowest runner's seconds)
        self._rounds = None

    # -- the source's methods (see base._LocalSteps) ---------------------------------
    def start(self, seed, end_step):
        import keras

        runners, agent = self.runners, self.agent
        self.seed, self.end_step = seed, end_step
        self.version, self.synced_at, self.weights = 0, None, None
        options = dict(
            max_restarts=runners.max_restarts,
            max_task_retries=0,
            num_cpus=runners.num_cpus_per_runner,
            runtime_env=_runtime_env(),
        )
        if runners.spread:
            options["scheduling_strategy"] = "SPREAD"
        config = keras.saving.serialize_keras_object(agent)
        remote = ray.remote(Runner).options(**options)
        runners.actors = [
            remote.remote(config, self.make_env, runners.envs_per_runner, runners.vectorization_mode, r)
            for r in range(runners.num_runners)
        ]
        self._rounds = self._steps()

    def step(self):
        return next(self._rounds)

    def log_values(self) -> dict:
        """Restarts so far; since the last log, each runner's env steps/s and the rounds' waits.

        ``ray/round_wait_ms``: how long the learner waited for a round's data, per round.
        ``ray/round_overhead_ms``: that wait less the slowest runner's own stepping time (Ray's
        dispatch, the transfer of weights and data, the merge), for synchronous rounds, where
        the learner waits for the whole of each round.
        """
        logs = {"ray/restarts": float(sum(self.restarts))}
        for r, (steps, seconds) in enumerate(self._rates):
            if seconds > 0:
                logs[f"ray/runner_{r}_steps_per_second"] = steps / seconds
        if self._waits:
            waits = np.asarray(self._waits)
            logs["ray/round_wait_ms"] = 1e3 * float(waits[:, 0].mean())
            if self.on_policy:
                logs["ray/round_overhead_ms"] = 1e3 * float((waits[:, 0] - waits[:, 1]).mean())
        self._rates = [[0, 0.0] for _ in self._rates]
        self._waits = []
        return logs

    def close(self):
        for actor in self.runners.actors:
            ray.kill(actor, no_restart=True)
        self.runners.actors = []
        self._rounds = None

    # -- rounds ---------------------------------------------------------------------------
    def _weights_ref(self):
        """The object-store copy of the learner's weights, put anew when they changed enough since."""
        agent = self.agent
        if self.synced_at is None or agent.updates - self.synced_at >= self.sync_every:
            if self.synced_at != agent.updates:
                self.weights = ray.put(agent.get_weights())
                self.version += 1
                self.synced_at = agent.updates
        return self.version, self.weights

    def _issue(self, r, version_weights):
        version, weights = version_weights
        return self.runners.actors[r].collect.remote(
            version,
            weights,
            self.round_steps,
            self.agent.env_steps,
            self.num_envs,
            self.agent.total_steps,
            self.seed,
            self.restarts[r],
        )

    def _issue_all(self):
        weights = self._weights_ref()
        return {r: (self._issue(r, weights), weights) for r in range(self.runners.num_runners)}

    def _gather(self, pending) -> dict:
        """Each runner's round, in runner order; a runner that died is restarted and collects it again."""
        chunks = {}
        while pending:
            refs = {ref: r for r, (ref, _) in pending.items()}
            ready, _ = ray.wait(list(refs), num_returns=1)
            r = refs[ready[0]]
            try:
                chunk = ray.get(ready[0])
            except ray.exceptions.ActorUnavailableError:
                time.sleep(0.5)  # unreachable for a moment: the same incarnation, asked again
            except ray.exceptions.RayActorError as error:
                # Died with this round in hand: the round is lost, never counted, and asked again.
                self._died(r, first_line(error))
                self._counted[r] = True
            else:
                # A new process that no failed round announced: it died between two rounds, or before
                # its first one (its first round then comes from a restarted process).
                if self._pids[r] is None:
                    if chunk["restarted"] and not self._counted[r]:
                        self._died(r, "restarted before its first round")
                elif self._pids[r] != chunk["pid"] and not self._counted[r]:
                    self._died(r, "restarted between rounds")
                self._pids[r], self._counted[r] = chunk["pid"], False
                chunks[r] = chunk
                del pending[r]
                continue
            pending[r] = (self._issue(r, pending[r][1]), pending[r][1])
        return [chunks[r] for r in sorted(chunks)]

    def _died(self, r, why):
        self.restarts[r] += 1
        if self.restarts[r] > self.runners.max_restarts:
            raise RuntimeError(
                f"Ray runner {r} died {self.restarts[r]} times (max_restarts={self.runners.max_restarts}); "
                f"training stopped. Last error: {why}"
            )
        warnings.warn(f"Ray runner {r} died ({why}); Ray restarts it with fresh envs.", stacklevel=3)

    def _steps(self):
        """Yields ``(actions, Step)`` for each vector step of each round, the runners' envs side by side."""
        pending = self._issue_all()
        while True:
            waited = time.perf_counter()
            chunks = self._gather(pending)
            self._waits.append((time.perf_counter() - waited, max(c["seconds"] for c in chunks)))
            remaining = self.end_step - self.agent.env_steps - sum(c["env_steps"] for c in chunks)
            # Off-policy: the next round is collected while this one trains, with the weights of now.
            pending = self._issue_all() if not self.on_policy and remaining > 0 else None
            for r, chunk in enumerate(chunks):
                self._rates[r][0] += chunk["env_steps"]
                self._rates[r][1] += chunk["seconds"]
            yield from self._merged(chunks)
            if pending is None:
                pending = self._issue_all()

    def _merged(self, chunks):
        width = self.runners.envs_per_runner
        joined = {field: np.concatenate([c[field] for c in chunks], axis=1) for field in _STEP_FIELDS}
        actions = np.concatenate([c["actions"] for c in chunks], axis=1)
        extras = [np.concatenate([c["extras"][j] for c in chunks], axis=1) for j in range(len(chunks[0]["extras"]))]
        games = [[] for _ in range(self.round_steps)]
        for r, chunk in enumerate(chunks):
            for k, i, ret, length in chunk["games"]:
                games[k].append((r * width + i, ret, length))
        names = self.agent._acting_outputs
        for k in range(self.round_steps):
            for name, values in zip(names, extras):
                setattr(self.agent, name, values[k])
            fields = {field: joined[field][k] for field in _STEP_FIELDS}
            n_valid = int(fields["valid"].sum())
            yield actions[k], Step(n_valid=n_valid, games=sorted(games[k]), **fields)
