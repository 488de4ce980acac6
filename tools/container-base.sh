#!/usr/bin/env bash
# The container tests' base image, made without any registry: a minimal Debian bookworm root
# from Debian's own packages (debootstrap), imported into podman as localhost/hub-base:bookworm.
# deploy/Dockerfile builds on it with --build-arg BASE=localhost/hub-base:bookworm.
#
# Cached under /var/cache/hub-test (the root as a tar, about 75 MB, and a wheelhouse of the
# hub's dependencies), so only the first run pays for debootstrap (about a minute here).
# Prints the podman flags the tests pass (CONTAINERS_CONF) on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${HUB_TEST_CACHE:-/var/cache/hub-test}
IMAGE=localhost/hub-base:bookworm
TARBALL=$CACHE/bookworm-rootfs.tar
WHEELS=$CACHE/wheels
mkdir -p "$CACHE"

if [ ! -s "$TARBALL" ]; then
  tmp=$CACHE/bookworm-rootfs.tmp
  rm -rf "$tmp"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$tmp" http://deb.debian.org/debian >&2
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
  tar -C "$tmp" -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
  rm -rf "$tmp"
fi

export CONTAINERS_CONF=$ROOT/tests/deploy/containers.conf
if ! podman image exists "$IMAGE"; then
  podman import --change 'CMD ["/bin/bash"]' "$TARBALL" "$IMAGE" >&2
fi

# The hub's wheels for the image's Python (3.11, like this machine's): the build then needs
# no index inside the container. Rebuilt when the lock changes.
stamp=$WHEELS/.lock-$(sha256sum "$ROOT/requirements.lock" | cut -c1-16)
if [ ! -f "$stamp" ]; then
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  # The lock's versions as constraints: pip cannot check a hash for the source directory.
  constraints=$(mktemp)
  sed -E -e '/^[[:space:]]*--hash/d' -e 's/[[:space:]]*\\$//' "$ROOT/requirements.lock" > "$constraints"
  python3 -m pip wheel -q -w "$WHEELS" -c "$constraints" "$ROOT" setuptools wheel >&2
  rm -f "$constraints"
  rm -f "$WHEELS"/hub-*.whl
  touch "$stamp"
fi
echo "$IMAGE $WHEELS"
