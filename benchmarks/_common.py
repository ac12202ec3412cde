"""What the CartPole benchmarks share: timing, greedy evaluation, the peers' runs, statistics and printing.

``dqn_cartpole.py`` and ``ppo_cartpole.py`` import it in the package's venv, and ``sbx_runner.py`` in the
SBX venv, so at the top it imports only NumPy and Gymnasium: Keras, Stable-Baselines3 and SBX are imported
by the functions that need them.

Every side of a comparison is measured the same way:

* throughput over the whole run: env steps done / seconds of the ``fit`` or ``learn`` call (compilation,
  warm-up and all);
* steady-state throughput: env steps / seconds between the first callback report at or past the
  warm-up step and the end of training. The mark falls after an update: keras-rl-gym's
  ``on_progress`` comes after the step's update, SB3's ``_on_rollout_start`` after the last ``train``;
* the greedy return after training: the mean over ``EVAL_EPISODES`` episodes whose reset seeds depend
  only on the training seed, so every side plays the same starting states;
* the env step at which the mean return of the last ``WINDOW`` training episodes first reaches
  ``THRESHOLD`` (``None`` if it never does).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import subprocess
import sys
import time
from collections import deque
from importlib import metadata
from pathlib import Path

import gymnasium as gym
import numpy as np

ENV_ID = "CartPole-v1"
EVAL_EPISODES = 10
EVAL_SEED = 10_000
THRESHOLD = 475.0
WINDOW = 20
BOOTSTRAP_SEED = 0

HERE = Path(__file__).resolve().parent
SBX_REQUIREMENTS = HERE / "requirements-sbx.txt"
SBX_VENV = HERE / ".venv-sbx"
SBX_RUNNER = HERE / "sbx_runner.py"

# (key in a run's result, label, True if higher is better, False if lower is, None: not compared)
THROUGHPUT = [
    ("steps_per_second", "env steps/s, whole run", True),
    ("steady_steps_per_second", "env steps/s after warm-up", True),
]
EVAL_RETURN = ("eval_return", f"greedy return, {EVAL_EPISODES} episodes", True)
STEPS_TO_THRESHOLD = ("steps_to_threshold", f"env steps to a {WINDOW}-episode mean of {THRESHOLD:.0f}", None)


# -- measuring one run ------------------------------------------------------------------------------
class RunClock:
    """Wall-clock marks of one training run.

    ``start`` and ``stop`` bracket the ``fit``/``learn`` call; a callback calls ``tick(step)``
    during training, at least once at or past ``warmup`` env steps and once at the end.
    """

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.begin = self.end = None
        self.steps = 0
        self.warm = self.last = None  # (env step, time) of the first tick at or past warmup, of the last

    def start(self) -> None:
        self.begin = time.perf_counter()

    def tick(self, step: int) -> None:
        now = time.perf_counter()
        if self.warm is None and step >= self.warmup:
            self.warm = (step, now)
        self.last = (step, now)

    def stop(self, steps: int) -> None:
        self.end, self.steps = time.perf_counter(), int(steps)

    def rates(self) -> dict:
        seconds = self.end - self.begin
        steady = None
        if self.warm is not None and self.last[0] > self.warm[0]:
            steady = (self.last[0] - self.warm[0]) / max(self.last[1] - self.warm[1], 1e-9)
        return {
            "steps": self.steps,
            "seconds": seconds,
            "steps_per_second": self.steps / seconds,
            "steady_steps_per_second": steady,
            "steady_from_step": None if self.warm is None else self.warm[0],
        }


class Threshold:
    """Records the env step at which the mean of the last ``WINDOW`` episode returns first reaches ``THRESHOLD``."""

    def __init__(self):
        self.returns = deque(maxlen=WINDOW)
        self.reached_at = None

    def episode(self, episode_return: float, step: int) -> None:
        self.returns.append(float(episode_return))
        if self.reached_at is None and len(self.returns) == WINDOW and np.mean(self.returns) >= THRESHOLD:
            self.reached_at = int(step)


def warmup_step(requested: int, steps: int) -> int:
    """The warm-up of the steady-state rate: ``requested``, or half the run if that is shorter."""
    return min(int(requested), steps // 2)


def keras_callback(clock: RunClock, tracker: Threshold):
    """A keras-rl-gym callback that ticks ``clock`` at each progress report and feeds ``tracker`` the episodes."""
    import keras

    class Measure(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            # fit calls on_progress at the first step at or past due_step, then ~20 times a second.
            self.due_step = clock.warmup

        def on_progress(self, step, logs):
            clock.tick(step)
            if step >= clock.warmup:
                self.due_step = math.inf

        def on_episode_end(self, episode, logs):
            tracker.episode(logs["episode_return"], logs["env_steps"])

    return Measure()


def sb3_callback(clock: RunClock, tracker: Threshold):
    """An SB3 (and SBX) callback: ticks ``clock`` when each rollout starts (after the updates) and at the end."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Measure(BaseCallback):
        def _on_rollout_start(self):
            clock.tick(self.num_timesteps)

        def _on_step(self):
            for info in self.locals["infos"]:
                if "episode" in info:  # Monitor's summary at the end of each episode
                    tracker.episode(info["episode"]["r"], self.num_timesteps)
            return True

        def _on_training_end(self):
            clock.tick(self.num_timesteps)

    return Measure()


