"""The ``keras-rl-gym`` command: train, evaluate, export and sweep agents; list what ships.

Examples::

    keras-rl-gym list                                          # algorithms and shipped configs
    keras-rl-gym train dqn-cartpole                            # a shipped config, by name
    keras-rl-gym train configs/dqn-cartpole.json --set agent.learning_rate=3e-4 --set train.steps=20000
    keras-rl-gym train --algo dqn --env CartPole-v1 --steps 20000 --run-name first-try
    keras-rl-gym train configs/dqn-cartpole.json --resume dqn-cartpole-interrupted.keras
    keras-rl-gym evaluate agent.keras --episodes 20 --video videos/
    keras-rl-gym export agent.keras --format onnx policy.onnx
    keras-rl-gym tune configs/ppo-cartpole.json --space space.yaml --samples 8

Ctrl-C (SIGINT) and SIGTERM stop training the same way: the agent is saved
(to ``--save``, else to ``<run name>-interrupted.keras``, named on stderr) and
the MLflow run ends KILLED. Exit status: 0 on success, 1 on an error, 2 on a
config error, 130 on SIGINT, 143 on SIGTERM (128 + the signal's number).

A config error is reported in one line before anything trains: an unknown
key, a value of the wrong type (``"double": "false"``), a file that is not
valid JSON or YAML, an env id that does not exist, an env factory given an
env it does not make, an ``env_kwargs`` key or wrapper parameter the env or
wrapper refuses, an agent that cannot handle the env's spaces, a ``--save``
path that cannot be written, an MLflow store that cannot be reached or
written (checked in seconds). With ``--ray-runners`` too, SIGTERM stops
training as above (``ray.init``'s own handler is undone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading

from keras_rl_gym import __version__
from keras_rl_gym.config import ALGORITHMS

BACKENDS = ["tensorflow", "jax", "torch"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-rl-gym", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"keras-rl-gym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # What every command that runs Keras takes.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=BACKENDS, help="Keras backend (else $KERAS_BACKEND)")
    common.add_argument("--debug", action="store_true", help="print the traceback of an error")
    # What reads a saved agent.
    loads = argparse.ArgumentParser(add_help=False)
    loads.add_argument(
        "--unsafe",
        action="store_true",
        help="load a saved network that holds Python code (a keras.layers.Lambda): Keras's safe_mode=False; "
        "only for a file you trust",
    )

    train = sub.add_parser("train", parents=[common, loads], help="train an agent and log the run to MLflow")
    train.add_argument("config", nargs="?", help="a JSON or YAML run config, or a shipped config's name")
    train.add_argument("--algo", choices=sorted(ALGORITHMS), help="algorithm (overrides the config's)")
    train.add_argument("--env", help="Gymnasium env id (overrides the config's)")
    train.add_argument("--steps", type=int, help="env steps to train for")
    train.add_argument("--seed", type=int, help="random seed")
    train.add_argument("--num-envs", type=int, help="parallel envs (a Gymnasium vector env)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a config value, e.g. agent.learning_rate=3e-4 or train.steps=200000 (JSON, else a string); "
        "checked as the config's own values are; repeatable",
    )
    train.add_argument("--experiment", help="MLflow experiment name")
    train.add_argument("--run-name", help="MLflow run name (default: <algo>-<env>-<backend>-s<seed>)")
    train.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    train.add_argument("--system-metrics", action="store_true", help="log MLflow's system metrics (CPU, memory)")
    train.add_argument("--save", help="save the trained agent to this .keras path (also when training stops early)")
    train.add_argument(
        "--resume", metavar="AGENT", help="continue training this saved .keras agent up to the config's train.steps"
    )
    ray = train.add_argument_group("Ray (pip install keras-rl-gym[ray])")
    ray.add_argument("--ray-runners", type=int, metavar="N", help="step the envs in N Ray actors (rollout runners)")
    ray.add_argument(
        "--ray-envs-per-runner",
        type=int,
        metavar="E",
        help="envs in each runner's vector env (default: the config's num_envs spread over the runners)",
    )
    ray.add_argument(
        "--ray-address", metavar="ADDRESS", help="'auto' (a `ray start` cluster here) or host:port; default: local"
    )
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    evaluate = sub.add_parser(
        "evaluate", parents=[common, loads], help="play a saved agent's greedy policy (RL Zoo's enjoy): mean return"
    )
    evaluate.add_argument("agent", help="a saved .keras agent")
    evaluate.add_argument("--env", help="Gymnasium env id (default: the env chain the agent was trained on)")
    evaluate.add_argument("--episodes", type=int, default=10, help="episodes to play (default 10)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the first reset (default 0)")
    evaluate.add_argument("--video", metavar="DIR", help="record every episode to DIR as MP4")
    evaluate.add_argument("--render", action="store_true", help="show the episodes in a window")
    evaluate.add_argument(
        "--trust-env",
        action="store_true",
        help="rebuild the saved env even where it names code outside Gymnasium's registry and this package "
        "(only for a file you trust: Gymnasium imports and calls what a saved spec names)",
    )

    sub.add_parser("list", help="list the algorithms and the shipped configs")

    export = sub.add_parser("export", parents=[common, loads], help="export a saved agent's greedy policy")
    export.add_argument("agent", help="a saved .keras agent")
    export.add_argument("out", help="where to write it (a file for onnx, a folder for tf_saved_model)")
    export.add_argument("--format", required=True, choices=["onnx", "tf_saved_model"], help="Keras's export format")

    tune = sub.add_parser(
        "tune", parents=[common], help="sweep hyperparameters with Ray Tune; each trial an MLflow run under one parent"
    )
    tune.add_argument("config", help="a JSON or YAML run config (or a shipped config's name): the values not swept")
    tune.add_argument(
        "--space", required=True, help="YAML/JSON search space: agent.KEY or train.KEY: {choice|uniform|loguniform}"
    )
    tune.add_argument("--samples", type=int, default=8, help="trials to run (default 8)")
    tune.add_argument("--concurrent", type=int, help="trials at once (default: as the cluster's CPUs allow)")
    tune.add_argument("--asha", action="store_true", help="stop weak trials early (ASHA) on periodic evaluations")
    tune.add_argument("--output", default="best-config.json", help="the best trial's config, written as JSON")
    tune.add_argument("--ray-address", metavar="ADDRESS", help="'auto' or host:port; default: a local cluster")
    tune.add_argument("--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    return parser


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process gets SIGTERM.

    A ``KeyboardInterrupt``, so that training stops exactly as on Ctrl-C:
    ``fit`` saves the agent and the MLflow run ends KILLED.
    """

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = int(signum)


