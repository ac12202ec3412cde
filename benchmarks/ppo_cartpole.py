"""PPO on CartPole-v1 with 8 envs: keras-rl-gym against Stable-Baselines3 and SBX, same hyperparameters, same run.

    pip install -r benchmarks/requirements.txt
    KERAS_BACKEND=jax python benchmarks/ppo_cartpole.py --steps 100000 --seeds 5 --first-seed 0

For each seed every side trains for ``--steps`` env steps with the values of
``configs/ppo-cartpole.json`` (RL Zoo's CartPole PPO with constant learning rate
and clip range; ReLU 64-64 actor and critic on every side). Printed per seed and
in a table over the seeds (median, min/max, IQR): env steps per second over the
whole run (acting, env stepping, GAE and updates) and after ``--warmup`` env steps
(by default the first two rollouts) to the end, the env steps at which the mean
return of the last 20 training episodes first reaches 475, and the greedy return
after training; then a bootstrap interval of each difference of medians
(keras-rl-gym minus peer). SB3 runs torch on one thread. SBX is compared on the JAX
backend, in its own venv (benchmarks/.venv-sbx, set up from requirements-sbx.txt on
first use; ``--no-sbx`` leaves it out); its actor and critic each have their own Adam
and their own ``max_grad_norm`` clip, where SB3 and keras-rl-gym clip them together.
"""

from __future__ import annotations

import argparse
import json

import keras
from _common import (
    EVAL_RETURN,
    STEPS_TO_THRESHOLD,
    THROUGHPUT,
    RunClock,
    Threshold,
    add_arguments,
    evaluate_greedy,
    keras_callback,
    peers,
    result,
    seeds_mode,
    warmup_step,
)

from keras_rl_gym.config import load_config, make_agent, make_env


def run_ours(config: dict, steps: int, seed: int, warmup: int) -> dict:
    config = json.loads(json.dumps(config))
    config["train"]["seed"] = seed
    envs = make_env(config)
    agent = make_agent(config, envs)
    clock, tracker = RunClock(warmup), Threshold()
    clock.start()
    agent.fit(envs, steps=steps, verbose=0, callbacks=[keras_callback(clock, tracker)], seed=seed)
    clock.stop(agent.env_steps)
    return result(clock, tracker, evaluate_greedy(lambda obs: int(agent.act(obs)), seed))


def peer_setup(config: dict) -> dict:
    """The config's PPO as SB3's and SBX's ``PPO("MlpPolicy")`` take it (a ``run_peer`` spec)."""
    a = config["agent"]
    kwargs = {key: a[key] for key in ("n_steps", "batch_size", "n_epochs", "gae_lambda", "gamma", "learning_rate")}
    kwargs.update(
        clip_range=a["clip_range"],
        max_grad_norm=a["max_grad_norm"],
        ent_coef=a.get("entropy_coef", 0.0),
        vf_coef=a.get("value_coef", 0.5),
    )
    net_arch = dict(pi=list(a["hidden_sizes"]), vf=list(a["hidden_sizes"]))
    return dict(algo="PPO", n_envs=config["num_envs"], net_arch=net_arch, activation="relu", kwargs=kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--config", default="configs/ppo-cartpole.json")
    add_arguments(parser, warmup=None, warmup_help="env steps before the steady-state rate starts (two rollouts)")
    args = parser.parse_args()
    config = load_config(args.config)
    backend = keras.backend.backend()
    rollout = config["agent"]["n_steps"] * config["num_envs"]
    warmup = warmup_step(2 * rollout if args.warmup is None else args.warmup, args.steps)
    runners = {"ours": lambda seed: run_ours(config, args.steps, seed, warmup)}
    runners.update(peers(args, backend, peer_setup(config), args.steps, warmup))
    metrics = [*THROUGHPUT, STEPS_TO_THRESHOLD, EVAL_RETURN]
    extra = {"algo": "PPO", "steps": args.steps, "warmup": warmup, "config": config}
    seeds_mode(args, backend, runners, metrics, extra)


if __name__ == "__main__":
    main()
