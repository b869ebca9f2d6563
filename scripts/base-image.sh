#!/usr/bin/env bash
# The local base image (tubelens-base:bookworm): Debian bookworm's minimal root with Python 3.11, made by debootstrap
# from the machine's own Debian mirror, for machines that reach no container registry. Skipped when already there.
# The production build keeps the pinned upstream python base (the Dockerfiles' default BASE).
set -euo pipefail
source "$(dirname "$0")/podman-env.sh"
IMAGE="${1:-tubelens-base:bookworm}"
if podman image exists "$IMAGE"; then echo "$IMAGE: cached"; exit 0; fi
mirror=$(grep -h -o -E 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
  | head -1 | tr -d ' ' || true)
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs=$(mktemp -d "$TUBELENS_CONTAINERS/rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
start=$(date +%s)
# python3.11-venv in --include breaks debootstrap: the Dockerfiles make the venv --without-pip and take pip from
# the wheelhouse instead.
debootstrap --variant=minbase --include=python3.11,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
echo "$IMAGE: made in $(( $(date +%s) - start )) s from $mirror"
