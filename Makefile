# PEFM: the README's two commands are `make up` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint vendor clean

up: $(STAMP)
	$(BIN)/pefm up

test: lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench functions dashboard
	$(BIN)/ruff format --check src tests bench functions dashboard

# torch first, pinned: 2.13.0 is the CPU build on disk here; anything looser pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,forecasting,functions,drift,dashboard,cluster,bench]'
	touch $(STAMP)

# kn func builds each function from its own folder: copy the pefm package into each one.
vendor:
	for f in functions/*/; do rm -rf $$f/pefm && cp -r src/pefm $$f/pefm && find $$f/pefm -name __pycache__ -prune -exec rm -rf {} +; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache functions/*/pefm
