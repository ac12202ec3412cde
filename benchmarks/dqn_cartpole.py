"""DQN on CartPole-v1: keras-rl-gym against Stable-Baselines3 and SBX, same hyperparameters, same run.

Throughput, one seed (MLP 64-64, batch 32, one gradient step per env step)::

    pip install -r benchmarks/requirements.txt
    KERAS_BACKEND=jax python benchmarks/dqn_cartpole.py --steps 50000

Learning parity: every side trains the same hyperparameters on N seeds; per side the
throughput, the greedy return and their spread, and a bootstrap interval of each
difference of medians (keras-rl-gym minus peer)::

    KERAS_BACKEND=jax python benchmarks/dqn_cartpole.py --steps 50000 --seeds 10 --first-seed 0

N envs stepped together (one batched act per vector step, one update per N transitions on every side)::

    KERAS_BACKEND=jax python benchmarks/dqn_cartpole.py --steps 50000 --num-envs 4

Learning with the tuned config, several seeds (keras-rl-gym only): per seed the env steps to a
20-episode mean training return of 475 (a seed that never gets there counts as the whole budget)
and the greedy return at the end. ``--config`` again compares configs seed for seed, e.g. prioritized
3-step DQN against the same DQN without them (``--until-threshold`` stops each run there)::

    KERAS_BACKEND=jax python benchmarks/dqn_cartpole.py --config configs/dqn-cartpole.json --seeds 5
    KERAS_BACKEND=jax python benchmarks/dqn_cartpole.py --config configs/dqn-per-nstep-cartpole.json \
        --config configs/dqn-cartpole.json --seeds 5 --until-threshold

SBX is compared on the JAX backend, in its own venv (benchmarks/.venv-sbx, set up from
requirements-sbx.txt on first use; ``--no-sbx`` leaves it out); SBX's DQN takes no
``max_grad_norm``, so it runs unclipped. SB3 runs torch on one thread (faster on a 2-core
machine). Timings include acting, env stepping, replay sampling and updates: env steps per
second over the whole ``fit``/``learn`` call, and after ``--warmup`` env steps (5000: past
``learning_starts`` and compilation) to the end.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import keras
import numpy as np
from _common import (
    EVAL_RETURN,
    STEPS_TO_THRESHOLD,
    THRESHOLD,
    THROUGHPUT,
    WINDOW,
    RunClock,
    Threshold,
    add_arguments,
    dumps,
    evaluate_greedy,
    keras_callback,
    labels,
    peers,
    print_ignored,
    print_ratios,
    result,
    run_line,
    seeds_mode,
    torch_style_adam,
    torch_style_init,
    warmup_step,
)

from keras_rl_gym import DQNAgent
from keras_rl_gym.config import load_config, make_agent, make_env

# SB3's names; keras-rl-gym's differ for three of them (see run_ours).
HYPERPARAMETERS = dict(
    hidden=(64, 64),
    learning_rate=1e-3,
    buffer_size=50_000,
    learning_starts=1_000,
    batch_size=32,
    gamma=0.99,
    train_freq=1,
    gradient_steps=1,
    target_update_interval=500,
    exploration_fraction=0.1,
    exploration_final_eps=0.02,
    max_grad_norm=10.0,
)
# The peers' run_peer spec: SB3's DQN("MlpPolicy") and SBX's, ReLU MLP of the same widths.
PEER = dict(
    algo="DQN",
    n_envs=1,
    net_arch=list(HYPERPARAMETERS["hidden"]),
    activation="relu",
    kwargs={key: value for key, value in HYPERPARAMETERS.items() if key != "hidden"},
)


def run_ours(
    steps: int,
    seed: int,
    warmup: int,
    num_envs: int = 1,
    adam_epsilon: float | None = None,
    adam: str = "keras",
    init: str = "keras",
) -> dict:
    h = HYPERPARAMETERS
    # N envs: one batched act per vector step. SB3's train_freq counts vector steps and
    # this package's counts transitions, so N of ours make one of SB3's.
    env = gym.make("CartPole-v1") if num_envs == 1 else gym.make_vec("CartPole-v1", num_envs, vectorization_mode="sync")
    agent = DQNAgent(
        getattr(env, "single_observation_space", env.observation_space),
        getattr(env, "single_action_space", env.action_space),
        hidden_sizes=h["hidden"],
        learning_rate=h["learning_rate"],
        buffer_size=h["buffer_size"],
        learning_starts=h["learning_starts"],
        batch_size=h["batch_size"],
        gamma=h["gamma"],
        train_freq=h["train_freq"] * num_envs,
        gradient_steps=h["gradient_steps"],
        target_update_every=h["target_update_interval"],
        exploration_fraction=h["exploration_fraction"],
        epsilon_final=h["exploration_final_eps"],
        max_grad_norm=h["max_grad_norm"],
        loss="huber",  # SB3's DQN loss
        seed=seed,
    )
    if adam_epsilon is not None:
        agent.optimizer.epsilon = adam_epsilon  # read when the update is first traced
    if adam == "torch":
        torch_style_adam(agent.optimizer)
    if init == "torch":
        torch_style_init(agent.q_network, seed)
        agent.update_targets(1.0)  # the target network starts as a copy, as on every side
    clock, tracker = RunClock(warmup), Threshold()
    clock.start()
    agent.fit(env, steps=steps, verbose=0, callbacks=[keras_callback(clock, tracker)])
    clock.stop(agent.env_steps)
    return result(clock, tracker, evaluate_greedy(lambda obs: int(agent.act(obs)), seed), num_envs=num_envs)


def throughput(args, backend: str, runners: dict) -> None:
    """One seed per side: each side's rates and greedy return, and the ratios of steps/s."""
    names = labels(backend)
    runs = {name: run(args.seed) for name, run in runners.items()}
    runs = {name: outcome for name, outcome in runs.items() if outcome is not None}
    for name, outcome in runs.items():
        print(run_line(f"{names[name]}:", outcome))
    print_ignored(backend, {name: [outcome] for name, outcome in runs.items()})
    ratios = print_ratios(backend, {name: [outcome] for name, outcome in runs.items()})
    sb3_ratio = ratios.get("sb3", {}).get("steps_per_second")
    print(dumps({"backend": backend, "steps": args.steps, **runs, "ratio": sb3_ratio, "ratios": ratios}))


