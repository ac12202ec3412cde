"""EnvPool as the Atari vector backend: the spaces, autoreset, life loss and game statistics of the Gymnasium chain.

Pixels are not compared (EnvPool resizes and restarts games its own way); what
the learner and ``EpisodeLoop`` read is.
"""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ale_py", reason="needs the atari extra")
pytest.importorskip("envpool", reason="needs EnvPool (the atari extra)")

from keras_rl_gym.loop import EpisodeLoop  # noqa: E402
from keras_rl_gym.wrappers.atari import make_atari_vec_env  # noqa: E402

pytestmark = pytest.mark.atari


def envpool_env(env_id="ALE/Breakout-v5", num_envs=2, **kwargs):
    return make_atari_vec_env(env_id, num_envs, backend="envpool", **kwargs)


def random_actions(venv, seed=0):
    rng = np.random.default_rng(seed)
    n = venv.single_action_space.n
    return lambda: rng.integers(0, n, venv.num_envs)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"training": False}, {"frame_stack": 1}, {"scale": True}, {"screen_size": 64, "frame_stack": 2}],
    ids=["training", "evaluation", "one-frame", "scaled", "64px-2-frames"],
)
@pytest.mark.backend_independent
def test_spaces_equal_the_gymnasium_chains(kwargs):
    chain = make_atari_vec_env("ALE/Pong-v5", 2, **kwargs)
    pool = envpool_env("ALE/Pong-v5", **kwargs)
    for name in ("single_observation_space", "single_action_space", "observation_space", "action_space"):
        assert getattr(pool, name) == getattr(chain, name), name
    assert pool.metadata["autoreset_mode"] == chain.metadata["autoreset_mode"]
    obs, _ = pool.reset(seed=0)
    assert obs.shape == chain.observation_space.shape and obs.dtype == chain.observation_space.dtype
    assert obs.flags.c_contiguous and pool.observation_space.contains(obs)
    chain.close()
    pool.close()


@pytest.mark.backend_independent
def test_frames_are_stacked_in_the_last_axis_channels_last():
    pool = envpool_env(terminal_on_life_loss=False)
    obs, _ = pool.reset(seed=0)
    assert obs.shape == (2, 84, 84, 4)
    act = random_actions(pool)
    shifted = 0
    for _ in range(40):
        next_obs, _, terminated, truncated, _ = pool.step(act())
        # Each step drops the oldest frame (index 0) and appends the newest last, as FrameStackObservation does.
        assert np.array_equal(next_obs[..., :-1], obs[..., 1:])
        assert not (terminated | truncated).any()
        shifted += int((next_obs[..., -1] != obs[..., -1]).any())
        obs = next_obs
    assert shifted > 0  # the game moves: the newest frames are new pixels


@pytest.mark.backend_independent
def test_steps_through_the_episode_loop_like_the_chain():
    chain, pool = make_atari_vec_env("ALE/Breakout-v5", 2), envpool_env()
    steps = {}
    for name, venv in (("chain", chain), ("pool", pool)):
        loop = EpisodeLoop(venv)
        loop.reset(seed=0)
        step = loop.step(random_actions(venv)())
        steps[name] = step
    for field in ("obs", "reward", "next_obs", "terminated", "truncated", "valid", "restart"):
        a, b = np.asarray(getattr(steps["chain"], field)), np.asarray(getattr(steps["pool"], field))
        assert (a.shape, a.dtype) == (b.shape, b.dtype), field
    assert steps["pool"].n_valid == 2


@pytest.mark.backend_independent
def test_life_loss_is_a_terminal_for_learning_but_not_a_game_end():
    pool = envpool_env(num_envs=1)
    _, info = pool.reset(seed=0)
    lives = int(info["lives"][0])
    assert lives == 5
    act = random_actions(pool)
    for _ in range(2_000):
        obs, reward, terminated, truncated, info = pool.step(act())
        if terminated[0]:
            break
    else:
        pytest.fail("no life lost in 2,000 random Breakout steps")
    # A life lost, the game not over: terminated for the learner, flagged as EpisodicLifeEnv flags it, no game stats.
    assert info["life_loss"][0] and info["_life_loss"][0] and not truncated[0]
    assert int(info["lives"][0]) == lives - 1
    assert "episode" not in info
    assert set(np.unique(reward)) <= {0.0, 1.0}
    # The next step only restarts the next life: the game goes on with the lives left.
    _, reward, terminated, _, info = pool.step(act())
    assert int(info["lives"][0]) == lives - 1 and reward[0] == 0.0 and not terminated[0]

    # Through EpisodeLoop: learning terminals at each life, whole games only at the last one.
    loop = EpisodeLoop(pool)
    loop.reset(seed=0)
    terminals, games = 0, []
    for _ in range(5_000):
        step = loop.step(act())
        terminals += int(step.terminated.sum())
        games += step.games
        if games:
            break
    assert len(games) == 1 and terminals == lives


@pytest.mark.backend_independent
def test_evaluation_env_has_no_life_loss_and_ends_at_the_game_end():
    pool = envpool_env(num_envs=1, training=False)
    pool.reset(seed=1)
    act = random_actions(pool)
    for _ in range(5_000):
        _, _, terminated, _, info = pool.step(act())
        assert "life_loss" not in info
        if terminated[0]:
            break
    assert terminated[0] and info["_episode"][0] and int(info["lives"][0]) == 0


