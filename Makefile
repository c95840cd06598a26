# Two commands for a fresh machine: `make run` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test bench deps chromium

run: deps
	$(PY) -m coda_aio $(ARGS)

test: deps chromium agents
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: deps
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

# The browser tests drive Debian's Chromium; Playwright's own browser download does not work here.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# --- agent CLIs for the tests (issue 11) ---
# tests/test_agent_clis.py runs each agent CLI for real against the stand-in workspace. npm
# installs them here, pinned, in ~20 s with a warm npm cache (~1.1 GB on disk); .agents/ is
# git-ignored. A machine without the npm registry still runs the suite: those tests skip.
AGENTS_DIR := .agents
AGENT_CLIS := @anthropic-ai/claude-code@2.1.197 @openai/codex@0.169.0 opencode-ai@1.18.33 @google/gemini-cli@0.61.0

.PHONY: agents
agents: $(AGENTS_DIR)/.installed

$(AGENTS_DIR)/.installed: Makefile
	npm install -g --prefix $(AGENTS_DIR) --no-audit --no-fund $(AGENT_CLIS) && touch $@ \
		|| echo "make agents: npm install failed; the agent CLI tests will be skipped"
