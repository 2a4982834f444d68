# DUALRec: every target sets up what it needs (a virtual environment in .venv) before it runs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BASELINES := $(VENV)/.baselines

.PHONY: run test test-fast lint setup clean-venv

# The main job: the Streamlit app (http://127.0.0.1:8501).
run: $(STAMP)
	$(BIN)/streamlit run app.py

# The whole test suite (RecBole baselines included), with the slow tests and the real-data checks when
# ../shared/data/ml-1m-full-order exists.
test: $(STAMP) $(BASELINES)
	$(BIN)/python -m pytest --run-slow --run-realdata

# Formatting and lint (ruff, settings in pyproject.toml): `.venv/bin/ruff format .` fixes the formatting.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Fast tests only (what to run while editing): no slow, real-data or embedded-model (llm) tests, no model to build.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not llm"

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=python3"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -r requirements-dev.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

# The optional RecBole extra, installed without dependency resolution so the pins of requirements.txt stay.
$(BASELINES): $(STAMP) requirements-baselines.txt
	$(BIN)/python -m pip install --no-deps -r requirements-baselines.txt
	touch $(BASELINES)

clean-venv:
	rm -rf $(VENV)
