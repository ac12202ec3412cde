"""The command line a user meets first: list, --version, shipped configs by name, --set, evaluate; the progress bar."""

import io
import json
import os
import re

import gymnasium as gym
import keras
import mlflow
import numpy as np
import pytest

import keras_rl_gym
from keras_rl_gym import DQNAgent
from keras_rl_gym.callbacks import MLflowLogger, ProgressBar
from keras_rl_gym.cli import main
from keras_rl_gym.config import ALGORITHM_SPACES, ALGORITHMS, agent_class, shipped_configs


def test_version_and_list(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"keras-rl-gym {keras_rl_gym.__version__}"
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, spec in ALGORITHMS.items():
        assert re.search(rf"^  {name} +{spec.split(':')[1]} +actions: ", out, re.M), name
    for name in shipped_configs():
        assert re.search(rf"^  {name} +\S", out, re.M), name
    assert "dqn-cartpole" in shipped_configs() and len(shipped_configs()) >= 16


def test_train_help_lists_the_algorithms(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ALGORITHMS) and "--set KEY=VALUE" in out


@pytest.mark.parametrize("algo", sorted(ALGORITHM_SPACES))
def test_listed_action_spaces_are_the_ones_each_agent_takes(algo):
    """What `keras-rl-gym list` says of each algorithm, against the agent's own checks."""
    cls = agent_class(algo)
    obs = gym.spaces.Discrete(5) if algo == "qlearning" else gym.spaces.Box(-1, 1, (3,), np.float32)
    accepted = []
    for name, space in (("Discrete", gym.spaces.Discrete(2)), ("Box", gym.spaces.Box(-1, 1, (2,), np.float32))):
        try:
            cls(obs, space)
            accepted.append(name)
        except (TypeError, ValueError):
            pass
    assert ", ".join(accepted) == ALGORITHM_SPACES[algo].split(" (")[0]


def test_train_a_shipped_config_by_name_with_set_and_default_run_name(capsys, tmp_path):
    code = main(
        [
            "train",
            "dqn-cartpole",
            "--set",
            "train.steps=300",
            "--set",
            "agent.learning_starts=100",
            "--set",
            "train.eval_episodes=2",
            "--save",
            str(tmp_path / "a.keras"),
            "-q",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    backend = keras.backend.backend()
    assert run.info.run_name == f"dqn-CartPole-v1-{backend}-s0"
    assert run.data.params["agent.learning_starts"] == "100" and run.data.params["config.train.steps"] == "300"
    # The final evaluation is in the run, and the closing message links the experiment's training runs.
    assert run.data.metrics["eval/mean_return"] > 0
    link = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs?workflowType=machine_learning"
    assert link in out and run.info.run_id in out
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # The saved agent carries the config's env chain for evaluate.
    agent = keras.saving.load_model(tmp_path / "a.keras")
    assert agent.env_config["config"]["env"] == "CartPole-v1"


@pytest.mark.parametrize(
    "sets, message",
    [
        (["agent.double=maybe"], "agent.double must be true or false (bool), got 'maybe' (str)"),
        (["agent.nope=1"], "Unknown agent (DQNAgent) key(s) ['nope']"),
        (["train.steps=-5"], "train.steps must be a positive integer, got -5"),
        (["agent.learning_rate"], "--set takes KEY=VALUE"),
    ],
    ids=["type", "unknown", "value", "form"],
)
def test_set_values_are_checked_like_the_config_s_own(sets, message, capsys):
    args = ["train", "dqn-cartpole", "--no-mlflow", "-q"]
    for value in sets:
        args += ["--set", value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


@pytest.fixture
def saved_dqn(tmp_path):
    sets = ["train.steps=200", "agent.learning_starts=100", "train.eval_episodes=1"]
    args = ["train", "dqn-cartpole", "--no-mlflow", "-q", "--save", str(tmp_path / "dqn.keras")]
    assert main(args + [arg for value in sets for arg in ("--set", value)]) == 0
    return str(tmp_path / "dqn.keras")


def test_evaluate_rebuilds_the_training_env_and_refuses_a_wrong_one(saved_dqn, capsys, tmp_path):
    capsys.readouterr()
    assert main(["evaluate", saved_dqn, "--episodes", "3", "--video", str(tmp_path / "videos")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"DQNAgent on CartPole-v1: mean return [\d.]+ \+- [\d.]+ over 3 episodes", out), out
    assert len([f for f in os.listdir(tmp_path / "videos") if f.endswith(".mp4")]) == 3
    # A DQN on a continuous env: one line, exit 2.
    assert main(["evaluate", saved_dqn, "--env", "Pendulum-v1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot play this env: The env's action space Box" in err
    assert main(["evaluate", str(tmp_path / "missing.keras")]) == 2
    assert "missing.keras does not exist" in capsys.readouterr().err


def test_an_agent_fit_on_a_made_env_is_evaluated_on_the_same_chain(capsys, tmp_path):
    env = gym.wrappers.TimeLimit(gym.make("CartPole-v1"), max_episode_steps=20)
    agent = DQNAgent(env.observation_space, env.action_space, learning_starts=50, seed=0)
    agent.fit(env, steps=100, verbose=0)
    agent.save(tmp_path / "fit.keras")
    assert main(["evaluate", str(tmp_path / "fit.keras"), "--episodes", "2"]) == 0
    # The TimeLimit of 20 steps came back with the spec: no episode is longer.
    assert float(re.search(r"mean length (\d+\.\d)", capsys.readouterr().out).group(1)) <= 20.0


def test_evaluate_after_fit_logs_into_the_fit_s_run():
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, learning_starts=50, seed=0)
    logger = MLflowLogger(log_model=False)
    agent.fit(env, steps=100, verbose=0, callbacks=[logger])
    result = agent.evaluate(env, episodes=2)
    run = mlflow.MlflowClient().get_run(logger.run_id)
    assert run.data.metrics["eval/mean_return"] == result["mean_return"]
    assert run.data.metrics["time/episodes"] > 0 and "train/loss" in run.data.metrics
    # Not a second time when asked not to, nor after a fit without a logger.
    agent.evaluate(env, episodes=1, log=False)
    agent.fit(env, steps=10, verbose=0)
    agent.evaluate(env, episodes=1)
    history = mlflow.MlflowClient().get_metric_history(logger.run_id, "eval/mean_return")
    assert len(history) == 1


def test_progress_bar_writes_plain_lines_off_a_terminal():
    stream = io.StringIO()
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, learning_starts=100, seed=0)
    bar = ProgressBar(log_interval=0.0, stream=stream)
    agent.fit(env, steps=400, verbose=0, callbacks=[bar])
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text and "\b" not in text
    last = text.strip().splitlines()[-1]
    assert re.match(r"^400/400 steps \(100%\) \| episodes \d+ \| return [\d.]+ \| loss [\d.e+-]+ \| epsilon ", last)
    assert re.search(r"\| \d+ steps/s \| in \d+s$", last), last


def test_progress_bar_eta_follows_the_recent_rate_not_the_compile():
    stream = io.StringIO()
    bar = ProgressBar(log_interval=0.0, window=5.0, stream=stream)
    bar.on_train_begin()
    # 1,000 steps took 100 s (compiling), then 1,000 more took 1 s: the ETA of the last 8,000 is ~8 s.
    bar.start = 0.0
    bar.recent.extend([(100.0, 1_000)])
    line = bar.line(2_000, 10_000, {"episodes": 3.0, "recent_return": 10.0}, now=101.0)
    assert "episodes 3 |" in line and "1000 steps/s" in line and line.endswith("ETA 8s"), line


def test_shipped_configs_are_package_data():
    import keras_rl_gym.config as config

    assert os.path.dirname(str(shipped_configs()["ppo-cartpole"])) == str(config.CONFIG_DIR)
    assert json.loads(shipped_configs()["ppo-cartpole"].read_text())["algo"] == "ppo"


def test_system_metrics_are_logged_on_request():
    mlflow.set_system_metrics_sampling_interval(0.5)
    mlflow.set_system_metrics_samples_before_logging(1)
    try:
        env = gym.make("CartPole-v1")
        agent = DQNAgent(env.observation_space, env.action_space, learning_starts=50, seed=0)

        class Slow(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                import time

                time.sleep(1.0)  # long enough for a sample or two

        logger = MLflowLogger(log_model=False, log_system_metrics=True)
        agent.fit(env, steps=200, verbose=0, log_every=100, callbacks=[logger, Slow()])
    finally:
        mlflow.set_system_metrics_sampling_interval(None)
        mlflow.set_system_metrics_samples_before_logging(None)
    metrics = mlflow.MlflowClient().get_run(logger.run_id).data.metrics
    assert any(key.startswith("system/cpu") for key in metrics), sorted(metrics)
