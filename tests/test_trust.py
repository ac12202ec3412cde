"""Off the happy path: failures keep their data, evaluate leaves training alone, runs resume, checkpoints."""

import os
import signal

import gymnasium as gym
import keras
import mlflow
import numpy as np
import pytest
from gymnasium import spaces
from probe_envs import CounterEnv

from keras_rl_gym import DQNAgent, DRQNAgent, NonFiniteLossError
from keras_rl_gym.callbacks import Checkpoint, EvaluationCallback, MLflowLogger, mlflow_key
from keras_rl_gym.loop import EpisodeLoop
from keras_rl_gym.wrappers.atari import EpisodicLifeEnv


def small_dqn(env, cls=DQNAgent, **kwargs):
    params = dict(hidden_sizes=(16,), learning_starts=20, batch_size=8, target_update_every=25, seed=0)
    params.update(kwargs)
    return cls(env.observation_space, env.action_space, **params)


class FailingEnv(CounterEnv):
    """A CounterEnv whose ``step`` raises at its ``fail_at``-th step overall."""

    def __init__(self, fail_at):
        super().__init__(length=5)
        self.fail_at, self.steps = fail_at, 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.fail_at:
            raise RuntimeError("the simulator crashed")
        return super().step(action)


def metric_steps(run_id, key):
    """The steps of fit's log ``key`` in MLflow (where it is named with its section, ``train/loss``)."""
    return [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, mlflow_key(key))]


def test_env_error_saves_the_agent_ends_the_run_failed_and_keeps_metrics_to_the_failing_step(tmp_path):
    env = FailingEnv(fail_at=137)
    agent = small_dqn(env)
    logger = MLflowLogger(experiment_name="trust")
    path = tmp_path / "crash.keras"
    with pytest.raises(RuntimeError, match="simulator crashed"):
        agent.fit(env, steps=1000, verbose=0, log_every=50, callbacks=[logger], checkpoint_path=path)
    assert agent.env_steps == 136 and agent.last_checkpoint == os.fspath(path)
    loaded = keras.saving.load_model(path)
    assert loaded.env_steps == 136 and loaded.updates == agent.updates > 0
    for a, b in zip(loaded.get_weights(), agent.get_weights()):
        np.testing.assert_array_equal(a, b)
    run = mlflow.MlflowClient().get_run(logger.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: the simulator crashed"
    # Intervals end at 50 and 100; the partial one reaches the failing step.
    assert metric_steps(logger.run_id, "loss") == [50, 100, 136]
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(logger.run_id, "checkpoint")]
    assert artifacts == ["checkpoint/crash.keras"]
    assert mlflow.active_run() is None

    # The next fit in this process logs to a new run, which finishes.
    again = MLflowLogger(experiment_name="trust", log_model=False)
    agent.fit(CounterEnv(length=5), steps=100, verbose=0, log_every=50, callbacks=[again])
    assert again.run_id != logger.run_id
    assert mlflow.MlflowClient().get_run(again.run_id).info.status == "FINISHED"


class Interrupt(keras.callbacks.Callback):
    """Interrupts ``fit`` at env step ``at``: raising, or by sending this process SIGINT."""

    def __init__(self, at, how="raise"):
        super().__init__()
        self.at, self.how, self.due_step = at, how, at
        self.went_on = False

    def on_progress(self, step, logs):
        if self.model.env_steps >= self.at:
            self.due_step = float("inf")
            if self.how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
            # Deferred by fit: the interrupt comes at the top of the next step, not here.
            self.went_on = True


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test: a process started in the background without job
    control (``cmd &`` in a script, as some CI launchers do) begins with SIGINT ignored, which fit
    rightly leaves alone, so there would be no Ctrl-C to defer."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("how", ["raise", "signal"])
