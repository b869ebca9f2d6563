#!/usr/bin/env bash
# TorchServe's frontend is Java: make sure a Java 17+ runtime is on PATH, installing Debian's when we can.
set -euo pipefail
if command -v java >/dev/null 2>&1; then
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  if [ "${major:-0}" -ge 17 ]; then exit 0; fi
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing openjdk-17-jre-headless for TorchServe" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
else
  echo "TorchServe needs Java 17+: install openjdk-17-jre-headless (or any JRE 17+) and re-run" >&2
  exit 1
fi
