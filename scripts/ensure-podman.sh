#!/usr/bin/env bash
# `make images` and `make smoke` build and run containers with Debian's podman, buildah and runc (runc: crun refuses
# this machine's hybrid cgroups), and make the local base image with debootstrap. Installs what is missing, as
# scripts/ensure-java.sh does for Java; a no-op when everything is there.
set -euo pipefail
missing=()
for tool in podman buildah runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} for the images" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "the images need ${missing[*]}: install them (Debian: apt-get install ${missing[*]}) and re-run" >&2
  exit 1
fi
