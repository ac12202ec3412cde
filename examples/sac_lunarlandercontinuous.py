"""Train SAC on LunarLanderContinuous-v3 (RL Zoo's settings, 500k steps) and log the run to MLflow.

KERAS_BACKEND=jax python examples/sac_lunarlandercontinuous.py --steps 500000
mlflow ui --backend-store-uri sqlite:///mlflow.db

Needs Box2D: pip install "keras-rl-gym[box2d]".
"""

import argparse

import gymnasium as gym

from keras_rl_gym import SACAgent
from keras_rl_gym.callbacks import MLflowLogger


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = gym.make("LunarLanderContinuous-v3")
    agent = SACAgent(
        env.observation_space,
        env.action_space,
        actor_hidden_sizes=(400, 300),
        critic_hidden_sizes=(400, 300),
        actor_learning_rate=7.3e-4,
        critic_learning_rate=7.3e-4,
        alpha_learning_rate=7.3e-4,
        buffer_size=1_000_000,
        learning_starts=10_000,
        tau=0.01,
        seed=args.seed,
    )
    logger = MLflowLogger(run_name="sac-lunarlandercontinuous-example", end_run=False)
    agent.fit(env, steps=args.steps, log_every=5_000, callbacks=[logger])
    result = agent.evaluate(gym.make("LunarLanderContinuous-v3"), episodes=10, seed=args.seed + 1000)
    logger.log_evaluation(result)
    logger.end()
    print(f"Mean greedy return over 10 episodes: {result['mean_return']:.1f}")
    agent.save("sac-lunarlandercontinuous.keras")


if __name__ == "__main__":
    main()
