"""Train PPO on CartPole-v1 with 8 parallel envs and log the run to MLflow.

KERAS_BACKEND=jax python examples/ppo_cartpole.py --steps 50000 --vectorization-mode async
mlflow ui --backend-store-uri sqlite:///mlflow.db
"""

import argparse

import gymnasium as gym

from keras_rl_gym import PPOAgent
from keras_rl_gym.callbacks import MLflowLogger


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--vectorization-mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # The tutorial's rollout workers are a Gymnasium vector env: "async" steps each env in its own process.
    envs = gym.make_vec("CartPole-v1", num_envs=args.num_envs, vectorization_mode=args.vectorization_mode)
    agent = PPOAgent(
        envs.single_observation_space,
        envs.single_action_space,
        n_steps=32,
        batch_size=256,
        n_epochs=20,
        gae_lambda=0.8,
        gamma=0.98,
        learning_rate=1e-3,
        seed=args.seed,
    )
    logger = MLflowLogger(run_name="ppo-cartpole-example", end_run=False)
    agent.fit(envs, steps=args.steps, callbacks=[logger])
    result = agent.evaluate(gym.make("CartPole-v1"), episodes=10, seed=args.seed + 1000)
    logger.log_evaluation(result)
    logger.end()
    envs.close()
    print(f"Mean greedy return over 10 episodes: {result['mean_return']:.1f}")
    agent.save("ppo-cartpole.keras")


if __name__ == "__main__":
    main()
