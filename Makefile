# Quick start: `make demo` (toy pipeline on CPU, < 5 min) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test data bench clean-demo

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: $(VENV)/installed
	$(PY) -m fine_tune.demo

test: $(VENV)/installed
	$(PY) -m pytest -q tests

# Download GLUE MNLI into data/fine_tune/MNLI and verify its row counts.
data: $(VENV)/installed
	$(PY) -m fine_tune.download

# Throughput of every method and of the authors'-approach LAD step (prints a table).
bench: $(VENV)/installed
	$(PY) bench/bench_train.py --size small

clean-demo:
	rm -rf demo
