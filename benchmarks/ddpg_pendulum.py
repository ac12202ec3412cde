"""DDPG on Pendulum-v1: does each seed clear its threshold?

    KERAS_BACKEND=jax python benchmarks/ddpg_pendulum.py                  # seeds 0 1 2
    KERAS_BACKEND=jax python benchmarks/ddpg_pendulum.py --seeds 0 1 2 3 4
    KERAS_BACKEND=jax python benchmarks/ddpg_pendulum.py --config configs/ddpg-pendulum.json

By default each seed trains the settings of tests/test_ddpg.py's learning test
(tests/ddpg_pendulum_setup.py: agent, steps, evaluation and threshold, written
once there), which the test itself runs for seed 0 only. With ``--config``,
the config's agent trains for ``--steps`` env steps instead and must reach a
mean return above -300 (configs/ddpg-pendulum.json: 30k steps). Each seed
trains a fresh agent, then runs its greedy policy on a separately seeded env
and prints the mean return and whether it clears the threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import keras
import numpy as np

from keras_rl_gym.config import load_config, make_agent, make_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import ddpg_pendulum_setup as learning_test  # noqa: E402

CONFIG_THRESHOLD = -300.0


def run_config(config_path: str, seed: int, steps: int, episodes: int) -> dict:
    """Trains the config's agent for ``steps`` env steps; returns its greedy evaluation."""
    config = load_config(config_path)
    config["train"]["seed"] = seed
    env = make_env(config)
    agent = make_agent(config, env)
    agent.fit(env, steps=steps, verbose=0, seed=seed)
    return agent.evaluate(make_env(config, training=False), episodes=episodes, seed=10_000 + seed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", help="train this config's agent instead of the learning test's settings")
    parser.add_argument("--steps", type=int, default=30_000, help="env steps of a config run")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes of a config run")
    args = parser.parse_args()

    backend = keras.backend.backend()
    if args.config is None:
        steps, episodes, threshold = learning_test.STEPS, learning_test.EVAL_EPISODES, learning_test.THRESHOLD
        what = "learning test"
    else:
        steps, episodes, threshold = args.steps, args.episodes, CONFIG_THRESHOLD
        what = os.path.basename(args.config)
    results = []
    for seed in args.seeds:
        start = time.perf_counter()
        if args.config is None:
            result = learning_test.train_and_evaluate(seed)
        else:
            result = run_config(args.config, seed, steps, episodes)
        elapsed = time.perf_counter() - start
        mean = result["mean_return"]
        results.append(mean)
        passed = "yes" if mean > threshold else "no"
        print(
            f"{backend} {what} seed {seed}: mean eval return {mean:.1f} over {episodes} episodes after {steps} "
            f"steps ({elapsed:.0f} s with evaluation); > {threshold:.0f}: {passed}",
            flush=True,
        )
    passed = sum(r > threshold for r in results)
    print(f"{backend} {what}: {passed}/{len(results)} seeds above {threshold:.0f}; mean {np.mean(results):.1f}")
    print(
        json.dumps(
            {
                "backend": backend,
                "run": what,
                "steps": steps,
                "seeds": args.seeds,
                "returns": results,
                "threshold": threshold,
                "passed": passed,
            }
        )
    )


if __name__ == "__main__":
    main()
