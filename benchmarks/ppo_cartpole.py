"""PPO on CartPole-v1 with 8 envs: keras-rl-gym against Stable-Baselines3, same hyperparameters, same run.

    pip install -r benchmarks/requirements.txt
    KERAS_BACKEND=jax python benchmarks/ppo_cartpole.py --steps 100000 --seeds 5

For each seed both libraries train for ``--steps`` env steps with the values of
``configs/ppo-cartpole.json`` (RL Zoo's CartPole PPO with constant learning rate
and clip range; ReLU 64-64 actor and critic on both sides). Printed per seed and
in total: env steps per second over the whole run (acting, env stepping, GAE and
updates), and the env steps at which the mean return of the last 20 training
episodes first reaches 475. Both sides run torch on one thread.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque

import gymnasium as gym
import keras
import numpy as np

from keras_rl_gym.config import load_config, make_agent, make_env

THRESHOLD = 475.0
WINDOW = 20


class _Threshold:
    """Records the env step at which the mean of the last WINDOW episode returns first reaches THRESHOLD."""

    def __init__(self):
        self.returns = deque(maxlen=WINDOW)
        self.reached_at = None

    def episode(self, ret: float, step: int) -> None:
        self.returns.append(ret)
        if self.reached_at is None and len(self.returns) == WINDOW and np.mean(self.returns) >= THRESHOLD:
            self.reached_at = step


def run_ours(config: dict, steps: int, seed: int) -> dict:
    config = json.loads(json.dumps(config))
    config["train"]["seed"] = seed
    envs = make_env(config)
    agent = make_agent(config, envs)
    tracker = _Threshold()

    class Track(keras.callbacks.Callback):
        def on_episode_end(self, episode, logs):
            tracker.episode(logs["episode_return"], logs["env_steps"])

    start = time.perf_counter()
    agent.fit(envs, steps=steps, verbose=0, callbacks=[Track()], seed=seed)
    elapsed = time.perf_counter() - start
    evaluation = agent.evaluate(gym.make("CartPole-v1"), episodes=10, seed=10_000 + seed)
    return {
        "steps_per_second": steps / elapsed,
        "steps_to_475": tracker.reached_at,
        "eval_return": evaluation["mean_return"],
    }


def run_sb3(config: dict, steps: int, seed: int) -> dict:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    a = config["agent"]
    tracker = _Threshold()

    class Track(BaseCallback):
        def _on_step(self):
            for info in self.locals["infos"]:
                if "episode" in info:
                    tracker.episode(info["episode"]["r"], self.num_timesteps)
            return True

    model = PPO(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=config["num_envs"], seed=seed),
        n_steps=a["n_steps"],
        batch_size=a["batch_size"],
        n_epochs=a["n_epochs"],
        gae_lambda=a["gae_lambda"],
        gamma=a["gamma"],
        learning_rate=a["learning_rate"],
        clip_range=a["clip_range"],
        max_grad_norm=a["max_grad_norm"],
        ent_coef=0.0,
        vf_coef=0.5,
        policy_kwargs={"net_arch": dict(pi=a["hidden_sizes"], vf=a["hidden_sizes"]), "activation_fn": torch.nn.ReLU},
        device="cpu",
        seed=seed,
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=Track())
    elapsed = time.perf_counter() - start
    env = gym.make("CartPole-v1")
    returns = []
    for i in range(10):
        obs, _ = env.reset(seed=10_000 + seed + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(model.predict(obs, deterministic=True)[0]))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return {
        "steps_per_second": steps / elapsed,
        "steps_to_475": tracker.reached_at,
        "eval_return": float(np.mean(returns)),
    }


def _summary(name: str, runs: list) -> str:
    sps = np.mean([r["steps_per_second"] for r in runs])
    reached = [r["steps_to_475"] for r in runs if r["steps_to_475"] is not None]
    median = f"{np.median(reached):.0f}" if reached else "-"
    return (
        f"{name}: {sps:.0f} env steps/s; reached 475 in {len(reached)}/{len(runs)} seeds, "
        f"median {median} env steps; eval returns {[round(r['eval_return'], 1) for r in runs]}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--config", default="configs/ppo-cartpole.json")
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args()
    config = load_config(args.config)
    backend = keras.backend.backend()
    ours, sb3 = [], []
    for seed in range(args.seeds):
        ours.append(run_ours(config, args.steps, seed))
        line = (
            f"seed {seed}: keras-rl-gym {ours[-1]['steps_per_second']:.0f} steps/s, 475 at {ours[-1]['steps_to_475']}"
        )
        if not args.skip_sb3:
            sb3.append(run_sb3(config, args.steps, seed))
            line += f"; SB3 {sb3[-1]['steps_per_second']:.0f} steps/s, 475 at {sb3[-1]['steps_to_475']}"
        print(line, flush=True)
    print(_summary(f"keras-rl-gym ({backend})", ours))
    if sb3:
        print(_summary("Stable-Baselines3 PPO", sb3))
        ratio = np.mean([r["steps_per_second"] for r in ours]) / np.mean([r["steps_per_second"] for r in sb3])
        print(f"steps/s ratio keras-rl-gym/SB3 on {backend}: {ratio:.2f}x")
    print(json.dumps({"backend": backend, "steps": args.steps, "ours": ours, "sb3": sb3}))


if __name__ == "__main__":
    main()
