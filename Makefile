# Two commands matter: `make up` (set up and run Sluice end to end on the embedded defaults)
# and `make test` (lint, type-check, all tests). Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: up test bench clean browser promtool

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

up: $(VENV)/.installed
	$(VENV)/bin/sluice up

# The web dashboard is tested in a real headless browser: Debian's chromium package.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The Prometheus configuration of the compose stack is checked by promtool: Debian's prometheus
# package (its server is not started; only the promtool binary is used).
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

test: $(VENV)/.installed browser promtool
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) .sluice .mypy_cache .ruff_cache .pytest_cache