@pytest.mark.backend_independent
def test_episode_statistics_are_whole_unclipped_games_only_at_the_game_end():
    # Two pools with one seed play the same games on the same actions; one clips rewards, the other does not.
    clipped = envpool_env("ALE/SpaceInvaders-v5", seed=5)
    raw = envpool_env("ALE/SpaceInvaders-v5", seed=5, clip_rewards=False)
    clipped.reset()
    raw.reset()
    act = random_actions(clipped)
    raw_sums, clipped_sums, lengths, ended = np.zeros(2), np.zeros(2), np.zeros(2, int), np.zeros(2, bool)
    prev_done = np.zeros(2, bool)
    stats = {}
    for _ in range(5_000):
        actions = act()
        _, reward, terminated, truncated, info = clipped.step(actions)
        _, raw_reward, *_ = raw.step(actions)
        valid = ~prev_done
        prev_done = terminated | truncated
        assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        raw_sums += np.where(valid & ~ended, raw_reward, 0.0)
        clipped_sums += np.where(valid & ~ended, reward, 0.0)
        lengths += valid & ~ended
        if "episode" in info:
            assert set(info["episode"]) == {"r", "l", "t", "_r", "_l", "_t"}
            mask = info["_episode"]
            assert mask.dtype == bool and not (mask & info.get("life_loss", np.zeros(2, bool))).any()
            # Only at a real game end: all lives gone (or the time limit).
            assert (np.asarray(info["lives"])[mask] == 0).all() or truncated[mask].all()
            for i in np.flatnonzero(mask & ~ended):
                stats[i] = (info["episode"]["r"][i], info["episode"]["l"][i])
            ended |= mask
        if ended.all():
            break
    assert ended.all(), "random SpaceInvaders games should end within 5,000 steps"
    for i in range(2):
        r, length = stats[i]
        assert r == raw_sums[i] and length == lengths[i]
        assert r > clipped_sums[i] > 0  # SpaceInvaders scores 5 to 200 a hit: the score is not the clipped sum


@pytest.mark.backend_independent
def test_time_limit_truncates_in_agent_steps_and_reports_the_game():
    # The chain's max_episode_steps counts emulator frames (gymnasium.make with frameskip=1): 200 frames = 50 steps.
    pool = envpool_env("ALE/Pong-v5", num_envs=1, max_episode_steps=200)
    pool.reset(seed=0)
    act = random_actions(pool)
    for t in range(1, 51):
        _, _, terminated, truncated, info = pool.step(act())
        assert truncated[0] == (t == 50) and not terminated[0]
    assert info["_episode"][0] and info["episode"]["l"][0] == 50


@pytest.mark.backend_independent
def test_seeded_resets_replay_the_same_games():
    pool = envpool_env()

    def trajectory(seed):
        obs, _ = pool.reset(seed=seed)
        act = random_actions(pool, seed=1)
        frames = [obs]
        for _ in range(30):
            frames.append(pool.step(act())[0])
        return np.stack(frames)

    first = trajectory(3)
    assert np.array_equal(first, trajectory(3))
    assert not np.array_equal(first, trajectory(4))


def test_dqn_conv_trains_on_envpool(backend):
    from keras_rl_gym import DQNAgent

    venv = envpool_env("ALE/Pong-v5", seed=0)
    agent = DQNAgent(
        venv.single_observation_space,
        venv.single_action_space,
        network="conv",
        hidden_sizes=[32],
        buffer_size=1_000,
        learning_starts=100,
        train_freq=4,
        target_update_every=100,
        seed=0,
    )
    history = agent.fit(venv, steps=400, verbose=0, log_every=200)
    assert agent.env_steps == 400 and agent.updates > 0
    assert np.isfinite(history.history["loss"][-1])
    # The frame-deduplicated replay sees EnvPool's stacks shift: about one new frame per transition.
    assert type(agent.buffer).__name__ == "FrameReplayBuffer"
    assert agent.buffer.frames_written < 2 * len(agent.buffer)
    result = agent.evaluate(envpool_env("ALE/Pong-v5", num_envs=1, training=False, max_episode_steps=400), episodes=1)
    assert result["mean_length"] == 100


@pytest.mark.backend_independent
def test_envpool_backend_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="backend must be"):
        make_atari_vec_env("ALE/Pong-v5", 2, backend="ray")
    with pytest.raises(ValueError, match="vectorization_mode applies"):
        make_atari_vec_env("ALE/Pong-v5", 2, "async", backend="envpool")
    with pytest.raises(TypeError, match="render_mode"):
        envpool_env("ALE/Pong-v5", render_mode="rgb_array")
    with pytest.raises(ValueError, match="not an Atari env"):
        envpool_env("CartPole-v1")


@pytest.mark.backend_independent
def test_the_wrappers_load_envpool_only_when_asked():
    code = (
        "import sys\nimport keras_rl_gym.wrappers.atari, keras_rl_gym.wrappers.envpool_env\n"
        "print(sorted(m for m in ('envpool', 'keras') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
