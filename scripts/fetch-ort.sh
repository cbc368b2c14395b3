#!/usr/bin/env bash
# Fetches the official ONNX Runtime shared library from the npm registry's onnxruntime-node package
# (there is no Debian package) into a cache folder, and prints the library's path.
# The package is unpacked with `npm pack` + tar, never `npm install`: its postinstall script downloads
# from the internet, which edge sites and CI do not have.
#   usage: scripts/fetch-ort.sh [x64|arm64]     (default: this machine's arch)
#   env:   EDGEFLEET_CACHE (default ~/.cache/edgefleet), ORT_VERSION (default 1.24.1)
set -euo pipefail
ver="${ORT_VERSION:-1.24.1}"
cache="${EDGEFLEET_CACHE:-$HOME/.cache/edgefleet}"
arch="${1:-}"
if [ -z "$arch" ]; then
  case "$(uname -m)" in
    x86_64|amd64) arch=x64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) echo "fetch-ort: unsupported machine $(uname -m); pass x64 or arm64" >&2; exit 2 ;;
  esac
fi
dest="$cache/ort/$ver/linux-$arch"
lib="$dest/libonnxruntime.so.1"
if [ -s "$lib" ]; then echo "$lib"; exit 0; fi
command -v npm >/dev/null || { echo "fetch-ort: npm is needed (apt-get install -y npm)" >&2; exit 1; }
mkdir -p "$dest"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "fetch-ort: downloading onnxruntime-node@$ver from the npm registry" >&2
(cd "$tmp" && npm pack --silent "onnxruntime-node@$ver" >/dev/null 2>"$tmp/npm.err") || { cat "$tmp/npm.err" >&2; exit 1; }
tar -xzf "$tmp/onnxruntime-node-$ver.tgz" -C "$tmp" "package/bin/napi-v6/linux/$arch/"
src="$tmp/package/bin/napi-v6/linux/$arch/libonnxruntime.so.1"
[ -s "$src" ] || { echo "fetch-ort: $src missing from the package" >&2; exit 1; }
cp "$src" "$lib.tmp" && mv "$lib.tmp" "$lib"
echo "$lib"
