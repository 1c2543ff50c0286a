#!/usr/bin/env bash
# Build the agent image from deployments/Dockerfile (`make image`, `make image-offline`).
#
#   scripts/build-image.sh             the Dockerfile's pinned upstream base (pulled if missing)
#   scripts/build-image.sh --offline   no registry: the base is made from Debian packages of the
#                                      release the Dockerfile names, imported into the engine
#
# Both build the Python wheels on the host first, with the host's pip (its index, proxy and CA
# bundle), into deployments/wheels/, so pip inside the build needs no index. The image is tagged
# $IMAGE and saved as a docker-archive at $IMAGE_ARCHIVE (what the lab and the root tests load into
# their own podman storage).
#
# Environment: CONTAINER_ENGINE (see scripts/container-engine.sh), IMAGE, IMAGE_ARCHIVE (empty: no
# archive), IMAGE_CACHE_DIR (the Debian base, kept between runs; default .cache/image),
# IMAGE_BASE_MAX_AGE_DAYS (rebuild an older base, for security updates; default 7), DEBIAN_MIRROR,
# DEBIAN_SECURITY_MIRROR, PYTHON (the host Python whose pip fetches the wheels), IMAGE_PRUNE=1
# (remove the engine's untagged images afterwards: only for an engine state of its own, as CI's).
set -euo pipefail
cd "$(dirname "$0")/.."

offline=0
case "${1:-}" in
  --offline) offline=1 ;;
  "") ;;
  *) echo "usage: $0 [--offline]" >&2; exit 2 ;;
esac

IMAGE=${IMAGE:-ghcr.io/minicni/minicni:dev}
IMAGE_ARCHIVE=${IMAGE_ARCHIVE-build/image/minicni.tar}
IMAGE_CACHE_DIR=${IMAGE_CACHE_DIR:-.cache/image}
IMAGE_BASE_MAX_AGE_DAYS=${IMAGE_BASE_MAX_AGE_DAYS:-7}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DOCKERFILE=deployments/Dockerfile
WHEELS=deployments/wheels
# What the agent needs at run time besides python3: iptables (both backends are in the package),
# netbase (/etc/protocols for iptables). python3-venv: the build stage's venv and pip.
BASE_PACKAGES=(python3 python3-venv iptables netbase)
BASE_RECIPE=3 # bump when the way the base is made changes, so cached bases are rebuilt

