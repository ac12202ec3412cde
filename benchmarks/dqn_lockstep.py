"""DQN's update, step for step against SB3's: same starting weights, same batches, same target copies.

The parity benchmark compares two whole runs, where exploration, sampling and chaos decide a lot. This
script isolates the update: SB3's ``DQN.train`` and this package's ``DQNAgent.train_step`` start from the
same weights (SB3's torch initialization, copied in) and get the same minibatches of real CartPole
transitions, with the target network copied every ``--target-every`` updates on both sides. It prints the
largest difference of any weight, relative to the weights' scale, and of the loss, every ``--every``
updates. The same math keeps them within float32 rounding for many updates (a chaotic system drifts in
the end); a different loss, reduction, clipping or optimizer shows within the first few::

    KERAS_BACKEND=jax python benchmarks/dqn_lockstep.py --updates 3000
    KERAS_BACKEND=jax python benchmarks/dqn_lockstep.py --adam-epsilon 1e-8   # torch's Adam epsilon

Keras's Adam adds its epsilon to sqrt(v) before the bias correction of v, torch's after; with
epsilon 1e-7 (Keras's default) against torch's 1e-8 that is the one deliberate difference left.
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
from dqn_cartpole import HYPERPARAMETERS as H


def transitions(n: int, seed: int) -> dict:
    """``n`` CartPole transitions under random actions (``terminated`` only, as both replays store it)."""
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    data = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated")}
    for _ in range(n):
        action = int(rng.integers(2))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(data, (obs, action, reward, next_obs, terminated)):
            data[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    return {
        "obs": np.asarray(data["obs"], np.float32),
        "action": np.asarray(data["action"], np.int32),
        "reward": np.asarray(data["reward"], np.float32),
        "next_obs": np.asarray(data["next_obs"], np.float32),
        "terminated": np.asarray(data["terminated"], np.float32),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=3_000)
    parser.add_argument("--every", type=int, default=500, help="print the differences every this many updates")
    parser.add_argument("--target-every", type=int, default=H["target_update_interval"])
    parser.add_argument("--transitions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adam-epsilon", type=float, default=None, help="our Adam's epsilon (Keras's 1e-7)")
    args = parser.parse_args()

    import keras
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from keras_rl_gym import DQNAgent

    torch.set_num_threads(1)
    env = gym.make("CartPole-v1")
    sb3 = DQN(
        "MlpPolicy",
        env,
        learning_rate=H["learning_rate"],
        batch_size=H["batch_size"],
        gamma=H["gamma"],
        max_grad_norm=H["max_grad_norm"],
        policy_kwargs={"net_arch": list(H["hidden"]), "activation_fn": torch.nn.ReLU},
        device="cpu",
        seed=args.seed,
    )
    ours = DQNAgent(
        env.observation_space,
        env.action_space,
        hidden_sizes=H["hidden"],
        learning_rate=H["learning_rate"],
        batch_size=H["batch_size"],
        gamma=H["gamma"],
        max_grad_norm=H["max_grad_norm"],
        loss="huber",
        seed=args.seed,
    )
    if args.adam_epsilon is not None:
        ours.optimizer.epsilon = args.adam_epsilon
    # SB3's starting weights into ours: torch's Linear holds (out, in), Keras's Dense (in, out).
    linears = [m for m in sb3.q_net.q_net if isinstance(m, torch.nn.Linear)]
    start = []
    for layer in linears:
        start += [layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()]
    ours.q_network.set_weights(start)
    ours.target_network.set_weights(start)

    data = transitions(args.transitions, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    batch = {}

    class Replay:  # SB3's replay buffer, reduced to handing out the batch both sides train on
        def sample(self, batch_size, env=None):
            t = {k: torch.as_tensor(v) for k, v in batch.items()}
            return ReplayBufferSamples(
                t["obs"], t["action"].long()[:, None], t["next_obs"], t["terminated"][:, None], t["reward"][:, None]
            )

    sb3.replay_buffer = Replay()
    sb3.set_logger(configure(None, []))  # train() records its loss there
    rows = []
    for update in range(1, args.updates + 1):
        index = rng.integers(0, len(data["obs"]), H["batch_size"])
        batch = {k: v[index] for k, v in data.items()}
        sb3.train(gradient_steps=1, batch_size=H["batch_size"])
        metrics = ours.train_step(batch)
        if update % args.target_every == 0:
            sb3.q_net_target.load_state_dict(sb3.q_net.state_dict())
            ours.runtime.update_targets(1.0)
        if update % args.every == 0 or update == 1:
            theirs = []
            for layer in linears:
                theirs += [layer.weight.detach().numpy().T, layer.bias.detach().numpy()]
            mine = [np.asarray(w) for w in ours.q_network.get_weights()]
            scale = max(float(np.abs(w).max()) for w in theirs)
            weight_gap = max(float(np.abs(a - b).max()) for a, b in zip(mine, theirs)) / scale
            q_theirs = sb3.q_net(torch.as_tensor(data["obs"][:1000])).detach().numpy()
            q_mine = keras.ops.convert_to_numpy(ours.q_network.predict_on_batch(data["obs"][:1000]))
            q_gap = float(np.abs(q_mine - q_theirs).max() / np.abs(q_theirs).max())
            loss = float(sb3.logger.name_to_value.get("train/loss", np.nan))
            row = dict(update=update, weight_gap=weight_gap, q_gap=q_gap, loss_sb3=loss, loss_ours=metrics["loss"])
            rows.append(row)
            print(
                f"update {update:6d}: max |w_ours - w_sb3| / max |w_sb3| = {weight_gap:.2e}, "
                f"Q-values {q_gap:.2e}; loss SB3 {loss:.5f}, ours {metrics['loss']:.5f}"
            )
    print(json.dumps({"backend": keras.backend.backend(), "adam_epsilon": float(ours.optimizer.epsilon), "rows": rows}))


if __name__ == "__main__":
    main()
