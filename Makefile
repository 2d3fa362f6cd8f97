# Quick start: `make demo` (the toy pipeline on the CPU as a sweep of plans/demo.toml), `make test`
# and `make test-quick`.
# Then either `source .venv/bin/activate` (so `python` is the project's) or call
# `.venv/bin/python run_...` directly.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The pins (pandas 3, torch 2.13) need Python 3.11 or newer.
MIN_PYTHON := 3.11

.PHONY: demo test test-quick test-bench data bench clean-demo python-check

# Refuses a Python older than the pins need before anything is made, and removes a .venv
# that an older Python left behind (it would never install).
python-check:
	@$(PYTHON) -c 'import sys; m = tuple(map(int, "$(MIN_PYTHON)".split("."))); sys.exit(sys.version_info[:2] < m)' 2>/dev/null || { \
	  echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())' 2>/dev/null || echo '(not found)'); the pinned packages need Python $(MIN_PYTHON) or newer: run make PYTHON=python$(MIN_PYTHON) (or another python >= $(MIN_PYTHON))" >&2; exit 1; }
	@if [ -e $(PY) ] && ! $(PY) -c 'import sys; m = tuple(map(int, "$(MIN_PYTHON)".split("."))); sys.exit(sys.version_info[:2] < m)' 2>/dev/null; then \
	  echo "$(VENV) was made by an older or missing Python: removing it and building it again with $(PYTHON)" >&2; rm -rf $(VENV); fi

# pip --no-compile, then the modules a run imports are compiled by importing them once,
# in two processes side by side (torch's share takes most of it): torch alone has
# thousands of files a run never imports, and compiling them all took as long as the rest
# of the installation (95 s in all against about 45 s here). Modules imported later are compiled on
# first use, as always.
WARM_TORCH := import torch, transformers, torch.distributed.run, torch.utils.tensorboard; \
  from transformers import BertForSequenceClassification, BertTokenizerFast; \
  import fine_tune.cli, fine_tune.teacher, fine_tune.lad, fine_tune.evaluation
WARM_REST := import pandas, sklearn.metrics, matplotlib.pyplot, tqdm, optuna, submitit, \
  pyarrow.parquet, pytest, xdist, wandb, mlflow.tracking, mlflow.store.tracking.sqlalchemy_store; \
  import fine_tune.report, fine_tune.compare, fine_tune.sweep, fine_tune.download, fine_tune.trackers

$(VENV)/installed: requirements.txt | python-check
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -r requirements.txt
	env -u PYTHONDONTWRITEBYTECODE $(PY) -c '$(WARM_TORCH)' & torch=$$!; \
	  env -u PYTHONDONTWRITEBYTECODE $(PY) -c '$(WARM_REST)' && wait $$torch
	touch $@

demo: python-check $(VENV)/installed
	$(PY) -m fine_tune.demo

# Three pytest-xdist workers on two cores: the Slurm tests' worker mostly waits for its
# cluster's jobs, and the other two keep both cores busy meanwhile (two workers left one
# core idle for about a minute: 262 s of tests against 228 s). Each test file stays on one
# worker, so its module fixtures are built once, and the slowest files go first
# (tests/conftest.py orders them, --no-loadscope-reorder keeps that order); one thread per
# worker. Bytecode is written (even where PYTHONDONTWRITEBYTECODE is set, as on the
# development and CI machines): the suite starts a hundred Python processes, and without
# it each compiled again every module the installation's imports had not (torch's
# compiler, the Trainer, ...): 325 s against 303 s from a fresh clone. Prints the 15
# slowest tests and the time of the whole target, installation included.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q -n 3 --dist loadscope --no-loadscope-reorder
# When make read this file, before .venv is installed.
STARTED := $(shell date +%s)
test: python-check $(VENV)/installed
	@$(PYTEST) -m "not bench" --durations=15 tests; status=$$?; \
	echo "make test: $$(( $$(date +%s) - $(STARTED) )) s in all, installation included"; exit $$status

# The dry runs of the GPU check (bench/gpu_check.sh --cpu) and of the Trainer comparison
# (bench/peer_trainer.py --smoke): they keep the benchmark scripts from rotting, but start
# a dozen fresh processes each (73-87 s from a fresh clone), so they are a target of their own; CI
# (.ci/run) runs it after make test.
test-bench: python-check $(VENV)/installed
	$(PYTEST) -m bench --durations=5 tests

# The tests that start no process and train at most a few steps (not marked slow):
# under a minute, for the edit-test loop. A test that starts a process fails here.
test-quick: python-check $(VENV)/installed
	FINE_TUNE_TEST_QUICK=1 $(PYTEST) -m "not slow" tests

# Download GLUE MNLI into data/fine_tune/MNLI and verify its row counts.
data: python-check $(VENV)/installed
	$(PY) -m fine_tune.download

# Throughput of every method and of the authors'-approach LAD step (prints a table).
bench: python-check $(VENV)/installed
	$(PY) bench/bench_train.py --size small

# Remove what `make demo` wrote (demo/: its data, tiny BERT and experiments).
clean-demo:
	rm -rf demo
