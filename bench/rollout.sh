#!/usr/bin/env bash
# A 4-stage rollout (1 device, 5%, 25%, 100%) of a real bundle to N simulated devices (`agent
# simulate`, real agents in one process, with inference traffic), against the embedded broker:
# time to install the baseline everywhere, time of the rollout, control-plane CPU and RSS.
#   usage: bench/rollout.sh [N] [BAKE]   (default 1000 devices, 10s bakes; after make build)
set -euo pipefail
n=${1:-1000}; bake=${2:-10s}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
export EDGEFLEET_ORT_LIB=$("$root/scripts/fetch-ort.sh")
models=$("$root/scripts/fetch-models.sh")
now_ms() { date +%s%3N; }
"$bin/controlplane" keys generate --out "$tmp/keys" >/dev/null
"$bin/controlplane" serve --data "$tmp/cp" --http 127.0.0.1:48081 --mqtt-listen 127.0.0.1:41884 --trust "$tmp/keys/release.pub" --log-level warn >"$tmp/cp.log" 2>&1 &
cp=$!
for _ in $(seq 100); do curl -fs 127.0.0.1:48081/healthz >/dev/null && break; sleep 0.05; done
tok=$(cat "$tmp/cp/admin.token")
cli() { "$bin/controlplane" --server http://127.0.0.1:48081 --token "$tok" "$@"; }
for v in 1.0.0 1.1.0; do
  "$bin/controlplane" bundle build --model "$models/hello_deepa.onnx" --name wake --version $v --key "$tmp/keys/release.key" --out "$tmp/wake-$v.bundle" --quiet >/dev/null
  cli bundles push "$tmp/wake-$v.bundle" >/dev/null
done
"$bin/agent" simulate --count "$n" --broker mqtt://127.0.0.1:41884 --data "$tmp/sim" --groups line-a=50%,line-b=50% \
  --trust "$tmp/keys/release.pub" --control-key "$tmp/cp/control.pub" --telemetry-interval 5s --rate 1 >"$tmp/sim.log" 2>&1 &
sim=$!
count() { curl -fs -H "Authorization: Bearer $tok" "127.0.0.1:48081/api/v1/devices$1" | grep -o "$2" | wc -l; }
t0=$(now_ms)
until [ "$(count '?online=true' '"online":true')" -ge "$n" ]; do sleep 1; done
echo "## 4-stage rollout to $n simulated devices ($(date -u +%F), $(nproc) cores, bakes $bake)"
echo "online: $(( ($(now_ms) - t0) / 1000 )) s"
t0=$(now_ms)
cli groups assign line-a wake@1.0.0 >/dev/null; cli groups assign line-b wake@1.0.0 >/dev/null
until [ "$(count '' '"state":"committed"')" -ge "$n" ]; do sleep 2; done
echo "baseline wake@1.0.0 on all $n devices: $(( ($(now_ms) - t0) / 1000 )) s"
sleep 15 # a few telemetry windows on the baseline
cpu0=$(awk '{print $14+$15}' /proc/$cp/stat)
t0=$(now_ms)
# Gates look at 30 samples per side (a device sends about one request a second here) and twice per
# stage, so the figure measures the control plane, not how long a lone canary takes to be heard.
cat >"$tmp/spec.json" <<JSON
{"bundle": "wake@1.1.0", "target": {"groups": ["line-a", "line-b"]},
 "stages": [{"devices": 1, "bake": "$bake"}, {"percent": 5, "bake": "$bake"}, {"percent": 25, "bake": "$bake"}, {"percent": 100, "bake": "$bake"}],
 "gates": {"min_samples": 30, "evaluations": 2, "p95_latency_max_ratio": 3}}
JSON
id=$(cli rollouts create --spec "$tmp/spec.json" | grep -o '"id": *"[^"]*"' | head -1 | cut -d'"' -f4)
peak=0
while :; do
  state=$(curl -fs -H "Authorization: Bearer $tok" "127.0.0.1:48081/api/v1/rollouts/$id" | grep -o '"state": *"[^"]*"' | head -1 | cut -d'"' -f4)
  r=$(awk '/VmRSS/ {print $2}' /proc/$cp/status); [ "$r" -gt "$peak" ] && peak=$r
  case "$state" in completed|rolled_back|aborted|paused) break ;; esac
  sleep 2
done
ms=$(( $(now_ms) - t0 ))
cpu1=$(awk '{print $14+$15}' /proc/$cp/stat)
echo "rollout $id: $state in $(( ms / 1000 )) s (4 bakes of $bake included)"
echo "control plane during the rollout: CPU $(( (cpu1-cpu0) * 1000 / ms ))% of one core on average, peak RSS $(( peak / 1024 )) MiB"
echo "simulator RSS: $(( $(awk '/VmRSS/ {print $2}' /proc/$sim/status) / 1024 )) MiB for $n agents"