def test_interrupt_ends_the_run_killed_and_every_callback_hears_it(tmp_path, how, python_sigint):
    env = CounterEnv(length=5)
    agent = small_dqn(env)
    logger = MLflowLogger(experiment_name="trust")
    heard = []

    class Listener(keras.callbacks.Callback):
        def on_fit_error(self, error, logs):
            heard.append((type(error), logs["env_steps"], logs["checkpoint_path"]))

    # The failing callback sits before the others: they still hear of it.
    interrupt = Interrupt(120, how)
    callbacks = [interrupt, logger, Listener()]
    with pytest.raises(KeyboardInterrupt):
        agent.fit(env, steps=1000, verbose=0, log_every=50, callbacks=callbacks, checkpoint_path=tmp_path / "i.keras")
    assert interrupt.went_on == (how == "signal")
    stopped = 120
    assert agent.env_steps == stopped
    assert heard == [(KeyboardInterrupt, float(stopped), os.fspath(tmp_path / "i.keras"))]
    assert keras.saving.load_model(tmp_path / "i.keras").env_steps == stopped
    run = mlflow.MlflowClient().get_run(logger.run_id)
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith("KeyboardInterrupt")
    assert metric_steps(logger.run_id, "epsilon")[-1] == stopped
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_failing_callback_and_nan_loss_take_the_same_path(tmp_path):
    class Broken(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise ValueError("bad callback")

    env = CounterEnv(length=5)
    agent = small_dqn(env)
    logger = MLflowLogger(experiment_name="trust")
    with pytest.raises(ValueError, match="bad callback"):
        agent.fit(env, steps=500, verbose=0, log_every=50, callbacks=[logger, Broken()])
    assert mlflow.MlflowClient().get_run(logger.run_id).info.status == "FAILED"
    assert os.path.exists(f"{agent.name}-last-finite.keras")

    nan_env = CounterEnv(length=5, reward=lambda t: np.nan if t == 3 else 1.0)
    agent = small_dqn(nan_env)
    logger = MLflowLogger(experiment_name="trust")
    with pytest.raises(NonFiniteLossError) as info:
        agent.fit(nan_env, steps=500, verbose=0, log_every=10, callbacks=[logger])
    # Named at the step its update was made, before another env step: on every backend.
    assert f"at env step {agent.env_steps}:" in str(info.value) and agent.env_steps >= 20
    assert os.path.exists(info.value.checkpoint_path)
    loaded = keras.saving.load_model(info.value.checkpoint_path)
    assert all(np.isfinite(w).all() for w in loaded.get_weights())
    assert mlflow.MlflowClient().get_run(logger.run_id).info.status == "FAILED"


class LivesEnv(gym.Env):
    """A fake Atari game: 3 lives of 2 steps, reward 3 a step (a game is worth 18)."""

    class _Ale:
        def __init__(self, env):
            self.env = env

        def lives(self):
            return 3 - self.env.t // 2

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self.ale = self._Ale(self)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t, 0], np.float32), 3.0, self.t >= 6, False, {}


def training_atari_like_env():
    # The chain of make_atari_env(training=True): statistics, life loss, then clipping.
    env = gym.wrappers.RecordEpisodeStatistics(LivesEnv())
    env = EpisodicLifeEnv(env)
    return gym.wrappers.TransformReward(env, lambda r: float(np.sign(r)))


def test_evaluate_on_a_training_atari_env_reports_whole_games():
    env = training_atari_like_env()
    agent = small_dqn(env)
    result = agent.evaluate(env, episodes=3, seed=0)
    assert result["returns"] == [18.0, 18.0, 18.0] and result["mean_length"] == 6
    # fit logs the same whole games: 4 transitions each (the resets after the first
    # two lives take a no-op step of the game, not a transition).
    history = agent.fit(env, steps=60, verbose=0, log_every=60)
    assert history.history["episode_return"] == [18.0] and agent.episodes == 15


def test_evaluate_plays_a_fixed_number_of_episodes_per_sub_env():
    lengths = [2, 9]
    venv = gym.vector.SyncVectorEnv([lambda n=n: CounterEnv(length=n) for n in lengths])
    agent = small_dqn(CounterEnv())
    result = agent.evaluate(venv, episodes=5)
    # Env 0 plays 2 episodes, env 1 plays 3: the short ones do not crowd the long ones out.
    assert sorted(result["returns"]) == [2.0, 2.0, 9.0, 9.0, 9.0]


