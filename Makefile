# `make test` is the whole gate: install the test extras, lint, type-check, run every test.
PYTHON ?= python3

.PHONY: test install lint demo

install:
	$(PYTHON) -m pip install -q -e '.[test]'

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

test: install lint
	$(PYTHON) -m pytest -q

demo:
	$(PYTHON) -m pip install -q -e .
	saga demo
