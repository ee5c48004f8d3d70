# saliency-bench: `make run` (set up + demo run + report), `make test`, `make lint`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch is pinned here (constraints.txt); pyproject keeps torch>=2.3.
PIP    := $(BIN)/pip install -c constraints.txt

.PHONY: run test lint typecheck install browser clean perf-env

$(BIN)/bench: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(PIP) "torch==2.13.0"
	$(PIP) -e ".[dev]"
	touch $(BIN)/bench

install: $(BIN)/bench

# The perf environment (perf/): the project plus the peer libraries it is timed against
# (Quantus) and the profilers; kept apart so Quantus never becomes a dependency.
VENV_PERF ?= .venv-perf
PERF_BIN  := $(VENV_PERF)/bin

$(PERF_BIN)/bench: pyproject.toml constraints.txt perf/requirements.txt
	$(PYTHON) -m venv $(VENV_PERF)
	$(PERF_BIN)/pip install --upgrade pip
	$(PERF_BIN)/pip install -c constraints.txt "torch==2.13.0"
	$(PERF_BIN)/pip install -c constraints.txt -e . -r perf/requirements.txt
	touch $(PERF_BIN)/bench

perf-env: $(PERF_BIN)/bench

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
