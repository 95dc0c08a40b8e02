# Works on a fresh clone with python3 and make: every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q
PYTEST_ARGS ?=

.PHONY: demo test lint format bench clean

# A failed `python3 -m venv` (Debian/Ubuntu without python3-venv) leaves a venv without pip:
# remove it so the next run tries again.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "error: '$(PYTHON) -m venv' failed; install it (e.g. apt-get install python3-venv)" >&2; \
	  exit 1; }
	$(PIP) --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(PIP) -e '.[dev]'
	touch $@ $(VENV)/.installed

# The demo also serves the HTTP API: it needs the server extra.
$(VENV)/.installed-server: $(BIN)/python pyproject.toml
	$(PIP) -e '.[server]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed-server
	$(BIN)/python demo/run_demo.py

# The suite runs on 2 pytest-xdist worker processes (the tests wait on servers, processes and
# clocks more than they compute: 11 min instead of 15 on 2 cores). PYTEST_ARGS comes after, so
# PYTEST_ARGS='-n 0' runs it in one process (e.g. for --pdb), '-n 4' on four.
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n 2 --durations=25 $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench demo examples
	$(BIN)/ruff format --check src tests bench demo examples

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests bench demo examples
	$(BIN)/ruff check --fix src tests bench demo examples

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) demo.db demo.db-wal demo.db-shm demo.db.wake .pytest_cache .ruff_cache
