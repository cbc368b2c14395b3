#!/usr/bin/env bash
# One machine at scale (issue 12): N simulated devices (`agent simulate`: real agents in one
# process, sharing one ONNX Runtime session per bundle) against the control plane, with the
# embedded broker or Mosquitto, telemetry every 60 s. Measured in one run:
#   1. the reference: the raw broker alone (bare embedded broker, or a bare Mosquitto) with N idle
#      MQTT clients: broker RSS and CPU;
#   2. the fleet: time until all N are online, control plane RSS and CPU with the fleet idle,
#      latency of the device list (paged and filtered, and unpaged);
#   3. a group assignment of a real bundle (hello_deepa) to all N, then a 4-stage rollout of the
#      next version (1 device, 5%, 25%, 100%): times, control plane CPU and peak RSS; a 20 s CPU
#      profile of the control plane during the rollout (top functions).
#   usage: bench/scale.sh [N] [embedded|mosquitto] [BAKE]   (default 1000 embedded 60s; after make build)
#   env: RATE (inferences per second per device, 0.2), ROLLOUT=0 (skip part 3)
set -euo pipefail
n=${1:-1000}; mode=${2:-embedded}; bake=${3:-60s}
rate=${RATE:-0.2} # inferences per second per device
rollout=${ROLLOUT:-1} # ROLLOUT=0: stop after the idle-fleet figures (parts 1 and 2)
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
tmp=$(mktemp -d)
# Mosquitto is started in a command substitution, so it is not one of this shell's jobs: its pids
# are kept in $tmp/pids.
trap 'kill $(jobs -p) $(cat "$tmp/pids" 2>/dev/null) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
export EDGEFLEET_ORT_LIB=$("$root/scripts/fetch-ort.sh")
models=$("$root/scripts/fetch-models.sh")
(cd "$root" && GOTOOLCHAIN=local go build -o "$tmp/brokerref" ./bench/brokerref)
now_ms() { date +%s%3N; }
rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }       # KiB
ticks() { awk '{print $14+$15}' /proc/$1/stat; }          # user+system, CLK_TCK per second
hz=$(getconf CLK_TCK)
pct() { echo $(( ($2 - $1) * 100 * 1000 / hz / $3 )); }   # ticks0 ticks1 ms -> % of one core
mosq() { # port -> pid of a bare Mosquitto
  cat >"$tmp/mosq-$1.conf" <<CONF
listener $1 127.0.0.1
allow_anonymous true
persistence false
# The control plane reads the whole fleet on one subscription: with Mosquitto's default queue of
# 1,000 messages a client, a fleet of 10,000 connecting at once overflows it, status messages are
# dropped and their devices stay offline in the registry until they reconnect.
max_queued_messages ${MOSQ_QUEUE:-100000}
CONF
  mosquitto -c "$tmp/mosq-$1.conf" >"$tmp/mosq-$1.log" 2>&1 &
  echo $! | tee -a "$tmp/pids"
}
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; }

echo "## $n devices, $mode broker ($(date -u +%F), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start)"

# 1. The reference: the raw broker with N idle clients.
if [ "$mode" = mosquitto ]; then ref=$(mosq 41890); else "$tmp/brokerref" serve --listen 127.0.0.1:41890 >"$tmp/ref.log" 2>&1 & ref=$!; fi
wait_port 41890; sleep 1
r0=$(rss $ref)
"$tmp/brokerref" idle --broker mqtt://127.0.0.1:41890 --count "$n" >"$tmp/idle.log" 2>&1 &
idle=$!
until grep -q connected "$tmp/idle.log"; do sleep 0.5; done
sleep 5
c0=$(ticks $ref); sleep 20; c1=$(ticks $ref)
r1=$(rss $ref)
echo "- reference, raw $mode broker with $(cut -d' ' -f2 "$tmp/idle.log") idle clients: RSS $(( r1/1024 )) MiB ($(( (r1-r0)*1024/n )) B per client above the empty broker's $(( r0/1024 )) MiB); CPU $(pct $c0 $c1 20000)% of one core"
kill $idle $ref; wait $idle $ref 2>/dev/null || true

