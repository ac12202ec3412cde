"""DRQN (DRQNAgent: DQN with an LSTM Q-network) on MsPacman's RAM: the tutorial's dqn-lstm-mspacman-ram config.

Needs the atari extra: pip install "keras-rl-gym[atari]".

KERAS_BACKEND=jax python examples/drqn_mspacman_ram.py --steps 300000
KERAS_BACKEND=jax python examples/drqn_mspacman_ram.py --steps 3000     # a quick look
"""

import argparse

from keras_rl_gym.config import load_config, run

CONFIG = "drqn-mspacman-ram"  # a shipped config, found by name from any directory


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = load_config(CONFIG)
    config["train"].update(steps=args.steps, seed=args.seed)
    config["agent"]["learning_starts"] = min(config["agent"]["learning_starts"], args.steps // 2)
    _, _, evaluation = run(config)
    print(f"Mean greedy return over {len(evaluation['returns'])} episodes: {evaluation['mean_return']:.1f}")


if __name__ == "__main__":
    main()
