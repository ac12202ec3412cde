"""Train PPO on LunarLander-v3 (the tutorial's config, 5 async rollout workers) and log to MLflow.

Needs the box2d extra: pip install "keras-rl-gym[box2d]".

KERAS_BACKEND=jax python examples/ppo_lunarlander.py --steps 1000000
"""

import argparse

from keras_rl_gym.config import load_config, run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = load_config("ppo-lunarlander")
    config["train"].update(steps=args.steps, seed=args.seed)
    agent, history, evaluation = run(config)
    print(f"Mean greedy return over 10 episodes: {evaluation['mean_return']:.1f}")


if __name__ == "__main__":
    main()
