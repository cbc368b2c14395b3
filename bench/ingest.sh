#!/usr/bin/env bash
# Persisted ingest rate vs. the raw broker rate, in one run (issue 7's closing figure).
#  1. Raw broker rate: plain paho publishers through the embedded broker to its in-process handler,
#     and through a stock Mosquitto to a paho subscriber (bench/ingest).
#  2. Persisted rate: N simulated devices (`agent simulate`, health every 100 ms) against the
#     control plane's embedded broker; the control plane is frozen (SIGSTOP) for a while so every
#     device builds a backlog in its spool, then thawed: the devices drain at 50 messages/s each and
#     the control plane commits in batches. The rate is edgefleet_ingest_committed_total per second.
#   usage: bench/ingest.sh [N] [FREEZE_SECONDS]   (default 200 devices, 20 s; after make build;
#          ports 127.0.0.1:48083 and :41886)
set -euo pipefail
n=${1:-200}; freeze=${2:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
tmp=$(mktemp -d); trap 'kill -CONT $cp 2>/dev/null; kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
export EDGEFLEET_ORT_LIB=$("$root/scripts/fetch-ort.sh")
echo "## persisted ingest vs raw broker rate ($(date -u +%F), $(nproc) cores)"
(cd "$root" && GOTOOLCHAIN=local go run ./bench/ingest -messages 50000 -publishers 20 -size 500)
"$bin/controlplane" serve --data "$tmp/cp" --http 127.0.0.1:48083 --mqtt-listen 127.0.0.1:41886 --log-level warn >"$tmp/cp.log" 2>&1 &
cp=$!
for _ in $(seq 100); do curl -fs 127.0.0.1:48083/healthz >/dev/null && break; sleep 0.05; done
tok=$(cat "$tmp/cp/admin.token")
committed() { curl -fs -H "Authorization: Bearer $tok" 127.0.0.1:48083/metrics | awk '$1 == "edgefleet_ingest_committed_total" {print $2}'; }
"$bin/agent" simulate --count "$n" --broker mqtt://127.0.0.1:41886 --data "$tmp/sim" --telemetry-interval 100ms >"$tmp/sim.log" 2>&1 &
sim=$!
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
until [ "$(curl -fs -H "Authorization: Bearer $tok" "127.0.0.1:48083/api/v1/devices?online=true" | grep -o '"count":[0-9]*' | cut -d: -f2)" = "$n" ]; do sleep 0.5; done
sleep 5
c0=$(committed); sleep 5; c1=$(committed)
live=$(( (c1 - c0) / 5 ))
kill -STOP $cp
sleep "$freeze"
kill -CONT $cp
t0=$(date +%s%N); cp0=$(ticks $cp); sim0=$(ticks $sim)
# committed counter every 250 ms for 30 s after the thaw
for _ in $(seq 120); do echo "$(date +%s.%N) $(committed)"; sleep 0.25; done >"$tmp/series"
t1=$(date +%s%N); cp1=$(ticks $cp); sim1=$(ticks $sim)
hz=$(getconf CLK_TCK)
python3 - "$tmp/series" "$live" "$n" "$freeze" "$(( (cp1-cp0) * 1000000000 / hz * 100 / (t1-t0) ))" "$(( (sim1-sim0) * 1000000000 / hz * 100 / (t1-t0) ))" <<'PY'
import sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
live, n, freeze = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cpu_cp, cpu_sim = sys.argv[5], sys.argv[6]
rates = [((rows[i][1] - rows[i - 4][1]) / (rows[i][0] - rows[i - 4][0])) for i in range(4, len(rows))]
peak = max(rates)
busy = [i for i in range(1, len(rows)) if (rows[i][1] - rows[i - 1][1]) / (rows[i][0] - rows[i - 1][0]) > 2 * live]
drained = rows[busy[-1]][1] - rows[busy[0] - 1][1] if busy else 0
span = rows[busy[-1]][0] - rows[busy[0] - 1][0] if busy else 1
print(f"simulator: {n} devices, live telemetry {live} msg/s committed; control plane frozen {freeze} s")
print(f"persisted ingest while the backlog drained: {drained:.0f} messages in {span:.1f} s = {drained / span:.0f} msg/s mean, {peak:.0f} msg/s peak (1 s)")
print(f"CPU after the thaw: control plane {cpu_cp}% of one core, simulator {cpu_sim}%")
PY
