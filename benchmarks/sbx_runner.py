"""Trains one SBX (or SB3) model on CartPole-v1 and prints its figures as one JSON line.

Run by dqn_cartpole.py and ppo_cartpole.py in the SBX venv (benchmarks/.venv-sbx, from
requirements-sbx.txt), which SBX needs apart from the package's: it pins jax<0.12. The one
argument is a ``_common.run_peer`` spec in JSON, e.g.::

    benchmarks/.venv-sbx/bin/python benchmarks/sbx_runner.py '{"library": "sbx", "algo": "DQN",
        "n_envs": 1, "kwargs": {"learning_starts": 1000}, "net_arch": [64, 64],
        "activation": "relu", "steps": 3000, "seed": 0, "warmup": 1500}'

The JSON line has ``steps_per_second`` (whole run), ``steady_steps_per_second`` (after
``warmup`` env steps), ``eval_return`` (greedy, 10 fixed-seed episodes) and the rest of
``_common.result``.
"""

from __future__ import annotations

import json
import sys

from _common import dumps, run_peer


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} SPEC_JSON")
    print(dumps(run_peer(json.loads(sys.argv[1]))), flush=True)


if __name__ == "__main__":
    main()
