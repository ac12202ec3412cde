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


def test_a_report_for_a_row_overwritten_since_its_draw_is_dropped():
    # The fused runtimes report TD errors one update late: by then the ring may have
    # written a new transition over a drawn row, which must keep its new-row priority.
    buf = ReplayBuffer(4, {"obs": ((1,), "float32")}, seed=0, priority_alpha=1.0)
    buf.add(obs=np.zeros((4, 1), "float32"))
    buf.sampler.update(np.arange(4), [1.0, 2.0, 3.0, 4.0])  # the largest priority seen: 4 + eps
    batch = buf.sample(32, beta=1.0)
    rows, writes = batch["tree_index"], batch["tree_writes"]
    assert rows.min() == 0 and writes.tolist() == [1] * 32
    buf.add(obs=np.ones((1, 1), "float32"))  # overwrites row 0 only, at priority 4 + eps
    buf.sampler.update(rows, np.full(32, 0.5), writes)
    leaves = buf.sampler.tree.leaves(np.arange(4))
    assert leaves[0] == pytest.approx(4.0 + 1e-6)  # the new transition's, not the stale 0.5
    drawn = np.unique(rows[rows > 0])
    np.testing.assert_allclose(leaves[drawn], 0.5 + 1e-6)  # the rows still holding their draw


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


def _agent(**kwargs):
    import gymnasium as gym

    from keras_rl_gym import DQNAgent

    env = gym.make("CartPole-v1")
    return env, DQNAgent(env.observation_space, env.action_space, hidden_sizes=(8,), seed=0, **kwargs)


def test_weighted_loss_and_td_error_match_numpy():
    import keras

    env, agent = _agent(prioritized=True, n_step=3)
    rng = np.random.default_rng(1)
    batch = {
        "obs": rng.normal(size=(6, 4)).astype("float32"),
        "action": rng.integers(0, 2, 6).astype("int32"),
        "reward": rng.normal(size=6).astype("float32"),
        "next_obs": rng.normal(size=(6, 4)).astype("float32"),
        "terminated": np.array([0, 1, 0, 0, 1, 0], "float32"),
        "discount": np.array([0.9, 0.8, 0.7, 0.9, 0.9, 0.5], "float32"),
        "weight": np.array([1.0, 0.5, 0.25, 1.0, 0.1, 0.7], "float32"),
    }
    loss, metrics = agent.compute_rl_loss({k: keras.ops.convert_to_tensor(v) for k, v in batch.items()})
    numpy = keras.ops.convert_to_numpy
    q = numpy(agent.q_network(batch["obs"]))
    q_next = numpy(agent.target_network(batch["next_obs"])).max(axis=1)
    y = batch["reward"] + batch["discount"] * (1 - batch["terminated"]) * q_next
    error = q[np.arange(6), batch["action"]] - y
    np.testing.assert_allclose(float(numpy(loss)), np.mean(batch["weight"] * error**2), rtol=1e-4)
    np.testing.assert_allclose(numpy(metrics["td_error"]), np.abs(error), rtol=1e-4, atol=1e-6)


def test_plain_dqn_returns_no_td_error():
    import keras

    env, agent = _agent()
    batch = {
        "obs": np.zeros((2, 4), "float32"),
        "action": np.zeros(2, "int32"),
        "reward": np.ones(2, "float32"),
        "next_obs": np.zeros((2, 4), "float32"),
        "terminated": np.zeros(2, "float32"),
    }
    _, metrics = agent.compute_rl_loss({k: keras.ops.convert_to_tensor(v) for k, v in batch.items()})
    assert "td_error" not in metrics


@pytest.mark.parametrize("gradient_steps", [1, 2])
def test_fit_updates_priorities_in_order(gradient_steps):
    env, agent = _agent(
        prioritized=True, n_step=3, learning_starts=50, batch_size=8, gradient_steps=gradient_steps, train_freq=2
    )
    agent.fit(env, steps=150, verbose=0)
    sampler = agent.buffer.sampler
    leaves = sampler.tree.leaves(np.arange(len(agent.buffer)))
    # Rows replayed got |TD error|-based priorities, unlike the 1.0 every new row starts at.
    assert np.unique(leaves).size > 2
    assert len(agent._sampled) == 0  # every update's rows were paired with its report
    assert "discount" in agent.buffer.data and agent.get_config()["n_step"] == 3


def test_flags_validated_and_drqn_refuses():
    import gymnasium as gym

    from keras_rl_gym import DRQNAgent

    with pytest.raises(ValueError, match="n_step"):
        _agent(n_step=0)
    with pytest.raises(ValueError, match="priority_beta"):
        _agent(priority_beta=1.5)
    env = gym.make("CartPole-v1")
    for kwargs in ({"n_step": 3}, {"prioritized": True}):
        with pytest.raises(ValueError, match="DRQNAgent"):
            DRQNAgent(env.observation_space, env.action_space, **kwargs)
