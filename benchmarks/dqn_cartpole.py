"""DQN on CartPole-v1: keras-rl-gym against Stable-Baselines3, same hyperparameters, same run.

Throughput (MLP 64-64, batch 32, one gradient step per env step)::

    pip install -r benchmarks/requirements.txt
    KERAS_BACKEND=jax python benchmarks/dqn_cartpole.py --steps 50000

Learning with the tuned config, several seeds (no SB3)::

    KERAS_BACKEND=jax python benchmarks/dqn_cartpole.py --config configs/dqn-cartpole.json --seeds 5

Both sides run torch on one thread (keras-rl-gym's default; faster for SB3 too
on a 2-core machine). Timings include acting, env stepping, replay sampling and
updates: env steps per second over the whole run.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import keras
import numpy as np

from keras_rl_gym import DQNAgent
from keras_rl_gym.config import load_config, make_agent, make_env

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


def evaluate_policy(act, episodes: int = 10, seed: int = 10_000) -> float:
    env = gym.make("CartPole-v1")
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def run_ours(steps: int, seed: int) -> dict:
    h = HYPERPARAMETERS
    env = gym.make("CartPole-v1")
    agent = DQNAgent(
        env.observation_space,
        env.action_space,
        hidden_sizes=h["hidden"],
        learning_rate=h["learning_rate"],
        buffer_size=h["buffer_size"],
        learning_starts=h["learning_starts"],
        batch_size=h["batch_size"],
        gamma=h["gamma"],
        train_freq=h["train_freq"],
        gradient_steps=h["gradient_steps"],
        target_update_every=h["target_update_interval"],
        exploration_fraction=h["exploration_fraction"],
        epsilon_final=h["exploration_final_eps"],
        max_grad_norm=h["max_grad_norm"],
        loss="huber",  # SB3's DQN loss
        seed=seed,
    )
    start = time.perf_counter()
    agent.fit(env, steps=steps, verbose=0)
    elapsed = time.perf_counter() - start
    return {"steps_per_second": steps / elapsed, "seconds": elapsed, "eval_return": evaluate_policy(agent.act)}


def run_sb3(steps: int, seed: int) -> dict:
    import torch
    from stable_baselines3 import DQN

    torch.set_num_threads(1)
    h = HYPERPARAMETERS
    model = DQN(
        "MlpPolicy",
        gym.make("CartPole-v1"),
        learning_rate=h["learning_rate"],
        buffer_size=h["buffer_size"],
        learning_starts=h["learning_starts"],
        batch_size=h["batch_size"],
        gamma=h["gamma"],
        train_freq=h["train_freq"],
        gradient_steps=h["gradient_steps"],
        target_update_interval=h["target_update_interval"],
        exploration_fraction=h["exploration_fraction"],
        exploration_final_eps=h["exploration_final_eps"],
        max_grad_norm=h["max_grad_norm"],
        policy_kwargs={"net_arch": list(h["hidden"])},
        device="cpu",
        seed=seed,
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    elapsed = time.perf_counter() - start
    return {
        "steps_per_second": steps / elapsed,
        "seconds": elapsed,
        "eval_return": evaluate_policy(lambda obs: int(model.predict(obs, deterministic=True)[0])),
    }


def throughput(args):
    backend = keras.backend.backend()
    ours = run_ours(args.steps, args.seed)
    print(
        f"keras-rl-gym ({backend}): {ours['steps_per_second']:.0f} env steps/s, eval return {ours['eval_return']:.1f}"
    )
    sb3 = run_sb3(args.steps, args.seed)
    print(f"Stable-Baselines3 DQN:     {sb3['steps_per_second']:.0f} env steps/s, eval return {sb3['eval_return']:.1f}")
    ratio = ours["steps_per_second"] / sb3["steps_per_second"]
    print(f"ratio keras-rl-gym/SB3 on {backend}: {ratio:.2f}x")
    print(json.dumps({"backend": backend, "steps": args.steps, "ours": ours, "sb3": sb3, "ratio": ratio}))


def learning(args):
    config = load_config(args.config)
    steps = config.get("train", {}).get("steps", 50_000)
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        config["train"]["seed"] = seed
        env = make_env(config)
        agent = make_agent(config, env)
        start = time.perf_counter()
        agent.fit(env, steps=steps, verbose=0, seed=seed)
        elapsed = time.perf_counter() - start
        result = agent.evaluate(make_env(config, training=False), episodes=10, seed=10_000 + seed)
        results.append(result["mean_return"])
        rate = steps / elapsed
        print(f"seed {seed}: mean eval return {result['mean_return']:.1f} after {steps} steps ({rate:.0f} steps/s)")
    passed = sum(r >= 475 for r in results)
    print(f"{keras.backend.backend()}: {passed}/{len(results)} seeds reach >= 475; returns {results}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", help="run this config for --seeds seeds instead of the SB3 comparison")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="with --config: seeds are first-seed, first-seed+1, ..."
    )
    args = parser.parse_args()
    learning(args) if args.config else throughput(args)


if __name__ == "__main__":
    main()
