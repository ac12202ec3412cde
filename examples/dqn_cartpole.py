"""Train a Double DQN on CartPole-v1 and log the run to MLflow.

KERAS_BACKEND=jax python examples/dqn_cartpole.py --steps 50000
mlflow ui --backend-store-uri sqlite:///mlflow.db
"""

import argparse

import gymnasium as gym

from keras_rl_gym import DQNAgent
from keras_rl_gym.callbacks import MLflowLogger


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = gym.make("CartPole-v1")
    agent = DQNAgent(
        env.observation_space,
        env.action_space,
        hidden_sizes=(256, 256),
        double=True,
        learning_rate=2.3e-3,
        batch_size=64,
        buffer_size=100_000,
        train_freq=256,
        gradient_steps=128,
        target_update_every=10,
        exploration_fraction=0.16,
        epsilon_final=0.04,
        seed=args.seed,
    )
    logger = MLflowLogger(run_name="dqn-cartpole-example", end_run=False)
    agent.fit(env, steps=args.steps, callbacks=[logger])
    result = agent.evaluate(gym.make("CartPole-v1"), episodes=10, seed=args.seed + 1000)
    logger.log_evaluation(result)
    logger.end()
    print(f"Mean greedy return over 10 episodes: {result['mean_return']:.1f}")
    agent.save("dqn-cartpole.keras")


if __name__ == "__main__":
    main()
