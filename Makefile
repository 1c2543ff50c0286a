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

# The CI gate: host-gw on one L2 segment, vxlan between nodes on routed subnets (with the FORWARD
# policy DROP Docker sets, and a runtime of the containerd 1.6/1.7 generation, libcni 1.1), and a
# small cluster probed with the scapy engine as a cross-check of the socket probes. The agents serve
# CNI requests (the fast path) in every run but the scapy one, whose pods are added by the plugin
# in-process (--no-fast-path), as when the agent is down. All run even if one fails; JSON + JUnit
# land in results/.
lab-ci: setup
	@rc=0; \
	$(BIN)/minicni-lab run --backend host-gw --underlay l2 \
		--json results/lab-host-gw-l2.json --junit results/lab-host-gw-l2.xml $(LAB_ARGS) || rc=1; \
	$(BIN)/minicni-lab run --backend vxlan --underlay routed --forward-drop --libcni 1.1 \
		--json results/lab-vxlan-routed.json --junit results/lab-vxlan-routed.xml $(LAB_ARGS) || rc=1; \
	$(BIN)/minicni-lab run --nodes 2 --pods-per-node 1 --backend auto --underlay routed --engine scapy \
		--no-fast-path --json results/lab-scapy.json --junit results/lab-scapy.xml $(LAB_ARGS) || rc=1; \
	exit $$rc

clean-lab: ## remove every lab, also one left behind by a killed run
	$(BIN)/minicni-lab down --all

# --- image and kind (issue 5): need Docker, kind and kubectl ----------------------------------
IMAGE_REPO ?= ghcr.io/minicni
IMAGE_NAME ?= minicni
TAG ?= dev
IMAGE := $(IMAGE_REPO)/$(IMAGE_NAME):$(TAG)
KIND_CLUSTER ?= minicni-e2e
KIND_ENV := MINICNI_E2E_CLUSTER=$(KIND_CLUSTER) MINICNI_E2E_IMAGE=$(IMAGE)

.PHONY: image kind-up kind-down e2e

image: ## build the agent image from deployments/Dockerfile as $(IMAGE_REPO)/$(IMAGE_NAME):$(TAG)
	docker build -f deployments/Dockerfile -t $(IMAGE) .

kind-up: setup ## build the image, create a kind cluster with minicni, wait until it is ready (kept)
	$(KIND_ENV) $(BIN)/python -m lab.kind up

kind-down: setup ## delete the kind cluster made by kind-up
	$(KIND_ENV) $(BIN)/python -m lab.kind down

e2e: setup ## the kind e2e suite (creates and deletes its own cluster; results in results/e2e/)
	$(KIND_ENV) $(BIN)/pytest e2e $(PYTEST_ARGS)

.PHONY: bench
bench: setup ## plugin ADD/DEL latency beside the reference bridge + host-local (run as root)
	$(BIN)/python -m lab.bench.plugin

.PHONY: bench-agent
bench-agent: setup ## minicni-agent: reconcile 1,000 and 5,000 nodes in a namespace (run as root)
	$(BIN)/python -m lab.bench.agent

.PHONY: bench-node-source
bench-node-source: setup ## the Kubernetes node source: lists of 5,000 13.5 KB Nodes (memory, CPU, time)
	$(BIN)/python -m lab.bench.node_source

.PHONY: bench-firewall-read
bench-firewall-read: setup ## reading our iptables chains beside 25,000 kube-proxy rules (run as root)
	$(BIN)/python -m lab.bench.firewall_read
