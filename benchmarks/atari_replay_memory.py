"""Replay memory for Atari: frame-deduplicated ``FrameReplayBuffer`` against storing obs and next_obs whole.

Nature DQN keeps 1M transitions of four stacked 84x84 frames. Stored whole,
``obs`` and ``next_obs`` take 2 x 4 x 7,056 = 56,448 bytes a transition (56 GB);
``FrameReplayBuffer`` stores each frame once (~7.1 GB). This allocates a
1M-capacity buffer (``np.zeros``: pages are only touched as they fill), fills
part of it from synthetic frame-stacked episodes, and measures add and sample
throughput, then does the same for the naive layout at a capacity that fits::

    python benchmarks/atari_replay_memory.py                    # 1M capacity, 200k filled
    python benchmarks/atari_replay_memory.py --fill 1000000     # fill it all (touches ~7.1 GB)

No Keras, no env: the buffers are NumPy only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from keras_rl_gym.buffers import FrameReplayBuffer, ReplayBuffer

FRAME = (84, 84)
STACK = 4
NAIVE_BYTES = 2 * STACK * FRAME[0] * FRAME[1]


def rss_bytes() -> int:
    """Resident memory of this process (Linux), or 0."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def synthetic_steps(n_transitions, num_envs, episode_length, seed=0):
    """Frame-stacked vector-env steps, as ``FrameStackObservation`` emits them.

    Frames come from a pool of random frames (generating 7 KB of fresh noise per
    step would dominate the timing); episodes last ``episode_length`` steps.
    """
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (4096, *FRAME), dtype=np.uint8)
    k = 0

    def frame():
        nonlocal k
        k += 1
        return pool[k % len(pool)]

    obs = np.stack([np.stack([frame()] * STACK, axis=-1) for _ in range(num_envs)])
    t = np.zeros(num_envs, int)
    done_so_far = 0
    while done_so_far < n_transitions:
        next_obs = np.concatenate([obs[..., 1:], np.stack([frame() for _ in range(num_envs)])[..., None]], axis=-1)
        t += 1
        terminated = t >= episode_length
        yield obs, rng.integers(0, 6, num_envs), rng.normal(size=num_envs), next_obs, terminated
        done_so_far += num_envs
        for i in np.flatnonzero(terminated):
            # The vector env's autoreset: the next obs is a fresh first stack.
            next_obs[i] = np.stack([frame()] * STACK, axis=-1)
            t[i] = 0
        obs = next_obs


def sampling_rate(buffer, batch_size, seconds):
    """Batches per second of ``buffer.sample(batch_size)``: wall-clock, and per CPU second of this process.

    On a machine shared with other jobs the wall-clock rate understates the
    buffer's speed; the CPU-time rate does not.
    """
    buffer.sample(batch_size)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        buffer.sample(batch_size)
        n += 1
    return n / (time.perf_counter() - start), n / max(time.process_time() - cpu, 1e-9)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--fill", type=int, default=200_000, help="transitions added (capped at --capacity)")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--episode-length", type=int, default=1000, help="agent steps per synthetic episode")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each sampling measurement")
    parser.add_argument("--naive-capacity", type=int, default=20_000, help="capacity of the naive buffer measured")
    args = parser.parse_args()
    fill = min(args.fill, args.capacity)

    rss0 = rss_bytes()
    buffer = FrameReplayBuffer(args.capacity, frame_shape=FRAME, stack=STACK, seed=0, num_envs=args.num_envs)
    per_transition = buffer.nbytes / args.capacity
    print(f"FrameReplayBuffer, capacity {args.capacity:,}: {buffer.nbytes / 1e9:.2f} GB allocated")
    print(f"  bytes per transition:   {per_transition:,.0f} (one 84x84 frame: {FRAME[0] * FRAME[1]:,})")
    print(f"  naive obs + next_obs:   {NAIVE_BYTES:,} bytes per transition, {NAIVE_BYTES * args.capacity / 1e9:.1f} GB")
    print(f"  ratio:                  {NAIVE_BYTES / per_transition:.2f}x smaller")

    wall = cpu = 0.0
    for obs, action, reward, next_obs, terminated in synthetic_steps(fill, args.num_envs, args.episode_length):
        # Only the add is timed, not the making of the synthetic frames.
        t0, c0 = time.perf_counter(), time.process_time()
        buffer.add(obs, action, reward, next_obs, terminated)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    print(
        f"  filled {len(buffer):,} transitions ({args.num_envs} envs, episodes of {args.episode_length} steps); "
        f"{buffer.frames_written:,} frames stored ({buffer.frames_written / len(buffer):.4f} per transition)"
    )
    print(
        f"  add: {1e6 * wall / len(buffer):.0f} us a transition wall-clock "
        f"({1e6 * cpu / len(buffer):.0f} us of CPU time)"
    )
    print(f"  resident memory: {(rss_bytes() - rss0) / 1e9:.2f} GB (untouched pages are not resident)")
    rate, cpu_rate = sampling_rate(buffer, args.batch_size, args.seconds)
    print(f"  sample({args.batch_size}): {rate:,.0f} batches/s wall-clock, {cpu_rate:,.0f} per CPU second")

    naive = ReplayBuffer(
        args.naive_capacity,
        {
            "obs": ((*FRAME, STACK), np.uint8),
            "action": ((), np.int32),
            "reward": ((), np.float32),
            "next_obs": ((*FRAME, STACK), np.uint8),
            "terminated": ((), np.float32),
        },
        seed=0,
    )
    naive_bytes = sum(a.nbytes for a in naive.data.values()) / args.naive_capacity
    for obs, action, reward, next_obs, terminated in synthetic_steps(
        args.naive_capacity, args.num_envs, args.episode_length
    ):
        naive.add(obs=obs, action=action, reward=reward, next_obs=next_obs, terminated=terminated)
    naive_rate, naive_cpu_rate = sampling_rate(naive, args.batch_size, args.seconds)
    print(
        f"ReplayBuffer (naive), capacity {args.naive_capacity:,}: {naive_bytes:,.0f} bytes per transition "
        f"(x {args.capacity:,} = {naive_bytes * args.capacity / 1e9:.1f} GB)"
    )
    print(f"  sample({args.batch_size}): {naive_rate:,.0f} batches/s wall-clock, {naive_cpu_rate:,.0f} per CPU second")


if __name__ == "__main__":
    main()
