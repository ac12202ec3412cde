"""The floor under DQN on CartPole with JAX on this CPU, next to this package and SB3 in the same run.

What one env step of DQN (train_freq 1, batch 32, MLP 64-64, Huber, Adam, clip 10) cannot avoid, each
measured on its own, then a minimal pure-JAX DQN loop (NumPy ring on the host, one jitted call per env
step doing the update and the next greedy action, as this package does) and this package's DQN on the
same hyperparameters (``dqn_cartpole.py``'s), and SB3's::

    KERAS_BACKEND=jax python benchmarks/jax_floor.py --steps 20000

The pure loop is the ceiling of the design "replay on the host, one compiled call per step": a target
of N times SB3 is reachable only where N times SB3's rate stays under it.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np

# The shared hyperparameters (SB3's names), as dqn_cartpole.py trains them.
H = dict(
    lr=1e-3, gamma=0.99, batch=32, learning_starts=1_000, target_every=500, eps_steps=0.1, eps_final=0.02, clip=10.0
)


def per_call_us(call, calls: int) -> float:
    call()  # compiled, warm
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def pure_dqn(seed: int = 0):
    """``init() -> state``, jitted ``update_act(state, batch, obs) -> (state, loss, action)`` and ``act``."""
    import jax
    import jax.numpy as jnp

    sizes = [4, 64, 64, 2]

    def init():
        key, params = jax.random.PRNGKey(seed), []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            key, sub = jax.random.split(key)
            limit = np.sqrt(6 / (fan_in + fan_out))  # Glorot uniform, zero biases: Keras's Dense
            params += [jax.random.uniform(sub, (fan_in, fan_out), minval=-limit, maxval=limit), jnp.zeros(fan_out)]
        zeros = [jnp.zeros_like(p) for p in params]
        return params, [p.copy() for p in params], zeros, [z.copy() for z in zeros], jnp.zeros((), jnp.int32)

    def q_values(params, x):
        for w, b in zip(params[:-2:2], params[1:-2:2]):
            x = jax.nn.relu(x @ w + b)
        return x @ params[-2] + params[-1]

    def loss_fn(params, target, batch):
        # y = r + gamma (1 - terminated) max_a' Q_target(s', a'); Huber(Q(s, a) - y)
        y = batch["reward"] + H["gamma"] * (1 - batch["terminated"]) * q_values(target, batch["next_obs"]).max(-1)
        q = jnp.take_along_axis(q_values(params, batch["obs"]), batch["action"][:, None], 1)[:, 0]
        error = q - jax.lax.stop_gradient(y)
        return jnp.mean(jnp.where(jnp.abs(error) < 1, 0.5 * error**2, jnp.abs(error) - 0.5))

    def update(state, batch):
        params, target, m, v, t = state
        loss, grads = jax.value_and_grad(loss_fn)(params, target, batch)
        norm = jnp.sqrt(sum(jnp.sum(g * g) for g in grads))
        grads = [g * jnp.minimum(1.0, H["clip"] / (norm + 1e-6)) for g in grads]
        t = t + 1
        m = [0.9 * a + 0.1 * g for a, g in zip(m, grads)]
        v = [0.999 * a + 0.001 * g * g for a, g in zip(v, grads)]
        rate = H["lr"] * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        params = [p - rate * a / (jnp.sqrt(b) + 1e-7) for p, a, b in zip(params, m, v)]
        return (params, target, m, v, t), loss

    def update_act(state, batch, obs):
        state, loss = update(state, batch)
        return state, loss, jnp.argmax(q_values(state[0], obs), -1)

    def act(state, obs):
        return jnp.argmax(q_values(state[0], obs), -1)

    def copy_target(state):
        params, _, m, v, t = state
        return params, [p.copy() for p in params], m, v, t

    return init, jax.jit(update, donate_argnums=0), jax.jit(update_act, donate_argnums=0), jax.jit(act), copy_target


def pure_loop(steps: int, seed: int = 0) -> float:
    """Env steps/s of a minimal DQN loop: NumPy ring, epsilon-greedy on the host, one jitted call per step."""
    init, _, update_act, act, copy_target = pure_dqn(seed)
    rng = np.random.default_rng(seed)
    env = gym.make("CartPole-v1")
    ring = {
        "obs": np.zeros((steps, 4), np.float32),
        "action": np.zeros(steps, np.int32),
        "reward": np.zeros(steps, np.float32),
        "next_obs": np.zeros((steps, 4), np.float32),
        "terminated": np.zeros(steps, np.float32),
    }
    state = init()
    obs, _ = env.reset(seed=seed)
    greedy = None
    start = time.perf_counter()
    for step in range(steps):
        eps = max(H["eps_final"], 1 - (1 - H["eps_final"]) * step / (H["eps_steps"] * steps))
        if step < H["learning_starts"] or rng.random() < eps:
            action = int(rng.integers(2))
        else:
            action = greedy if greedy is not None else int(np.asarray(act(state, obs[None]))[0])
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(ring, (obs, action, reward, next_obs, float(terminated))):
            ring[key][step] = value
        obs = env.reset()[0] if terminated or truncated else next_obs
        greedy = None
        if step >= H["learning_starts"]:
            index = rng.integers(0, step + 1, H["batch"])
            batch = {key: column[index] for key, column in ring.items()}
            state, loss, out = update_act(state, batch, obs[None].astype(np.float32))
            greedy = int(np.asarray(out)[0])  # indexing the JAX array would be one more dispatch
            if step % H["target_every"] == 0:
                state = copy_target(state)
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps of each whole run")
    parser.add_argument("--calls", type=int, default=5_000, help="calls per single-operation timing")
    parser.add_argument("--no-sb3", action="store_true", help="leave Stable-Baselines3 out")
    args = parser.parse_args()
    import jax
    from dqn_cartpole import PEER, run_ours

    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    raw = env.unwrapped

    def raw_step():
        if raw.step(0)[2]:
            raw.reset()

    init, update, update_act, act, _ = pure_dqn()
    rng = np.random.default_rng(0)
    batch = {
        "obs": rng.normal(size=(32, 4)).astype(np.float32),
        "action": rng.integers(0, 2, 32).astype(np.int32),
        "reward": np.ones(32, np.float32),
        "next_obs": rng.normal(size=(32, 4)).astype(np.float32),
        "terminated": np.zeros(32, np.float32),
    }
    obs = np.zeros((1, 4), np.float32)
    held = [init()]

    def one_update():
        held[0], loss = update(held[0], batch)
        float(loss)

    def one_update_act():
        held[0], _, out = update_act(held[0], batch, obs)
        int(np.asarray(out)[0])

    figures = {
        "raw_cartpole_step_us": per_call_us(raw_step, args.calls),
        "pure_jax_update_us": per_call_us(one_update, args.calls),
        "pure_jax_act_us": per_call_us(lambda: int(np.asarray(act(held[0], obs))[0]), args.calls),
        "pure_jax_update_act_us": per_call_us(one_update_act, args.calls),
        "pure_jax_loop_steps_per_second": pure_loop(args.steps),
        "keras_rl_gym_steps_per_second": run_ours(args.steps, 0, args.steps // 4)["steps_per_second"],
    }
    if not args.no_sb3:
        from _common import run_peer

        spec = dict(PEER, library="sb3", steps=args.steps, seed=0, warmup=args.steps // 4)
        figures["sb3_steps_per_second"] = run_peer(spec)["steps_per_second"]
    floor = figures["pure_jax_update_act_us"] + figures["raw_cartpole_step_us"]
    figures["floor_steps_per_second"] = 1e6 / floor
    for key, value in figures.items():
        print(f"{key:34s} {value:10.1f}")
    if "sb3_steps_per_second" in figures:
        sb3 = figures["sb3_steps_per_second"]
        for name in ("floor", "pure_jax_loop", "keras_rl_gym"):
            print(f"{name} / SB3: {figures[name + '_steps_per_second'] / sb3:.2f}x")
    print(json.dumps({"jax": jax.__version__, "steps": args.steps, **figures}))


if __name__ == "__main__":
    main()
