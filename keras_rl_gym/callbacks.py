"""Callbacks for ``Agent.fit``: progress bar, MLflow logging, evaluation, checkpoints.

They are ``keras.callbacks.Callback``s with three RL hooks added, which
``fit`` calls on any callback that defines them:

* ``on_episode_end(episode, logs)``: ``logs`` has ``episode_return``, ``episode_length``, ``env_steps``;
* ``on_progress(step, logs)``: during ``fit``, about 20 times a second, at the last step, and
  at the first step at or past a callback's ``due_step`` attribute (how :class:`Checkpoint`
  saves every N env steps exactly);
* ``on_fit_error(error, logs)``: before ``fit`` raises on any error or interrupt (an env
  error, ``KeyboardInterrupt``, a failing callback, a non-finite loss). ``logs`` are the
  partial interval's, up to the failing step, plus ``checkpoint_path``: where ``fit``
  saved the agent (``None`` if it could not).

Keras's own callbacks work too: ``fit`` calls ``on_train_begin``/``end``, ``on_epoch_begin``/``end``
(one epoch per ``log_every`` env steps) and ``on_train_batch_end`` (one batch per update), so
``keras.callbacks.ModelCheckpoint(save_freq=N)`` saves every N *updates*, while
:class:`Checkpoint` saves every N *env steps*.
"""

from __future__ import annotations

import math
import os
import time

import keras


