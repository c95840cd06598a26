# Two commands for a fresh machine: `make run` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test bench deps chromium

run: deps
	$(PY) -m coda_aio $(ARGS)

test: deps chromium
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: deps
	$(PY) bench/run_all.py

deps: $(VENV)/.installed node_modules/.package-lock.json

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

# The browser tests drive Debian's Chromium; Playwright's own browser download does not work here.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
