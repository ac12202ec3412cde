"""DDPG on Pendulum-v1: does configs/ddpg-pendulum.json reach a mean return above -300 in 30k steps?

    KERAS_BACKEND=jax python benchmarks/ddpg_pendulum.py --seeds 3

Each seed trains a fresh agent for ``--steps`` env steps, then runs its greedy
policy for 10 episodes on a separately seeded env and prints the mean return.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np

from keras_rl_gym.config import load_config, make_agent, make_env

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "ddpg-pendulum.json")
THRESHOLD = -300.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()

    backend = keras.backend.backend()
    config = load_config(args.config)
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        config["train"]["seed"] = seed
        env = make_env(config)
        agent = make_agent(config, env)
        start = time.perf_counter()
        agent.fit(env, steps=args.steps, verbose=0, seed=seed)
        elapsed = time.perf_counter() - start
        result = agent.evaluate(make_env(config, training=False), episodes=args.episodes, seed=10_000 + seed)
        mean = result["mean_return"]
        results.append(mean)
        passed = "yes" if mean > THRESHOLD else "no"
        print(
            f"{backend} seed {seed}: mean eval return {mean:.1f} over {args.episodes} episodes after {args.steps} "
            f"steps ({args.steps / elapsed:.0f} steps/s, {elapsed:.0f} s); > {THRESHOLD:.0f}: {passed}",
            flush=True,
        )
    passed = sum(r > THRESHOLD for r in results)
    print(f"{backend}: {passed}/{len(results)} seeds above {THRESHOLD:.0f}; mean {np.mean(results):.1f}")
    print(json.dumps({"backend": backend, "steps": args.steps, "returns": results, "passed": passed}))


if __name__ == "__main__":
    main()
