"""Train double + dueling DQN on an Atari game (configs/dqn-conv-pong.json) with evaluation videos in MLflow.

Needs the atari extra: pip install "keras-rl-gym[atari]". A GPU helps a lot:
Pong takes a few million env steps to learn.

KERAS_BACKEND=jax python examples/dqn_atari.py --env ALE/Pong-v5 --steps 2000000
KERAS_BACKEND=jax python examples/dqn_atari.py --steps 5000 --eval-every 2500   # a quick look
mlflow ui --backend-store-uri sqlite:///mlflow.db
"""

import argparse

from keras_rl_gym.callbacks import EvaluationCallback, MLflowLogger
from keras_rl_gym.config import load_config, make_agent, make_env
from keras_rl_gym.wrappers.atari import make_atari_env

CONFIG = "dqn-conv-pong"  # a shipped config, found by name from any directory


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="ALE/Pong-v5")
    parser.add_argument("--steps", type=int, default=2_000_000)
    parser.add_argument("--eval-every", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = load_config(CONFIG)
    config["env"] = args.env
    config["train"].update(steps=args.steps, seed=args.seed)
    config["agent"]["learning_starts"] = min(config["agent"]["learning_starts"], args.steps // 2)
    env = make_env(config)
    agent = make_agent(config, env)
    evaluation = EvaluationCallback(
        lambda: make_atari_env(args.env, training=False, render_mode="rgb_array"),
        every=args.eval_every,
        episodes=3,
        video=True,
    )
    logger = MLflowLogger(run_name=f"dqn-{args.env.replace('/', '-')}", extra_params={"env": args.env})
    agent.fit(env, steps=args.steps, callbacks=[logger, evaluation], log_every=10_000)
    for step, result in evaluation.history:
        print(f"step {step}: mean greedy return {result['mean_return']:.1f}")
    agent.save("dqn-atari.keras")


if __name__ == "__main__":
    main()
