# saliency-bench: `make run` (set up + demo run + report), `make test`, `make lint`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch is pinned here (constraints.txt); pyproject keeps torch>=2.3.
PIP    := $(BIN)/pip install -c constraints.txt

.PHONY: run test lint typecheck install browser clean

$(BIN)/bench: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(PIP) "torch==2.13.0"
	$(PIP) -e ".[dev]"
	touch $(BIN)/bench

install: $(BIN)/bench

run: install
	$(BIN)/bench run $(ARGS)

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check benchmark tests perf
	$(BIN)/mypy benchmark

# Headless Chromium for the browser tests (Debian; needs root).
browser:
	apt-get update -qq && apt-get install -y -qq chromium

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
