"""SAC and TD3 on Pendulum-v1 against Stable-Baselines3's, same hyperparameters, same run.

    pip install -r benchmarks/requirements.txt            # Stable-Baselines3
    KERAS_BACKEND=jax python benchmarks/continuous.py                       # both, 20k steps, seeds 0-2
    KERAS_BACKEND=torch python benchmarks/continuous.py --algos sac --seeds 5
    KERAS_BACKEND=jax python benchmarks/continuous.py --no-sb3 --steps 5000  # ours only
    python benchmarks/continuous.py --backends tensorflow jax torch         # every backend, one SB3 run per seed

With ``--backends``, each seed's SB3 run is compared with keras-rl-gym on every backend
named: ours runs in a subprocess per backend (``KERAS_BACKEND`` is fixed once Keras is
imported), SB3 here, once per seed and algorithm (it does not depend on Keras's backend),
one after the other within each seed so that load drifts alike for all sides.

The hyperparameters are the shipped configs' (``configs/sac-pendulum.json`` and
``configs/td3-pendulum.json``: RL Zoo's Pendulum settings), written once there and
translated here to SB3's names. Both sides add the exploration noise in the
normalized ``[-1, 1]`` action space (SB3 scales its actions the same way), take
uniformly random actions for ``learning_starts`` steps, then one update per env step.

For each algorithm and seed, each side trains a fresh agent on one env, then
plays 10 greedy episodes whose reset seeds depend on the training seed only
(the same starts for both sides). Printed per algorithm: the runs, the table of
medians with the bootstrap interval of each difference, the steps/s ratios
(whole run, and after ``learning_starts`` + ``--warmup`` steps, which holds the
first compiled update), how many of our seeds reach a mean return of at least
``--threshold`` (-200), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
from _common import (
    EVAL_RETURN,
    THROUGHPUT,
    RunClock,
    Threshold,
    dumps,
    evaluate_greedy,
    keras_callback,
    labels,
    report,
    result,
    sb3_callback,
)

from keras_rl_gym.config import load_config

ENV_ID = "Pendulum-v1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"sac": "configs/sac-pendulum.json", "td3": "configs/td3-pendulum.json"}
METRICS = [*THROUGHPUT, EVAL_RETURN]


def config(algo: str) -> dict:
    return load_config(os.path.join(ROOT, CONFIGS[algo]))


def run_ours(algo: str, seed: int, steps: int, warmup: int) -> dict:
    from keras_rl_gym.config import make_agent, make_env

    cfg = config(algo)
    cfg["train"]["seed"] = seed
    env = make_env(cfg)
    agent = make_agent(cfg, env)
    clock, tracker = RunClock(warmup), Threshold()
    clock.start()
    agent.fit(env, steps=steps, verbose=0, seed=seed, callbacks=[keras_callback(clock, tracker)])
    clock.stop(agent.env_steps)
    eval_return = evaluate_greedy(lambda obs: agent.act(obs), seed, env_id=ENV_ID)
    return result(clock, tracker, eval_return)


def sb3_kwargs(algo: str) -> tuple[dict, list]:
    """SB3's constructor arguments for the config's agent values, and its ``net_arch``."""
    a = config(algo)["agent"]
    if a["actor_hidden_sizes"] != a["critic_hidden_sizes"]:
        raise ValueError("SB3's net_arch list gives the actor and the critics the same widths.")
    # One learning rate in SB3 for all its optimizers: the config must agree.
    rates = {a[k] for k in ("actor_learning_rate", "critic_learning_rate", "alpha_learning_rate") if k in a}
    if len(rates) != 1:
        raise ValueError(f"SB3 takes one learning rate; the config has {sorted(rates)}.")
    kwargs = {
        "learning_rate": rates.pop(),
        "buffer_size": a["buffer_size"],
        "batch_size": a["batch_size"],
        "learning_starts": a["learning_starts"],
        "tau": a["tau"],
        "gamma": a["gamma"],
        "train_freq": a.get("train_freq", 1),
        "gradient_steps": a.get("gradient_steps", 1),
    }
    if algo == "sac":
        kwargs["ent_coef"] = "auto" if a.get("alpha", "auto") == "auto" else a["alpha"]
    else:
        kwargs.update(
            policy_delay=a["policy_delay"],
            target_policy_noise=a["target_policy_noise"],
            target_noise_clip=a["target_noise_clip"],
        )
    return kwargs, list(a["actor_hidden_sizes"])


def run_sb3(algo: str, seed: int, steps: int, warmup: int) -> dict:
    import stable_baselines3 as sb3
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    torch.set_num_threads(1)  # as in the CartPole benchmarks: faster for small networks on a small CPU
    kwargs, net_arch = sb3_kwargs(algo)
    env = make_vec_env(ENV_ID, n_envs=1, seed=seed)
    if algo == "td3":
        a = config(algo)["agent"]
        dim = env.action_space.shape[0]
        # SB3 adds it to the scaled action in [-1, 1], as keras-rl-gym does.
        kwargs["action_noise"] = NormalActionNoise(np.zeros(dim), a["noise_std"] * np.ones(dim))
    model = getattr(sb3, algo.upper())(
        "MlpPolicy", env, policy_kwargs={"net_arch": net_arch}, device="cpu", seed=seed, verbose=0, **kwargs
    )
    clock, tracker = RunClock(warmup), Threshold()
    clock.start()
    model.learn(total_timesteps=steps, callback=sb3_callback(clock, tracker))
    clock.stop(model.num_timesteps)
    eval_return = evaluate_greedy(lambda obs: model.predict(obs, deterministic=True)[0], seed, env_id=ENV_ID)
    return result(clock, tracker, eval_return)


def run_ours_on(backend: str):
    """``run_ours`` in a subprocess on ``backend``: its result, from the JSON line it prints."""

    def run(algo: str, seed: int, steps: int, warmup: int) -> dict:
        command = [sys.executable, __file__, "--worker", json.dumps([algo, seed, steps, warmup])]
        done = subprocess.run(command, env=dict(os.environ, KERAS_BACKEND=backend), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"keras-rl-gym on {backend} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run


def main():
    if sys.argv[1:2] == ["--worker"]:  # one of our runs, for --backends: its result as the last line
        print(dumps(run_ours(*json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=1_000, help="steps after learning_starts before steady state")
    parser.add_argument("--threshold", type=float, default=-200.0)
    parser.add_argument("--no-sb3", "--skip-sb3", action="store_true", help="leave Stable-Baselines3 out")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument(
        "--backends", nargs="+", choices=["tensorflow", "jax", "torch"], help="ours on each, in subprocesses"
    )
    args = parser.parse_args()

    if args.backends:
        ours = {backend: run_ours_on(backend) for backend in args.backends}
    else:
        import keras

        ours = {keras.backend.backend(): run_ours}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    record = {"backends": list(ours), "env_id": ENV_ID, "steps": args.steps, "seeds": seeds, "algos": {}}
    for algo in args.algos:
        warmup = min(config(algo)["agent"]["learning_starts"] + args.warmup, args.steps // 2)
        sides = {backend: run for backend, run in ours.items()}
        if not args.no_sb3:
            sides["sb3"] = run_sb3
        runs = {name: [] for name in sides}
        for seed in seeds:
            parts = []
            for name, run in sides.items():
                outcome = dict(run(algo, seed, args.steps, warmup), seed=seed)
                runs[name].append(outcome)
                label = labels(name)["ours"] if name in ours else labels("")[name]
                parts.append(
                    f"{label} eval {outcome['eval_return']:.1f}, {outcome['steps_per_second']:.1f} steps/s "
                    f"({outcome['steady_steps_per_second'] or 0:.1f} after warm-up)"
                )
            print(f"{algo} seed {seed}: " + "; ".join(parts), flush=True)
        record["algos"][algo] = {}
        for backend in ours:
            print(f"\n== {algo.upper()} on {ENV_ID}, {args.steps} steps, steady state from step {warmup}, {backend}")
            side = {"ours": runs[backend], **({"sb3": runs["sb3"]} if "sb3" in runs else {})}
            numbers = report(backend, side, METRICS, args.resamples)
            passed = sum(run["eval_return"] >= args.threshold for run in runs[backend])
            print(f"{algo}: keras-rl-gym ({backend}) at or above {args.threshold:.0f} in {passed}/{len(seeds)} seeds")
            record["algos"][algo][backend] = {"runs": side, "passed": passed, "threshold": args.threshold, **numbers}
    print(dumps(record))


if __name__ == "__main__":
    sys.exit(main())
