#!/usr/bin/env bash
# Installs the Debian packages the tests and tools need (Mosquitto and its clients for the broker
# tests, protoc and the ONNX schema for the generated protobuf types, curl, npm for fetching ONNX
# Runtime and sample models). As root it installs what is missing; otherwise it prints the command.
set -euo pipefail
pkgs=(mosquitto mosquitto-clients curl protobuf-compiler libonnx-dev iproute2 ca-certificates
  gcc-aarch64-linux-gnu qemu-user-static binutils file dpkg-dev chromium fonts-dejavu-core prometheus nats-server
  etcd-server postgresql)
missing=()
# npm may come from a non-Debian Node.js install (which conflicts with Debian's npm package):
# only ask for Debian's when no npm is on the PATH.
command -v npm >/dev/null || missing+=(npm)
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
