"""Train DDPG on Pendulum-v1 and log the run to MLflow.

KERAS_BACKEND=jax python examples/ddpg_pendulum.py --steps 30000
mlflow ui --backend-store-uri sqlite:///mlflow.db
"""

import argparse

import gymnasium as gym

from keras_rl_gym import DDPGAgent
from keras_rl_gym.callbacks import MLflowLogger


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = gym.make("Pendulum-v1")
    agent = DDPGAgent(
        env.observation_space,
        env.action_space,
        actor_hidden_sizes=(64, 64),
        critic_hidden_sizes=(64, 64),
        gamma=0.98,
        actor_learning_rate=1e-3,
        critic_learning_rate=1e-3,
        buffer_size=200_000,
        batch_size=128,
        learning_starts=1_000,
        tau=0.005,
        noise_type="gaussian",
        noise_std=0.1,
        seed=args.seed,
    )
    logger = MLflowLogger(run_name="ddpg-pendulum-example", end_run=False)
    agent.fit(env, steps=args.steps, callbacks=[logger])
    result = agent.evaluate(gym.make("Pendulum-v1"), episodes=10, seed=args.seed + 1000)
    logger.log_evaluation(result)
    logger.end()
    print(f"Mean greedy return over 10 episodes: {result['mean_return']:.1f}")
    agent.save("ddpg-pendulum.keras")


if __name__ == "__main__":
    main()
