"""Hyperparameter sweeps with Ray Tune, each trial an MLflow run nested under one parent run.

A search space names run-config keys (``agent.*``, ``train.*``) and how to draw each::

    agent.learning_rate: {loguniform: [1.0e-4, 3.0e-3]}
    agent.batch_size: {choice: [32, 64, 128]}
    agent.gamma: {uniform: [0.95, 0.999]}

Each trial trains the config with its values through :func:`keras_rl_gym.config.run`
(the same training, evaluation and MLflow logging as ``keras-rl-gym train``) and reports
the final evaluation's mean return. With ``asha=True`` Ray Tune's ASHA stops the weaker
trials early on an evaluation every ``log_every`` env steps. The best trial's config is
written out as a config file that ``keras-rl-gym train`` runs as it is.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

from keras_rl_gym.config import TRAIN_KEYS, ConfigError, agent_annotations, agent_class, check_type, validate_config

DISTRIBUTIONS = ("choice", "uniform", "loguniform")
# train keys a trial may not change: where and whether its run is logged, where it saves.
_FIXED_TRAIN_KEYS = {"mlflow", "experiment", "run_name", "save_path"}
METRIC = "eval_mean_return"


def load_space(path) -> dict:
    """Reads a search space from a YAML or JSON file: ``{"agent.key": {"choice": [...]}, ...}``."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Search space file {path} does not exist.")
    try:
        space = yaml.safe_load(path.read_text())  # YAML 1.1 reads JSON too
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: a search space is a non-empty mapping of config keys, got {space!r}.")
    return space


def check_space(config: dict, space: dict) -> dict:
    """Checks every key and distribution of ``space`` against ``config``'s algorithm; returns it normalized.

    Each value must be ``{choice: [values...]}``, ``{uniform: [low, high]}`` or
    ``{loguniform: [low, high]}`` (``0 < low``); each key an ``agent.*`` argument of the
    config's agent or a ``train.*`` key, and each value one of the argument's type.
    """
    cls = agent_class(config["algo"])
    annotations = agent_annotations(cls)
    checked = {}
    for key, spec in space.items():
        section, _, name = str(key).partition(".")
        if section == "agent":
            if name not in annotations:
                raise ConfigError(f"Search space key {key!r}: {cls.__name__} has no argument {name!r}.")
        elif section == "train":
            if name not in TRAIN_KEYS or name in _FIXED_TRAIN_KEYS:
                allowed = sorted(TRAIN_KEYS - _FIXED_TRAIN_KEYS)
                raise ConfigError(f"Search space key {key!r}: a sweep can vary train keys {allowed}.")
        else:
            raise ConfigError(f"Search space key {key!r}: keys are agent.<argument> or train.<key>.")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            kinds = list(DISTRIBUTIONS)
            raise ConfigError(f"Search space key {key!r}: give one of {kinds} as a mapping, got {spec!r}.")
        kind, values = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(values, list) or not values:
                raise ConfigError(f"Search space key {key!r}: choice takes a non-empty list, got {values!r}.")
            for value in values:
                if section == "agent":
                    check_type(key, value, annotations[name])
        else:
            ok = isinstance(values, list) and len(values) == 2 and all(isinstance(v, (int, float)) for v in values)
            if not ok or not values[0] < values[1] or (kind == "loguniform" and values[0] <= 0):
                raise ConfigError(
                    f"Search space key {key!r}: {kind} takes [low, high] with low < high"
                    f"{' and low > 0' if kind == 'loguniform' else ''}, got {values!r}."
                )
        checked[key] = (kind, values)
    return checked


def with_values(config: dict, values: dict) -> dict:
    """``config`` with each dotted key of ``values`` (``agent.learning_rate``) set; checked as a config."""
    config = copy.deepcopy(config)
    for key, value in values.items():
        section, _, name = key.partition(".")
        # Tune's numbers arrive as NumPy or Python floats: plain Python values in the config.
        config.setdefault(section, {})[name] = value.item() if hasattr(value, "item") else value
    return validate_config(config)


