"""Atari throughput: the two vector backends, and conv DQN and PPO on Pong against Stable-Baselines3, same run.

    pip install -r benchmarks/requirements.txt        # Stable-Baselines3; EnvPool comes with the atari extra
    KERAS_BACKEND=jax python benchmarks/atari.py                                   # all three parts
    KERAS_BACKEND=jax python benchmarks/atari.py --parts env --envs 8 --env-steps 20000
    KERAS_BACKEND=jax python benchmarks/atari.py --parts dqn --dqn-warmup 5000 --dqn-steps 20000
    KERAS_BACKEND=jax python benchmarks/atari.py --parts ppo --ppo-envs 8 --ppo-steps 20480

Three parts, picked with ``--parts`` (default all):

* ``env``: env steps/s of ``make_atari_vec_env(env_id, N)`` with random
  actions, on the Gymnasium chain and on EnvPool (no learning).
* ``dqn``: conv DQN (Nature CNN, 512 hidden, frame-deduplicated replay, batch
  32, one update every 4 env steps, target copied every 1000, Adam 1e-4,
  Huber loss, gradient norm 10, epsilon to 0.01 over the first 10%) on one
  ``make_atari_env`` Pong env, against SB3's ``DQN("CnnPolicy")`` with the same
  values, ``optimize_memory_usage=True`` and ``handle_timeout_termination=False``
  on SB3's own ``make_atari_env`` + ``VecFrameStack(4)``: 84x84x4 uint8 frames
  on both sides (``ALE/*-v5`` made with ``frameskip=1`` for SB3's
  ``AtariWrapper``, sticky actions 0.25 kept on both). Both stay random until
  ``--dqn-warmup`` env steps (``learning_starts``), then train ``--dqn-steps``.
* ``ppo``: PPO with ``--ppo-envs`` envs (128-step rollouts, 4 epochs of
  minibatches of 256, Adam 2.5e-4, clip 0.1, entropy 0.01, GAE 0.95, gradient
  norm 0.5), against SB3's ``PPO("CnnPolicy")`` with the same values on as many
  SB3 Atari envs, for one rollout (the warm-up: it compiles) plus ``--ppo-steps``.
  keras-rl-gym's PPO has separate conv actor and critic
  networks, SB3's shares one CNN between them unless ``--sb3-separate-cnn``.
  ``--ppo-vec-backend envpool`` runs our side on EnvPool.

Each side is timed as the CartPole benchmarks time it (``_common.RunClock``):
env steps/s over the whole ``fit``/``learn`` call, and after the warm-up (from
the first callback report at or past it to the end; for DQN the first
compiled update falls inside). The ratios compare the rates after the warm-up.

Everything runs on the CPU (``CUDA_VISIBLE_DEVICES=""``); SB3 gets
``--sb3-threads`` torch threads (2). Human-readable lines, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import RunClock, Threshold, keras_callback, sb3_callback  # noqa: E402

from keras_rl_gym import DQNAgent, PPOAgent  # noqa: E402
from keras_rl_gym.wrappers.atari import is_atari_env, make_atari_env, make_atari_vec_env  # noqa: E402

DQN = dict(
    learning_rate=1e-4,
    batch_size=32,
    gamma=0.99,
    train_freq=4,
    gradient_steps=1,
    target_update_interval=1_000,
    exploration_fraction=0.1,
    exploration_final_eps=0.01,
    max_grad_norm=10.0,
)
PPO = dict(
    n_steps=128,
    batch_size=256,
    n_epochs=4,
    learning_rate=2.5e-4,
    clip_range=0.1,
    ent_coef=0.01,
    vf_coef=0.5,
    gae_lambda=0.95,
    gamma=0.99,
    max_grad_norm=0.5,
)


def ppo_agent_kwargs() -> dict:
    """``PPO`` (SB3's names) as ``PPOAgent``'s arguments, on the Nature CNN."""
    h = dict(PPO)
    h["entropy_coef"], h["value_coef"] = h.pop("ent_coef"), h.pop("vf_coef")
    return dict(h, network="conv", hidden_sizes=(512,))


def timed(train, warmup: int, sb3: bool = False) -> dict:
    """Runs ``train(callback)`` on the CartPole benchmarks' clock: env steps/s over the run and after ``warmup``.

    The steady rate runs from the first callback report at or past ``warmup`` env
    steps (keras-rl-gym's ``on_progress``, SB3's rollout start) to the end.
    """
    clock = RunClock(warmup)
    callback = (sb3_callback if sb3 else keras_callback)(clock, Threshold())
    clock.start()
    returned = train(callback)  # SB3's learn returns the model, fit a History
    clock.stop(returned.num_timesteps if sb3 else callback.model.env_steps)
    return clock.rates()


def rate_line(label: str, rates: dict) -> str:
    return (
        f"{label}: {rates['steady_steps_per_second']:,.0f} env steps/s after {rates['steady_from_step']:,} steps "
        f"({rates['steps_per_second']:,.0f} over the whole run)"
    )


def sb3_atari_env(env_id: str, n_envs: int, seed: int):
    """SB3's Atari preprocessing (its AtariWrapper) + VecFrameStack(4): (84, 84, 4) uint8, as ours."""
    from stable_baselines3.common.env_util import make_atari_env as sb3_make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    is_atari_env(env_id)  # registers the ALE ids with Gymnasium
    # AtariWrapper skips frames itself (MaxAndSkipEnv): the ALE/*-v5 env must not skip as well.
    kwargs = {"frameskip": 1} if env_id.startswith("ALE/") else {}
    venv = VecFrameStack(sb3_make_atari_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=kwargs), n_stack=4)
    assert venv.observation_space.shape == (84, 84, 4) and venv.observation_space.dtype == np.uint8
    return venv


