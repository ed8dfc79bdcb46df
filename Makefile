# The two commands: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv and installs what it needs when missing or out of date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test up down venv clean package image

$(STAMP): requirements.txt requirements-dev.txt requirements-scoring.txt container/requirements.txt pyproject.toml
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
	$(BIN)/ruff check .
	tests/install-browser.sh
	$(BIN)/python -m pytest

# The AWS stack: dist/template.json (SAM, validated by cfn-lint in the tests) + dist/deployment.zip.
STAGE ?= prod
package: $(STAMP)
	$(BIN)/python -m deploy.package --stage $(STAGE) --out dist
	$(BIN)/cfn-lint dist/template.json

# The TensorFlow image for the scoring function and the backlog job, pushed to ECR.
image:
	container/build-and-push.sh

clean: down
	rm -rf $(VENV) .run dist local-credentials.json
