"""Train TD3 on Pendulum-v1 (RL Zoo's settings) and log the run to MLflow.

KERAS_BACKEND=jax python examples/td3_pendulum.py --steps 20000
mlflow ui --backend-store-uri sqlite:///mlflow.db
"""

import argparse

import gymnasium as gym

from keras_rl_gym import TD3Agent
from keras_rl_gym.callbacks import MLflowLogger


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = gym.make("Pendulum-v1")
    agent = TD3Agent(
        env.observation_space,
        env.action_space,
        actor_hidden_sizes=(400, 300),
        critic_hidden_sizes=(400, 300),
        gamma=0.98,
        buffer_size=200_000,
        learning_starts=10_000,
        policy_delay=2,  # the actor and the targets move every second update
        target_policy_noise=0.2,  # smoothing noise on the target action, clipped at 0.5
        target_noise_clip=0.5,
        noise_std=0.1,
        seed=args.seed,
    )
    logger = MLflowLogger(run_name="td3-pendulum-example", end_run=False)
    agent.fit(env, steps=args.steps, callbacks=[logger])
    result = agent.evaluate(gym.make("Pendulum-v1"), episodes=10, seed=args.seed + 1000)
    logger.log_evaluation(result)
    logger.end()
    print(f"Mean greedy return over 10 episodes: {result['mean_return']:.1f}")
    agent.save("td3-pendulum.keras")


if __name__ == "__main__":
    main()
