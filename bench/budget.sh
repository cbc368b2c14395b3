#!/usr/bin/env bash
# Telemetry bytes per device per day at default settings: one simulated device (`agent simulate`,
# a real agent) serving hello_deepa built with a drift reference, 2 inferences a second, 60 s
# windows (health + one inference window with drift histograms), measured over a few minutes from
# the budget's own count (payload + topic + MQTT header, in the health report) and scaled to a day.
#   usage: bench/budget.sh [MINUTES]   (default 5; after make build; ports 127.0.0.1:48082 and :41885)
set -euo pipefail
minutes=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
export EDGEFLEET_ORT_LIB=$("$root/scripts/fetch-ort.sh")
models=$("$root/scripts/fetch-models.sh")
"$bin/controlplane" keys generate --out "$tmp/keys" >/dev/null
"$bin/controlplane" serve --data "$tmp/cp" --http 127.0.0.1:48082 --mqtt-listen 127.0.0.1:41885 --trust "$tmp/keys/release.pub" --log-level warn >"$tmp/cp.log" 2>&1 &
for _ in $(seq 100); do curl -fs 127.0.0.1:48082/healthz >/dev/null && break; sleep 0.05; done
tok=$(cat "$tmp/cp/admin.token")
api() { curl -fs -H "Authorization: Bearer $tok" "127.0.0.1:48082/api/v1/$1"; }
cli() { "$bin/controlplane" --server http://127.0.0.1:48082 --token "$tok" "$@"; }
# 300 reference samples of hello_deepa's input [1,25,96] as .npy (float64, C order).
python3 - "$tmp/ref.npy" <<'PY'
import random, struct, sys
n, shape = 300, (300, 25, 96)
hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (%d, %d, %d), }" % shape
hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
rng = random.Random(7)
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(struct.pack("<%dd" % (n * 25 * 96), *(rng.gauss(0, 1) for _ in range(n * 25 * 96))))
PY
"$bin/controlplane" bundle build --model "$models/hello_deepa.onnx" --name wake --version 1.0.0 --key "$tmp/keys/release.key" \
  --reference "$tmp/ref.npy" --out "$tmp/wake.bundle" --quiet >/dev/null
cli bundles push "$tmp/wake.bundle" >/dev/null
# A budget far above what the device sends: nothing is held back, and the health report counts bytes.
"$bin/agent" simulate --count 1 --broker mqtt://127.0.0.1:41885 --data "$tmp/sim" --trust "$tmp/keys/release.pub" \
  --control-key "$tmp/cp/control.pub" --rate 2 --telemetry-budget 1000000000000 >"$tmp/sim.log" 2>&1 &
until api devices | grep -q '"online":true'; do sleep 0.5; done
cli groups assign default wake@1.0.0 >/dev/null
until api devices | grep -q '"state":"committed"'; do sleep 1; done
# used_24h and time of the newest health message.
sample() { api "devices/sim-00001/telemetry?kind=health&limit=1" | python3 -c '
import json, sys, datetime
m = json.load(sys.stdin)["messages"][-1]
at = datetime.datetime.fromisoformat(m["at"].replace("Z", "+00:00")).timestamp()
print(m["body"]["budget"]["used_24h"], at)'; }
sleep 65 # the first window with traffic on the model
read u0 t0 < <(sample)
sleep $(( minutes * 60 ))
read u1 t1 < <(sample)
last=$(api "devices/sim-00001/telemetry?kind=inference&limit=1")
echo "## telemetry bytes per device per day ($(date -u +%F), ${minutes} min measured)"
python3 - "$u0" "$t0" "$u1" "$t1" <<PY
import json, sys
u0, t0, u1, t1 = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
w = json.loads('''$last''')["messages"][-1]["body"]
print("60 s windows: health + inference for one model (%d requests in the last window, %d drift features)" % (w["requests"], len(w["drift"]["features"])))
print("bytes counted over %.0f s: %d -> %.0f bytes per device per day (%.1f KB per window of health + inference)" % (t1 - t0, u1 - u0, (u1 - u0) / (t1 - t0) * 86400, (u1 - u0) / ((t1 - t0) / 60) / 1000))
PY