def learning(args):
    """Each config on the same seeds: steps to the 20-episode threshold, greedy return, then the medians."""
    medians = {}
    for path in args.config:
        config = load_config(path)
        steps = config.get("train", {}).get("steps", 50_000)
        reached, returns = [], []
        for seed in range(args.first_seed, args.first_seed + (args.seeds or 5)):
            config["train"]["seed"] = seed
            env = make_env(config)
            agent = make_agent(config, env)
            clock, tracker = RunClock(0), Threshold()
            callbacks = [keras_callback(clock, tracker)]
            if args.until_threshold:
                callbacks.append(_StopAtThreshold(tracker))
            start = time.perf_counter()
            agent.fit(env, steps=steps, verbose=0, seed=seed, callbacks=callbacks)
            rate = agent.env_steps / (time.perf_counter() - start)
            reached.append(steps if tracker.reached_at is None else tracker.reached_at)
            line = f"{config['name']} seed {seed}: {WINDOW}-episode mean {THRESHOLD:.0f} at "
            line += "never" if tracker.reached_at is None else f"{tracker.reached_at} steps"
            if not args.until_threshold:
                evaluation = agent.evaluate(make_env(config, training=False), episodes=10, seed=10_000 + seed)
                returns.append(evaluation["mean_return"])
                line += f"; mean eval return {evaluation['mean_return']:.1f} after {steps} steps"
            print(f"{line} ({rate:.0f} steps/s)", flush=True)
        name = config["name"]
        medians[name] = float(np.median(reached))
        print(f"{keras.backend.backend()} {name}: median steps to {THRESHOLD:.0f}: {medians[name]:.0f}")
        print(f"  per seed {reached} (never reached = the budget, {steps})")
        if returns:
            ended = sum(r >= THRESHOLD for r in returns)
            print(f"  {ended}/{len(returns)} seeds end >= {THRESHOLD:.0f}; returns {returns}")
    if len(medians) > 1:
        (first, a), *rest = medians.items()
        for name, b in rest:
            print(f"median steps to {THRESHOLD:.0f}: {first} {a:.0f} vs {name} {b:.0f} ({b / max(a, 1):.2f}x)")


class _StopAtThreshold(keras.callbacks.Callback):
    """Ends fit once ``tracker`` has reached the threshold (steps to it is all that is measured then)."""

    def __init__(self, tracker):
        super().__init__()
        self.tracker = tracker

    def on_episode_end(self, episode, logs):
        if self.tracker.reached_at is not None:
            self.model.stop_training = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0, help="the seed of the one-seed throughput run")
    parser.add_argument(
        "--seeds", type=int, help="train every side on this many seeds and compare them (with --config: 5 by default)"
    )
    parser.add_argument(
        "--config",
        action="append",
        help="train this config on --seeds seeds, keras-rl-gym only (again: compare configs on the same seeds)",
    )
    parser.add_argument(
        "--until-threshold", action="store_true", help="with --config: stop each run once it reaches the threshold"
    )
    parser.add_argument(
        "--num-envs", type=int, default=1, help="N CartPole envs stepped together (one batched act per vector step)"
    )
    parser.add_argument(
        "--adam-epsilon", type=float, help="keras-rl-gym's Adam epsilon (Keras's default 1e-7; torch's is 1e-8)"
    )
    parser.add_argument(
        "--adam",
        choices=["keras", "torch"],
        default="keras",
        help="where Adam adds its epsilon: Keras's (before the bias correction) or torch's (after it)",
    )
    parser.add_argument(
        "--init",
        choices=["keras", "torch"],
        default="keras",
        help="initial weights: Keras's (Glorot-uniform kernels, zero biases) or torch's (U(+-1/sqrt(fan_in)) both)",
    )
    add_arguments(parser, warmup=5_000, warmup_help="env steps before the steady-state rate starts")
    args = parser.parse_args()
    if args.config:
        learning(args)
        return
    backend = keras.backend.backend()
    warmup = warmup_step(args.warmup, args.steps)
    runners = {
        "ours": lambda seed: run_ours(
            args.steps, seed, warmup, args.num_envs, args.adam_epsilon, adam=args.adam, init=args.init
        )
    }
    runners.update(peers(args, backend, dict(PEER, n_envs=args.num_envs), args.steps, warmup))
    if args.seeds:
        metrics = [*THROUGHPUT, EVAL_RETURN, STEPS_TO_THRESHOLD]
        extra = {"algo": "DQN", "steps": args.steps, "warmup": warmup, "hyperparameters": HYPERPARAMETERS}
        seeds_mode(args, backend, runners, metrics, extra)
    else:
        throughput(args, backend, runners)


if __name__ == "__main__":
    main()