# 2. The fleet.
extra=(); brokerurl=mqtt://127.0.0.1:41891
if [ "$mode" = mosquitto ]; then bpid=$(mosq 41891); wait_port 41891; extra=(--broker "$brokerurl"); fi
"$bin/controlplane" keys generate --out "$tmp/keys" >/dev/null
"$bin/controlplane" serve --data "$tmp/cp" --http 127.0.0.1:48091 --mqtt-listen 127.0.0.1:41891 "${extra[@]}" \
  --trust "$tmp/keys/release.pub" --pprof 127.0.0.1:46091 --log-level warn >"$tmp/cp.log" 2>&1 &
cp=$!
for _ in $(seq 1200); do curl -fs 127.0.0.1:48091/healthz >/dev/null && break; sleep 0.05; done
tok=$(cat "$tmp/cp/admin.token")
api() { curl -fs -H "Authorization: Bearer $tok" "127.0.0.1:48091/api/v1/$1"; }
cli() { "$bin/controlplane" --server http://127.0.0.1:48091 --token "$tok" "$@"; }
for v in 1.0.0 1.1.0; do
  "$bin/controlplane" bundle build --model "$models/hello_deepa.onnx" --name wake --version $v --key "$tmp/keys/release.key" --out "$tmp/wake-$v.bundle" --quiet >/dev/null
  cli bundles push "$tmp/wake-$v.bundle" >/dev/null
done
cprss0=$(rss $cp)
total() { api "devices?limit=1$1" | grep -o '"total": *[0-9]*' | grep -o '[0-9]*$' || echo 0; }
t0=$(now_ms)
# Simulators of at most 5,000 devices each: a process's open-file limit (20,000 here) caps one
# simulator below 10,000 devices (a socket and a spool file each).
sims=(); per=5000
for ((first = 1; first <= n; first += per)); do
  "$bin/agent" simulate --count $(( n - first + 1 < per ? n - first + 1 : per )) --first $first --broker "$brokerurl" --data "$tmp/sim" --groups line-a=50%,line-b=50% \
    --trust "$tmp/keys/release.pub" --control-key "$tmp/cp/control.pub" --telemetry-interval 60s --rate "$rate" --log-level warn >"$tmp/sim-$first.log" 2>&1 &
  sims+=($!)
done
simrss() { local t=0; for p in "${sims[@]}"; do t=$(( t + $(rss $p) )); done; echo $t; }
simticks() { local t=0; for p in "${sims[@]}"; do t=$(( t + $(ticks $p) )); done; echo $t; }
online=0
until [ "$online" -ge "$n" ]; do
  online=$(total '&online=true')
  [ $(( $(now_ms) - t0 )) -gt 900000 ] && { echo "- only $online of $n online after 15 min"; break; }
  sleep 1
done
echo "- all $online online: $(( ($(now_ms) - t0) / 1000 )) s after the simulator started"
sleep 10
c0=$(ticks $cp); s0=$(simticks); [ -n "${bpid:-}" ] && b0=$(ticks $bpid); sleep 30
c1=$(ticks $cp); s1=$(simticks); [ -n "${bpid:-}" ] && b1=$(ticks $bpid)
r=$(rss $cp)
echo "- control plane, fleet idle: RSS $(( r/1024 )) MiB ($(( (r-cprss0)*1024/n )) B per device above $(( cprss0/1024 )) MiB before the fleet); CPU $(pct $c0 $c1 30000)% of one core"
[ -n "${bpid:-}" ] && echo "- Mosquitto beside it: RSS $(( $(rss $bpid)/1024 )) MiB; CPU $(pct $b0 $b1 30000)%"
echo "- simulators (${#sims[@]} processes): RSS $(( $(simrss)/1024 )) MiB for $n agents ($(( $(simrss)*1024/n )) B each); CPU $(pct $s0 $s1 30000)% of one core"
curl -fs -o "$tmp/heap.pprof" "127.0.0.1:46091/debug/pprof/heap?gc=1" || true
for q in "devices?limit=100&group=line-a" "devices?limit=100&offset=$(( n/2 ))&group=line-b&online=true" "devices?q=sim-0099&limit=100" "devices"; do
  s=$(now_ms); for _ in $(seq 20); do api "$q" >/dev/null; done
  echo "- GET /api/v1/$q: $(( ($(now_ms) - s) / 20 )) ms mean of 20"
done

# 3. Baseline to all, then the 4-stage rollout.
[ "$rollout" = 1 ] || exit 0
committed() { api "devices" | grep -o '"state": *"committed"' | wc -l; }
t0=$(now_ms)
cli groups assign line-a wake@1.0.0 >/dev/null; cli groups assign line-b wake@1.0.0 >/dev/null
until [ "$(committed)" -ge "$n" ]; do sleep 5; [ $(( $(now_ms) - t0 )) -gt 1800000 ] && { echo "- baseline: only $(committed) of $n after 30 min"; break; }; done
echo "- group assignment wake@1.0.0 committed on all $n: $(( ($(now_ms) - t0) / 1000 )) s"
sleep 70 # a telemetry window on the baseline from every device
cat >"$tmp/spec.json" <<JSON
{"bundle": "wake@1.1.0", "target": {"groups": ["line-a", "line-b"]},
 "stages": [{"devices": 1, "bake": "$bake"}, {"percent": 5, "bake": "$bake"}, {"percent": 25, "bake": "$bake"}, {"percent": 100, "bake": "$bake"}],
 "gates": {"min_samples": 10, "evaluations": 1, "p95_latency_max_ratio": 3}}
JSON
c0=$(ticks $cp); t0=$(now_ms)
id=$(cli rollouts create --spec "$tmp/spec.json" | grep -o '"id": *"[^"]*"' | head -1 | cut -d'"' -f4)
curl -fs -o "$tmp/cpu.pprof" "127.0.0.1:46091/debug/pprof/profile?seconds=20" &
peak=0
while :; do
  state=$(api "rollouts/$id" | grep -o '"state": *"[^"]*"' | head -1 | cut -d'"' -f4)
  r=$(rss $cp); [ "$r" -gt "$peak" ] && peak=$r
  case "$state" in completed|rolled_back|aborted|paused) break ;; esac
  [ $(( $(now_ms) - t0 )) -gt 2400000 ] && { state="not done after 40 min ($state)"; break; }
  sleep 2
