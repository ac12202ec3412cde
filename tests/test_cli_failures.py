"""``keras-rl-gym train`` when training does not end normally: signals, env errors, bad configs, resuming.

Every failure after the agent exists keeps it (saved, loadable, with its
counters) and ends the MLflow run FAILED or KILLED, never FINISHED.
"""

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import keras
import mlflow
import pytest
from probe_envs import CounterEnv

from keras_rl_gym import DQNAgent  # noqa: F401  (registers the class keras.saving.load_model looks up)
from keras_rl_gym.callbacks import mlflow_key
from keras_rl_gym.cli import main

FAILING_ENV = "keras-rl-gym-tests/FailingCounter-v0"


class FailingCounterEnv(CounterEnv):
    """A ``CounterEnv`` whose ``fail_at``-th call of ``step`` (counted over all episodes) raises."""

    def __init__(self, fail_at: int, length: int = 3):
        super().__init__(length=length)
        self.fail_at = fail_at
        self.calls = 0

    def step(self, action):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError(f"env broke at step {self.calls}")
        return super().step(action)


if FAILING_ENV not in gym.registry:
    gym.register(FAILING_ENV, entry_point=FailingCounterEnv)


def client():
    # Explicitly this test's store: an earlier test may have set MLflow's global tracking URI.
    return mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def write_config(tmp_path, name="config.json", **overrides):
    config = {
        "name": "probe",
        "algo": "dqn",
        "env": "CartPole-v1",
        "agent": {"hidden_sizes": [16], "learning_starts": 100, "batch_size": 16},
        "train": {"steps": 400, "seed": 0, "log_every": 100, "eval_episodes": 2, "experiment": "failures"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return str(path)


def runs(experiment="failures"):
    experiment = client().get_experiment_by_name(experiment)
    return client().search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def history(run_id, key):
    """fit's log ``key`` as MLflow has it (named with its section: ``train/loss``)."""
    return client().get_metric_history(run_id, mlflow_key(key))


def max_step(run_id, key):
    return max(m.step for m in history(run_id, key))


# -- signals, in a real `keras-rl-gym train` process ---------------------------------------------------


@pytest.mark.parametrize(
    "signum, code, save",
    [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, True)],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_stops_training_saves_the_agent_and_kills_the_run(tmp_path, signum, code, save):
    log_every = 500
    config = write_config(
        tmp_path,
        agent={"learning_starts": 200},
        train={"steps": 200_000, "log_every": log_every, "experiment": "signals"},
    )
    # The store exists before the child opens it: two processes never create its tables at once.
    experiment_id = client().create_experiment("signals")
    agent_path = tmp_path / ("saved.keras" if save else "probe-interrupted.keras")
    command = [sys.executable, "-m", "keras_rl_gym.cli", "train", config, "-q"]
    if save:
        command += ["--save", str(agent_path)]
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        # A 200k-step run would torch.compile first (~20 s); the signal path is the same eager.
        env = dict(os.environ, KERAS_RL_GYM_TORCH_COMPILE="0")
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=stdout, stderr=stderr, start_new_session=True, env=env)
    try:
        # Wait for the second interval with a loss: training runs, and its steps/s (the first interval's
        # includes compiling) says when the next interval is half done.
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"train exited early: {(tmp_path / 'stderr').read_text()[-2000:]}"
            assert time.time() < deadline, "no second interval was logged within 120 s"
            found = client().search_runs([experiment_id])
            if found and "train/loss" in found[0].data.metrics and len(history(found[0].info.run_id, "loss")) >= 2:
                break
            time.sleep(0.2)
        # Stopped there, the episodes that ended since the last interval reach the store only through the
        # flush on the failure.
        time.sleep(min(10.0, 0.4 * log_every / found[0].data.metrics["time/steps_per_second"]))
        proc.send_signal(signum)
        returncode = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = (tmp_path / "stderr").read_text()
    assert returncode == code, stderr[-3000:]
    assert f"stopped by {signal.Signals(signum).name}" in stderr and str(agent_path) in stderr
    assert "Traceback" not in stderr

    agent = keras.saving.load_model(agent_path)
    assert agent.env_steps > log_every
    (run,) = client().search_runs([experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.tags["error"]
    # The metrics reach the stop: the last interval is within log_every, and the episodes that ended since
    # it (CartPole episodes of this agent last ~10-20 steps; the stop is ~200 steps past the interval) too.
    assert agent.env_steps - log_every <= max_step(run.info.run_id, "loss") <= agent.env_steps
    assert agent.env_steps - 100 <= max_step(run.info.run_id, "episode_return") <= agent.env_steps
    artifacts = [a.path for a in client().list_artifacts(run.info.run_id, "checkpoint")]
    assert artifacts == [f"checkpoint/{agent_path.name}"]


# -- an env that fails -----------------------------------------------------------------------------------


def test_env_error_saves_the_agent_fails_the_run_and_the_next_run_is_separate(tmp_path, capsys):
    fail_at = 150
    config = write_config(
        tmp_path,
        name="fails.json",
        env=FAILING_ENV,
        env_kwargs={"fail_at": fail_at},
        agent={"hidden_sizes": [8], "learning_starts": 20, "batch_size": 8},
        train={"steps": 500, "log_every": 50},
    )
    assert main(["train", config, "-q"]) == 1
    err = capsys.readouterr().err
    assert f"keras-rl-gym: error: RuntimeError: env broke at step {fail_at}" in err
    assert "Traceback" not in err and "probe-interrupted.keras" in err
    agent = keras.saving.load_model(tmp_path / "probe-interrupted.keras")
    # The failing step is no transition: every step before it is.
    assert agent.env_steps == fail_at - 1 and agent.updates > 0
    (failed,) = runs()
    assert failed.info.status == "FAILED"
    assert "env broke" in failed.data.tags["error"]
    artifacts = [a.path for a in client().list_artifacts(failed.info.run_id, "checkpoint")]
    assert artifacts == ["checkpoint/probe-interrupted.keras"]

    # The failed run was ended: the next command in this process logs a run of its own.
    assert main(["train", write_config(tmp_path), "-q"]) == 0
    first, second = runs()
    assert first.info.run_id == failed.info.run_id and first.info.status == "FAILED"
    assert second.info.run_id != failed.info.run_id and second.info.status == "FINISHED"


def test_error_during_final_evaluation_saves_the_agent_and_fails_the_run(tmp_path, capsys):
    # 30 training steps stay below fail_at; the evaluation's 20 episodes of 3 steps reach it.
    config = write_config(
        tmp_path,
        env=FAILING_ENV,
        env_kwargs={"fail_at": 40},
        agent={"hidden_sizes": [8], "learning_starts": 10, "batch_size": 8},
        train={"steps": 30, "log_every": 10, "eval_episodes": 20},
    )
    assert main(["train", config, "-q", "--save", str(tmp_path / "agent.keras"), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "keras-rl-gym: error: RuntimeError: env broke at step 40" in err
    assert "Traceback" in err and "in evaluate" in err  # --debug shows where it failed
    assert keras.saving.load_model(tmp_path / "agent.keras").env_steps == 30
    (run,) = runs()
    assert run.info.status == "FAILED"
    assert "env broke" in run.data.tags["error"]
    assert [a.path for a in client().list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/agent.keras"]


# -- config values checked before training ----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, flags, key",
    [
        ({"train": {"eval_episodes": 0}}, [], "train.eval_episodes"),
        ({"train": {"log_every": 0}}, [], "train.log_every"),
        ({"train": {"eval_episodes": True}}, [], "train.eval_episodes"),
        ({"num_envs": 0}, [], "num_envs"),
        ({}, ["--num-envs", "0"], "num_envs"),
        ({"train": {"seed": "zero"}}, [], "train.seed"),
        ({"train": {"seed": 1.5}}, [], "train.seed"),
    ],
    ids=["eval_episodes", "log_every", "eval_episodes-bool", "num_envs", "--num-envs", "seed-str", "seed-float"],
)
def test_bad_value_is_a_config_error_before_training(tmp_path, capsys, overrides, flags, key):
    config = write_config(tmp_path, **overrides)
    started = time.perf_counter()
    assert main(["train", config, "-q", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-rl-gym: config error:") and f"{key} must be" in err
    # Nothing ran: no MLflow store was opened, no agent saved, and it took no training time.
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.glob("*.keras"))
    assert time.perf_counter() - started < 5


# -- resuming ---------------------------------------------------------------------------------------------


def test_resume_trains_on_to_the_configs_horizon(tmp_path, capsys):
    config = write_config(tmp_path)
    first, resumed = tmp_path / "first.keras", tmp_path / "resumed.keras"
    assert main(["train", config, "-q", "--save", str(first)]) == 0
    before = keras.saving.load_model(first)
    assert before.env_steps == 400

    assert main(["train", config, "-q", "--steps", "800", "--resume", str(first), "--save", str(resumed)]) == 0
    after = keras.saving.load_model(resumed)
    assert after.env_steps == 800 and after.total_steps == 800
    assert after.updates > before.updates and after.episodes > before.episodes
    first_run, second_run = runs()
    assert first_run.info.status == second_run.info.status == "FINISHED"
    assert second_run.data.params["resumed_at_env_step"] == "400"
    assert max_step(second_run.info.run_id, "loss") == 800

    # At the horizon already: it is only evaluated, and no run is logged.
    capsys.readouterr()
    assert main(["train", config, "--steps", "800", "--resume", str(resumed)]) == 0
    out = capsys.readouterr().out
    assert "at env step 800 of 800: nothing left to train" in out and "Evaluation over 2 episodes" in out
    assert len(runs()) == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"algo": "ppo", "agent": {"hidden_sizes": [16]}}, "holds a DQNAgent, but the config's algo 'ppo'"),
        ({"env": "Acrobot-v1"}, "trained on the observation space"),
    ],
    ids=["other-algo", "other-env"],
)
def test_resume_refuses_an_agent_that_does_not_fit_the_config(tmp_path, capsys, overrides, message):
    saved = tmp_path / "agent.keras"
    assert main(["train", write_config(tmp_path), "-q", "--no-mlflow", "--save", str(saved)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(overrides)
    if overrides.get("algo") == "ppo":
        config["agent"] = overrides["agent"]
    (tmp_path / "other.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["train", str(tmp_path / "other.json"), "-q", "--resume", str(saved)]) == 2
    assert message in capsys.readouterr().err
    assert main(["train", str(tmp_path / "other.json"), "-q", "--resume", str(tmp_path / "missing.keras")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_backend_flag_never_trains_on_another_backend(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())  # main sets it: undone after the test
    # Keras is loaded (with this suite's backend) before main can pick one: another is refused, not ignored.
    other = next(b for b in ("tensorflow", "jax", "torch") if b != keras.backend.backend())
    assert main(["train", write_config(tmp_path), "-q", "--backend", other]) == 2
    assert f"KERAS_BACKEND={other}" in capsys.readouterr().err
    assert os.environ["KERAS_BACKEND"] == keras.backend.backend()
    assert main(["train", write_config(tmp_path), "-q", "--no-mlflow", "--backend", keras.backend.backend()]) == 0


def test_backend_flag_on_the_command_line_trains_on_that_backend(tmp_path):
    # The suite's backend is loaded here; the command, a new process, starts again on the other one.
    other = next(b for b in ("tensorflow", "jax", "torch") if b != keras.backend.backend())
    command = [sys.executable, "-m", "keras_rl_gym.cli", "train", write_config(tmp_path), "-q", "--backend", other]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = client().search_runs([client().get_experiment_by_name("failures").experiment_id])
    assert run.data.params["backend"] == other and run.info.status == "FINISHED"


# -- output paths, checked before training -------------------------------------------------------------------


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "where, fault",
    [
        ("missing/agent.keras", "the directory {tmp}/missing does not exist"),
        ("plain/agent.keras", "{tmp}/plain is not a directory"),
    ],
    ids=["missing-directory", "under-a-file"],
)
def test_save_path_that_cannot_be_written_is_a_config_error_before_training(tmp_path, capsys, where, fault):
    (tmp_path / "plain").write_text("a regular file")
    started = time.perf_counter()
    assert main(["train", write_config(tmp_path), "-q", "--save", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("keras-rl-gym: config error: train.save_path")
    assert str(tmp_path / where) in err and fault.format(tmp=tmp_path) in err
    # Nothing trained: no store opened, no agent saved, no time spent.
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.glob("*.keras"))
    assert time.perf_counter() - started < 5


@pytest.mark.backend_independent
def test_fit_checks_the_files_it_will_write_before_training(tmp_path):
    from keras_rl_gym.callbacks import Checkpoint, EvaluationCallback

    (tmp_path / "plain").write_text("a regular file")
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, hidden_sizes=(8,), seed=0)
    evaluation = EvaluationCallback(lambda: gym.make("CartPole-v1"), save_best=str(tmp_path / "gone" / "best.keras"))
    for kwargs, message in [
        ({"checkpoint_path": str(tmp_path / "plain" / "a.keras")}, f"checkpoint_path {tmp_path}/plain/a.keras"),
        ({"checkpoint_path": str(tmp_path / "a.h5")}, "must end in .keras"),
        ({"callbacks": [Checkpoint(str(tmp_path / "plain" / "sub"))]}, f"{tmp_path}/plain is not a directory"),
        ({"callbacks": [evaluation]}, f"the directory {tmp_path}/gone does not exist"),
    ]:
        with pytest.raises(ValueError, match="cannot be written") as info:
            agent.fit(env, steps=50, verbose=0, **kwargs)
        assert message in str(info.value)
    assert agent.env_steps == 0


class RemoveSaveDirectory(keras.callbacks.Callback):
    """Takes the --save path's directory away while the agent trains: the save at the end fails."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_train_end(self, logs=None):
        os.rmdir(self.directory)


@pytest.mark.backend_independent
def test_a_save_that_fails_at_the_end_goes_to_the_working_directory(tmp_path):
    from keras_rl_gym.config import load_config, run

    (tmp_path / "out").mkdir()
    config = load_config(write_config(tmp_path, train={"steps": 50, "mlflow": False}))
    config["train"]["save_path"] = str(tmp_path / "out" / "agent.keras")
    with pytest.warns(UserWarning, match=f"Could not save the agent to {tmp_path}/out/agent.keras .*saved it to"):
        agent, _, _ = run(config, verbose=0, callbacks=[RemoveSaveDirectory(tmp_path / "out")])
    assert keras.saving.load_model(tmp_path / "agent.keras").env_steps == agent.env_steps == 50


# -- env and wrapper parameters the env refuses ---------------------------------------------------------------


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"env_kwargs": {"no_such_arg": 1}}, "env 'CartPole-v1' refuses env_kwargs key 'no_such_arg'"),
        (
            {"wrappers": [["ClipReward", {"no_such_arg": 1}]]},
            "Wrapper 'ClipReward' refuses the parameter 'no_such_arg'",
        ),
        ({"wrappers": [["TimeLimit", [200]]]}, "Wrapper 'TimeLimit': its parameters must be a mapping"),
    ],
    ids=["env_kwargs", "wrapper-parameter", "wrapper-parameters-not-a-mapping"],
)
def test_parameters_the_env_or_a_wrapper_refuses_are_config_errors(tmp_path, capsys, overrides, message):
    assert main(["train", write_config(tmp_path, **overrides), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("keras-rl-gym: config error:") and message in err
    assert not (tmp_path / "mlflow.db").exists()
