"""PPO (or DQN) on Pong through EnvPool for a fixed wall time on a CUDA machine with JAX; stops by itself.

On a GPU machine that reaches no package index (its image has JAX and NumPy,
no Keras, Gymnasium, ale-py or EnvPool, no TensorFlow)::

    bash benchmarks/gpu_wheels.sh                                  # here, once: the missing wheels into .whl/
    KERAS_BACKEND=jax python3 benchmarks/gpu_pong.py --minutes 9   # there, with .whl carried: installs, trains

A CPU smoke test here (the packages are already installed)::

    KERAS_BACKEND=jax python benchmarks/gpu_pong.py --minutes 1 --envs 2

The whole run, setup included, ends inside ``--minutes``: the clock starts at
the first line of this script, training stops early enough for the final
evaluation (the longest evaluation so far, times 1.5, plus a margin), and a
watchdog prints what there is and exits at the limit whatever happens. Every
``--eval-every`` seconds (60) it prints the agent steps per second (env
transitions over all envs, evaluation time excluded) and the mean return of
the greedy policy over ``--eval-envs`` whole games; a JSON line ends the run.

PPO uses the values CleanRL and EnvPool solve Pong with (Huang et al., 2022):
one env per core (``--envs``, default ``os.cpu_count()``), 128-step rollouts,
4 epochs of 4 minibatches, Adam 2.5e-4 (constant here: the run's length is a
time, not a step count), clip 0.1, entropy 0.01, value 0.5, GAE 0.95, gamma
0.99, gradient norm 0.5; the Nature CNN with 512 hidden units, as actor and as
critic. ``--algo dqn`` trains double + dueling DQN with the RL Zoo's Atari
values instead. ``ALE/Pong-v5`` keeps its sticky actions (0.25) unless
``--repeat-action-probability`` says otherwise.

References:
    Huang et al., "The 37 Implementation Details of Proximal Policy Optimization", ICLR Blog Track 2022.
    Weng et al., "EnvPool: A Highly Parallel Reinforcement Learning Environment Execution Engine", NeurIPS 2022.
"""

from __future__ import annotations

import time

START = time.monotonic()  # the budget counts from here: setup (installs, imports, compiles) is part of it

import argparse  # noqa: E402
import glob  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NEEDED = ("keras", "gymnasium", "ale_py", "envpool")
# What the final JSON line reports; the watchdog prints it as it stands if the run overstays.
RESULT: dict = {"stopped_by": None}


def elapsed() -> float:
    return time.monotonic() - START


def log(message: str) -> None:
    print(f"[{elapsed():6.1f}s] {message}", flush=True)


def start_watchdog(budget: float) -> None:
    """At the budget, print the result so far and leave, even from inside a hung step or compile."""

    def fire():
        RESULT.update(stopped_by="watchdog", total_seconds=elapsed())
        print(json.dumps(RESULT, default=str), flush=True)
        os._exit(3)

    timer = threading.Timer(max(1.0, budget - elapsed()), fire)
    timer.daemon = True
    timer.start()


