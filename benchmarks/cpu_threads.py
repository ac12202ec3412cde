"""CPU threading and XLA flags on small networks: which defaults make DQN and PPO on CartPole fastest.

Each setting runs in a fresh subprocess (XLA and TensorFlow read their flags once, at start-up), trains
this package's DQN (``dqn_cartpole.py``'s shared hyperparameters) and PPO (``configs/ppo-cartpole.json``,
8 envs) for ``--steps`` env steps, and reports env steps/s over the whole run and after the warm-up.
Settings run interleaved, ``--repeats`` times each, so that a slow spell of the machine hits them alike::

    python benchmarks/cpu_threads.py --steps 20000 --repeats 2

Run it on a quiet machine (``../shared/tools/quiet``). A setting whose flag this build of XLA does not
know fails its run; the table says so rather than dropping it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# (backend, label, environment variables): the package's defaults first.
SETTINGS = [
    ("jax", "default (async dispatch; single-threaded Eigen on up to 4 cores)", {}),
    ("jax", "KERAS_RL_GYM_JAX_ASYNC=0 (inline dispatch)", {"KERAS_RL_GYM_JAX_ASYNC": "0"}),
    ("jax", "multi-threaded Eigen (XLA's own default)", {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=true"}),
    ("jax", "--xla_cpu_use_xnnpack=true", {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"}),
    ("tensorflow", "default (TensorFlow's thread pools)", {}),
    ("tensorflow", "1 intra-op, 1 inter-op thread", {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}),
    ("torch", "1 thread (KERAS_RL_GYM_TORCH_THREADS=1, the default)", {"KERAS_RL_GYM_TORCH_THREADS": "1"}),
    ("torch", "2 threads", {"KERAS_RL_GYM_TORCH_THREADS": "2"}),
]

# The child: one algorithm, one seed, this process's backend and flags; one JSON line out.
CHILD = """
import json, sys
sys.path.insert(0, {here!r})
import dqn_cartpole, ppo_cartpole
from keras_rl_gym.config import load_config
algo, steps, warmup = {algo!r}, {steps}, {warmup}
if algo == "dqn":
    out = dqn_cartpole.run_ours(steps, 0, warmup)
else:
    out = ppo_cartpole.run_ours(load_config({config!r}), steps, 0, warmup)
print(json.dumps(out))
"""


def run_setting(backend: str, variables: dict, algo: str, steps: int, warmup: int) -> dict | None:
    env = {**os.environ, "KERAS_BACKEND": backend, **variables}
    code = CHILD.format(
        here=str(HERE), algo=algo, steps=steps, warmup=warmup, config=str(HERE.parent / "configs/ppo-cartpole.json")
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(f"{backend} {variables} {algo}: failed (exit {done.returncode}): {done.stderr[-500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=5_000, help="env steps before the steady-state rate")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    parser.add_argument("--algos", nargs="+", default=["dqn", "ppo"], choices=["dqn", "ppo"])
    args = parser.parse_args()
    settings = [s for s in SETTINGS if s[0] in args.backends]
    runs = {(i, algo): [] for i in range(len(settings)) for algo in args.algos}
    for _ in range(args.repeats):
        for (i, algo), outcomes in runs.items():
            backend, _, variables = settings[i]
            outcomes.append(run_setting(backend, variables, algo, args.steps, args.warmup))
    print(f"| backend | setting | algo | env steps/s, whole run | after warm-up ({args.steps} steps, median of runs) |")
    print("| --- | --- | --- | --- | --- |")
    report = []
    for (i, algo), outcomes in runs.items():
        backend, label, variables = settings[i]
        ok = [o for o in outcomes if o is not None]
        if not ok:
            print(f"| {backend} | {label} | {algo} | failed | failed |")
            continue
        whole = float(np.median([o["steps_per_second"] for o in ok]))
        steady = float(np.median([o["steady_steps_per_second"] or np.nan for o in ok]))
        print(f"| {backend} | {label} | {algo} | {whole:.0f} | {steady:.0f} |")
        report.append(dict(backend=backend, setting=label, env=variables, algo=algo, whole=whole, steady=steady))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
