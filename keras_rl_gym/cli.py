"""The ``keras-rl-gym`` command: train an agent from a config file or flags.

Examples::

    keras-rl-gym train configs/dqn-cartpole.json
    keras-rl-gym train --algo dqn --env CartPole-v1 --steps 20000
    keras-rl-gym train configs/dqn-cartpole.json --backend jax --no-mlflow
"""

from __future__ import annotations

import argparse
import json
import os
import sys


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
    train.add_argument("--save", help="save the trained agent to this .keras path")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


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


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.backend:
        # Must happen before Keras is imported.
        os.environ["KERAS_BACKEND"] = args.backend
    from keras_rl_gym.callbacks import tracking_uri
    from keras_rl_gym.config import ConfigError, run

    try:
        config = build_config(args)
        agent, history, evaluation = run(config, verbose=0 if args.quiet else 1)
    except ConfigError as error:
        print(f"keras-rl-gym: config error: {error}", file=sys.stderr)
        return 2
    summary = {k: evaluation[k] for k in ("mean_return", "std_return", "mean_length")}
    print(f"\nEvaluation over {len(evaluation['returns'])} episodes: {json.dumps(summary)}")
    if config.get("train", {}).get("mlflow", True):
        uri = tracking_uri()
        print(f"Logged to MLflow at {uri}. Browse the runs with:\n    mlflow ui --backend-store-uri {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
