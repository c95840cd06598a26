# Two commands for a fresh machine: `make run` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test bench deps system-packages

run: deps
	$(PY) -I -m coda_aio $(ARGS)

test: deps system-packages agents
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: deps system-packages
	$(PY) bench/run_all.py

deps: $(VENV)/.installed node_modules/.package-lock.json

# constraints.txt pins every Python package (transitive ones too) to the versions the suite
# passed with, so a fresh machine installs those and not whatever is newest today.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

# The browser tests drive Debian's Chromium (Playwright's own browser download does not work
# here); the codex test runs `codex exec` in a git repository.
system-packages:
	@command -v chromium >/dev/null && command -v git >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium git; }

# --- agent CLIs for the tests (issue 11) ---
# tests/test_agent_clis.py runs each agent CLI for real against the stand-in workspace. npm
# installs them here, pinned, in ~20 s with a warm npm cache (~1.1 GB on disk); .agents/ is
# git-ignored. A failed install fails `make test`, so CI never passes with those tests skipped
# (pytest run by hand without them skips them, saying why).
AGENTS_DIR := .agents
# One list of the tested versions, read here and by the app (agents/versions.py): comment
# lines start with "#", every other line is an npm package@version.
AGENT_VERSIONS := src/coda_aio/agents/tested_versions.txt
AGENT_CLIS := $(shell grep -v '^[^@a-z]' $(AGENT_VERSIONS))

.PHONY: agents
agents: $(AGENTS_DIR)/.installed

$(AGENTS_DIR)/.installed: Makefile $(AGENT_VERSIONS)
	npm install -g --prefix $(AGENTS_DIR) --no-audit --no-fund $(AGENT_CLIS)
	touch $@
