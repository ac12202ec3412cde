"""Train a Double DQN with prioritized replay and 3-step returns on CartPole-v1, and log it to MLflow.

KERAS_BACKEND=jax python examples/dqn_per_nstep_cartpole.py --steps 50000
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
        n_step=3,  # y = r_t + g r_t+1 + g^2 r_t+2 + g^3 max Q'(s_t+3), cut at termination
        prioritized=True,  # sample by |TD error|^0.6, importance weights with beta 0.4 -> 1
        priority_alpha=0.6,
        priority_beta=0.4,
        learning_rate=2.3e-3,
        learning_rate_decay=0.9,
        batch_size=64,
        buffer_size=100_000,
        train_freq=256,
        gradient_steps=128,
        target_update_every=10,
        exploration_fraction=0.16,
        epsilon_final=0.0,
        seed=args.seed,
    )
    logger = MLflowLogger(run_name="dqn-per-nstep-cartpole-example", end_run=False)
    agent.fit(env, steps=args.steps, callbacks=[logger])
    result = agent.evaluate(gym.make("CartPole-v1"), episodes=10, seed=args.seed + 1000)
    logger.log_evaluation(result)
    logger.end()
    print(f"Mean greedy return over 10 episodes: {result['mean_return']:.1f}")
    agent.save("dqn-per-nstep-cartpole.keras")


if __name__ == "__main__":
    main()
