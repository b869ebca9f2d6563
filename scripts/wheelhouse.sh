#!/usr/bin/env bash
# The local wheelhouse (.tubelens/wheelhouse): every wheel the images install, for builds that reach no PyTorch
# index (torch comes from the folders PIP_FIND_LINKS names, e.g. a local disk). The images build from it with
# --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheelhouse. pip skips what is already there.
set -euo pipefail
WHEELHOUSE="${WHEELHOUSE:-.tubelens/wheelhouse}"
PIP="${PIP:-.venv/bin/pip}"
mkdir -p "$WHEELHOUSE"
start=$(date +%s)
services=$(ls -d services/*/ | grep -v '^$')
# The rooms' requirements (the rooms themselves are built in the image), the build backend, pip for the local
# base's venv (made --without-pip there), and what the TorchServe image installs.
torchserve=$(sed -n 's/.*pip install \(torchserve==[^ ]*\) \(numpy==[^ ]*\) \(pillow==[^ ]*\).*/\1 \2 \3/p' \
  deploy/torchserve/Dockerfile)
"$PIP" wheel --quiet --wheel-dir "$WHEELHOUSE" --find-links "$WHEELHOUSE" ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"} \
  . ./modelkit $services pip "setuptools>=68" wheel $torchserve
# The rooms' own wheels are rebuilt by every image from its sources; stale copies here must not shadow them.
rm -f "$WHEELHOUSE"/tubelens-*.whl "$WHEELHOUSE"/tubelens_*.whl
echo "$WHEELHOUSE: $(ls "$WHEELHOUSE" | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1), $(( $(date +%s) - start )) s"
