"""PPO on Ray runners against the local vector env, on the same total env count, same run.

    pip install -e ".[ray,atari]"
    KERAS_BACKEND=jax python benchmarks/ray_scaling.py                          # CartPole and Pong, 1/2/4 runners
    KERAS_BACKEND=jax python benchmarks/ray_scaling.py --envs cartpole --runners 1 2
    KERAS_BACKEND=jax python benchmarks/ray_scaling.py --envs pong --pong-steps 10240

Two envs: (a) ``CartPole-v1``, whose step costs ~10 us, so that Ray's cost per round shows;
(b) ``ALE/Pong-v5`` through the Atari chain (``make_atari_env``: frame skip 4, 4 stacked frames,
42x42 unless ``--pong-full-learner``), whose step costs ~1 ms; its learner is made light (see
``pong_ppo``) so that the collection shows. For each, PPO trains with ``--total-envs`` envs (8): locally on one vector
env (CartPole: ``sync``; Pong: ``async``, one subprocess per env), then on 1, 2 and 4 runners
of ``total-envs / runners`` envs each (``sync`` inside each runner). PPO's rounds are
synchronous: every runner collects one rollout (``n_steps``) with the current weights while
the learner waits, then the learner trains on it while the runners wait.

Printed per setup: env steps/s over the whole ``fit`` and after the first ``--warmup-rounds``
rollouts (compilation, the runners' start), the ratio to the local run, and Ray's overhead
per round (the learner's wait for a round less the slowest runner's own stepping time:
dispatch, weights out, data back; ``ray/round_overhead_ms``). A local Ray cluster is started
here with ``--cpus`` CPUs, on the loopback address; runners get ``cpus / runners`` CPUs each
(at most 1). Human-readable lines, then one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local cluster on loopback
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import atari  # noqa: E402
import gymnasium as gym  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402
from _common import RunClock, Threshold, keras_callback  # noqa: E402

from keras_rl_gym import PPOAgent  # noqa: E402
from keras_rl_gym.config import load_config  # noqa: E402
from keras_rl_gym.distributed import RayRunners  # noqa: E402
from keras_rl_gym.wrappers.atari import make_atari_env  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pong_ppo(full: bool, total_envs: int) -> dict:
    """benchmarks/atari.py's PPO on Pong (CleanRL's and RL Zoo's Atari values), 128-step rollouts.

    Unless ``full``, the learner's round is made light (one epoch, one minibatch of the whole
    rollout, 42x42 frames): on this 2-core CPU a round of the Nature CNN's 4 x 4 minibatch
    updates took minutes under XLA, so it would hide the collection this script measures.
    """
    h = atari.ppo_agent_kwargs()
    if not full:
        h.update(n_epochs=1, batch_size=h["n_steps"] * total_envs)
    return h


def cartpole_setup():
    agent = dict(load_config(os.path.join(ROOT, "configs", "ppo-cartpole.json"))["agent"])
    return {
        "name": "CartPole-v1",
        "agent": agent,
        "make_one": functools.partial(gym.make, "CartPole-v1"),
        "make_local": lambda n: gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="sync"),
        "local_mode": "sync",
    }


def pong_setup(full: bool, total_envs: int):
    make_one = functools.partial(make_atari_env, "ALE/Pong-v5", screen_size=84 if full else 42)
    return {
        "name": "ALE/Pong-v5",
        "agent": pong_ppo(full, total_envs),
        "make_one": make_one,
        # The runners' own chain, one subprocess per env; spawned, as this process runs Ray's threads.
        "make_local": lambda n: gym.vector.AsyncVectorEnv([make_one] * n, context="spawn"),
        "local_mode": "async",
    }


class RoundStats(keras.callbacks.Callback):
    """Keeps the Ray rounds' overhead and wait that fit logs at each interval."""

    def __init__(self):
        super().__init__()
        self.overhead, self.wait = [], []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if "ray/round_overhead_ms" in logs:
            self.overhead.append(logs["ray/round_overhead_ms"])
            self.wait.append(logs["ray/round_wait_ms"])


