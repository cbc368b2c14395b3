#!/usr/bin/env bash
# What `make run` runs: a control plane with its embedded broker and store under ./var, and three
# local agents in two groups. Stops everything on Ctrl-C. A test runs this same script, so keep
# its output and its environment knobs stable.
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
mkdir -p "$var/log"
pids=()
cleanup() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "edgefleet demo stopped."
}
trap cleanup EXIT
trap 'exit 0' INT TERM

"$bin/controlplane" serve --data "$var/controlplane" --http "$http" --mqtt-listen "$mqtt" >"$var/log/controlplane.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://$http/healthz" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "run-demo: the control plane exited; see $var/log/controlplane.log:" >&2; tail -5 "$var/log/controlplane.log" >&2; exit 1; }
  sleep 0.1
done
start_agent() { # id group labels
  "$bin/agent" run --id "$1" --group "$2" --labels "$3" --broker "mqtt://$mqtt" --data "$var/agents/$1" \
    --telemetry-interval 10s >"$var/log/$1.log" 2>&1 &
  pids+=($!)
}
start_agent demo-1 line-a site=berlin,arch=$(uname -m)
start_agent demo-2 line-a site=berlin,arch=$(uname -m)
start_agent demo-3 line-b site=hamburg,arch=$(uname -m)

token=$(cat "$var/controlplane/admin.token")
online=0
for _ in $(seq 1 100); do
  online=$(curl -fsS -H "Authorization: Bearer $token" "http://$http/api/v1/devices?online=true" 2>/dev/null | grep -o '"count":[0-9]*' | cut -d: -f2 || true)
  [ "${online:-0}" -ge 3 ] && break
  sleep 0.1
done
cat <<MSG
edgefleet is running: control plane http://$http/ (embedded broker mqtt://$mqtt), ${online:-0} of 3 devices online.
  admin token:   $var/controlplane/admin.token
  list devices:  curl -s -H "Authorization: Bearer \$(cat $var/controlplane/admin.token)" http://$http/api/v1/devices
  list groups:   curl -s -H "Authorization: Bearer \$(cat $var/controlplane/admin.token)" http://$http/api/v1/groups
  logs:          $var/log/
Press Ctrl-C to stop.
MSG
wait
