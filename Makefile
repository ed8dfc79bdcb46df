# The two commands: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv and installs what it needs when missing or out of date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test up down venv clean

$(STAMP): requirements.txt requirements-dev.txt container/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e .
	touch $@

venv: $(STAMP)

up: $(STAMP)
	$(BIN)/tfbatch stack up

down:
	@if [ -x $(BIN)/tfbatch ]; then $(BIN)/tfbatch stack down; fi

demo: up
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest

clean: down
	rm -rf $(VENV) .run dist local-credentials.json
