# The two commands README.md starts with: `make demo` and `make test`.
# Everything installs into .venv from PyPI; no CUDA wheel is pulled on a CPU machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev

.PHONY: setup demo test test-fast lint bench clean-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-$(EXTRAS): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

## setup: create .venv and install the project (EXTRAS=dev by default; EXTRAS=dev,cpu for models)
setup: $(VENV)/.installed-$(EXTRAS)

## demo: set up, check the environment, migrate the embedded database, round-trip the store
demo: setup
	$(BIN)/flywheel doctor
	$(BIN)/flywheel db upgrade
	$(BIN)/flywheel db current
	@key=$$($(BIN)/flywheel store put README.md) && echo "stored README.md as $$key" && \
	  $(BIN)/flywheel store get $$key $(VENV)/demo-readme.md && cmp README.md $(VENV)/demo-readme.md && \
	  echo "store round trip verified"

## test: the whole suite, slow end-to-end tests included (what CI runs)
test: setup
	$(BIN)/python -m pytest

## test-fast: everything but the tests marked slow
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/ingest.py

## clean-data: stop the embedded server and delete .flywheel/ (all local runs and objects!)
clean-data:
	-$(BIN)/flywheel db stop
	rm -rf .flywheel
