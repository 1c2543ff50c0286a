# minicni — as root, run `make lab` (the connectivity matrix) or `make test` on a fresh machine.
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
	$(BIN)/mypy minicni lab
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest tests $(PYTEST_ARGS)

netns: setup
	$(BIN)/pytest netns_tests $(PYTEST_ARGS)

test: lint ## lint, unit tests and root tests (all of them; run as root)
	$(BIN)/pytest tests netns_tests $(PYTEST_ARGS)

LAB_ARGS ?=
BENCH_ARGS ?=

lab: setup ## the connectivity matrix: 3 nodes x 2 pods in network namespaces, up + matrix + down
	$(BIN)/minicni-lab run --nodes 3 --pods-per-node 2 $(LAB_ARGS)

# The CI gate: host-gw on one L2 segment (IPv4, as most clusters are), a dual-stack cluster with
# vxlan between nodes on routed subnets (both families: a tunnel per underlay family, with the
# FORWARD policy DROP Docker sets, and a runtime of the containerd 1.6/1.7 generation, libcni 1.1),
# a small dual-stack cluster probed with the scapy engine as a cross-check of the socket probes
# (ICMPv6 crafted by scapy too), and nodes as a real cluster runs them: the DaemonSet as written,
# its agents run from the built image ($(IMAGE_ARCHIVE), `make image-offline`) with the manifest's
# pod spec, and pods made through a containerd 1.6 per node as kubelet makes them, running what
# those agents installed. With LAB_CI_IMAGE=0 (no image) that run has the checkout's agents
# instead. The scapy run probes 4 cells at a time: each probe process spends ~0.6 s importing
# scapy, and 12 at once on a busy 2-core runner missed the 10 s launch time-out (probe errors,
# never X or N). The agents serve CNI requests (the fast path) in every run but the scapy one,
# whose pods are added by the plugin in-process (--no-fast-path), as when the agent is down: both
# paths give dual-stack pods. All run even if one fails; JSON + JUnit land in results/.
LAB_CI_IMAGE ?= 1
lab-ci: setup
	@rc=0; \
	$(BIN)/minicni-lab run --backend host-gw --underlay l2 \
		--json results/lab-host-gw-l2.json --junit results/lab-host-gw-l2.xml $(LAB_ARGS) || rc=1; \
	$(BIN)/minicni-lab run --family dual --backend vxlan --underlay routed --forward-drop --libcni 1.1 \
		--json results/lab-vxlan-routed.json --junit results/lab-vxlan-routed.xml $(LAB_ARGS) || rc=1; \
	$(BIN)/minicni-lab run --family dual --nodes 2 --pods-per-node 1 --backend auto --underlay routed \
		--engine scapy --workers 4 --no-fast-path --json results/lab-scapy.json \
		--junit results/lab-scapy.xml \
		$(LAB_ARGS) || rc=1; \
	if [ "$(LAB_CI_IMAGE)" = 1 ]; then \
	MINICNI_IMAGE_ARCHIVE=$(IMAGE_ARCHIVE) $(BIN)/minicni-lab run --agent image --runtime cri \
		--backend auto --underlay routed --forward-drop \
		--json results/lab-image-cri.json --junit results/lab-image-cri.xml $(LAB_ARGS) || rc=1; \
	else \
	$(BIN)/minicni-lab run --runtime cri --nodes 2 --pods-per-node 2 --backend vxlan --underlay routed \
		--forward-drop --json results/lab-cri.json --junit results/lab-cri.xml $(LAB_ARGS) || rc=1; \
	fi; \
	exit $$rc

clean-lab: ## remove every lab, also one left behind by a killed run
	$(BIN)/minicni-lab down --all

