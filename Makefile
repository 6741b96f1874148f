# uorojax: `make demo` sets up and runs the main job, `make test` sets up and runs the tests,
# `make docs` builds the documentation site into docs/_build/html.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow docs lint format bench reproduce clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[run,dev]'
	touch $@

# The docs extra (Sphinx, myst-nb, ...) goes into the same .venv, on top of run and dev.
$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/pip install --quiet -c constraints.txt -e '.[run,dev,docs]'
	touch $@

demo: setup
	$(BIN)/python experiments/reproduce.py --demo --out runs/demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 2 --durations=15 -m "not slow" tests

# The end-to-end runs marked slow: the notebooks and the runs of several processes.
test-slow: setup
	$(BIN)/pytest -n 2 --durations=15 -m slow tests

# Warnings are errors (a broken reference, a name of uorojax.__all__ on no API page, a
# notebook that raises); the notebooks are executed and cached in docs/_build/.jupyter_cache,
# so a rebuild re-runs only the notebooks that changed.
docs: $(VENV)/.installed-docs
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

lint: setup
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python experiments/benchmark.py

reproduce: setup
	$(BIN)/python experiments/reproduce.py --out docs/results

clean:
	rm -rf $(VENV) runs docs/_build
