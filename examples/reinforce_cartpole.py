"""Train REINFORCE with a value baseline on CartPole-v1 (the tutorial's config) and log to MLflow.

KERAS_BACKEND=jax python examples/reinforce_cartpole.py --steps 100000
"""

import argparse

from keras_rl_gym.config import load_config, run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = load_config("reinforce-cartpole")
    config["train"].update(steps=args.steps, seed=args.seed)
    agent, history, evaluation = run(config)
    print(f"Mean greedy return over 10 episodes: {evaluation['mean_return']:.1f}")


if __name__ == "__main__":
    main()