def part_env(args) -> dict:
    results = {}
    for backend in ("gymnasium", "envpool"):
        kwargs = {"vectorization_mode": args.gym_mode} if backend == "gymnasium" else {}
        venv = make_atari_vec_env(args.env, args.envs, backend=backend, **kwargs)
        venv.reset(seed=args.seed)
        rng = np.random.default_rng(args.seed)
        actions = rng.integers(0, venv.single_action_space.n, (256, args.envs))
        vector_steps = max(1, args.env_steps // args.envs)
        for i in range(min(100, vector_steps)):  # warm-up: threads started, caches filled
            venv.step(actions[i % 256])
        start = time.perf_counter()
        for i in range(vector_steps):
            venv.step(actions[i % 256])
        elapsed = time.perf_counter() - start
        venv.close()
        rate = vector_steps * args.envs / elapsed
        results[backend] = {"steps_per_second": rate, "env_steps": vector_steps * args.envs, "seconds": elapsed}
        print(f"env {backend:9s} {args.env} x{args.envs}: {rate:,.0f} env steps/s (random actions)")
    results["ratio_envpool_gymnasium"] = (
        results["envpool"]["steps_per_second"] / results["gymnasium"]["steps_per_second"]
    )
    print(f"env envpool/gymnasium: {results['ratio_envpool_gymnasium']:.2f}x")
    return results


def part_dqn(args) -> dict:
    h, total = DQN, args.dqn_warmup + args.dqn_steps
    buffer_size = args.dqn_buffer or total
    env = make_atari_env(args.env)
    agent = DQNAgent(
        env.observation_space,
        env.action_space,
        network="conv",
        hidden_sizes=(512,),  # the Nature DQN head, as SB3's CnnPolicy
        replay="frames",
        buffer_size=buffer_size,
        learning_starts=args.dqn_warmup,
        batch_size=h["batch_size"],
        gamma=h["gamma"],
        learning_rate=h["learning_rate"],
        train_freq=h["train_freq"],
        gradient_steps=h["gradient_steps"],
        target_update_every=h["target_update_interval"],
        exploration_fraction=h["exploration_fraction"],
        epsilon_final=h["exploration_final_eps"],
        max_grad_norm=h["max_grad_norm"],
        loss="huber",  # SB3's smooth L1
        seed=args.seed,
    )
    ours = timed(lambda cb: agent.fit(env, steps=total, verbose=0, callbacks=[cb], log_every=total), args.dqn_warmup)
    ours["updates"] = int(agent.updates)
    print(rate_line(f"dqn keras-rl-gym ({keras.backend.backend()})", ours))
    env.close()

    import torch
    from stable_baselines3 import DQN as SB3DQN

    torch.set_num_threads(args.sb3_threads)
    model = SB3DQN(
        "CnnPolicy",
        sb3_atari_env(args.env, 1, args.seed),
        buffer_size=buffer_size,
        learning_starts=args.dqn_warmup,
        optimize_memory_usage=True,
        replay_buffer_kwargs={"handle_timeout_termination": False},
        device="cpu",
        seed=args.seed,
        verbose=0,
        **h,
    )
    sb3 = timed(lambda cb: model.learn(total_timesteps=total, callback=cb), args.dqn_warmup, sb3=True)
    sb3["torch_threads"] = args.sb3_threads
    print(rate_line("dqn Stable-Baselines3", sb3))
    ratio = ours["steady_steps_per_second"] / sb3["steady_steps_per_second"]
    print(f"dqn keras-rl-gym/SB3: {ratio:.2f}x")
    model.env.close()
    return {"warmup": args.dqn_warmup, "steps": args.dqn_steps, "buffer_size": buffer_size, "ours": ours, "sb3": sb3,
            "ratio": ratio}  # fmt: skip


def part_ppo(args) -> dict:
    h, n = PPO, args.ppo_envs
    warmup = n * h["n_steps"]  # one rollout and its update (the compile) before the clock starts
    total = warmup + args.ppo_steps
    venv = make_atari_vec_env(args.env, n, backend=args.ppo_vec_backend)
    agent = PPOAgent(venv.single_observation_space, venv.single_action_space, seed=args.seed, **ppo_agent_kwargs())
    ours = timed(lambda cb: agent.fit(venv, steps=total, verbose=0, callbacks=[cb], log_every=warmup), warmup)
    ours["vec_backend"] = args.ppo_vec_backend
    print(rate_line(f"ppo keras-rl-gym ({keras.backend.backend()}, {args.ppo_vec_backend})", ours))
    venv.close()

    import torch
    from stable_baselines3 import PPO as SB3PPO

    torch.set_num_threads(args.sb3_threads)
    policy_kwargs = {"share_features_extractor": False} if args.sb3_separate_cnn else {}
    model = SB3PPO(
        "CnnPolicy", sb3_atari_env(args.env, n, args.seed), device="cpu", seed=args.seed, verbose=0,
        policy_kwargs=policy_kwargs, **h,
    )  # fmt: skip
    sb3 = timed(lambda cb: model.learn(total_timesteps=total, callback=cb), warmup, sb3=True)
    sb3.update(torch_threads=args.sb3_threads, shared_cnn=not args.sb3_separate_cnn)
    print(rate_line(f"ppo Stable-Baselines3 ({'separate' if args.sb3_separate_cnn else 'shared'} CNN)", sb3))
    ratio = ours["steady_steps_per_second"] / sb3["steady_steps_per_second"]
    print(f"ppo keras-rl-gym/SB3: {ratio:.2f}x")
    model.env.close()
    return {"envs": n, "warmup": warmup, "steps": args.ppo_steps, "ours": ours, "sb3": sb3, "ratio": ratio}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=("env", "dqn", "ppo"), default=["env", "dqn", "ppo"])
    parser.add_argument("--env", default="ALE/Pong-v5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--envs", type=int, default=8, help="env part: envs per vector env")
    parser.add_argument("--env-steps", type=int, default=20_000, help="env part: timed env steps per backend")
    parser.add_argument("--gym-mode", choices=("sync", "async"), default="sync", help="env part: Gymnasium's mode")
    parser.add_argument("--dqn-warmup", type=int, default=5_000, help="random steps before updates (learning_starts)")
    parser.add_argument("--dqn-steps", type=int, default=20_000, help="timed env steps after the warm-up")
    parser.add_argument("--dqn-buffer", type=int, default=None, help="replay size (default: warm-up + steps)")
    parser.add_argument("--ppo-envs", type=int, default=8)
    parser.add_argument("--ppo-steps", type=int, default=20_480, help="timed env steps after the first rollout")
    parser.add_argument("--ppo-vec-backend", choices=("gymnasium", "envpool"), default="gymnasium")
    parser.add_argument("--sb3-threads", type=int, default=2)
    parser.add_argument("--sb3-separate-cnn", action="store_true", help="SB3 PPO with two CNNs, as ours")
    args = parser.parse_args()

    result = {"backend": keras.backend.backend(), "env_id": args.env, "seed": args.seed}
    parts = {"env": part_env, "dqn": part_dqn, "ppo": part_ppo}
    for name in ("env", "dqn", "ppo"):
        if name in args.parts:
            result[name] = parts[name](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
