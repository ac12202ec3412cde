"""Train TD3 on BipedalWalker-v3 (RL Zoo's settings, 1M steps) and log the run to MLflow.

KERAS_BACKEND=jax python examples/td3_bipedalwalker.py --steps 1000000
mlflow ui --backend-store-uri sqlite:///mlflow.db

Needs Box2D: pip install "keras-rl-gym[box2d]".
"""

import argparse

import gymnasium as gym

from keras_rl_gym import TD3Agent
from keras_rl_gym.callbacks import MLflowLogger


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = gym.make("BipedalWalker-v3")
    agent = TD3Agent(
        env.observation_space,
        env.action_space,
        actor_hidden_sizes=(400, 300),
        critic_hidden_sizes=(400, 300),
        gamma=0.98,
        buffer_size=200_000,
        learning_starts=10_000,
        noise_std=0.1,
        seed=args.seed,
    )
    logger = MLflowLogger(run_name="td3-bipedalwalker-example", end_run=False)
    agent.fit(env, steps=args.steps, log_every=10_000, callbacks=[logger])
    result = agent.evaluate(gym.make("BipedalWalker-v3"), episodes=10, seed=args.seed + 1000)
    logger.log_evaluation(result)
    logger.end()
    print(f"Mean greedy return over 10 episodes: {result['mean_return']:.1f}")
    agent.save("td3-bipedalwalker.keras")


if __name__ == "__main__":
    main()
