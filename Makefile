# minicni — run `sudo make lab` (the connectivity matrix) or `sudo make test` on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup test lint unit netns lab clean-lab

setup: ## install Debian packages and the project's venv (idempotent)
	scripts/setup-host.sh

lint: setup
	$(BIN)/ruff check minicni lab tests netns_tests e2e conftest.py
	$(BIN)/ruff format --check minicni lab tests netns_tests e2e conftest.py
	$(BIN)/mypy minicni
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest tests $(PYTEST_ARGS)

netns: setup
	$(BIN)/pytest netns_tests $(PYTEST_ARGS)

test: lint ## lint, unit tests and root tests (all of them; run as root)
	$(BIN)/pytest tests netns_tests $(PYTEST_ARGS)