done
ms=$(( $(now_ms) - t0 )); c1=$(ticks $cp)
if [ "$state" != completed ]; then # the decisions that ended it, whole (gates and their inputs)
  api "rollouts/$id" > "$tmp/rollout.json"
  python3 - "$tmp/rollout.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for d in r.get("decisions", [])[-4:]:
    print("    decision: stage %s %s: %s" % (d.get("stage"), d.get("action"), d.get("reason")))
    for g in (d.get("inputs") or {}).get("gates", []) or []:
        if g.get("verdict") in ("fail", "wait"):
            print("      gate %s %s: %s %s" % (g.get("gate"), g.get("verdict"), g.get("reason"), json.dumps(g.get("inputs"))[:400]))
PY
fi
echo "- rollout wake@1.1.0 (stages 1 device, 5%, 25%, 100%; bakes $bake): $state in $(( ms / 1000 )) s"
echo "- control plane during the rollout: CPU $(pct $c0 $c1 $ms)% of one core on average, peak RSS $(( peak/1024 )) MiB; simulators RSS $(( $(simrss)/1024 )) MiB"
echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
wait %?profile 2>/dev/null || true
if [ -s "$tmp/heap.pprof" ]; then
  echo; echo "control plane heap in use with the fleet idle (top 12):"
  (cd "$root" && GOTOOLCHAIN=local go tool pprof -sample_index=inuse_space -top -nodecount 12 "$bin/controlplane" "$tmp/heap.pprof" 2>/dev/null | tail -n 13 | sed 's/^/    /')
fi
if [ -s "$tmp/cpu.pprof" ]; then
  echo; echo "control plane CPU profile, first 20 s of the rollout (top 12, cumulative):"
  (cd "$root" && GOTOOLCHAIN=local go tool pprof -top -cum -nodecount 12 "$bin/controlplane" "$tmp/cpu.pprof" 2>/dev/null | tail -n 13 | sed 's/^/    /')
fi
