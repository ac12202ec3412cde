"""Prioritized replay: the sum tree, proportional sampling, importance weights, saving (NumPy only)."""

import numpy as np
import pytest

from keras_rl_gym.buffers import FrameReplayBuffer, PrioritizedSampler, ReplayBuffer, SumTree, load_buffer, save_buffer


def test_sum_tree_totals_and_find():
    tree = SumTree(5)  # not a power of two: padded leaves stay 0
    tree.update(np.arange(5), [1.0, 2.0, 0.5, 4.0, 2.5])
    assert tree.total == pytest.approx(10.0)
    assert tree.min == pytest.approx(0.5)
    tree.update(np.array([3]), np.array([1.0]))
    assert tree.total == pytest.approx(7.0)
    # Prefix sums 1, 3, 3.5, 4.5, 7: a mass falls in the leaf whose interval holds it.
    assert tree.find([0.0, 0.99, 1.0, 3.2, 4.0, 6.9]).tolist() == [0, 0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="finite"):
        tree.update([0], [-1.0])


def test_sampling_frequencies_follow_priorities():
    sampler = PrioritizedSampler(6, alpha=0.5)
    sampler.add(np.arange(6))
    td = np.array([0.0, 1.0, 3.0, 8.0, 0.5, 15.0])
    sampler.update(np.arange(6), td)
    p = (np.abs(td) + sampler.eps) ** 0.5
    expected = p / p.sum()
    rng = np.random.default_rng(0)
    counts = np.zeros(6)
    for _ in range(200):
        rows, _ = sampler.sample(256, rng, beta=0.4)
        counts += np.bincount(rows, minlength=6)
    chi2 = ((counts - expected * counts.sum()) ** 2 / (expected * counts.sum())).sum()
    assert chi2 < 20.5  # chi-square, 5 degrees of freedom, p = 0.001


def test_importance_weights_by_hand():
    sampler = PrioritizedSampler(4, alpha=1.0, eps=1e-6)
    sampler.add(np.arange(3))
    sampler.update(np.arange(3), [1.0, 3.0, 0.0])
    p = np.array([1.0, 3.0, 0.0]) + 1e-6
    P = p / p.sum()
    beta = 0.5
    w = (3 * P) ** -beta
    np.testing.assert_allclose(sampler.weights(np.arange(3), beta), w / w.max(), rtol=1e-5)
    # New rows start at the largest priority seen (3 + eps).
    sampler.add([3])
    assert sampler.tree.leaves([3])[0] == pytest.approx(3.0 + 1e-6)


def test_replay_buffer_prioritized_batch_and_save(tmp_path):
    buf = ReplayBuffer(8, {"obs": ((2,), "float32")}, seed=3, priority_alpha=0.6)
    buf.add(obs=np.arange(20, dtype="float32").reshape(10, 2))  # wraps around
    batch = buf.sample(5, beta=0.4)
    assert batch["obs"].shape == (5, 2) and batch["weight"].shape == (5,)
    buf.sampler.update(batch["tree_index"], np.arange(5.0))
    save_buffer(buf, tmp_path / "p.npz")
    loaded = load_buffer(tmp_path / "p.npz")
    np.testing.assert_array_equal(loaded.sampler.tree.sums, buf.sampler.tree.sums)
    assert loaded.sampler.max_priority == buf.sampler.max_priority and loaded.sampler.alpha == 0.6
    a, b = buf.sample(16, beta=0.7), loaded.sample(16, beta=0.7)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_frame_replay_prioritized_skips_lost_frames():
    buf = FrameReplayBuffer(6, frame_shape=(2, 2), stack=2, seed=0, frame_capacity=4, priority_alpha=1.0)
    obs = np.zeros((1, 2, 2, 2), np.uint8)
    for t in range(6):
        next_obs = np.concatenate([obs[..., 1:], np.full((1, 2, 2, 1), t + 1, np.uint8)], axis=-1)
        buf.add(obs, np.array([t]), np.array([float(t)]), next_obs, np.array([False]))
        obs = next_obs
    ok = buf._sampleable(np.arange(6))
    assert not ok.all() and ok.any()
    buf.sampler.update(np.arange(6), np.where(ok, 1.0, 100.0))  # lost rows would be drawn most
    batch = buf.sample(64, beta=1.0)
    assert ok[batch["tree_index"]].all()
    assert batch["weight"].shape == (64,)