def evaluate_greedy(act, seed: int, episodes: int = EVAL_EPISODES, env_id: str = ENV_ID) -> float:
    """Mean return of ``act(obs) -> action`` over ``episodes`` episodes (CartPole unless ``env_id``), reset seeds
    fixed by ``seed``."""
    env = gym.make(env_id)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED + episodes * seed + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def result(clock: RunClock, tracker: Threshold, eval_return: float, **extra) -> dict:
    """One run's figures, as every side reports them."""
    return {**clock.rates(), "steps_to_threshold": tracker.reached_at, "eval_return": eval_return, **extra}


# -- the peers: Stable-Baselines3 here, SBX in its own venv --------------------------------------
LABELS = {"sb3": "Stable-Baselines3", "sbx": "SBX"}
_DISTRIBUTIONS = {"sb3": "stable-baselines3", "sbx": "sbx-rl"}


def run_peer(spec: dict) -> dict:
    """Trains and evaluates one SB3 or SBX model in this process.

    ``spec``: ``library`` ("sb3" or "sbx"), ``algo`` ("DQN", "PPO"), ``n_envs``, ``kwargs`` (the
    algorithm's constructor arguments), ``net_arch``, ``activation`` (a name: "relu", "tanh"),
    ``steps``, ``seed``, ``warmup``. A keyword the library's algorithm does not take is left out and
    listed in the result's ``ignored_hyperparameters`` (SBX's DQN has no ``max_grad_norm``).
    """
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    # One thread: faster for SB3's small networks on a small CPU; SBX uses torch only in SB3's buffers.
    torch.set_num_threads(1)
    if spec["library"] == "sbx":
        import flax.linen
        import sbx as library

        activation = getattr(flax.linen, spec["activation"])
    else:
        import stable_baselines3 as library

        activation = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[spec["activation"]]
    algo = getattr(library, spec["algo"])
    accepted = inspect.signature(algo).parameters
    kwargs = {key: value for key, value in spec["kwargs"].items() if key in accepted}
    model = algo(
        "MlpPolicy",
        make_vec_env(ENV_ID, n_envs=spec["n_envs"], seed=spec["seed"]),
        policy_kwargs={"net_arch": spec["net_arch"], "activation_fn": activation},
        device="cpu",
        seed=spec["seed"],
        verbose=0,
        **kwargs,
    )
    clock, tracker = RunClock(spec["warmup"]), Threshold()
    clock.start()
    model.learn(total_timesteps=spec["steps"], callback=sb3_callback(clock, tracker))
    clock.stop(model.num_timesteps)
    eval_return = evaluate_greedy(lambda obs: int(model.predict(obs, deterministic=True)[0]), spec["seed"])
    return result(
        clock,
        tracker,
        eval_return,
        algo=spec["algo"],
        version=metadata.version(_DISTRIBUTIONS[spec["library"]]),
        ignored_hyperparameters=sorted(set(spec["kwargs"]) - set(kwargs)),
    )


