"""The ``keras-rl-gym`` command: train an agent from a config file or flags.

Examples::

    keras-rl-gym train configs/dqn-cartpole.json
    keras-rl-gym train --algo dqn --env CartPole-v1 --steps 20000
    keras-rl-gym train configs/dqn-cartpole.json --backend jax --no-mlflow
    keras-rl-gym train configs/dqn-cartpole.json --resume dqn-cartpole-interrupted.keras

Ctrl-C (SIGINT) and SIGTERM stop training the same way: the agent is saved
(to ``--save``, else to ``<run name>-interrupted.keras``, named on stderr) and
the MLflow run ends KILLED. Exit status: 0 on success, 1 on an error, 2 on a
config error, 130 on SIGINT, 143 on SIGTERM (128 + the signal's number).

A config error is reported in one line before anything trains: an unknown
key, a value of the wrong type (``"double": "false"``), a file that is not
valid JSON or YAML, an env id that does not exist, an env factory given an
env it does not make, an agent that cannot handle the env's spaces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-rl-gym", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an agent and log the run to MLflow")
    train.add_argument("config", nargs="?", help="a JSON or YAML run config")
    train.add_argument("--algo", help="algorithm name (overrides the config's)")
    train.add_argument("--env", help="Gymnasium env id (overrides the config's)")
    train.add_argument("--steps", type=int, help="env steps to train for")
    train.add_argument("--seed", type=int, help="random seed")
    train.add_argument("--num-envs", type=int, help="parallel envs (a Gymnasium vector env)")
    train.add_argument("--backend", choices=["tensorflow", "jax", "torch"], help="Keras backend (else $KERAS_BACKEND)")
    train.add_argument("--experiment", help="MLflow experiment name")
    train.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
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
    train.add_argument("--debug", action="store_true", help="print the traceback of an error")

    tune = sub.add_parser(
        "tune", help="sweep hyperparameters with Ray Tune; each trial an MLflow run under one parent run"
    )
    tune.add_argument("config", help="a JSON or YAML run config: the values not swept")
    tune.add_argument(
        "--space", required=True, help="YAML/JSON search space: agent.KEY or train.KEY: {choice|uniform|loguniform}"
    )
    tune.add_argument("--samples", type=int, default=8, help="trials to run (default 8)")
    tune.add_argument("--concurrent", type=int, help="trials at once (default: as the cluster's CPUs allow)")
    tune.add_argument("--asha", action="store_true", help="stop weak trials early (ASHA) on periodic evaluations")
    tune.add_argument("--output", default="best-config.json", help="the best trial's config, written as JSON")
    tune.add_argument("--ray-address", metavar="ADDRESS", help="'auto' or host:port; default: a local cluster")
    tune.add_argument("--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    tune.add_argument("--backend", choices=["tensorflow", "jax", "torch"], help="Keras backend (else $KERAS_BACKEND)")
    tune.add_argument("--debug", action="store_true", help="print the traceback of an error")
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
        ("save_path", args.save),
    ):
        if value is not None:
            train[key] = value
    if args.no_mlflow:
        train["mlflow"] = False
    return config


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
    if args.backend:
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
            return {"train": _train, "tune": _tune}[args.command](args)
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


def _train(args) -> int:
    from keras_rl_gym.callbacks import tracking_uri
    from keras_rl_gym.config import ConfigError, run

    try:
        config = build_config(args)
        runners = ray_runners(args, config)
        agent, history, evaluation = run(config, verbose=0 if args.quiet else 1, resume=args.resume, runners=runners)
    except ConfigError as error:
        if args.debug:
            import traceback

            # A ConfigError made from another error (an agent's constructor, gym.make): show where that arose.
            traceback.print_exc()
        # One line, also when the error it was made from spans several (gymnasium's, an agent's).
        print(f"keras-rl-gym: config error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    summary = {k: evaluation[k] for k in ("mean_return", "std_return", "mean_length")}
    print(f"\nEvaluation over {len(evaluation['returns'])} episodes: {json.dumps(summary)}")
    if config.get("train", {}).get("mlflow", True):
        uri = tracking_uri()
        print(f"Logged to MLflow at {uri}. Browse the runs with:\n    mlflow ui --backend-store-uri {uri}")
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
        print(f"keras-rl-gym: config error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
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