class ProgressBar(keras.callbacks.Callback):
    """Progress of a ``fit`` over env steps: episodes, recent return, loss, exploration scalars, steps/s, ETA.

    On a terminal, one line redrawn in place (a carriage return, no other control
    codes) at most every ``interval`` seconds. Where stdout is not a terminal (a
    log file, CI), one plain line every ``log_interval`` seconds and at the end.
    Counts print as integers. The ETA comes from the rate over the last
    ``window`` seconds, so the first compiled steps do not weigh on it.

    Args:
        interval: seconds between redraws on a terminal.
        log_interval: seconds between lines when stdout is not a terminal.
        window: seconds of recent progress the rate and ETA are measured over.
        stream: where to write (default ``sys.stdout``).
    """

    # Scalars shown besides the counts, in this order, when fit reports them (loss first).
    SHOWN = ("loss", "epsilon", "noise_std", "alpha", "clip_range", "learning_rate")

    def __init__(self, interval: float = 0.5, log_interval: float = 10.0, window: float = 20.0, stream=None):
        super().__init__()
        self.interval, self.log_interval, self.window = interval, log_interval, window
        self.stream = stream

    def on_train_begin(self, logs=None):
        import collections
        import sys

        self.out = self.stream or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.start = self.last = time.perf_counter()
        self.recent = collections.deque()  # (time, step) over the last `window` seconds
        self.width = 0

    def on_progress(self, step, logs):
        now = time.perf_counter()
        total = logs["steps"]
        done = step >= total
        if not done and now - self.last < (self.interval if self.tty else self.log_interval):
            return
        self.last = now
        self.recent.append((now, step))
        while len(self.recent) > 2 and now - self.recent[0][0] > self.window:
            self.recent.popleft()
        line = self.line(step, total, logs, now)
        if self.tty:
            # Redrawn in place; spaces clear what a longer line left.
            self.out.write("\r" + line.ljust(self.width) + ("\n" if done else ""))
            self.width = len(line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def line(self, step: int, total: int, logs: dict, now: float) -> str:
        parts = [f"{step}/{total} steps ({100 * step / max(total, 1):.0f}%)", f"episodes {int(logs['episodes'])}"]
        if not math.isnan(logs.get("recent_return", math.nan)):
            parts.append(f"return {logs['recent_return']:.1f}")
        parts += [f"{key} {_short(logs[key])}" for key in self.SHOWN if key in logs]
        (t0, s0), elapsed = self.recent[0], now - self.start
        rate = (step - s0) / (now - t0) if now - t0 > 1e-3 and step > s0 else step / max(elapsed, 1e-9)
        parts.append(f"{rate:.0f} steps/s")
        if step < total and rate > 0:
            parts.append(f"ETA {_duration((total - step) / rate)}")
        else:
            parts.append(f"in {_duration(elapsed)}")
        return " | ".join(parts)


def _short(value: float) -> str:
    """A scalar in 4 significant digits (``0.0123``, ``1.2e-05``, ``3812``)."""
    return f"{value:.4g}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(uri: str | None = None) -> str:
    """The MLflow store: ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` here."""
    import os

    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


# Seconds the check of a tracking server waits for its answer, with no retry: MLflow's client
# retries for minutes by default, which would only show a wrong URI after the whole run.
PROBE_TIMEOUT = 5
_PREPARED = set()  # stores checked (and created) in this process


def prepare_tracking_store(uri: str | None = None) -> str:
    """Checks that the MLflow store ``uri`` can be used, in seconds, before anything trains; returns it.

    * ``http(s)://``: one request, ``PROBE_TIMEOUT`` seconds and no retries.
    * ``sqlite:///PATH``: PATH's directory must exist and be writable; a new store is created
      here, under a lock file (``PATH.lock``, ``fcntl.flock``) that several processes starting
      on the same new file take in turn: two at once would both run MLflow's schema migration.
    * a file store (``file:``, a plain path): its folder must be one that can be created.

    Other stores are left to MLflow. Each store is checked once per process.

    Raises:
        ConnectionError: one line naming the store and what is wrong with it.
    """
    uri = tracking_uri(uri)
    if uri in _PREPARED:
        return uri
    scheme = uri.split(":", 1)[0].lower() if "://" in uri or uri.startswith("sqlite:") else "file"
    if scheme in ("http", "https"):
        _probe_server(uri)
    elif scheme.startswith("sqlite"):
        _prepare_sqlite(uri)
    elif scheme == "file" and uri not in ("databricks", "databricks-uc", "uc"):  # those are no paths
        folder = uri[len("file://") :] if uri.startswith("file://") else uri
        fault = output_path_fault(folder, directory=True)
        if fault:
            raise ConnectionError(f"Cannot use the MLflow tracking store {uri}: {fault}.")
    _PREPARED.add(uri)
    return uri


def _probe_server(uri: str) -> None:
    import mlflow

    limits = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT)}
    # Only for this request: MLflow reads them at each call; the run's own requests keep the user's.
    before = {name: os.environ.get(name) for name in limits}
    os.environ.update(limits)
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - any failure here is the store's
        raise ConnectionError(
            f"Cannot reach the MLflow tracking server {uri}: {_cause(error)} "
            "(set MLFLOW_TRACKING_URI to a store that works, or train with --no-mlflow)."
        ) from None
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _prepare_sqlite(uri: str) -> None:
    import contextlib

    import mlflow

    rest = uri.split(":", 1)[1]
    path = rest[3:].split("?", 1)[0] if rest.startswith("///") else ""
    if not path or path == ":memory:":
        return  # in memory: nothing to check
    fault = output_path_fault(path, suffix=None)
    if fault:
        raise ConnectionError(f"Cannot use the MLflow tracking store {uri}: {fault}.")
    try:
        import fcntl
    except ImportError:  # Windows: no flock; first uses there are not serialized
        fcntl = None
    with contextlib.ExitStack() as stack:
        if fcntl is not None:
            lock = stack.enter_context(open(path + ".lock", "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            # The first use creates the tables, runs the migrations and makes the Default experiment.
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
        except Exception as error:  # noqa: BLE001
            raise ConnectionError(f"Cannot use the MLflow tracking store {uri}: {_cause(error)}.") from None


def _cause(error: BaseException) -> str:
    """What went wrong, in a few words: the OS's reason (``Connection refused``) where the error holds one."""
    import re

    text = " ".join(str(error).split())
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip().rstrip(":").strip()
    if "timed out" in text.lower():
        return f"no answer within {PROBE_TIMEOUT} s"
    return f"{type(error).__name__}: {text[:300]}"


def output_path_fault(path, *, directory: bool = False, suffix: str | None = ".keras") -> str | None:
    """Why a file (or with ``directory=True``, a folder created if missing) cannot be written at ``path``.

    ``None`` where it can, as far as can be told without writing: the folder it goes into
    exists (for a folder: it or its nearest existing parent is a folder) and is writable,
    nothing in its way is a file, and the name ends in ``suffix``.

    Example:
        >>> output_path_fault("/dev/null/agent.keras")
        '/dev/null is not a directory'
        >>> output_path_fault("agent.h5")
        'the file name must end in .keras'
    """
    path = os.path.abspath(os.fspath(path))
    if directory:
        if os.path.exists(path) and not os.path.isdir(path):
            return f"{path} exists and is not a directory"
        folder = path
    else:
        if suffix and not path.endswith(suffix):
            return f"the file name must end in {suffix}"
        if os.path.isdir(path):
            return f"{path} is a directory"
        folder = os.path.dirname(path)
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is not a directory"
    if existing != folder and not directory:
        return f"the directory {folder} does not exist"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the directory {existing} is not writable"
    if not directory and os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None


def check_output_paths(checkpoint_path=None, callbacks=()) -> None:
    """Raises a one-line ``ValueError`` for the first file ``fit`` would write and cannot: its
    ``checkpoint_path``, a callback's (``output_paths()``: a :class:`Checkpoint`'s directory, an
    :class:`EvaluationCallback`'s ``save_best``). Found before training, not after it."""
    paths = [] if checkpoint_path is None else [("checkpoint_path", checkpoint_path, False)]
    for callback in callbacks or ():
        paths += getattr(callback, "output_paths", list)()
    for what, path, directory in paths:
        fault = output_path_fault(path, directory=directory)
        if fault:
            raise ValueError(f"{what} {os.fspath(path)} cannot be written: {fault}.")


def save_agent(agent, path, **kwargs) -> str | None:
    """Saves ``agent`` to ``path``; where that fails, under a new name in the working directory, else in
    the temporary directory. Returns where it was saved (``None`` if nowhere), warning of a fallback."""
    import tempfile
    import warnings

    path = os.fspath(path)
    try:
        agent.save(path, **kwargs)
        return path
    except Exception as error:  # noqa: BLE001 - the next place is tried
        first = error
    stem = os.path.basename(path).removesuffix(".keras") or agent.name
    for folder in (os.getcwd(), tempfile.gettempdir()):
        candidate = os.path.join(folder, f"{stem}.keras")
        n = 1
        while os.path.exists(candidate):  # never over a file that is there already
            candidate, n = os.path.join(folder, f"{stem}-{n}.keras"), n + 1
        try:
            agent.save(candidate, **kwargs)
        except Exception:  # noqa: BLE001, S112
            continue
        warnings.warn(
            f"Could not save the agent to {path} ({_cause(first)}); saved it to {candidate} instead.", stacklevel=2
        )
        return candidate
    warnings.warn(f"Could not save the agent to {path}, nor anywhere else: {_cause(first)}", stacklevel=2)
    return None


def _versions() -> dict:
    from importlib import metadata

    backend = keras.backend.backend()
    packages = ["keras", "keras-rl-gym", "gymnasium", "numpy", "mlflow"]
    packages.append({"tensorflow": "tensorflow-cpu", "jax": "jax", "torch": "torch"}[backend])
    versions = {}
    for name in packages:
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "tensorflow-cpu":
                versions["version.tensorflow"] = metadata.version("tensorflow")
    return versions


# MLflow's UI shows a section per metric-name prefix: fit's logs go under SB3's sections there,
# while History keeps fit's own names.
_TIME_KEYS = {"steps_per_second", "episodes", "env_steps", "trained_steps"}
_ROLLOUT_KEYS = {"episode_return", "episode_length", "interval_mean_return", "epsilon", "noise_std"}


def mlflow_key(name: str) -> str:
    """The MLflow metric name of a ``fit`` log: ``rollout/``, ``train/``, ``eval/`` or ``time/`` in front.

    Example:
        >>> [mlflow_key(k) for k in ("episode_return", "loss", "eval_mean_return", "steps_per_second", "ray/restarts")]
        ['rollout/episode_return', 'train/loss', 'eval/mean_return', 'time/steps_per_second', 'ray/restarts']
    """
    if "/" in name:
        return name
    if name.startswith("eval_"):
        return "eval/" + name[len("eval_") :]
    if name in _TIME_KEYS:
        return "time/" + name
    return ("rollout/" if name in _ROLLOUT_KEYS else "train/") + name


def default_run_name(agent, params: dict) -> str:
    """``<algo>-<env>-<backend>-s<seed>``: what a run is called unless it is given a name."""
    from keras_rl_gym.config import algorithm_name

    seed = agent.seed if agent.seed is not None else params.get("seed")
    parts = [algorithm_name(type(agent)), params.get("env_id") or "env", keras.backend.backend()]
    return "-".join(parts) + ("" if seed is None else f"-s{seed}")


def experiment_link(experiment_id: str, port: int = 5000, run_id: str | None = None) -> str:
    """The experiment's page in ``mlflow ui`` (or one run's), opened on its training runs.

    MLflow 3 opens an experiment in its GenAI view unless the browser was told
    otherwise; ``workflowType=machine_learning`` in the link says so.
    """
    page = f"runs/{run_id}" if run_id else "runs"
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def _param_value(value):
    if isinstance(value, dict) and "class_name" in value:  # a serialized Keras object: a user's network
        return f"{value['class_name']}({value.get('config', {}).get('name', '')})"[:500]
    text = value if isinstance(value, str) else repr(value)
    return text[:500]


class MLflowLogger(keras.callbacks.Callback):
    """Logs a training run to MLflow.

    Logs the agent's hyperparameters (its ``get_config()``), the backend and
    package versions as params; per-episode return and length, and at every
    ``fit`` interval the loss, epsilon, learning rate and env steps per second,
    as metrics against the env step, in MLflow sections named as SB3 names them
    (``rollout/``, ``train/``, ``eval/``, ``time/``; ``History`` keeps fit's
    names); at the end the trained agent (a model ``mlflow.pyfunc.load_model``
    loads and ``mlflow models serve`` serves, giving actions) and a
    learning-curve PNG. An ``agent.evaluate`` after that ``fit`` logs its result
    into the same run as ``eval/*``. The experiment is marked as one of training
    runs, so MLflow's UI opens it on them. The default store is
    ``sqlite:///mlflow.db`` in the working directory (``MLFLOW_TRACKING_URI``
    overrides it); browse it with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``.

    Args:
        experiment_name: MLflow experiment to log into.
        run_name: name of the run; by default ``<algo>-<env>-<backend>-s<seed>``.
        tracking_uri: overrides the store.
        log_model: log the trained agent at the end.
        extra_params: more params to log (e.g. the run config).
        end_run: end the run when ``fit`` ends (``False`` leaves it open, to log
            evaluation results afterwards; call ``end()`` then).
        log_system_metrics: also log MLflow's system metrics (CPU, memory) while the run is open.

    Example:
        >>> import gymnasium as gym
        >>> from keras_rl_gym import DQNAgent
        >>> env = gym.make("CartPole-v1")
        >>> agent = DQNAgent(env.observation_space, env.action_space)
        >>> history = agent.fit(env, steps=1_000, callbacks=[MLflowLogger(run_name="dqn-cartpole")], verbose=0)
    """

    def __init__(
        self,
        experiment_name: str = "keras-rl-gym",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        log_model: bool = True,
        extra_params: dict | None = None,
        end_run: bool = True,
        log_system_metrics: bool = False,
    ):
        super().__init__()
        self.log_system_metrics = log_system_metrics
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.uri = tracking_uri
        self.log_model = log_model
        self.extra_params = extra_params or {}
        self.end_run = end_run
        self.run_id = None
        self._started = False
        self._pending = []
        self.curve = []

    # -- run lifecycle ------------------------------------------------------------
    def on_train_begin(self, logs=None):
        import mlflow

        # A store that cannot be reached fails here, in seconds, not after minutes of MLflow's retries.
        mlflow.set_tracking_uri(prepare_tracking_store(self.uri))
        self._pending = []
        self.curve = []
        object.__setattr__(self.model, "_mlflow_run", None)  # a later evaluate logs into this fit's run
        if mlflow.active_run() is None:
            experiment = mlflow.set_experiment(self.experiment_name)
            if experiment.tags.get("mlflow.experimentKind") is None:
                # MLflow's own name for an experiment of training runs (its UI's other kind is GenAI).
                mlflow.set_experiment_tag("mlflow.experimentKind", "custom_model_development")
            run_name = self.run_name or default_run_name(self.model, self.params)
            mlflow.start_run(run_name=run_name, log_system_metrics=self.log_system_metrics or None)
            self._started = True
        run = mlflow.active_run()
        self.client = mlflow.MlflowClient()
        if self.run_id == run.info.run_id:
            return  # a second fit into the same run: params are logged already
        self.run_id = run.info.run_id
        config = self.model.get_config()
        params = {f"agent.{k}": _param_value(v) for k, v in config.items() if not k.endswith("_space")}
        params["agent.class"] = type(self.model).__name__
        params["observation_space"] = _param_value(str(self.model.observation_space))
        params["action_space"] = _param_value(str(self.model.action_space))
        params["backend"] = keras.backend.backend()
        # fit's own under fit., the Ray cluster's (ray_runners, ray_address...) as they are.
        params.update({k if k.startswith("ray_") else f"fit.{k}": _param_value(v) for k, v in self.params.items()})
        params.update({k: _param_value(v) for k, v in self.extra_params.items()})
        params.update(_versions())
        # A run this logger joined (the user's, or one an earlier fit left open) may
        # hold some of these params already; MLflow refuses to change a param.
        logged = run.data.params
        params = {k: v for k, v in params.items() if k not in logged}
        if params:
            mlflow.log_params(params)
        mlflow.set_tag("backend", keras.backend.backend())
        mlflow.set_tag("agent", type(self.model).__name__)

    def _queue(self, key, value, step):
        import math

        from mlflow.entities import Metric

        if value is None or not math.isfinite(value):
            return
        self._pending.append(Metric(mlflow_key(key), float(value), int(time.time() * 1000), int(step)))

    def _flush(self):
        # One batched request instead of a round trip per metric.
        while self._pending:
            chunk, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def on_episode_end(self, episode, logs):
        step = logs["env_steps"]
        self._queue("episode_return", logs["episode_return"], step)
        self._queue("episode_length", logs["episode_length"], step)
        self.curve.append((step, logs["episode_return"]))

    def on_epoch_end(self, epoch, logs=None):
        self._queue_interval(logs or {})
        self._flush()

    def _queue_interval(self, logs: dict):
        step = logs.get("env_steps", 0)
        for key, value in logs.items():
            if key in ("env_steps", "episode_return", "episode_length") or not isinstance(value, (int, float)):
                continue
            self._queue(key, value, step)
        if "episode_return" in logs:
            self._queue("interval_mean_return", logs["episode_return"], step)

    def on_train_end(self, logs=None):
        import mlflow

        self._flush()
        if self.curve:
            mlflow.log_figure(self._learning_curve(), "learning_curve.png")
        if self.log_model:
            self._log_agent()
        object.__setattr__(self.model, "_mlflow_run", (tracking_uri(self.uri), self.run_id))
        if self.end_run:
            self.end()

    def on_fit_error(self, error, logs=None):
        """Keeps everything: queued metrics and the partial interval up to the failing step, the
        learning curve, the error as a tag, the saved agent as a ``checkpoint/`` artifact. Ends a
        run this logger started as ``KILLED`` for an interrupt, ``FAILED`` for an error."""
        logs = logs or {}
        if self.run_id is None:
            return  # fit failed before on_train_begin: nothing was logged
        self._queue_interval(logs)
        self._flush()
        self.client.set_tag(self.run_id, "error", f"{type(error).__name__}: {error}"[:5000])
        if self.curve:
            self.client.log_figure(self.run_id, self._learning_curve(), "learning_curve.png")
        path = logs.get("checkpoint_path")
        if path and os.path.exists(path):
            self.client.log_artifact(self.run_id, path, artifact_path="checkpoint")
        self.end(status="KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    def log_evaluation(self, evaluation: dict, step: int | None = None):
        """Logs an ``Agent.evaluate`` result as ``eval/*`` metrics (``eval/mean_return``...)."""
        step = self.model.env_steps if step is None else step
        log_evaluation(self.run_id, evaluation, step)

    def end(self, status: str = "FINISHED"):
        """Ends the run if this callback started it."""
        import mlflow

        if self._started and mlflow.active_run() is not None and mlflow.active_run().info.run_id == self.run_id:
            mlflow.end_run(status=status)
        self._started = False

    # -- artifacts -----------------------------------------------------------------
    def _log_agent(self):
        import tempfile
        import warnings

        from keras_rl_gym import serving

        try:
            serving.greedy_policy(self.model)
        except NotImplementedError as error:
            # No stateless policy to serve (DRQN's LSTM state): the run keeps the agent itself.
            warnings.warn(
                f"{type(self.model).__name__} is logged as a plain .keras artifact under model/, "
                f"not as an MLflow model: {error}",
                stacklevel=2,
            )
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, f"{self.model.name}.keras")
                self.model.save(path)
                self.client.log_artifact(self.run_id, path, artifact_path="model")
            return
        serving.log_model(self.model, name="model")

    def _learning_curve(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        steps, returns = map(np.asarray, zip(*self.curve))
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(steps, returns, ".", alpha=0.3, label="episode return")
        window = min(20, len(returns))
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, label=f"mean of last {window}")
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.set_title(f"{type(self.model).__name__} ({keras.backend.backend()})")
        ax.legend()
        fig.tight_layout()
        plt.close(fig)
        return fig


class EvaluationCallback(keras.callbacks.Callback):
    """Evaluates the greedy policy every ``every`` env steps; optionally records videos to MLflow.

    Results go to ``history`` (``[(env_steps, evaluate() result), ...]``) and, when
    an MLflow run is active (e.g. with :class:`MLflowLogger` before this callback
    in the list), to ``eval_*`` metrics. With ``video=True`` the first evaluation
    episode is recorded by Gymnasium's ``RecordVideo`` and logged as an MLflow
    artifact under ``videos/step_<env_steps>/``; the env must then be made with
    ``render_mode="rgb_array"`` (and ``gymnasium[other]`` installed for moviepy).

    Args:
        make_env: a function returning a fresh evaluation env (one ``gymnasium.Env``).
        every: env steps between evaluations; also evaluates at the end of ``fit``.
        episodes: episodes per evaluation.
        video: record the first episode of each evaluation.
        video_dir: where videos are written before upload (a temporary folder by default).
        seed: seed of each evaluation's first reset.
        save_best: a ``.keras`` path: after each evaluation whose mean return beats every
            earlier one, the agent is saved there (and logged to MLflow under ``best/``
            when a run is active), as SB3's ``EvalCallback(best_model_save_path=...)``.

    Example:
        >>> import gymnasium as gym
        >>> from keras_rl_gym import DQNAgent
        >>> env = gym.make("CartPole-v1")
        >>> agent = DQNAgent(env.observation_space, env.action_space)
        >>> evaluation = EvaluationCallback(lambda: gym.make("CartPole-v1", render_mode="rgb_array"), every=500,
        ...                                 episodes=2, video=True)
        >>> history = agent.fit(env, steps=1_000, log_every=500, callbacks=[MLflowLogger(), evaluation], verbose=0)
        >>> [step for step, result in evaluation.history]  # checked at each log interval
        [500, 1000]
    """

    def __init__(
        self,
        make_env,
        every: int = 10_000,
        episodes: int = 5,
        *,
        video: bool = False,
        video_dir: str | None = None,
        seed: int = 10_000,
        save_best: str | None = None,
    ):
        super().__init__()
        if int(every) < 1 or int(episodes) < 1:
            raise ValueError(f"every and episodes must be >= 1, got {every} and {episodes}.")
        self.make_env = make_env
        self.every = int(every)
        self.episodes = int(episodes)
        self.video = bool(video)
        self.video_dir = video_dir
        self.seed = seed
        self.save_best = None if save_best is None else os.fspath(save_best)
        self.best_mean_return = -math.inf
        self.history = []
        self.videos = []

    def output_paths(self) -> list[tuple[str, str, bool]]:
        """What this callback writes, for ``fit`` to check before training: ``(what, path, is_directory)``."""
        return [("EvaluationCallback save_best", self.save_best, False)] if self.save_best else []

    def on_train_begin(self, logs=None):
        self._next = self.model.env_steps + self.every
        self._last = None
        self._run_id = None
        self._remember_run()

    def _remember_run(self):
        # The run is remembered, so the final evaluation still logs into it
        # when an MLflowLogger earlier in the list has already ended it.
        import mlflow

        run = mlflow.active_run()
        if run is not None:
            self._run_id = run.info.run_id

    def on_epoch_end(self, epoch, logs=None):
        if self.model.env_steps >= self._next:
            self._next += self.every * max(1, (self.model.env_steps - self._next) // self.every + 1)
            self.evaluate()

    def on_train_end(self, logs=None):
        if self._last != self.model.env_steps:
            self.evaluate()

    def evaluate(self) -> dict:
        """Runs one evaluation now; returns the ``Agent.evaluate`` result."""
        import tempfile

        import gymnasium as gym

        step = self.model.env_steps
        self._last = step
        self.model.sync_weights()
        env = self.make_env()
        folder = None
        if self.video:
            folder = os.path.join(self.video_dir or tempfile.mkdtemp(prefix="keras-rl-gym-video-"), f"step_{step}")
            env = gym.wrappers.RecordVideo(
                env, folder, episode_trigger=lambda episode: episode == 0, disable_logger=True
            )
        try:
            result = self.model.evaluate(env, episodes=self.episodes, seed=self.seed, log=False)
        finally:
            env.close()
        self.history.append((step, result))
        self._log(result, step, folder)
        if self.save_best and result["mean_return"] > self.best_mean_return:
            self.best_mean_return = result["mean_return"]
            saved = save_agent(self.model, self.save_best)
            if saved is not None and self._run_id is not None:
                mlflow_client().log_artifact(self._run_id, saved, artifact_path="best")
        return result

    def _log(self, result, step, folder):
        if folder is not None:
            self.videos.extend(sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".mp4")))
        self._remember_run()
        if self._run_id is None:
            return
        log_evaluation(self._run_id, result, step)
        client = mlflow_client()
        if folder is not None:
            client.log_artifacts(self._run_id, folder, artifact_path=f"videos/step_{step}")


def mlflow_client():
    import mlflow

    return mlflow.MlflowClient()


def log_evaluation(run_id: str, evaluation: dict, step: int, uri: str | None = None) -> None:
    """Logs an ``Agent.evaluate`` result into the run ``run_id`` as ``eval/*`` metrics at env step ``step``."""
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient(tracking_uri=uri)
    now = int(time.time() * 1000)
    metrics = [
        Metric(mlflow_key(f"eval_{k}"), float(v), now, int(step))
        for k, v in evaluation.items()
        if isinstance(v, (int, float))
    ]
    client.log_batch(run_id, metrics=metrics)


def _active_run_id() -> str | None:
    import mlflow

    run = mlflow.active_run()
    return None if run is None else run.info.run_id


class Checkpoint(keras.callbacks.Callback):
    """Saves the agent every ``every`` env steps, keeping the last ``keep`` files, as SB3's ``CheckpointCallback``.

    Each file is a full ``.keras`` agent with its training state, so
    ``keras.saving.load_model(path).fit(env, steps)`` resumes from it (``keras-rl-gym
    train CONFIG --resume path`` on the command line). When an MLflow run is active
    (e.g. :class:`MLflowLogger` earlier in the list), each file is also logged as an
    artifact under ``checkpoints/``; MLflow keeps every one, the disk only the last ``keep``.
    Saves happen at the exact env step (``due_step``), not at the next log interval.
    Keras's ``ModelCheckpoint(save_freq=N)`` works with ``fit`` too, and counts N updates.

    Args:
        directory: folder of the checkpoint files (created if missing).
        every: env steps between saves.
        keep: how many of the newest files to keep on disk (``None``: all).
        save_replay: also store the replay buffer in each file (can be large).
        prefix: file name prefix (defaults to the agent's name); files are ``{prefix}-{env_steps}.keras``.

    Example:
        >>> import gymnasium as gym
        >>> from keras_rl_gym import DQNAgent
        >>> env = gym.make("CartPole-v1")
        >>> agent = DQNAgent(env.observation_space, env.action_space)
        >>> checkpoint = Checkpoint("checkpoints", every=500, keep=2, prefix="dqn-cartpole")
        >>> history = agent.fit(env, steps=1_500, callbacks=[MLflowLogger(), checkpoint], verbose=0)
        >>> checkpoint.saved
        ['checkpoints/dqn-cartpole-1000.keras', 'checkpoints/dqn-cartpole-1500.keras']
    """

    def __init__(
        self,
        directory: str = "checkpoints",
        every: int = 10_000,
        keep: int | None = 3,
        *,
        save_replay: bool = False,
        prefix: str | None = None,
    ):
        super().__init__()
        if int(every) < 1 or (keep is not None and int(keep) < 1):
            raise ValueError(f"every and keep must be >= 1, got {every} and {keep}.")
        self.directory = os.fspath(directory)
        self.every = int(every)
        self.keep = None if keep is None else int(keep)
        self.save_replay = bool(save_replay)
        self.prefix = prefix
        self.saved = []
        self.due_step = math.inf

    def output_paths(self) -> list[tuple[str, str, bool]]:
        """What this callback writes, for ``fit`` to check before training: ``(what, path, is_directory)``."""
        return [("Checkpoint directory", self.directory, True)]

    def on_train_begin(self, logs=None):
        self.due_step = (self.model.env_steps // self.every + 1) * self.every

    def on_progress(self, step, logs):
        if self.model.env_steps >= self.due_step:
            self.save()
            self.due_step = (self.model.env_steps // self.every + 1) * self.every

    def on_train_end(self, logs=None):
        self.due_step = math.inf

    def on_fit_error(self, error, logs=None):
        self.due_step = math.inf  # fit itself saves the agent on a failure

    def save(self) -> str:
        """Saves the agent now; returns the path."""
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"{self.prefix or self.model.name}-{self.model.env_steps}.keras")
        self.model.save(path, save_replay=self.save_replay)
        self.saved.append(path)
        run_id = _active_run_id()
        if run_id is not None:
            mlflow_client().log_artifact(run_id, path, artifact_path="checkpoints")
        while self.keep is not None and len(self.saved) > self.keep:
            old = self.saved.pop(0)
            if os.path.exists(old):
                os.remove(old)
        return path