def _raise_terminated(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM raises :class:`Terminated`, SIGINT ``KeyboardInterrupt``; the old handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return
    # SIGINT too: a process started with SIGINT ignored (nohup, some job runners) would not stop on Ctrl-C.
    handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _raise_terminated}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def build_config(args) -> dict:
    from keras_rl_gym.config import load_config

    config = load_config(args.config) if args.config else {}
    for key, value in (("algo", args.algo), ("env", args.env), ("num_envs", args.num_envs)):
        if value is not None:
            config[key] = value
    train = config.setdefault("train", {})
    for key, value in (
        ("steps", args.steps),
        ("seed", args.seed),
        ("experiment", args.experiment),
        ("run_name", args.run_name),
        ("save_path", args.save),
    ):
        if value is not None:
            train[key] = value
    if args.no_mlflow:
        train["mlflow"] = False
    if args.system_metrics:
        train["system_metrics"] = True
    for assignment in args.set:
        set_value(config, assignment)
    return config


def set_value(config: dict, assignment: str) -> None:
    """Applies one ``--set KEY=VALUE``: the dotted key's value, read as JSON, else taken as a string.

    The value is checked afterwards with the rest of the config (an agent value against
    its argument's type), as if the file had held it.

    Example:
        >>> config = {"agent": {}}
        >>> set_value(config, "agent.learning_rate=3e-4"); set_value(config, "agent.replay=frames")
        >>> config["agent"]
        {'learning_rate': 0.0003, 'replay': 'frames'}
    """
    from keras_rl_gym.config import ConfigError

    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set takes KEY=VALUE (agent.learning_rate=3e-4), got {assignment!r}.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    *sections, name = key.strip().split(".")
    target = config
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {key}: {section} is not a mapping in the config.")
    target[name] = value


