"""Train an actor-critic on CartPole-v1 and log to MLflow.

By default, synchronous A2C: 8 envs, 8-step rollouts, normalized advantages.
``--one-step`` runs the tutorial's one-step actor-critic config instead
(configs/actor-critic-cartpole.json: one env, an update every step).

KERAS_BACKEND=jax python examples/actor_critic_cartpole.py --steps 30000
"""

import argparse

import gymnasium as gym

from keras_rl_gym import ActorCriticAgent
from keras_rl_gym.callbacks import MLflowLogger
from keras_rl_gym.config import load_config, run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one-step", action="store_true", help="the tutorial's one-step actor-critic config")
    args = parser.parse_args()
    if args.one_step:
        config = load_config("actor-critic-cartpole")
        config["train"].update(steps=args.steps, seed=args.seed)
        _, _, evaluation = run(config)
    else:
        envs = gym.make_vec("CartPole-v1", num_envs=8)
        agent = ActorCriticAgent(
            envs.single_observation_space,
            envs.single_action_space,
            n_steps=8,
            learning_rate=2e-3,
            value_learning_rate=5e-3,
            normalize_advantage=True,
            seed=args.seed,
        )
        logger = MLflowLogger(run_name="a2c-cartpole-example", end_run=False)
        agent.fit(envs, steps=args.steps, callbacks=[logger])
        evaluation = agent.evaluate(gym.make("CartPole-v1"), episodes=10, seed=args.seed + 1000)
        logger.log_evaluation(evaluation)
        logger.end()
    print(f"Mean greedy return over 10 episodes: {evaluation['mean_return']:.1f}")


if __name__ == "__main__":
    main()
