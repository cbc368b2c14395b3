#!/usr/bin/env bash
# Cross-builds the linux/arm64 binaries (agent and controlplane) with cgo, using Debian's
# gcc-aarch64-linux-gnu. cgo is needed because onnxruntime_go is a cgo package; it dlopen()s the
# ONNX Runtime library at run time, so nothing of ORT is needed here: the binaries link only libc.
#   usage: scripts/build-arm64.sh [OUTDIR]        (default bin/linux-arm64)
#   env:   VERSION (stamped into the binaries), GO (default go), CC_ARM64 (default aarch64-linux-gnu-gcc),
#          PKG_LDFLAGS (extra -ldflags; default strips the symbol table and DWARF, -s -w)
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
out="${1:-bin/linux-arm64}"
go="${GO:-go}"
cc="${CC_ARM64:-aarch64-linux-gnu-gcc}"
version="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
if ! command -v "$cc" >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "build-arm64: installing gcc-aarch64-linux-gnu" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu >/dev/null ||
      { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu >/dev/null; }
  else
    echo "build-arm64: $cc is missing; run: sudo apt-get install -y gcc-aarch64-linux-gnu" >&2
    exit 1
  fi
fi
mkdir -p "$out"
# -s -w: these binaries go to devices, where 40% smaller matters more than a symbolised core dump;
# panics still print file:line (that comes from pclntab, not DWARF).
CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC="$cc" \
  "$go" build -ldflags "${PKG_LDFLAGS:--s -w} -X github.com/edgefleet/edgefleet/internal/cli.Version=$version" \
  -o "$out/" ./cmd/agent ./cmd/controlplane
echo "$out"
