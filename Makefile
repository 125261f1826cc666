# Two commands do all set-up:  `make lab`  and  `make test`.
# Both create the virtual environment in .venv first if it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The exact stack this course is tested with (installs from local disk here).
TORCH_PINS := torch==2.14.1 torchaudio==2.11.0
PROFILE ?= smoke
PYTEST_ARGS ?=

.PHONY: setup lab test test-unit test-notebooks bench info clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e ".[dev]" $(TORCH_PINS)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

lab: setup
	$(BIN)/jupyter lab notebooks/

info: setup
	$(BIN)/course-lib info

bench: setup
	$(BIN)/course-lib bench

# Unit tests, then every notebook under nbval in the smoke profile.
test: setup
	COURSE_PROFILE=$(PROFILE) $(BIN)/python -m pytest -q $(PYTEST_ARGS) tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

test-unit: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

test-notebooks: setup
	COURSE_PROFILE=$(PROFILE) $(BIN)/python -m pytest -q notebooks --nbval-lax --nbval-current-env

clean-venv:
	rm -rf $(VENV)
