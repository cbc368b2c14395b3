#!/usr/bin/env bash
# Figures for docs/BENCHMARKS.md: agent RSS idle, control-plane RSS with 3 agents, time from agent
# start to "online" in the registry, bundle build time and size for the real models, and bundle
# verify throughput against sha256sum of the same file, all measured in one run on this machine.
#   usage: bench/foundation.sh   (after make build; uses ports 127.0.0.1:38080 and :31883)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
export EDGEFLEET_ORT_LIB=$("$root/scripts/fetch-ort.sh")
models=$("$root/scripts/fetch-models.sh")
rss() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }
now_ms() { date +%s%3N; }

"$bin/controlplane" serve --data "$tmp/cp" --http 127.0.0.1:38080 --mqtt-listen 127.0.0.1:31883 >"$tmp/cp.log" 2>&1 &
cp=$!
for _ in $(seq 100); do curl -fs 127.0.0.1:38080/healthz >/dev/null && break; sleep 0.05; done
tok=$(cat "$tmp/cp/admin.token")
echo "## foundation ($(date -u +%F), $(nproc) cores, $(uname -m))"
for i in 1 2 3; do
  t0=$(now_ms)
  "$bin/agent" run --id bench-$i --broker mqtt://127.0.0.1:31883 --data "$tmp/a$i" --listen "" >"$tmp/a$i.log" 2>&1 &
  pids[$i]=$!
  until curl -fs -H "Authorization: Bearer $tok" 127.0.0.1:38080/api/v1/devices/bench-$i 2>/dev/null | grep -q '"online":true'; do sleep 0.005; done
  echo "agent bench-$i: start to online in registry: $(( $(now_ms) - t0 )) ms"
done
sleep 3
for i in 1 2 3; do echo "agent bench-$i idle RSS (no model): $(rss ${pids[$i]}) KiB"; done
echo "control plane RSS with 3 agents: $(rss $cp) KiB"

"$bin/controlplane" keys generate --out "$tmp/keys" >/dev/null
for m in hello_deepa ocr_cls ocr_det silero_vad_v5; do
  extra=()
  # silero's batch dimension sits second in its state input; name the shapes.
  [ $m = silero_vad_v5 ] && extra=(--input-shape input=1x512 --input-shape state=2x1x128)
  t0=$(now_ms)
  if "$bin/controlplane" bundle build --model "$models/$m.onnx" --name "$(echo $m | tr _ -)" --version 1.0.0 --key "$tmp/keys/release.key" --out "$tmp/$m.bundle" --quiet "${extra[@]}" >/dev/null 2>"$tmp/build.err"; then
    echo "bundle build $m: $(( $(now_ms) - t0 )) ms, model $(stat -c %s "$models/$m.onnx") B, bundle $(stat -c %s "$tmp/$m.bundle") B"
  else
    echo "bundle build $m: failed: $(tail -1 "$tmp/build.err")"
  fi
done
f=$tmp/ocr_det.bundle
size=$(stat -c %s "$f")
t0=$(now_ms); for _ in $(seq 20); do "$bin/controlplane" bundle verify --key "$tmp/keys/release.pub" "$f" >/dev/null; done; tv=$(( $(now_ms) - t0 ))
t0=$(now_ms); for _ in $(seq 20); do sha256sum "$f" >/dev/null; done; ts=$(( $(now_ms) - t0 ))
echo "verify ocr_det bundle ($size B) x20: $tv ms = $(( size*20/1000/tv )) MB/s; sha256sum x20: $ts ms = $(( size*20/1000/ts )) MB/s; ratio verify/sha256sum time $(awk "BEGIN{printf \"%.2f\", $tv/$ts}")"
