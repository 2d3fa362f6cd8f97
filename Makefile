# Quick start: `make demo` (the toy pipeline on the CPU as a sweep of plans/demo.toml) and `make test`.
# Then either `source .venv/bin/activate` (so `python` is the project's) or call
# `.venv/bin/python run_...` directly.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The pins (pandas 3, torch 2.13) need Python 3.11 or newer.
MIN_PYTHON := 3.11

.PHONY: demo test data bench clean-demo python-check

# Refuses a Python older than the pins need before anything is made, and removes a .venv
# that an older Python left behind (it would never install).
python-check:
	@$(PYTHON) -c 'import sys; m = tuple(map(int, "$(MIN_PYTHON)".split("."))); sys.exit(sys.version_info[:2] < m)' 2>/dev/null || { \
	  echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())' 2>/dev/null || echo '(not found)'); the pinned packages need Python $(MIN_PYTHON) or newer: run make PYTHON=python$(MIN_PYTHON) (or another python >= $(MIN_PYTHON))" >&2; exit 1; }
	@if [ -e $(PY) ] && ! $(PY) -c 'import sys; m = tuple(map(int, "$(MIN_PYTHON)".split("."))); sys.exit(sys.version_info[:2] < m)' 2>/dev/null; then \
	  echo "$(VENV) was made by an older or missing Python: removing it and building it again with $(PYTHON)" >&2; rm -rf $(VENV); fi

$(VENV)/installed: requirements.txt | python-check
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: python-check $(VENV)/installed
	$(PY) -m fine_tune.demo

# Two pytest-xdist workers, one per core (each test file stays on one worker, so its
# module fixtures are built once); tests/conftest.py gives each worker one thread.
test: python-check $(VENV)/installed
	$(PY) -m pytest -q -n 2 --dist loadscope tests

# Download GLUE MNLI into data/fine_tune/MNLI and verify its row counts.
data: python-check $(VENV)/installed
	$(PY) -m fine_tune.download

# Throughput of every method and of the authors'-approach LAD step (prints a table).
bench: python-check $(VENV)/installed
	$(PY) bench/bench_train.py --size small

# Remove what `make demo` wrote (demo/: its data, tiny BERT and experiments).
clean-demo:
	rm -rf demo
