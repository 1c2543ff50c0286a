# minicni — run `sudo make lab` (the connectivity matrix) or `sudo make test` on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup test lint unit netns lab lab-ci clean-lab

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

LAB_ARGS ?=

lab: setup ## the connectivity matrix: 3 nodes x 2 pods in network namespaces, up + matrix + down
	$(BIN)/minicni-lab run --nodes 3 --pods-per-node 2 $(LAB_ARGS)

# The CI gate: host-gw on one L2 segment, and vxlan between nodes on routed subnets (with the
# FORWARD policy DROP Docker sets). Both run even if one fails; JSON + JUnit land in results/.
lab-ci: setup
	@rc=0; \
	$(BIN)/minicni-lab run --backend host-gw --underlay l2 \
		--json results/lab-host-gw-l2.json --junit results/lab-host-gw-l2.xml $(LAB_ARGS) || rc=1; \
	$(BIN)/minicni-lab run --backend vxlan --underlay routed --forward-drop \
		--json results/lab-vxlan-routed.json --junit results/lab-vxlan-routed.xml $(LAB_ARGS) || rc=1; \
	exit $$rc

clean-lab: ## remove every lab, also one left behind by a killed run
	$(BIN)/minicni-lab down --all
