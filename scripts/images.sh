#!/usr/bin/env bash
# `make images`: every image built here from the local Debian base and the local wheelhouse (scripts/base-image.sh,
# scripts/wheelhouse.sh), into the project-local store (.tubelens/containers), with each image's size and build
# time. The CUDA trainer (services/trainer/Dockerfile.gpu) stays text-only: its nvidia/cuda base cannot be pulled or
# made here. Usage: scripts/images.sh [crawler preprocessor embedding trainer predictor torchserve]
set -euo pipefail
source "$(dirname "$0")/podman-env.sh"
BASE="${BASE:-tubelens-base:bookworm}"
WHEELHOUSE="${WHEELHOUSE:-$PWD/.tubelens/wheelhouse}"
# Tagged as the chart names them (its appVersion), so that what the chart renders runs as it is.
TAG="${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/tubelens/Chart.yaml)}"
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(crawler preprocessor embedding trainer predictor torchserve)
local_build=(--isolation chroot --network host --layers --build-arg "BASE=$BASE"
  --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheelhouse --volume "$WHEELHOUSE:/wheelhouse:ro")
report=()
for image in "${images[@]}"; do
  start=$(date +%s)
  if [ "$image" = torchserve ]; then
    buildah bud --quiet "${local_build[@]}" -f deploy/torchserve/Dockerfile -t "tubelens-torchserve:$TAG" . >/dev/null
  else
    buildah bud --quiet "${local_build[@]}" --build-arg "SERVICE=$image" -t "tubelens-$image:$TAG" . >/dev/null
  fi
  size=$(podman image inspect --format '{{.Size}}' "tubelens-$image:$TAG")
  report+=("$(printf '%-28s %6d MB %5d s' "tubelens-$image:$TAG" $(( size / 1000000 )) $(( $(date +%s) - start )))")
  echo "${report[-1]}"
done
printf '%s\n' "--" "${report[@]}"
