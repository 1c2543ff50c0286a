#!/usr/bin/env bash
# Install what minicni's lab and tests need on a Debian/Ubuntu machine, then the project's venv.
# Idempotent: a second run installs nothing. Needs root for apt (run `make ...` as root).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-pip
  iproute2 iptables nftables iputils-ping tcpdump conntrack util-linux
  strace                        # the kill-point campaign kills the plugin at each of its syscalls
  containernetworking-plugins   # reference bridge/host-local: side-by-side tests and benchmarks
  podman runc containerd busybox-static  # real CNI consumers for the runtime tests, and an offline image
                                         # (containerd's CRI: `minicni-lab --runtime cri`; its pause
                                         # image is busybox-static; loopback comes from the plugins)
  mmdebstrap  # make image-offline: the image's base from Debian packages, no registry
)
VENV=${VENV:-.venv}

missing=()
# MINICNI_SKIP_APT=1: the host packages are managed elsewhere (e.g. a CI runner whose Docker needs
# its own containerd); only the venv is set up.
[ "${MINICNI_SKIP_APT:-0}" = 1 ] && APT_PACKAGES=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run \`make ...\` as root" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The venv runs on the distribution's interpreter, the one the agent's image ships (Debian's
# python3): the lab's and the benchmark's agents bundle the interpreter they run on, so the pods
# they serve pay the start-up users' pods pay. Another python3 earlier on PATH (pyenv's, a shared
# libpython build) starts ~2.5 ms slower per CNI call. PYTHON=... picks another one.
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
if [ -x "$VENV/bin/python" ] && [ "$(readlink -f "$VENV/bin/python")" != "$(readlink -f "$PYTHON")" ]; then
  echo "setup: recreating $VENV on $(readlink -f "$PYTHON") (it ran on $(readlink -f "$VENV/bin/python"))"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.minicni-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[test]'
  touch "$stamp"
fi
