# Two commands matter: `make up` (set up and run Sluice end to end on the embedded defaults)
# and `make test` (lint, type-check, all tests). Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: up test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

up: $(VENV)/.installed
	$(VENV)/bin/sluice up

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) .sluice .mypy_cache .ruff_cache .pytest_cache