def install_missing(wheels: str, site: str) -> None:
    """Installs the carried wheels (``gpu_wheels.sh``) when one of the needed packages is missing."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing and os.path.isdir(site) and site not in sys.path:
        # A previous run on this machine already installed them.
        sys.path.insert(0, site)
        importlib.invalidate_caches()
        missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if not missing:
        return
    files = sorted(glob.glob(os.path.join(wheels, "*.whl")))
    if not files:
        sys.exit(f"missing {', '.join(missing)} and no wheels in {wheels!r}: run benchmarks/gpu_wheels.sh here first")
    log(f"installing {len(files)} wheels from {wheels} into {site} (missing: {', '.join(missing)})")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", wheels]
    command += ["--no-deps", "--no-compile", "--no-cache-dir", "--upgrade", "--target", site, *files]
    subprocess.run(command, check=True)
    if site not in sys.path:
        sys.path.insert(0, site)
    importlib.invalidate_caches()


def envpool_for_atari_only() -> None:
    """Lets ``import envpool`` work without the envpool-assets wheels, for Atari games only.

    EnvPool's ``envpool.entry`` imports the registration of every env family,
    and those read assets (MuJoCo models, VizDoom maps, MyoSuite metadata) that
    ship in ~600 MB of envpool-assets wheels: too much to carry. Atari needs
    only its ROMs, which ale-py ships byte for byte the same. So the ROMs are
    linked where ``ENVPOOL_ASSETS_PATH`` points, ``envpool.entry`` is stood in
    for by an empty module, and only the Atari registration runs.
    """
    if importlib.util.find_spec("envpool_assets") is not None:
        return
    roms = Path(importlib.util.find_spec("ale_py").submodule_search_locations[0]) / "roms"
    folder = Path(tempfile.gettempdir()) / "envpool-atari-assets" / "atari" / "roms"
    folder.mkdir(parents=True, exist_ok=True)
    for rom in roms.glob("*.bin"):
        if not (folder / rom.name).exists():
            (folder / rom.name).symlink_to(rom)
    os.environ["ENVPOOL_ASSETS_PATH"] = str(folder.parents[1])
    sys.modules.setdefault("envpool.entry", types.ModuleType("envpool.entry"))
    import envpool  # noqa: F401
    import envpool.atari.registration  # noqa: F401


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=9.0, help="wall time of the whole run, setup included")
    parser.add_argument("--algo", choices=("ppo", "dqn"), default="ppo")
    parser.add_argument("--env", default="ALE/Pong-v5")
    parser.add_argument("--envs", type=int, default=os.cpu_count(), help="training envs (default: one per core)")
    parser.add_argument("--eval-envs", type=int, default=8, help="greedy games per evaluation, played in parallel")
    parser.add_argument("--eval-every", type=float, default=60.0, help="seconds between evaluations")
    parser.add_argument("--eval-max-steps", type=int, default=5_000, help="agent steps at which an eval game stops")
    parser.add_argument("--repeat-action-probability", type=float, default=None, help="sticky actions (env default)")
    parser.add_argument("--dqn-total-steps", type=int, default=1_000_000, help="DQN: the horizon epsilon spans 10%% of")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wheels", default=str(REPO / ".whl"), help="carried wheels (benchmarks/gpu_wheels.sh)")
    parser.add_argument("--site", default=os.path.join(tempfile.gettempdir(), "site"), help="where they install")
    args = parser.parse_args()
    budget = args.minutes * 60.0
    start_watchdog(budget - 1.0)
    RESULT.update(algo=args.algo, env_id=args.env, envs=args.envs, budget_seconds=budget)

    install_missing(args.wheels, args.site)
    envpool_for_atari_only()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    sys.path.insert(0, str(REPO))  # the package from this checkout (it need not be installed)
    import keras

    from keras_rl_gym import DQNAgent, PPOAgent
    from keras_rl_gym.wrappers.atari import make_atari_vec_env

    backend = keras.backend.backend()
    devices = [str(d) for d in __import__("jax").devices()] if backend == "jax" else []
    RESULT.update(backend=backend, devices=devices)
    log(f"keras {keras.__version__} on {backend}, devices {devices}; {args.envs} training envs")

    sticky = (
        {} if args.repeat_action_probability is None else {"repeat_action_probability": args.repeat_action_probability}
    )
    env = make_atari_vec_env(args.env, args.envs, backend="envpool", seed=args.seed, **sticky)
    # The time limit counts emulator frames, as for the Gymnasium chain: 4 per agent step.
    eval_env = make_atari_vec_env(
        args.env, args.eval_envs, backend="envpool", training=False, seed=args.seed + 10_000,
        max_episode_steps=4 * args.eval_max_steps, **sticky,
    )  # fmt: skip
    spaces = (env.single_observation_space, env.single_action_space)
    if args.algo == "ppo":
        n_steps = 128
        agent = PPOAgent(
            *spaces, network="conv", hidden_sizes=(512,), n_steps=n_steps,
            batch_size=max(1, args.envs * n_steps // 4), n_epochs=4, learning_rate=2.5e-4, clip_range=0.1,
            entropy_coef=0.01, value_coef=0.5, gae_lambda=0.95, gamma=0.99, max_grad_norm=0.5, seed=args.seed,
        )  # fmt: skip
        log_every, horizon = args.envs * n_steps, None  # one rollout and its update between checks
    else:
        agent = DQNAgent(
            *spaces, network="conv", hidden_sizes=(512,), double=True, dueling=True, learning_rate=1e-4,
            buffer_size=100_000, learning_starts=10_000, batch_size=32, train_freq=4, target_update_every=1_000,
            exploration_fraction=0.1, epsilon_final=0.01, loss="huber", max_grad_norm=10.0, seed=args.seed,
        )  # fmt: skip
        log_every, horizon = 5_000, args.dqn_total_steps

    evals = []
    RESULT["evals"] = evals

    def evaluate() -> tuple[dict, float]:
        began = time.monotonic()
        agent.sync_weights()  # held JAX state into the Keras variables, as EvaluationCallback does
        result = agent.evaluate(eval_env, episodes=args.eval_envs, seed=args.seed + 10_000)
        return result, time.monotonic() - began

    class WallClock(keras.callbacks.Callback):
        """Stops fit in time for the final evaluation; evaluates the greedy policy every ``eval_every`` s."""

        def on_train_begin(self, logs=None):
            self.began = self.mark = time.monotonic()
            self.steps_at_mark, self.eval_seconds, self.longest_eval = 0, 0.0, 10.0
            self.next_eval = self.began + args.eval_every
            RESULT["setup_seconds"] = elapsed()
            log(f"training starts after {elapsed():.1f} s of setup")

        def reserve(self) -> float:
            # The final evaluation, and the JSON line, after training stops.
            return 1.5 * self.longest_eval + 10.0

        def on_progress(self, step, logs):
            if elapsed() >= budget - self.reserve():
                RESULT["stopped_by"] = "wall_time"
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            now = time.monotonic()
            if now < self.next_eval or elapsed() + 1.5 * self.longest_eval >= budget - self.reserve():
                return
            rate = (self.model.env_steps - self.steps_at_mark) / (now - self.mark)
            result, seconds = evaluate()
            self.longest_eval = max(self.longest_eval, seconds)
            self.eval_seconds += seconds
            entry = {
                "minute": round((now - self.began) / 60.0, 2),
                "env_steps": int(self.model.env_steps),
                "steps_per_second": rate,
                "mean_return": result["mean_return"],
                "eval_seconds": seconds,
            }
            evals.append(entry)
            log(
                f"{entry['minute']:5.2f} min: {entry['env_steps']:,} agent steps, {rate:,.0f} steps/s, "
                f"greedy mean return {result['mean_return']:+.1f} over {len(result['returns'])} games ({seconds:.1f} s)"
            )
            self.mark, self.steps_at_mark = time.monotonic(), self.model.env_steps
            self.next_eval = self.mark + args.eval_every

    clock = WallClock()
    # A step count no run reaches: the wall clock ends it.
    agent.fit(env, steps=10**10, total_steps=horizon, callbacks=[clock], verbose=0, log_every=log_every)
    train_seconds = time.monotonic() - clock.began - clock.eval_seconds
    RESULT.update(
        agent_steps=int(agent.env_steps),
        updates=int(agent.updates),
        train_seconds=train_seconds,
        steps_per_second=agent.env_steps / train_seconds,
    )
    log(f"stopped at {agent.env_steps:,} agent steps: {RESULT['steps_per_second']:,.0f} steps/s over training")
    result, seconds = evaluate()
    RESULT.update(
        final_mean_return=result["mean_return"],
        final_returns=[float(r) for r in result["returns"]],
        final_eval_seconds=seconds,
        total_seconds=elapsed(),
        stopped_by=RESULT["stopped_by"] or "steps",
    )
    log(f"final greedy mean return {result['mean_return']:+.1f} ({seconds:.1f} s); {elapsed():.1f} s in all")
    print(json.dumps(RESULT, default=str), flush=True)
    env.close()
    eval_env.close()
    os._exit(0)  # leave at once: no teardown of EnvPool's threads or JAX's runtime past the budget


if __name__ == "__main__":
    main()
