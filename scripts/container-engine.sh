#!/usr/bin/env bash
# Print the container engine to build images with: $CONTAINER_ENGINE when set (a command, with
# global options if needed, e.g. "podman --root /var/cache/x"), else the first of docker and podman
# whose engine answers. When none works, say why for each, in one line apiece, and exit 2 — never
# the raw error of a failed build.
set -euo pipefail

PROBE_TIMEOUT=${CONTAINER_ENGINE_PROBE_TIMEOUT:-20}

# Why `$@ info` does not work, in one line; empty when it works.
problem_with() {
  local said
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "not installed (no $1 command on PATH)"
    return
  fi
  if said=$(timeout "$PROBE_TIMEOUT" "$@" info 2>&1 >/dev/null </dev/null); then
    return
  fi
  said=$(printf '%s\n' "$said" | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c1-160)
  echo "installed, but its engine does not answer (\`$* info\`: ${said:-no output})"
}

if [ -n "${CONTAINER_ENGINE:-}" ]; then
  read -ra engine <<<"$CONTAINER_ENGINE"
  problem=$(problem_with "${engine[@]}")
  if [ -n "$problem" ]; then
    echo "CONTAINER_ENGINE=\"$CONTAINER_ENGINE\": $problem" >&2
    exit 2
  fi
  echo "$CONTAINER_ENGINE"
  exit 0
fi

reasons=()
for candidate in docker podman; do
  problem=$(problem_with "$candidate")
  if [ -z "$problem" ]; then
    echo "$candidate"
    exit 0
  fi
  reasons+=("  $candidate: $problem")
done
{
  echo "no container engine to build the image with:"
  printf '%s\n' "${reasons[@]}"
  echo "install podman (apt-get install podman) or Docker Engine (https://docs.docker.com/engine/install/)"
  echo "and start it, or name one with CONTAINER_ENGINE=docker|podman"
} >&2
exit 2