def resolve_tracking_uri(uri: str | None) -> str:
    """An MLflow tracking URI that means the same store from any working directory.

    Tune runs each trial in a directory of its own: a relative ``sqlite:///mlflow.db``
    there would be a new database per trial.
    """
    from keras_rl_gym.callbacks import tracking_uri

    uri = tracking_uri(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///") :])
    if uri.startswith("file:") or "://" not in uri:
        path = uri[len("file:") :].removeprefix("//") if uri.startswith("file:") else uri
        return Path(os.path.abspath(path)).as_uri()
    return uri


def _end_stopped_trials(parent_run_id: str) -> None:
    """Ends as KILLED the trial runs still open: ASHA stopped those trials (their process ended mid-run)."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = mlflow.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"
    )
    for run in runs:
        client.set_tag(run.info.run_id, "sweep.stopped_early", "true")
        client.set_terminated(run.info.run_id, "KILLED")


def _search_space(space: dict) -> dict:
    from ray import tune

    make = {"choice": tune.choice, "uniform": tune.uniform, "loguniform": tune.loguniform}
    return {key: make[kind](*([values] if kind == "choice" else values)) for key, (kind, values) in space.items()}


def _trial(values: dict, *, config, parent_run_id, tracking_uri, experiment, env_vars, asha):
    """One Tune trial: the config with ``values``, trained and evaluated in an MLflow run under the parent.

    With ASHA, each logged interval is reported with a short evaluation's mean return, as the
    scheduler compares trials on it; the final report has the run's own evaluation.
    """
    os.environ.update(env_vars)  # before Keras is imported in this worker: its backend
    import keras
    import mlflow
    from ray import tune

    from keras_rl_gym.config import run

    class Report(keras.callbacks.Callback):
        """Reports each interval to Tune, with the greedy return of a short evaluation."""

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            report = {"env_steps": logs.get("env_steps", 0.0), "mlflow_run_id": mlflow.active_run().info.run_id}
            if "episode_return" in logs:
                report["episode_return"] = logs["episode_return"]
            eval_env = make_env(trial_config, num_envs=1, training=False)
            try:
                report[METRIC] = self.model.evaluate(eval_env, episodes=eval_episodes)["mean_return"]
            finally:
                eval_env.close()
            tune.report(report)

    from keras_rl_gym.config import make_env

    trial_config = with_values(config, values)
    eval_episodes = trial_config.get("train", {}).get("eval_episodes", 10)
    trial_config.setdefault("train", {})
    name = tune.get_context().get_trial_name()
    trial_config["train"]["run_name"] = name
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=name, parent_run_id=parent_run_id) as active:
        mlflow.set_tags({"sweep.trial": name, "sweep.trial_id": tune.get_context().get_trial_id()})
        mlflow.log_params({f"sweep.{k}": v for k, v in values.items()})
        # Without ASHA, Tune needs only the final result.
        _, _, evaluation = run(trial_config, verbose=0, callbacks=[Report()] if asha else [])
        run_id = active.info.run_id
    tune.report({METRIC: evaluation["mean_return"], "done": True, "mlflow_run_id": run_id})


def sweep(
    config: dict,
    space: dict,
    *,
    samples: int = 8,
    concurrent: int | None = None,
    address: str | None = None,
    asha: bool = False,
    tracking_uri: str | None = None,
    output: str | os.PathLike = "best-config.json",
    storage_path: str | None = None,
    cpus_per_trial: float = 1.0,
) -> dict:
    """Runs ``samples`` Ray Tune trials of ``config`` over ``space``; writes the best config to ``output``.

    Args:
        config: a run config (as :func:`keras_rl_gym.config.load_config` gives it).
        space: ``{"agent.key": {"loguniform": [low, high]}, ...}`` (see :func:`check_space`).
        samples: trials to run.
        concurrent: trials at once (default: as many as the cluster's CPUs allow).
        address: the Ray cluster (see :class:`~keras_rl_gym.distributed.RayRunners`).
        asha: stop weaker trials early (Ray Tune's ASHA) on an evaluation every ``log_every`` steps.
        tracking_uri: the MLflow store (default ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``),
            made absolute before any trial starts. A cluster of several nodes needs an MLflow
            server (``http://...``): a file or SQLite store is local to one machine.
        output: where the best trial's config is written, as JSON.
        storage_path: Ray Tune's results folder (default: a temporary folder).
        cpus_per_trial: CPUs Ray reserves for each trial.

    Returns:
        ``{"best_config", "best_value", "best_trial", "best_run_id", "parent_run_id", "output", "trials"}``:
        ``trials`` lists each trial's values, final evaluation return and MLflow run id.

    Example:
        >>> from keras_rl_gym.config import load_config
        >>> from keras_rl_gym.distributed import sweep
        >>> config = load_config("ppo-cartpole")  # a shipped config, by name
        >>> config["train"].update(steps=512, eval_episodes=2)  # a short trial, for the example
        >>> import contextlib, io
        >>> with contextlib.redirect_stdout(io.StringIO()):  # Ray Tune prints a table of the experiment's settings
        ...     result = sweep(config, {"agent.learning_rate": {"loguniform": [1e-4, 3e-3]}}, samples=2)
        >>> result["output"], len(result["trials"])
        ('best-config.json', 2)
    """
    import mlflow
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from keras_rl_gym.distributed.runners import _runtime_env, connect

    config = validate_config(copy.deepcopy(config))
    checked = check_space(config, space)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples must be a positive integer, got {samples!r}.")
    if concurrent is not None and (isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1):
        raise ConfigError(f"concurrent must be a positive integer, got {concurrent!r}.")
    uri = resolve_tracking_uri(tracking_uri)
    connect(address)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    hosts = {node.get("NodeManagerAddress") for node in nodes}
    if len(hosts) > 1 and not uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(
            f"The Ray cluster spans {len(hosts)} machines, and the MLflow store {uri} is local to one: start an "
            "MLflow server (mlflow server --host 0.0.0.0 --backend-store-uri sqlite:///mlflow.db) and pass its "
            "URI (--tracking-uri http://HOST:5000, or MLFLOW_TRACKING_URI)."
        )
    train = config.get("train", {})
    experiment = train.get("experiment", "keras-rl-gym")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    name = f"sweep-{config.get('name') or config['algo'] + '-' + config['env']}"
    # One report per logged interval, and one more with the final evaluation.
    epochs = -(-train.get("steps", 50_000) // train.get("log_every", 1000)) + 1
    scheduler = ASHAScheduler(max_t=epochs + 1, grace_period=max(1, epochs // 4)) if asha else None
    with mlflow.start_run(run_name=name) as parent:
        mlflow.set_tags(
            {
                "sweep.space": json.dumps(space, sort_keys=True),
                "sweep.samples": samples,
                "sweep.scheduler": "asha" if asha else "none",
                "sweep.metric": METRIC,
            }
        )
        trainable = tune.with_parameters(
            _trial,
            config=config,
            parent_run_id=parent.info.run_id,
            tracking_uri=uri,
            experiment=experiment,
            env_vars=_runtime_env()["env_vars"],
            asha=asha,
        )
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus_per_trial}),
            param_space=_search_space(checked),
            tune_config=tune.TuneConfig(
                num_samples=samples,
                max_concurrent_trials=concurrent,
                scheduler=scheduler,
                # ASHA reads the metric in every report; without it, only the final one has it.
                metric=METRIC if asha else None,
                mode="max" if asha else None,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=os.path.abspath(storage_path or tempfile.mkdtemp(prefix="keras-rl-gym-tune-")),
                verbose=0,
            ),
        )
        results = tuner.fit()
        _end_stopped_trials(parent.info.run_id)
        trials = []
        for result in results:
            metrics = result.metrics or {}
            trials.append(
                {
                    "values": dict(result.config or {}),
                    METRIC: metrics.get(METRIC) if metrics.get("done") else None,
                    "mlflow_run_id": metrics.get("mlflow_run_id"),
                    "trial_id": metrics.get("trial_id"),
                    "error": None if result.error is None else str(result.error).strip().splitlines()[0],
                }
            )
        finished = [t for t in trials if t[METRIC] is not None and t["mlflow_run_id"]]
        if not finished:
            errors = "; ".join(t["error"] for t in trials if t["error"]) or "no trial reported a result"
            raise RuntimeError(f"Every trial of the sweep failed: {errors}")
        best_result = results.get_best_result(metric=METRIC, mode="max", scope="last")
        best_values = dict(best_result.config)
        best_config = with_values(config, best_values)
        best_config["description"] = (
            f"Best of {samples} trials of the sweep {parent.info.run_id} over {sorted(space)}; "
            f"{METRIC} {best_result.metrics[METRIC]:.1f}. " + config.get("description", "")
        ).strip()
        best_config.get("train", {}).pop("run_name", None)
        output = os.fspath(output)
        Path(output).write_text(json.dumps(best_config, indent=2) + "\n")
        best_run = best_result.metrics.get("mlflow_run_id")
        mlflow.set_tags(
            {
                "sweep.best_trial": best_result.metrics.get("trial_id"),
                "sweep.best_run_id": best_run,
                f"sweep.best_{METRIC}": best_result.metrics[METRIC],
                "sweep.best_values": json.dumps(best_values, sort_keys=True, default=float),
            }
        )
        mlflow.log_metric(f"best_{METRIC}", best_result.metrics[METRIC])
        mlflow.log_artifact(output, artifact_path="best_config")
    return {
        "best_config": best_config,
        "best_value": best_result.metrics[METRIC],
        "best_trial": best_result.metrics.get("trial_id"),
        "best_run_id": best_run,
        "parent_run_id": parent.info.run_id,
        "output": output,
        "trials": trials,
    }
