# Two commands do all set-up:  `make lab`  and  `make test`.
# Both create the virtual environment in .venv first if it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The exact stack this course is tested with (installs from local disk here).
TORCH_PINS := torch==2.14.1 torchaudio==2.11.0 torchvision==0.29.1
PROFILE ?= smoke
PYTEST_ARGS ?=
# Test files run on WORKERS processes (pytest-xdist), one torch thread each; a notebook's cells stay together.
WORKERS ?= 2
XDIST := -n $(WORKERS) --dist loadfile

.PHONY: setup lab test test-unit test-notebooks test-browser browser-deps slides bench info clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e ".[dev,laion,tts]" $(TORCH_PINS)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

# As root (containers, this CI machine) Jupyter needs --allow-root; LAB_ARGS passes more (e.g. --port=8890).
LAB_ARGS ?=
lab: setup
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) --notebook-dir=notebooks $(LAB_ARGS)

info: setup
	$(BIN)/course-lib info

bench: setup
	$(BIN)/course-lib bench

# Unit tests, then every notebook under nbval in the smoke profile.
test: setup
	COURSE_PROFILE=$(PROFILE) OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS) tests notebooks \
	  --nbval-lax --nbval-current-env -p no:cacheprovider

test-unit: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS) tests

test-notebooks: setup
	COURSE_PROFILE=$(PROFILE) OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(XDIST) notebooks --nbval-lax \
	  --nbval-current-env

# Instructor slides: slides/decks/*.md -> slides/build/*.html (offline reveal.js; npm install on first run).
slides: setup
	$(BIN)/python slides/build.py

# Debian's Chromium + ChromeDriver for the browser tests (root, or sudo where available).
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# Headless Chromium: every slide of every deck, every sound, JupyterLab running notebook 00 (also part of `make test`).
test-browser: setup
	COURSE_PROFILE=$(PROFILE) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_browser.py -rs

clean-venv:
	rm -rf $(VENV)