def ray_runners(args, config: dict):
    """The ``RayRunners`` the flags ask for, or ``None``; a config error where they cannot be."""
    from keras_rl_gym.config import ConfigError

    if args.ray_runners is None:
        if args.ray_envs_per_runner is not None or args.ray_address is not None:
            raise ConfigError("--ray-envs-per-runner and --ray-address need --ray-runners N.")
        return None
    try:
        from keras_rl_gym.distributed import RayRunners
    except ImportError as error:
        raise ConfigError(f"--ray-runners needs Ray: pip install 'keras-rl-gym[ray]' ({error}).") from None
    per_runner = args.ray_envs_per_runner
    if per_runner is None:  # the config's envs, spread over the runners
        per_runner = max(1, -(-config.get("num_envs", 1) // max(args.ray_runners, 1)))
    try:
        return RayRunners(args.ray_runners, per_runner, address=args.ray_address)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _report_saved(error: BaseException) -> None:
    path = getattr(error, "checkpoint_path", None)
    if path:
        print(
            f"keras-rl-gym: the agent was saved to {os.path.abspath(path)} (continue with --resume {path})",
            file=sys.stderr,
        )


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "backend", None):
        keras = sys.modules.get("keras")
        if keras is not None and keras.backend.backend() != args.backend:
            # Only an in-process call gets here (the package does not import Keras):
            # too late to pick a backend, and training on another one would be wrong.
            print(
                f"keras-rl-gym: config error: --backend {args.backend}: Keras is loaded already, with the "
                f"{keras.backend.backend()} backend; set KERAS_BACKEND={args.backend} before starting instead.",
                file=sys.stderr,
            )
            return 2
        # Must happen before Keras is imported.
        os.environ["KERAS_BACKEND"] = args.backend
    # Handlers first: a signal while config, MLflow and Keras load (if the package has not loaded them) stops cleanly.
    with stop_on_signals():
        try:
            commands = {"train": _train, "evaluate": _evaluate, "list": _list, "export": _export, "tune": _tune}
            return commands[args.command](args)
        except KeyboardInterrupt as error:
            signum = getattr(error, "signum", signal.SIGINT)
            print(f"\nkeras-rl-gym: stopped by {signal.Signals(signum).name}", file=sys.stderr)
            _report_saved(error)
            return 128 + signum
        except Exception as error:
            if args.debug:
                import traceback

                traceback.print_exc()
            print(f"keras-rl-gym: error: {_first_line(error)}", file=sys.stderr)
            _report_saved(error)
            return 1


def _config_error(error, args) -> int:
    """Reports a config error in one line (also when the error it was made from spans several); exit 2."""
    if getattr(args, "debug", False):
        import traceback

        # A ConfigError made from another error (an agent's constructor, gym.make): show where that arose.
        traceback.print_exc()
    print(f"keras-rl-gym: config error: {' '.join(str(error).split())}", file=sys.stderr)
    return 2


def _train(args) -> int:
    from keras_rl_gym.config import ConfigError, run

    try:
        config = build_config(args)
        runners = ray_runners(args, config)
        agent, history, evaluation = run(
            config, verbose=0 if args.quiet else 1, resume=args.resume, runners=runners, safe_mode=not args.unsafe
        )
    except ConfigError as error:
        return _config_error(error, args)
    summary = {k: evaluation[k] for k in ("mean_return", "std_return", "mean_length")}
    print(f"\nEvaluation over {len(evaluation['returns'])} episodes: {json.dumps(summary)}")
    train = config.get("train", {})
    if train.get("mlflow", True) and agent._mlflow_run is not None:
        import mlflow

        from keras_rl_gym.callbacks import experiment_link

        uri, run_id = agent._mlflow_run
        experiment = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id).info.experiment_id
        print(
            f"Logged to MLflow at {uri} (run {run_id}). Browse the runs with:\n"
            f"    mlflow ui --backend-store-uri {uri}\n"
            f"and open {experiment_link(experiment)}\n"
            f"(this run: {experiment_link(experiment, run_id=run_id)})"
        )
    return 0


def _load_agent(path: str, *, unsafe: bool = False):
    """A saved agent; a config error naming the file and the fault where it cannot be loaded.

    ``unsafe`` passes ``safe_mode=False`` to Keras: only then does a saved network holding
    Python code (a ``keras.layers.Lambda``) load.
    """
    import zipfile

    from keras_rl_gym.config import ConfigError, error_cause

    if not os.path.exists(path):
        raise ConfigError(f"{path} does not exist.")
    if os.path.isdir(path) or not zipfile.is_zipfile(path):
        raise ConfigError(f"{path} is not a .keras file (a zip archive): is it truncated or corrupted?")
    import keras

    from keras_rl_gym.agents import Agent

    try:
        agent = keras.saving.load_model(path, safe_mode=not unsafe)
    except Exception as error:
        raise ConfigError(f"Cannot load an agent from {path}: {error_cause(error)}") from error
    if not isinstance(agent, Agent):
        raise ConfigError(
            f"{path} holds a {type(agent).__name__}, not a keras-rl-gym agent (save one with agent.save(path))."
        )
    return agent