def run(setup: dict, runners: int | None, args) -> dict:
    """One PPO run: locally (``runners=None``) or on that many Ray runners."""
    total = args.total_envs
    probe = setup["make_one"]()
    agent = PPOAgent(probe.observation_space, probe.action_space, seed=args.seed, **setup["agent"])
    probe.close()
    rollout = agent.n_steps * total
    steps = args.pong_steps if setup["name"].startswith("ALE") else args.cartpole_steps
    warmup = args.warmup_rounds * rollout
    clock, stats = RunClock(warmup), RoundStats()
    callbacks = [keras_callback(clock, Threshold()), stats]
    if runners is None:
        env = setup["make_local"](total)
        fit = functools.partial(agent.fit, env)
    else:
        cpus = min(1.0, args.cpus / runners)
        ray_runners = RayRunners(runners, total // runners, num_cpus_per_runner=cpus)
        fit = functools.partial(agent.fit, setup["make_one"], runners=ray_runners)
    clock.start()
    fit(steps=steps, verbose=0, log_every=rollout, callbacks=callbacks)
    clock.stop(agent.env_steps)
    if runners is None:
        env.close()
    rates = clock.rates()
    # The first rounds hold the runners' start and the first compiled update: the median of the rest.
    overhead = stats.overhead[args.warmup_rounds :] or stats.overhead
    wait = stats.wait[args.warmup_rounds :] or stats.wait
    return {
        "runners": runners,
        "envs_per_runner": None if runners is None else total // runners,
        **rates,
        "round_overhead_ms": float(np.median(overhead)) if overhead else None,
        "round_wait_ms": float(np.median(wait)) if wait else None,
        "rounds": len(stats.overhead),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", choices=["cartpole", "pong"], default=["cartpole", "pong"])
    parser.add_argument("--runners", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--total-envs", type=int, default=8)
    parser.add_argument("--cartpole-steps", type=int, default=40_960)
    parser.add_argument("--pong-steps", type=int, default=6_144, help="env steps on Pong (6 rollouts of 8 x 128)")
    parser.add_argument(
        "--pong-full-learner", action="store_true", help="Pong: atari.py's 4 epochs of 256-row minibatches, 84x84"
    )
    parser.add_argument("--warmup-rounds", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="the local cluster's CPUs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for r in args.runners:
        if args.total_envs % r:
            parser.error(f"--total-envs {args.total_envs} does not split over {r} runners")

    started = time.perf_counter()
    ray.init(num_cpus=int(args.cpus), include_dashboard=False)
    print(f"Ray cluster up in {time.perf_counter() - started:.1f} s ({args.cpus:g} CPUs)", flush=True)
    backend = keras.backend.backend()
    record = {"backend": backend, "total_envs": args.total_envs, "cpus": args.cpus, "envs": {}}
    try:
        for name in args.envs:
            setup = cartpole_setup() if name == "cartpole" else pong_setup(args.pong_full_learner, args.total_envs)
            results = [dict(run(setup, None, args), setup=f"local {setup['local_mode']} vector env")]
            for runners in args.runners:
                results.append(dict(run(setup, runners, args), setup=f"{runners} runner(s)"))
            local = results[0]
            print(f"\n== PPO on {setup['name']}, {args.total_envs} envs in all, keras-rl-gym ({backend})")
            for res in results:
                ratio = res["steady_steps_per_second"] / local["steady_steps_per_second"]
                res["ratio_vs_local"] = ratio
                overhead = res["round_overhead_ms"]
                print(
                    f"  {res['setup']:28} {res['steps_per_second']:8.1f} env steps/s whole run, "
                    f"{res['steady_steps_per_second']:8.1f} after warm-up ({ratio:.2f}x local)"
                    + ("" if overhead is None else f"; Ray overhead {overhead:.1f} ms per round")
                )
            record["envs"][setup["name"]] = results
    finally:
        ray.shutdown()
    print(json.dumps(record, default=float))


if __name__ == "__main__":
    main()
