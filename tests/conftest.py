"""Shared fixtures. The suite runs unchanged under each KERAS_BACKEND."""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Ray clusters the tests start keep to the loopback address (read when Ray is imported), and
# skip Ray's usage report.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Each test runs in its own directory with its own MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    keras.backend.clear_session()
    yield


@pytest.fixture
def backend():
    return keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    """Backend-independent tests run once; learning tests first.

    ``make test`` runs the suite once per backend and sets ``KRG_SKIP_BACKEND_INDEPENDENT=1``
    for every backend after the first: tests marked ``backend_independent`` (crafted files,
    the CLI's argument and store checks, README blocks, doctests of modules that do not touch
    Keras) are then deselected, not skipped, so the counts say what ran.

    Learning tests first (a stable sort keeps the rest in file order).

    They take 10-120 s each and the rest mostly under 2 s: pytest-xdist hands out the
    first quarter of the queue round-robin and the rest on demand, so starting the long
    ones first lets the short ones fill in behind them instead of leaving one worker
    alone with a two-minute test at the end.
    """
    if os.environ.get("KRG_SKIP_BACKEND_INDEPENDENT") == "1":
        once = [item for item in items if item.get_closest_marker("backend_independent") is not None]
        if once:
            config.hook.pytest_deselected(items=once)
            items[:] = [item for item in items if item.get_closest_marker("backend_independent") is None]
    items.sort(key=lambda item: item.get_closest_marker("learning") is None)