# --- image and kind --------------------------------------------------------------------------
IMAGE_REPO ?= ghcr.io/minicni
IMAGE_NAME ?= minicni
TAG ?= dev
IMAGE := $(IMAGE_REPO)/$(IMAGE_NAME):$(TAG)
# The saved image (docker-archive) that the lab (--agent image) and the root tests load.
IMAGE_ARCHIVE ?= build/image/minicni.tar
# The Debian base of `image-offline`, kept between runs (CI points it outside its fresh clone).
IMAGE_CACHE_DIR ?= .cache/image
IMAGE_ENV := IMAGE=$(IMAGE) IMAGE_ARCHIVE=$(IMAGE_ARCHIVE) IMAGE_CACHE_DIR=$(IMAGE_CACHE_DIR)
KIND_CLUSTER ?= minicni-e2e
# ipv4, dual or ipv6: the kind cluster's IP families (deployments/kind/cluster*.yaml)
KIND_FAMILY ?= $(or $(MINICNI_E2E_FAMILY),ipv4)
KIND_ENV := MINICNI_E2E_CLUSTER=$(KIND_CLUSTER) MINICNI_E2E_IMAGE=$(or $(MINICNI_E2E_IMAGE),$(IMAGE)) \
	MINICNI_E2E_FAMILY=$(KIND_FAMILY)

.PHONY: venv image image-offline kind-up kind-down e2e

# Only the venv: the targets that drive kind run beside a Docker engine, whose containerd.io the
# Debian packages of `setup` would conflict with, so they never touch the host's packages.
venv:
	MINICNI_SKIP_APT=1 scripts/setup-host.sh

image: ## build the agent image (Docker or podman: CONTAINER_ENGINE) on the Dockerfile's base
	$(IMAGE_ENV) scripts/build-image.sh

image-offline: ## the same without any registry: a base made from Debian packages (mmdebstrap)
	$(IMAGE_ENV) scripts/build-image.sh --offline

kind-up: venv ## build the image, create a kind cluster with minicni, wait until it is ready (kept)
	$(KIND_ENV) $(BIN)/python -m lab.kind up

kind-down: venv ## delete the kind cluster made by kind-up
	$(KIND_ENV) $(BIN)/python -m lab.kind down

e2e: venv ## the kind e2e suite (creates and deletes its own cluster; results in results/e2e/)
	$(KIND_ENV) $(BIN)/pytest e2e $(PYTEST_ARGS)

.PHONY: bench
bench: setup ## plugin ADD/DEL latency beside the reference bridge + host-local (run as root)
	$(BIN)/python -m lab.bench.plugin $(BENCH_ARGS)

.PHONY: bench-cri
bench-cri: setup ## pod start through containerd's CRI: minicni (bundle) beside bridge + host-local (root)
	$(BIN)/python -m lab.bench.cri

# The hostile-input campaign of issue 11 in full (root; see README, "Development"). The slices
# run in `make test`.
FUZZ_EXAMPLES ?= 3000
FUZZ_SEED ?= 11

.PHONY: fuzz killpoints
fuzz: setup ## generated hostile inputs through the installed plugin: FUZZ_EXAMPLES from FUZZ_SEED
	MINICNI_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) MINICNI_FUZZ_SEED=$(FUZZ_SEED) \
		$(BIN)/pytest -s netns_tests/test_fuzz.py $(PYTEST_ARGS)

killpoints: setup ## kill -9 at every syscall of ADD (3 node states) and DEL, then DEL (root)
	MINICNI_KILLPOINTS=full $(BIN)/pytest -s netns_tests/test_killpoints.py $(PYTEST_ARGS)

.PHONY: bench-agent
bench-agent: setup ## minicni-agent: reconcile 1,000 and 5,000 nodes in a namespace (run as root)
	$(BIN)/python -m lab.bench.agent

.PHONY: bench-node-source
bench-node-source: setup ## the Kubernetes node source: lists of 5,000 13.5 KB Nodes (memory, CPU, time)
	$(BIN)/python -m lab.bench.node_source

.PHONY: bench-firewall-read
bench-firewall-read: setup ## reading our iptables chains beside 25,000 kube-proxy rules (run as root)
	$(BIN)/python -m lab.bench.firewall_read
