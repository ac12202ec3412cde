# Two commands do everything on a fresh machine with Python 3.11 and make:
#   make run    set up, then train DQN on CartPole-v1 and log the run to MLflow (sqlite:///mlflow.db)
#   make test   set up, then run the whole test suite once per backend (jax, tensorflow, torch); tests marked
#               backend_independent run under the first backend only

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# JAX first: the backend-independent tests run under the first backend, and JAX starts fastest.
BACKENDS ?= jax tensorflow torch
BACKEND ?= jax
CONFIG ?= configs/dqn-cartpole.json
PYTEST_ARGS ?=
# Test processes per backend (pytest-xdist): most of a test's time is single-threaded Python. The 15 slowest tests
# of each backend are listed at its end, for CI's budget.
JOBS ?= 2

.PHONY: install run serve test test-fast lint bench clean browser

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first and pinned: pip takes the CPU wheel, never a multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[jax,torch,atari,box2d,ray,test]"
	touch $@

install: $(VENV)/.installed

# Debian's chromium, for the test that opens MLflow's UI in a real (headless) browser.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: install
	KERAS_BACKEND=$(BACKEND) $(BIN)/keras-rl-gym train $(CONFIG)

# make serve RUN=<run id> [PORT=5001]: the run's logged model (MLflowLogger's "model") on 127.0.0.1:PORT, from the
# store make run logs to (or $MLFLOW_TRACKING_URI). The venv's bin goes first on PATH: mlflow starts its server by
# running uvicorn, found on PATH, so this works without activating the venv.
PORT = 5001
serve: install
	@test -n "$(RUN)" || { echo "usage: make serve RUN=<run id> [PORT=$(PORT)]" >&2; exit 2; }
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" \
		$(BIN)/mlflow models serve -m "runs:/$(RUN)/model" --env-manager local --host 127.0.0.1 --port $(PORT)

test: install browser
	@failed=""; once=0; \
	for backend in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$backend"; \
		KRG_SKIP_BACKEND_INDEPENDENT=$$once KERAS_BACKEND=$$backend $(BIN)/python -m pytest -n $(JOBS) --dist loadgroup --durations=15 \
			$(PYTEST_ARGS) || failed="$$failed $$backend"; \
		once=1; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED on:$$failed"; exit 1; fi; \
	echo "All backends passed: $(BACKENDS)"

test-fast: install
	@for backend in $(BACKENDS); do KERAS_BACKEND=$$backend $(BIN)/python -m pytest -m "not learning" -q || exit 1; done

lint: install
	$(BIN)/ruff check keras_rl_gym tests examples benchmarks
	$(BIN)/ruff format --check keras_rl_gym tests examples benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
