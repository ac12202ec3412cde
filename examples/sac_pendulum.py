"""Train SAC on Pendulum-v1 (RL Zoo's settings) and log the run to MLflow.

KERAS_BACKEND=jax python examples/sac_pendulum.py --steps 20000
mlflow ui --backend-store-uri sqlite:///mlflow.db
"""

import argparse

import gymnasium as gym

from keras_rl_gym import SACAgent
from keras_rl_gym.callbacks import MLflowLogger


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = gym.make("Pendulum-v1")
    agent = SACAgent(
        env.observation_space,
        env.action_space,
        actor_learning_rate=1e-3,
        critic_learning_rate=1e-3,
        alpha="auto",  # the temperature is learned toward an entropy of -dim(A)
        alpha_learning_rate=1e-3,
        learning_starts=100,
        seed=args.seed,
    )
    logger = MLflowLogger(run_name="sac-pendulum-example", end_run=False)
    agent.fit(env, steps=args.steps, callbacks=[logger])
    result = agent.evaluate(gym.make("Pendulum-v1"), episodes=10, seed=args.seed + 1000)
    logger.log_evaluation(result)
    logger.end()
    print(f"Mean greedy return over 10 episodes: {result['mean_return']:.1f}")
    agent.save("sac-pendulum.keras")


if __name__ == "__main__":
    main()
