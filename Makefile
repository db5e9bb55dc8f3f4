# `make demo` runs the main job end to end; `make test` runs the suite. Both (re)build .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.evalign-installed

.PHONY: venv demo test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(PY) -m modeling_evalign.pipeline $(ARGS)

lint: venv
	$(PY) -m ruff check .

test: venv lint
	$(PY) -m pytest -q $(ARGS)

bench: venv
	$(PY) -m pip install -q -e ".[dev,bench]"
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done