say() { echo "image: $*" >&2; }
die() { echo "image: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

started=$(now)
engine_command=$(scripts/container-engine.sh) || exit 2
read -ra engine <<<"$engine_command"
engine_name=$(basename "${engine[0]}")

# The release and the Python minor version, from the Dockerfile's pinned base (not restated).
base_default=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$DOCKERFILE")
[[ $base_default =~ ^python:([0-9]+)\.([0-9]+)\.[0-9]+-slim-([a-z]+)$ ]] ||
  die "$DOCKERFILE: cannot read the Python version and Debian release from PYTHON_IMAGE=$base_default"
py_major=${BASH_REMATCH[1]} py_minor=${BASH_REMATCH[2]} release=${BASH_REMATCH[3]}

# --- the wheels, on the host -----------------------------------------------------------------
build_wheels() {
  local python=${PYTHON:-}
  if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
  fi
  "$python" -m pip --version >/dev/null 2>&1 ||
    die "no pip for $python: install python3-pip (apt-get install python3-pip), or set PYTHON"
  local arch project tmp stamp
  arch=$(uname -m)
  # The same dependencies for the same interpreter: the wheels there already are the ones.
  stamp="python=$py_major.$py_minor arch=$arch pyproject=$(sha256sum pyproject.toml | cut -c1-16)"
  if [ -f "$WHEELS/.stamp" ] && [ "$(cat "$WHEELS/.stamp")" = "$stamp" ] &&
    ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    return
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  rm -f "$WHEELS"/*.whl "$WHEELS/.stamp"
  # The project's own wheel only tells pip the dependencies of its extras; the image builds the
  # project from its sources (the build context).
  "$python" -m pip wheel -q --no-deps --wheel-dir "$tmp" . >"$tmp/log" 2>&1 ||
    { cat "$tmp/log" >&2; die "building the project's wheel failed"; }
  project=$(ls "$tmp"/minicni-*.whl)
  # Wheels for the image's interpreter (CPython $py_major.$py_minor, glibc), whatever the host runs.
  "$python" -m pip download -q --dest "$WHEELS" --only-binary=:all: \
    --implementation cp --python-version "$py_major.$py_minor" --abi "cp$py_major$py_minor" \
    --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" \
    --platform "manylinux_2_28_$arch" --platform "manylinux1_$arch" --platform "manylinux_2_5_$arch" \
    "$project[agent,lab]" "setuptools>=77" >"$tmp/log" 2>&1 ||
    { cat "$tmp/log" >&2; die "fetching the wheels with $python -m pip failed"; }
  rm -f "$WHEELS"/minicni-*.whl
  echo "$stamp" >"$WHEELS/.stamp"
}

# --- the Debian base (offline) ----------------------------------------------------------------
# Host apt options that say how this machine reaches its mirror (proxies, CA, snapshot dates).
host_apt_options() {
  command -v apt-config >/dev/null 2>&1 || return 0
  apt-config dump |
    grep -E '^Acquire::((https?|ftp)::(Proxy|proxy|CaInfo|Verify-Peer|Verify-Host)|Check-Valid-Until|Check-Date|Retries|ForceIPv4) ' || true
}

build_base() {
  command -v mmdebstrap >/dev/null 2>&1 ||
    die "make image-offline makes its base with mmdebstrap: apt-get install mmdebstrap"
  local sources=(
    "deb $DEBIAN_MIRROR $release main"
    "deb $DEBIAN_MIRROR $release-updates main"
    "deb $DEBIAN_SECURITY_MIRROR $release-security main"
  )
  local aptopts=() line
  while IFS= read -r line; do
    [ -n "$line" ] && aptopts+=(--aptopt="$line")
  done < <(host_apt_options)
  local recipe key
  recipe="recipe=$BASE_RECIPE release=$release python=$py_major.$py_minor arch=$(uname -m)
packages=${BASE_PACKAGES[*]}
sources=${sources[*]}"
  key=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
  base_tar="$IMAGE_CACHE_DIR/base-$release-$key.tar"
  base_ref="minicni-base:$release-$key"
  mkdir -p "$IMAGE_CACHE_DIR"
  local fresh=0
  if [ -f "$base_tar" ] && [ -z "$(find "$base_tar" -mtime +"$IMAGE_BASE_MAX_AGE_DAYS")" ]; then
    say "base $base_ref: cached in $base_tar"
  else
    say "base $base_ref: mmdebstrap $release (${BASE_PACKAGES[*]}) ..."
    local t0 partial="$base_tar.partial"
    t0=$(now)
    rm -f "$partial"
    # minimal: apt variant (no init system, no docs, no man pages, no translations); /usr merged
    # by mmdebstrap's hook rather than the usrmerge package (which pulls in perl, ~50 MB); the
    # customize hook checks the interpreter is the one the wheels were fetched for.
    if ! mmdebstrap --quiet --variant=apt --format=tar \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" \
      "${aptopts[@]}" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook="chroot \"\$1\" python3 -c 'import sys; sys.exit(sys.version_info[:2] != ($py_major, $py_minor))' || { echo \"$release's python3 is not $py_major.$py_minor\" >&2; exit 1; }" \
      "$release" "$partial" "${sources[@]}" </dev/null >"$IMAGE_CACHE_DIR/mmdebstrap.log" 2>&1; then
      rm -f "$partial"
      tail -n 20 "$IMAGE_CACHE_DIR/mmdebstrap.log" >&2
      die "mmdebstrap failed (whole log: $IMAGE_CACHE_DIR/mmdebstrap.log)"
    fi
    mv -f "$partial" "$base_tar"
    # older bases of this release are of no further use
    find "$IMAGE_CACHE_DIR" -maxdepth 1 -name "base-$release-*.tar" ! -name "$(basename "$base_tar")" -delete
    fresh=1
    say "base made in $(since "$t0") ($(du -h "$base_tar" | cut -f1))"
  fi
  if [ "$engine_name" = podman ]; then base_ref="localhost/$base_ref"; fi
  if [ "$fresh" = 1 ] || ! "${engine[@]}" image inspect "$base_ref" >/dev/null 2>&1; then
    "${engine[@]}" import "$base_tar" "$base_ref" >/dev/null
    say "base imported into $engine_name as $base_ref"
  fi
}

# --- the image ------------------------------------------------------------------------------
build_wheels
say "wheels for CPython $py_major.$py_minor in $WHEELS ($(ls "$WHEELS"/*.whl | wc -l) files, $(since "$started"))"

build_args=()
if [ "$offline" = 1 ]; then
  build_base
  # nothing in the build needs a network: no bridge, no firewall rules, no registry
  build_args+=(--build-arg "PYTHON_IMAGE=$base_ref" --network=none)
  if [ "$engine_name" = podman ]; then build_args+=(--pull=never); fi
fi
if [ "$engine_name" = podman ]; then
  build_args+=(--ignorefile "$DOCKERFILE.dockerignore")
fi

say "building $IMAGE with $engine_name ..."
t0=$(now)
"${engine[@]}" build -f "$DOCKERFILE" -t "$IMAGE" "${build_args[@]}" . ||
  die "$engine_name build failed (its output is above)"
say "built $IMAGE in $(since "$t0")"

# IMAGE_PRUNE=1 (CI, whose engine state is its own): drop what earlier builds left untagged, but
# keep this build's layers (the build stage is tagged first) for the next run's cache.
if [ "${IMAGE_PRUNE:-0}" = 1 ]; then
  "${engine[@]}" build -q --target build -t minicni-build-stage:cache -f "$DOCKERFILE" \
    "${build_args[@]}" . >/dev/null
  "${engine[@]}" image prune -f >/dev/null
fi

if [ -n "$IMAGE_ARCHIVE" ]; then
  mkdir -p "$(dirname "$IMAGE_ARCHIVE")"
  save=("${engine[@]}" save -o "$IMAGE_ARCHIVE.partial")
  if [ "$engine_name" = podman ]; then save+=(--format docker-archive); fi
  rm -f "$IMAGE_ARCHIVE.partial"
  "${save[@]}" "$IMAGE" >/dev/null
  mv -f "$IMAGE_ARCHIVE.partial" "$IMAGE_ARCHIVE"
  say "saved as $IMAGE_ARCHIVE ($(du -h "$IMAGE_ARCHIVE" | cut -f1))"
fi
size=$("${engine[@]}" image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null || echo 0)
say "$IMAGE: $((size / 1000000)) MB, done in $(since "$started")"

# podman writes, for root and whatever --root says, a blob-info cache in /var/lib/containers/cache
# and a lock in /var/cache/containers: on a host with no podman store of its own they are only
# this build's, and go (as the image lab's teardown removes them).
if [ "$engine_name" = podman ] && [ ! -e /var/lib/containers/storage ]; then
  for leftover in /var/lib/containers:cache /var/cache/containers:short-name-aliases.conf.lock; do
    dir=${leftover%%:*}
    if [ "$(ls -A "$dir" 2>/dev/null)" = "${leftover#*:}" ]; then rm -rf "$dir"; fi
  done
fi