def test_episode_loop_same_step_mode_reads_final_obs_and_statistics():
    def make():
        return gym.wrappers.RecordEpisodeStatistics(CounterEnv(length=3))

    venv = gym.vector.SyncVectorEnv([make, make], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    loop = EpisodeLoop(venv)
    loop.reset(seed=0)
    games = []
    for _ in range(7):
        t = loop.step(np.zeros(2, np.int64))
        assert t.valid.all()
        np.testing.assert_array_equal(t.next_obs - t.obs, np.tile([0, 1], (2, 1)))
        games += t.games
    assert games == [(0, 3.0, 3), (1, 3.0, 3), (0, 3.0, 3), (1, 3.0, 3)]


def weights(agent):
    agent.sync_weights()
    return [np.array(w) for w in agent.get_weights()]


@pytest.mark.parametrize("recurrent", [False, True], ids=["dqn", "drqn"])
def test_evaluation_callback_leaves_training_bit_identical(recurrent):
    def train(callbacks):
        keras.backend.clear_session()
        env = CounterEnv(length=50)
        agent = small_dqn(env, DRQNAgent, lstm_size=8, sequence_length=4) if recurrent else small_dqn(env)
        agent.fit(env, steps=240, verbose=0, log_every=20, callbacks=callbacks)
        return agent

    plain = train([])
    evaluation = EvaluationCallback(lambda: CounterEnv(length=7), every=20, episodes=2)
    evaluated = train([evaluation])
    assert len(evaluation.history) == 12
    for a, b in zip(weights(plain), weights(evaluated)):
        np.testing.assert_array_equal(a, b)
    assert plain.updates == evaluated.updates and plain.epsilon == evaluated.epsilon
    if recurrent:
        # Mid-episode (t = 40 of 50): the recurrent training state is the one training left.
        assert np.abs(plain.recurrent_state[0]).sum() > 0
        for a, b in zip(plain.recurrent_state, evaluated.recurrent_state):
            np.testing.assert_array_equal(a, b)


def test_resume_follows_a_single_run_schedules_counters_and_replay(tmp_path):
    def env():
        return CounterEnv(length=5)

    n = 150
    kwargs = dict(learning_rate_decay=0.5, exploration_fraction=0.5, epsilon_final=0.1)
    single = small_dqn(env(), **kwargs)
    seen = {}

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[self.model.env_steps] = (self.model.epsilon, self.model.updates)

    single.fit(env(), steps=2 * n, verbose=0, log_every=n, callbacks=[Record()])

    first = small_dqn(env(), **kwargs)
    first.fit(env(), steps=n, verbose=0, total_steps=2 * n)
    first.save(tmp_path / "half.keras", save_replay=True)
    resumed = keras.saving.load_model(tmp_path / "half.keras")
    assert (resumed.env_steps, resumed.total_steps, resumed.episodes) == (n, 2 * n, first.episodes)
    assert (resumed.epsilon, resumed.updates) == seen[n]
    assert resumed.rng.bit_generator.state == first.rng.bit_generator.state
    for key, value in first.buffer.data.items():
        np.testing.assert_array_equal(resumed.buffer.data[key], value, err_msg=key)
    assert resumed.buffer.size == first.buffer.size and resumed.buffer.position == first.buffer.position

    resumed.fit(env(), steps=n, verbose=0)
    assert (resumed.env_steps, resumed.epsilon, resumed.updates) == (2 * n, *seen[2 * n])
    # The learning rate, read from the optimizer itself, is the single run's.
    lr = lambda agent: float(keras.ops.convert_to_numpy(agent.optimizer.learning_rate))  # noqa: E731
    assert lr(resumed) == pytest.approx(lr(single), rel=1e-6) and lr(single) < 1e-3
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == single.updates


def test_second_fit_continues_the_seed_stream_and_a_loaded_agent_follows_it(tmp_path):
    class Resets(gym.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.seeds = []

        def reset(self, *, seed=None, options=None):
            self.seeds.append(seed)
            return self.env.reset(seed=seed, options=options)

    env = Resets(gym.make("CartPole-v1"))
    agent = small_dqn(env)
    agent.fit(env, steps=50, verbose=0)
    agent.save(tmp_path / "a.keras")
    agent.fit(env, steps=50, verbose=0)
    # Autoresets pass no seed; each fit's own reset does.
    fit_seeds = [s for s in env.seeds if s is not None]
    assert len(fit_seeds) == 2 and fit_seeds[0] == 0 and fit_seeds[1] != 0
    loaded = keras.saving.load_model(tmp_path / "a.keras")
    env2 = Resets(gym.make("CartPole-v1"))
    loaded.fit(env2, steps=50, verbose=0)
    assert [s for s in env2.seeds if s is not None] == fit_seeds[1:]


def test_checkpoint_every_n_env_steps_keeps_the_last_k_and_logs_them(tmp_path):
    env = CounterEnv(length=5)
    agent = small_dqn(env)
    checkpoint = Checkpoint(tmp_path / "ckpt", every=100, keep=2)
    logger = MLflowLogger(experiment_name="trust", log_model=False)
    agent.fit(env, steps=450, verbose=0, log_every=1000, callbacks=[logger, checkpoint])
    names = [os.path.basename(p) for p in checkpoint.saved]
    assert names == [f"{agent.name}-300.keras", f"{agent.name}-400.keras"]
    assert sorted(os.listdir(tmp_path / "ckpt")) == names
    assert keras.saving.load_model(checkpoint.saved[-1]).env_steps == 400
    logged = [a.path for a in mlflow.MlflowClient().list_artifacts(logger.run_id, "checkpoints")]
    assert logged == [f"checkpoints/{agent.name}-{k}.keras" for k in (100, 200, 300, 400)]


def test_keras_model_checkpoint_counts_updates(tmp_path):
    saved_at = []

    class Counting(keras.callbacks.ModelCheckpoint):
        def _save_model(self, epoch, batch, logs):
            saved_at.append((batch + 1, logs["loss"] >= 0))  # batch: the update's index in this fit
            super()._save_model(epoch, batch, logs)

    env = CounterEnv(length=5)
    agent = small_dqn(env)  # one update per env step from step 20
    agent.fit(env, steps=200, verbose=0, callbacks=[Counting(os.fspath(tmp_path / "m.keras"), save_freq=60)])
    assert saved_at == [(60, True), (120, True), (180, True)] and os.path.exists(tmp_path / "m.keras")


def test_evaluation_callback_keeps_the_best_agent(tmp_path):
    env = gym.make("CartPole-v1")
    agent = small_dqn(env)
    best = tmp_path / "best.keras"
    evaluation = EvaluationCallback(lambda: gym.make("CartPole-v1"), every=100, episodes=2, save_best=best)
    agent.fit(env, steps=400, verbose=0, log_every=100, callbacks=[evaluation])
    means = [result["mean_return"] for _, result in evaluation.history]
    assert evaluation.best_mean_return == max(means)
    reloaded = keras.saving.load_model(best).evaluate(gym.make("CartPole-v1"), episodes=2, seed=evaluation.seed)
    assert reloaded["mean_return"] == max(means)