def sbx_python(venv: Path = SBX_VENV) -> Path | None:
    """The SBX venv's interpreter, set up from requirements-sbx.txt on first use (and when that file changes).

    Returns ``None``, with the reason on stderr, if the venv cannot be set up.
    """
    python = venv / "bin" / "python"
    stamp = venv / ".requirements-sha256"
    digest = hashlib.sha256(SBX_REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    print(f"Setting up the SBX venv {venv} from {SBX_REQUIREMENTS} (a few minutes, once)...", file=sys.stderr)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # pip's own output goes to stderr: stdout is the benchmark's report.
        subprocess.run([*pip, "--upgrade", "pip"], check=True, stdout=sys.stderr)
        subprocess.run([*pip, "-r", str(SBX_REQUIREMENTS)], check=True, stdout=sys.stderr)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"Could not set up the SBX venv ({error}): SBX is left out.", file=sys.stderr)
        return None
    stamp.write_text(digest)
    return python


def run_sbx(spec: dict, python: Path) -> dict | None:
    """``run_peer(spec)`` in the SBX venv, through ``sbx_runner.py``; ``None`` (stderr says why) if it fails."""
    # SBX runs with XLA's flags as the user set them, not with the ones keras-rl-gym adds for itself.
    from keras_rl_gym import backend

    env = dict(os.environ)
    if backend.XLA_FLAGS_BEFORE is not None:
        env["XLA_FLAGS"] = backend.XLA_FLAGS_BEFORE
    done = subprocess.run([str(python), str(SBX_RUNNER), json.dumps(spec)], capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(f"SBX run failed (exit {done.returncode}):\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def peers(args, backend: str, setup: dict, steps: int, warmup: int) -> dict:
    """``{name: run(seed) -> result}`` for SB3 and, on the JAX backend, SBX, unless the flags skip them.

    ``setup`` is a ``run_peer`` spec without ``library``, ``steps``, ``seed`` and ``warmup``.
    """

    def spec(library, seed):
        return dict(setup, library=library, steps=steps, seed=seed, warmup=warmup)

    runners = {}
    if not args.no_sb3:
        runners["sb3"] = lambda seed: run_peer(spec("sb3", seed))
    if args.no_sbx:
        pass
    elif backend != "jax":
        print(f"SBX is compared on the JAX backend only (this run: {backend}).", file=sys.stderr)
    else:
        python = sbx_python(Path(args.sbx_venv))
        if python is not None:
            runners["sbx"] = lambda seed: run_sbx(spec("sbx", seed), python)
    return runners


def add_arguments(parser, warmup: int, warmup_help: str) -> None:
    """The flags both CartPole benchmarks take: seeds, peers, warm-up and the bootstrap."""
    parser.add_argument("--first-seed", type=int, default=0, help="with --seeds N: seeds first-seed ... first-seed+N-1")
    parser.add_argument("--no-sb3", "--skip-sb3", action="store_true", help="leave Stable-Baselines3 out")
    parser.add_argument("--no-sbx", action="store_true", help="leave SBX out (it runs on the JAX backend only)")
    parser.add_argument("--sbx-venv", default=str(SBX_VENV), help="the SBX venv, created on first use")
    parser.add_argument("--warmup", type=int, default=warmup, help=warmup_help + " (at most half of --steps)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")


# -- statistics ---------------------------------------------------------------------------------------
def _values(runs: list, key: str) -> np.ndarray:
    return np.asarray([run[key] for run in runs if run.get(key) is not None], dtype=float)


def spread(values) -> dict:
    """Median, min, max, quartiles and IQR of ``values`` (``{"n": 0}`` if empty)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {"n": 0}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "n": int(values.size),
        "median": float(median),
        "min": float(values.min()),
        "max": float(values.max()),
        "q1": float(q1),
        "q3": float(q3),
        "iqr": float(q3 - q1),
    }


def bootstrap_median_difference(a, b, resamples: int = 10_000, seed: int = BOOTSTRAP_SEED, level: float = 0.95):
    """Percentile bootstrap interval of ``median(a) - median(b)``, each sample resampled on its own.

    Each of ``resamples`` rounds draws ``len(a)`` values of ``a`` and ``len(b)`` of ``b`` with
    replacement; the interval holds the central ``level`` of the rounds' differences of medians.
    """
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    medians_a = np.median(a[rng.integers(0, a.size, (resamples, a.size))], axis=1)
    medians_b = np.median(b[rng.integers(0, b.size, (resamples, b.size))], axis=1)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(medians_a - medians_b, [tail, 100.0 - tail])
    return float(low), float(high)


# The project's test of "same learning" (issue 29): at least this many seeds per side, a two-sided
# Mann-Whitney U test that finds no difference at this level, and our median at least this share of the peer's.
SAME_LEARNING_SEEDS, SAME_LEARNING_ALPHA, SAME_LEARNING_SHARE = 15, 0.05, 0.9


def rank_test(ours, peer) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test of ``ours`` against ``peer``: (U of ours, p-value).

    A rank test assumes nothing of the returns' distribution (CartPole's pile up at 500 and
    spread wide below it), where a t-test would assume a normal one.
    """
    from scipy.stats import mannwhitneyu

    test = mannwhitneyu(ours, peer, alternative="two-sided")
    return float(test.statistic), float(test.pvalue)


def same_learning(ours, peer, higher_is_better: bool = True) -> dict:
    """Whether ``ours`` learns as ``peer`` does by the project's test; the U test's numbers with the verdict."""
    ours, peer = np.asarray(ours, dtype=float), np.asarray(peer, dtype=float)
    statistic, p = rank_test(ours, peer)
    share = float(np.median(ours) / np.median(peer)) if np.median(peer) else None
    enough = min(ours.size, peer.size) >= SAME_LEARNING_SEEDS
    # Lower is better for steps to a threshold: there our median may be at most 1/0.9 of the peer's.
    limit = SAME_LEARNING_SHARE if higher_is_better else 1 / SAME_LEARNING_SHARE
    close = share is not None and (share >= limit if higher_is_better else share <= limit)
    return {
        "mann_whitney_u": statistic,
        "p_value": p,
        "median_share": share,
        "enough_seeds": enough,
        "same": bool(enough and p >= SAME_LEARNING_ALPHA and close),
    }


def compare(ours, peer, higher_is_better: bool, peer_label: str, resamples: int) -> dict:
    """The difference of medians ``ours - peer``, its bootstrap 95% interval, who it favours, and the rank test."""
    ours, peer = np.asarray(ours, dtype=float), np.asarray(peer, dtype=float)
    if ours.size == 0 or peer.size == 0:
        return {"difference": None, "ci95": None, "excludes_zero": None, "favours": None, "rank_test": None}
    low, high = bootstrap_median_difference(ours, peer, resamples)
    excludes = bool(low > 0 or high < 0)
    favours = None
    if excludes:
        favours = "keras-rl-gym" if (low > 0) == higher_is_better else peer_label
    return {
        "difference": float(np.median(ours) - np.median(peer)),
        "ci95": [low, high],
        "excludes_zero": excludes,
        "favours": favours,
        "rank_test": same_learning(ours, peer, higher_is_better),
    }


def ratio(ours: list, peer: list, key: str) -> float | None:
    """``median(ours[key]) / median(peer[key])``."""
    a, b = _values(ours, key), _values(peer, key)
    return float(np.median(a) / np.median(b)) if a.size and b.size else None


# -- printing -----------------------------------------------------------------------------------------
def labels(backend: str) -> dict:
    return {"ours": f"keras-rl-gym ({backend})", **LABELS}


def _number(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _times(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def run_line(label: str, run: dict) -> str:
    """One run in a few words: both rates, the threshold step, the greedy return."""
    reached = run["steps_to_threshold"]
    return (
        f"{label} {_number(run['steps_per_second'])} steps/s ({_number(run['steady_steps_per_second'])} "
        f"after warm-up), {THRESHOLD:.0f} {'not reached' if reached is None else f'at step {reached}'}, "
        f"eval {_number(run['eval_return'])}"
    )


def print_ignored(backend: str, runs: dict) -> None:
    """Names the hyperparameters a peer's algorithm does not take (they were left out of its run)."""
    names = labels(backend)
    for name, results in runs.items():
        keys = sorted({key for run in results for key in run.get("ignored_hyperparameters", [])})
        if keys:
            algo = results[0].get("algo", "algorithm")
            print(f"{names[name]}'s {algo} takes no {', '.join(keys)}: left out of its run.")


def print_ratios(backend: str, runs: dict) -> dict:
    """Prints and returns keras-rl-gym's median steps/s over each peer's (whole run and after warm-up)."""
    names = labels(backend)
    ratios = {}
    for peer in (name for name in runs if name != "ours"):
        whole, steady = (ratio(runs["ours"], runs[peer], key) for key, _, _ in THROUGHPUT)
        ratios[peer] = {"steps_per_second": whole, "steady_steps_per_second": steady}
        print(
            f"ratio keras-rl-gym ({backend}) / {names[peer]}, median env steps/s: "
            f"{_times(whole)} whole run, {_times(steady)} after warm-up"
        )
    return ratios


def report(backend: str, runs: dict, metrics: list, resamples: int) -> dict:
    """Prints the per-side table and the comparisons with each peer; returns their numbers.

    ``runs``: ``{"ours": [result, ...], "sb3": [...], "sbx": [...]}``, one result per seed.
    """
    names = labels(backend)
    summary = {name: {key: spread(_values(results, key)) for key, _, _ in metrics} for name, results in runs.items()}
    width = max(len(label) for _, label, _ in metrics)
    print(f"\n{'':{width}}  {'side':22} {'n':>3} {'median':>9} {'min':>9} {'max':>9} {'IQR':>9}")
    for key, label, _ in metrics:
        for i, name in enumerate(runs):
            s = summary[name][key]
            cells = [_number(s.get(field)) for field in ("median", "min", "max", "iqr")]
            row = f"{label if i == 0 else '':{width}}  {names[name]:22} {s['n']:>3} "
            print(row + " ".join(f"{cell:>9}" for cell in cells))
    if STEPS_TO_THRESHOLD in metrics:
        print(f"n: seeds with a value; the steps to {THRESHOLD:.0f} count only seeds that reached it (not compared)")
    fewest = min(len(results) for results in runs.values())
    if fewest < 5:
        print(f"Only {fewest} seed(s) on a side: the bootstrap intervals below mean little.")
    comparisons = {}
    for peer in (name for name in runs if name != "ours"):
        print(f"\nkeras-rl-gym - {names[peer]}: difference of medians, bootstrap 95% interval ({resamples} resamples)")
        comparisons[peer] = {}
        for key, label, higher_is_better in metrics:
            if higher_is_better is None:
                continue
            c = compare(_values(runs["ours"], key), _values(runs[peer], key), higher_is_better, names[peer], resamples)
            comparisons[peer][key] = c
            if c["difference"] is None:
                print(f"  {label:{width}}  -")
                continue
            low, high = c["ci95"]
            verdict = f"excludes 0: favours {c['favours']}" if c["excludes_zero"] else "includes 0: no clear difference"
            print(f"  {label:{width}}  {c['difference']:+9.1f}  [{low:+.1f}, {high:+.1f}]  {verdict}")
            r = c["rank_test"]
            share = "-" if r["median_share"] is None else f"{r['median_share']:.2f}"
            same = "same learning" if r["same"] else "NOT the same learning"
            if not r["enough_seeds"]:
                same += f" (fewer than {SAME_LEARNING_SEEDS} seeds a side)"
            print(
                f"  {'':{width}}  Mann-Whitney U {r['mann_whitney_u']:.1f}, two-sided p = {r['p_value']:.3f}; "
                f"median share {share} (needs p >= {SAME_LEARNING_ALPHA} and >= {SAME_LEARNING_SHARE}): {same}"
            )
    print_ignored(backend, runs)
    print()
    return {"summary": summary, "comparisons": comparisons, "ratios": print_ratios(backend, runs)}


def seeds_mode(args, backend: str, runners: dict, metrics: list, extra: dict) -> None:
    """Runs every side on seeds ``first_seed ... first_seed + seeds - 1``, side after side within each
    seed (so load drifts alike for all), then prints the table, the comparisons and one JSON line."""
    names = labels(backend)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    runs = {name: [] for name in runners}
    for seed in seeds:
        parts = []
        for name, run in runners.items():
            outcome = run(seed)
            if outcome is None:  # an SBX run that failed: reported on stderr
                continue
            runs[name].append(dict(outcome, seed=seed))
            parts.append(run_line(names[name], outcome))
        print(f"seed {seed}: " + "; ".join(parts), flush=True)
    numbers = report(backend, {name: results for name, results in runs.items() if results}, metrics, args.resamples)
    print(dumps({"backend": backend, "mode": "seeds", "seeds": seeds, **extra, "runs": runs, **numbers}))


def dumps(record: dict) -> str:
    """One JSON line (NumPy numbers as Python's)."""
    return json.dumps(record, default=lambda x: x.item() if hasattr(x, "item") else str(x))


# -- the two defaults where Keras and torch differ (issue 29's parity measurement) --------------------
def torch_style_adam(optimizer) -> None:
    """Makes a Keras Adam add its epsilon as torch's does, after the bias correction; call it before ``fit``.

    Keras: ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``; torch:
    ``p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)``, which is Keras's step with
    ``eps * sqrt(1 - b2^t)`` in place of ``eps``: at the first step ``sqrt(1 - 0.999) = 0.032``,
    so Keras's 1e-7 acts as torch's 3.2e-6. The class is swapped (it adds no state) so that the
    agent keeps the optimizer it tracks and builds.
    """
    import keras

    class TorchStyleAdam(type(optimizer)):
        def update_step(self, gradient, variable, learning_rate):
            ops = keras.ops
            step = ops.cast(self.iterations + 1, variable.dtype)
            epsilon = self.epsilon
            self.epsilon = ops.multiply(epsilon, ops.sqrt(1.0 - ops.power(ops.cast(self.beta_2, variable.dtype), step)))
            try:
                super().update_step(gradient, variable, learning_rate)
            finally:
                self.epsilon = epsilon

        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            # Keras's torch Adam steps every variable at once (torch._foreach) and never calls update_step.
            for gradient, variable in zip(grads, trainable_variables):
                self.update_step(gradient, variable, learning_rate)

    if not isinstance(optimizer, keras.optimizers.Adam):
        raise TypeError(f"torch_style_adam needs a keras.optimizers.Adam, got {type(optimizer).__name__}.")
    optimizer.__class__ = TorchStyleAdam


def torch_style_init(model, seed: int) -> None:
    """Redraws every Dense and Conv2D layer of ``model`` as torch's ``nn.Linear``/``nn.Conv2d`` draw theirs.

    torch: kernel ``kaiming_uniform_(a=sqrt(5))``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, and the bias
    from the same range; Keras: Glorot-uniform kernels, ``U(+-sqrt(6 / (fan_in + fan_out)))``, and zero biases.
    Copy the result into any target network afterwards.
    """
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            continue
        kernel = layer.kernel
        fan_in = int(np.prod(kernel.shape[:-1]))
        bound = 1.0 / math.sqrt(fan_in)
        kernel.assign(rng.uniform(-bound, bound, kernel.shape).astype(np.float32))
        if layer.bias is not None:
            layer.bias.assign(rng.uniform(-bound, bound, layer.bias.shape).astype(np.float32))