def evaluation_env(agent, env_id: str | None = None, render_mode: str | None = None, *, trust: bool = False):
    """The env to evaluate ``agent`` on: ``env_id``, else the chain it was trained on (saved with it).

    The saved chain is data from a file: it is rebuilt only from Gymnasium's registered ids and
    the package's own factories and wrappers (:mod:`keras_rl_gym.saved_env`) unless ``trust``.
    """
    import gymnasium as gym

    from keras_rl_gym.config import ConfigError
    from keras_rl_gym.saved_env import rebuild_env

    kwargs = {} if render_mode is None else {"render_mode": render_mode}
    try:
        if env_id is not None:
            return gym.make(env_id, **kwargs)
        return rebuild_env(agent.env_config, trust=trust, source=f"the saved {type(agent).__name__}", **kwargs)
    except gym.error.Error as error:
        raise ConfigError(f"Cannot make the env to evaluate on: {error}") from error


def _evaluate(args) -> int:
    import gymnasium as gym

    from keras_rl_gym.config import ConfigError

    try:
        if args.episodes < 1:
            raise ConfigError(f"--episodes must be a positive integer, got {args.episodes}.")
        agent = _load_agent(args.agent, unsafe=args.unsafe)
        render_mode = "rgb_array" if args.video else "human" if args.render else None
        env = evaluation_env(agent, args.env, render_mode, trust=args.trust_env)
        if args.video:
            env = gym.wrappers.RecordVideo(env, args.video, episode_trigger=lambda _: True, disable_logger=True)
        try:
            result = agent.evaluate(env, episodes=args.episodes, seed=args.seed, log=False)
        except ValueError as error:  # the env's spaces are not the agent's: a DQN on a continuous env
            raise ConfigError(f"{type(agent).__name__} from {args.agent} cannot play this env: {error}") from None
        finally:
            env.close()
    except ConfigError as error:
        return _config_error(error, args)
    saved = agent.env_config or {}
    env_id = args.env or saved.get("config", saved).get("env", "its env")
    print(
        f"{type(agent).__name__} on {env_id}: mean return {result['mean_return']:.2f} +- {result['std_return']:.2f} "
        f"over {len(result['returns'])} episodes, mean length {result['mean_length']:.1f}"
    )
    if args.video:
        print(f"Videos in {os.path.abspath(args.video)}")
    return 0


def _list(args) -> int:
    from keras_rl_gym.config import ALGORITHM_SPACES, read_config, shipped_configs

    print('Algorithms (keras-rl-gym train --algo NAME, or a config\'s "algo"):')
    width = max(map(len, ALGORITHMS))
    for name, spec in ALGORITHMS.items():
        print(f"  {name:{width}}  {spec.split(':')[1]:18}  actions: {ALGORITHM_SPACES[name]}")
    print("\nShipped configs (keras-rl-gym train NAME):")
    configs = shipped_configs()
    width = max(map(len, configs))
    for name, path in configs.items():
        description = read_config(path).get("description", "")
        first = description.split(". ")[0].rstrip(".")
        print(f"  {name:{width}}  {first[:100] + ('...' if len(first) > 100 else '')}")
    return 0


def _export(args) -> int:
    from keras_rl_gym.config import ConfigError

    try:
        agent = _load_agent(args.agent, unsafe=args.unsafe)
        try:
            agent.export(args.out, format=args.format)
        except NotImplementedError as error:  # DRQN, or a format this backend does not export
            raise ConfigError(str(error)) from None
    except ConfigError as error:
        return _config_error(error, args)
    print(f"Exported {type(agent).__name__}'s greedy policy (observations in, actions out) to {args.out}")
    return 0


def _tune(args) -> int:
    from keras_rl_gym.config import ConfigError, load_config

    try:
        config = load_config(args.config)
        try:
            from keras_rl_gym.distributed.sweep import load_space, sweep
        except ImportError as error:
            raise ConfigError(f"keras-rl-gym tune needs Ray: pip install 'keras-rl-gym[ray]' ({error}).") from None
        space = load_space(args.space)
        result = sweep(
            config,
            space,
            samples=args.samples,
            concurrent=args.concurrent,
            address=args.ray_address,
            asha=args.asha,
            tracking_uri=args.tracking_uri,
            output=args.output,
        )
    except ConfigError as error:
        return _config_error(error, args)
    print(f"\nSweep: {len(result['trials'])} trials, MLflow parent run {result['parent_run_id']}")
    for trial in result["trials"]:
        value = trial["eval_mean_return"]
        shown = "stopped early" if value is None else f"eval mean return {value:.1f}"
        print(f"  {json.dumps(trial['values'], sort_keys=True, default=float)}: {shown}")
    print(f"Best: {result['best_value']:.1f}; its config is {result['output']}. Train it with:")
    print(f"    keras-rl-gym train {result['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
