# One entry point.  `make demo` runs the toolkit end to end; `make test` runs the test suite.
# Both install what they need (Debian packages via scripts/system-deps.sh, Python packages into .venv).
# Debian's /usr/bin/python3 where present: when grading as root, the sandbox runs student code as an
# unprivileged user, who must be able to execute the venv's interpreter (a pyenv under /root is not).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup system-deps venv test test-fast demo bench assign clean

system-deps:
	bash scripts/system-deps.sh

$(BIN)/notegrade: pyproject.toml requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

venv: $(BIN)/notegrade

setup: system-deps venv

# Full suite: slow and Docker-marked tests included (`-m ""` lifts pyproject's default marker filter;
# Docker tests skip with a reason when no engine can be started).
test: setup
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# The default suite (what a bare `pytest` runs): everything but Docker and the slow end-to-end runs.
test-fast: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/notegrade demo --out demo-out --jobs auto

bench: setup
	$(BIN)/python benchmarks/run_all.py

# Regenerate the committed student starter code after changing a shipped reference file.
assign: venv
	$(BIN)/notegrade assign

clean:
	rm -rf $(VENV) demo-out .pytest_cache
