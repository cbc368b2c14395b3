#!/usr/bin/env bash
# Fleet-scale figures for docs/BENCHMARKS.md: N simulated devices (`agent simulate`, real agents in
# one process) against the control plane's embedded broker: time until all are online, control
# plane RSS and CPU, and the latency of the device list API, measured in one run.
#   usage: bench/fleet.sh [N]   (default 1000; after make build; ports 127.0.0.1:48080 and :41883)
set -euo pipefail
n=${1:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
export EDGEFLEET_ORT_LIB=$("$root/scripts/fetch-ort.sh")
now_ms() { date +%s%3N; }
"$bin/controlplane" serve --data "$tmp/cp" --http 127.0.0.1:48080 --mqtt-listen 127.0.0.1:41883 --log-level warn >"$tmp/cp.log" 2>&1 &
cp=$!
for _ in $(seq 100); do curl -fs 127.0.0.1:48080/healthz >/dev/null && break; sleep 0.05; done
tok=$(cat "$tmp/cp/admin.token")
rss0=$(awk '/VmRSS/ {print $2}' /proc/$cp/status)
t0=$(now_ms)
"$bin/agent" simulate --count "$n" --broker mqtt://127.0.0.1:41883 --data "$tmp/sim" --telemetry-interval 60s --rate 0.1 >"$tmp/sim.log" 2>&1 &
online=0
until [ "$online" -ge "$n" ]; do
  online=$(curl -fs -H "Authorization: Bearer $tok" "127.0.0.1:48080/api/v1/devices?online=true" | grep -o '"count":[0-9]*' | cut -d: -f2 || echo 0)
  [ $(( $(now_ms) - t0 )) -gt 600000 ] && { echo "only $online of $n online after 10 min"; break; }
  sleep 0.5
done
echo "## fleet of $n simulated devices ($(date -u +%F), $(nproc) cores)"
echo "all $online online after $(( $(now_ms) - t0 )) ms"
sleep 5
cpu0=$(awk '{print $14+$15}' /proc/$cp/stat); sleep 10; cpu1=$(awk '{print $14+$15}' /proc/$cp/stat)
rss=$(awk '/VmRSS/ {print $2}' /proc/$cp/status)
echo "control plane RSS: $rss KiB ($(( (rss-rss0)*1024/n )) bytes per device above the idle $rss0 KiB); CPU over 10 s idle fleet: $(( (cpu1-cpu0) )) ticks of $(getconf CLK_TCK)/s"
for q in "" "?group=default" "?q=sim-0099"; do
  s=$(now_ms); for _ in $(seq 20); do curl -fs -o /dev/null -H "Authorization: Bearer $tok" "127.0.0.1:48080/api/v1/devices$q"; done
  echo "GET /api/v1/devices$q: $(( ($(now_ms) - s) / 20 )) ms mean of 20"
done
