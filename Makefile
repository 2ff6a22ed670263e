# LossLab. Every target creates the virtual environment (.venv) on first use.
# torch is installed first, as TORCH_SPEC from TORCH_INDEX (pip --index-url); empty TORCH_INDEX: whatever
# pip finds (on PyPI, Linux: the CUDA build). Pick the build explicitly, e.g.
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu      # CPU only
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cu128    # CUDA 12.8
# Changing TORCH_SPEC or TORCH_INDEX reinstalls torch on the next make.
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
STUDY       ?= label_noise_small
ARGS        ?=
# The UI's address (RULES: LOSSLAB_UI_HOST/LOSSLAB_UI_PORT; plain HOST/PORT from the environment are ignored).
# Not exported: set by you, they reach every target; left to these defaults, `make ui` records the address
# it serves beside the store and sweeps and reports link there (src/losslab/links.py).
LOSSLAB_UI_HOST ?= 127.0.0.1
LOSSLAB_UI_PORT ?= 5000
STORE       ?= $(if $(MLFLOW_TRACKING_URI),$(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train sweep report ui check-grads test test-all test-slow lint format bench clean doctor

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: STUDY=$(STUDY) ARGS='...' TORCH_SPEC='$(TORCH_SPEC)' TORCH_INDEX='$(TORCH_INDEX)'"
	@echo "             LOSSLAB_UI_HOST=$(LOSSLAB_UI_HOST) LOSSLAB_UI_PORT=$(LOSSLAB_UI_PORT)"

# one stamp per torch choice, so a new TORCH_SPEC/TORCH_INDEX reinstalls torch
TORCH_STAMP := $(VENV)/.torch-$(shell printf '%s %s' '$(TORCH_SPEC)' '$(TORCH_INDEX)' | cksum | cut -d' ' -f1)

$(TORCH_STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	rm -f $(VENV)/.torch-* && touch $@

$(VENV)/.installed: pyproject.toml $(TORCH_STAMP)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

install: $(VENV)/.installed  ## .venv with torch, LossLab (losslab-train, -compare, -gradcheck) and dev tools

train: install  ## one run: make train ARGS="loss=hinge optimizer.lr=0.01"
	$(PY) train.py $(ARGS)

sweep: install  ## run a study (src/losslab/studies/experiment/, default label_noise_small): make sweep STUDY=hinge_margin
	$(PY) train.py +experiment=$(STUDY) $(ARGS) -m

report: install  ## HTML + PNG report of the latest sweep into reports/
	$(PY) -m losslab.compare $(ARGS)

# SKIP_INSTALL=1 uses VENV as it is (tests, CI): `make ui` then never runs pip.
ui: $(if $(SKIP_INSTALL),,install)  ## MLflow UI on LOSSLAB_UI_HOST:LOSSLAB_UI_PORT (127.0.0.1:5000; no auth: keep it local)
	@$(PY) -m losslab.links --store "$(STORE)" --serve "$(LOSSLAB_UI_HOST):$(LOSSLAB_UI_PORT)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --workers 1 --backend-store-uri "$(STORE)" --host "$(LOSSLAB_UI_HOST)" --port "$(LOSSLAB_UI_PORT)"

check-grads: install  ## finite-difference gradient check of every built-in loss
	$(PY) -m losslab.gradcheck $(ARGS)

# Two pytest-xdist workers, each test file on one worker (a file's module fixtures are built once):
# 7 min 5 s of pytest on 2 quiet cores, 1,485 tests (2026-12-07; docs/testing.md).
TEST_JOBS   ?= 2
test: install  ## the default test suite (about 7 minutes on 2 cores; TEST_JOBS=0 runs it in one process)
	$(PY) -m pytest -m "not slow" $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile) $(PYTEST_ARGS)

test-all: install  ## every test, the long ones included
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: install  ## only the long end-to-end tests (interrupts, SLURM, DDP, faults, scale); CI runs them after `make test`
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: install  ## ruff lint + format check
	$(VENV)/bin/ruff check src tests train.py
	$(VENV)/bin/ruff format --check src tests train.py

format: install  ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix src tests train.py
	$(VENV)/bin/ruff format src tests train.py

bench: install  ## tracking-overhead benchmark: prints ratios measured side by side
	$(PY) -m losslab.bench $(ARGS)

doctor: install  ## mark runs whose process died (kill -9, power loss) KILLED: make doctor ARGS="--rerun"
	$(PY) -m losslab.doctor $(ARGS)

clean:  ## remove outputs, reports and caches (keeps .venv and mlflow.db)
	rm -rf outputs multirun reports bench-results .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# ----------------------------------------------------------------------------- team tracking server
# `mlflow server` over PostgreSQL, both on 127.0.0.1 (no authentication: teammates use an SSH tunnel).
# A private cluster lives in .server/ (git-ignored by its own .gitignore); DB_URI=postgresql://USER@HOST/DB
# uses an existing PostgreSQL instead (password in ~/.pgpass or PGPASSFILE, not in the URI).
SERVER_PORT ?= 5001
PG_PORT     ?= 5433
DB_URI      ?=
SERVER_ENV  := SERVER_PORT=$(SERVER_PORT) PG_PORT=$(PG_PORT) DB_URI="$(DB_URI)" VENV=$(abspath $(VENV))
.PHONY: server server-stop server-status

$(VENV)/.server-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[server]"
	@touch $@

server: $(VENV)/.server-installed  ## team MLflow server over PostgreSQL on 127.0.0.1:SERVER_PORT (5001), in the background
	$(SERVER_ENV) scripts/pg_server.sh start

server-stop:  ## stop the team MLflow server and its private PostgreSQL
	$(SERVER_ENV) scripts/pg_server.sh stop

server-status:  ## is the team server up, and where
	$(SERVER_ENV) scripts/pg_server.sh status

# ----------------------------------------------------------------------------- local SLURM cluster
# A one-node cluster (munged, slurmctld, slurmd as root) to rehearse `hydra/launcher=slurm` sweeps
# before a real cluster; config and state in .slurm/ (git-ignored). See scripts/slurm_local.sh.
.PHONY: slurm-local slurm-local-stop slurm-local-status

slurm-local:  ## one-node SLURM cluster on this machine (installs slurm-wlm + munge if missing; root)
	scripts/slurm_local.sh start

slurm-local-stop:  ## stop the daemons `make slurm-local` started
	scripts/slurm_local.sh stop

slurm-local-status:  ## is the local SLURM cluster up
	scripts/slurm_local.sh status
