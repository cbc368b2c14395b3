#!/usr/bin/env bash
# What `make run` runs: a control plane with its embedded broker and store under ./var, three local
# agents in two groups, and a demo model (a real ONNX wake-word model, signed with a release key
# made here) assigned to both groups, so the three agents end up serving it. Stops everything on
# Ctrl-C. A test runs this same script, so keep its output and its environment knobs stable.
#   env: EDGEFLEET_DEMO_DIR (default ./var), EDGEFLEET_DEMO_HTTP (127.0.0.1:8080),
#        EDGEFLEET_DEMO_MQTT (127.0.0.1:1883), EDGEFLEET_DEMO_BIN (./bin)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
var=${EDGEFLEET_DEMO_DIR:-$root/var}
http=${EDGEFLEET_DEMO_HTTP:-127.0.0.1:8080}
mqtt=${EDGEFLEET_DEMO_MQTT:-127.0.0.1:1883}
bin=${EDGEFLEET_DEMO_BIN:-$root/bin}
for b in controlplane agent; do
  [ -x "$bin/$b" ] || { echo "run-demo: $bin/$b missing: run 'make build' first" >&2; exit 1; }
done
mkdir -p "$var/log" "$var/keys" "$var/bundles"
ort=$("$root/scripts/fetch-ort.sh")
models=$("$root/scripts/fetch-models.sh")
export EDGEFLEET_ORT_LIB="$ort"
if [ ! -s "$var/keys/release.key" ]; then
  "$bin/controlplane" keys generate --out "$var/keys" --role release >/dev/null
fi
demo="$var/bundles/wake-1.0.0.bundle"
demo2="$var/bundles/wake-1.1.0.bundle"
for v in 1.0.0 1.1.0; do
  f="$var/bundles/wake-$v.bundle"
  [ -s "$f" ] || "$bin/controlplane" bundle build --model "$models/hello_deepa.onnx" --name wake --version "$v" \
    --parent wake@1.0.0 --key "$var/keys/release.key" --out "$f" --quiet >/dev/null
done
pids=()
cleanup() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "edgefleet demo stopped."
}
trap cleanup EXIT
trap 'exit 0' INT TERM

"$bin/controlplane" serve --data "$var/controlplane" --http "$http" --mqtt-listen "$mqtt" \
  --trust "$var/keys/release.pub" >"$var/log/controlplane.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://$http/healthz" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "run-demo: the control plane exited; see $var/log/controlplane.log:" >&2; tail -5 "$var/log/controlplane.log" >&2; exit 1; }
  sleep 0.1
done
host=${http%:*}
port0=${EDGEFLEET_DEMO_AGENT_PORT:-8181}
start_agent() { # id group labels port
  "$bin/agent" run --id "$1" --group "$2" --labels "$3" --broker "mqtt://$mqtt" --data "$var/agents/$1" \
    --trust "$var/keys/release.pub" --control-key "$var/controlplane/control.pub" --listen "$host:$4" \
    --telemetry-interval 10s >"$var/log/$1.log" 2>&1 &
  pids+=($!)
}
start_agent demo-1 line-a site=berlin,arch=$(uname -m) "$port0"
start_agent demo-2 line-a site=berlin,arch=$(uname -m) "$((port0+1))"
start_agent demo-3 line-b site=hamburg,arch=$(uname -m) "$((port0+2))"

token=$(cat "$var/controlplane/admin.token")
cli() { "$bin/controlplane" --server "http://$http" --token "$token" "$@"; }
online=0
for _ in $(seq 1 100); do
  online=$(curl -fsS -H "Authorization: Bearer $token" "http://$http/api/v1/devices?online=true" 2>/dev/null | grep -o '"count":[0-9]*' | cut -d: -f2 || true)
  [ "${online:-0}" -ge 3 ] && break
  sleep 0.1
done
cli bundles push "$demo" >/dev/null
cli groups assign line-a wake@1.0.0 >/dev/null
cli groups assign line-b wake@1.0.0 >/dev/null
serving=0
for _ in $(seq 1 200); do
  serving=$(curl -fsS -H "Authorization: Bearer $token" "http://$http/api/v1/devices" 2>/dev/null | grep -o '"state":"committed"' | wc -l || true)
  [ "${serving:-0}" -ge 3 ] && break
  sleep 0.1
done
# Then 1.1.0 goes out as a staged rollout: one canary device, a short bake, then everyone.
cli bundles push "$demo2" >/dev/null
rollout=$(cli rollouts create --bundle wake@1.1.0 --groups line-a,line-b --stages '1:5s,100%:5s' 2>/dev/null | grep -o '"id": *"[^"]*"' | head -1 | cut -d'"' -f4 || true)
vals=$(awk 'BEGIN { for (i = 0; i < 2400; i++) printf "%s0.1", (i ? "," : "") }')
printf '{"id":"demo-1","inputs":[{"name":"onnx::Flatten_0","shape":[1,25,96],"datatype":"FP32","data":[%s]}]}\n' "$vals" >"$var/demo-request.json"
cat <<MSG
edgefleet is running: control plane http://$http/ (embedded broker mqtt://$mqtt), ${online:-0} of 3 devices online,
${serving:-0} of 3 serving the demo model (wake@1.0.0 assigned to both groups); rollout ${rollout:-?} is taking them to wake@1.1.0 in two stages.
  admin token:   $var/controlplane/admin.token
  list devices:  curl -s -H "Authorization: Bearer \$(cat $var/controlplane/admin.token)" http://$http/api/v1/devices
  list groups:   curl -s -H "Authorization: Bearer \$(cat $var/controlplane/admin.token)" http://$http/api/v1/groups
  the rollout:   $bin/controlplane --server http://$http --token \$(cat $var/controlplane/admin.token) rollouts show ${rollout:-ID}
  predict:       curl -s -X POST -d @$var/demo-request.json http://$host:$port0/v2/models/wake/infer
  logs:          $var/log/
Press Ctrl-C to stop.
MSG
wait
