"""DQN on Atari end to end: a few hundred steps of Pong on the active backend, an evaluation video in MLflow.

Learning is not asserted here (that takes millions of frames); the pipeline is:
the preprocessing chain, the frame-deduplicated replay, the conv Q-network's
compiled updates, the MLflow run and its artifacts.
"""

from pathlib import Path

import mlflow
import numpy as np
import pytest

pytest.importorskip("ale_py", reason="needs the atari extra")

from keras_rl_gym.callbacks import EvaluationCallback, MLflowLogger  # noqa: E402
from keras_rl_gym.config import load_config, make_agent, make_env  # noqa: E402
from keras_rl_gym.wrappers.atari import make_atari_env  # noqa: E402

CONFIG = Path(__file__).parents[1] / "configs" / "dqn-conv-pong.json"


@pytest.mark.atari
def test_pong_runs_end_to_end_and_logs_an_evaluation_video():
    config = load_config(CONFIG)
    config["agent"].update(buffer_size=2_000, learning_starts=100, target_update_every=100, hidden_sizes=[64])
    env = make_env(config)
    agent = make_agent(config, env)
    assert agent.network == "conv" and agent.double and agent.dueling
    # A short evaluation episode: Pong games last thousands of frames.
    evaluation = EvaluationCallback(
        lambda: make_atari_env("ALE/Pong-v5", training=False, render_mode="rgb_array", max_episode_steps=400),
        every=10_000,
        episodes=1,
        video=True,
    )
    logger = MLflowLogger(run_name="pong-smoke", log_model=False)
    history = agent.fit(env, steps=300, callbacks=[logger, evaluation], verbose=0, log_every=100)

    assert agent.updates == (300 - 100) // 4  # one update every 4 steps after the warm-up
    assert np.isfinite(history.history["loss"][-1])
    assert len(agent.buffer) == 300
    ((step, result),) = evaluation.history
    assert step == 300 and result["mean_length"] > 0
    assert evaluation.videos and all(Path(v).stat().st_size > 0 for v in evaluation.videos)
    run = mlflow.get_run(logger.run_id)
    assert "eval/mean_return" in run.data.metrics
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(logger.run_id, "videos/step_300")]
    assert any(path.endswith(".mp4") for path in artifacts), artifacts
