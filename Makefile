# Set-up and everyday commands. Each target creates .venv and installs pinned dependencies.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-cuda lint bench install

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,ray,tensorboard]'
	touch $(STAMP)

## demo: train the default MoE language model on the built-in Tiny Shakespeare corpus
demo: $(STAMP)
	$(VENV)/bin/moeplace lm train --overwrite

## test: lint and run the test suite (what CI runs)
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

## test-slow: the longer checks that the default run leaves out
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

## test-cuda: the CUDA checks (needs a GPU and a CUDA build of torch in the environment)
test-cuda: $(STAMP)
	$(PY) -m pytest -q -m cuda

lint: $(STAMP)
	$(VENV)/bin/ruff check .
