#!/bin/sh
# Runs Mosquitto in the compose stack with the configuration we ship (packaging/mosquitto/
# mosquitto.conf: its limits, persistence and authentication), adapted to a container:
#   - the plain listener 1883 listens on the stack's private network, not only on loopback
#     (the control plane is another container); compose publishes it on the host's loopback only;
#   - the TLS listener 8883 is kept when certificates are mounted at $CERTS (ca.crt, server.crt,
#     server.key), else dropped (a lab stack on one host has no CA);
#   - paths point into the container; accounts and the ACL are generated on first start from
#     the environment (one account per device and one for the control plane, as the README says).
#   usage: mosquitto-compose.sh [prepare]     (prepare: write the files and exit; used by the tests)
#   env:   CONF_IN, OUT (config folder), DATA, CERTS, PORT (plain listener), PREFIX,
#          CONTROLPLANE_USER/CONTROLPLANE_PASSWORD, DEVICES ("dev-0001 dev-0002"), DEVICE_PASSWORD
set -eu
CONF_IN="${CONF_IN:-/edgefleet/mosquitto.conf}"
OUT="${OUT:-/mosquitto/config}"
DATA="${DATA:-/mosquitto/data}"
CERTS="${CERTS:-/mosquitto/certs}"
PORT="${PORT:-1883}"
PREFIX="${PREFIX:-edgefleet}"
CONTROLPLANE_USER="${CONTROLPLANE_USER:-controlplane-1}"
: "${CONTROLPLANE_PASSWORD:?set CONTROLPLANE_PASSWORD}" "${DEVICE_PASSWORD:?set DEVICE_PASSWORD}"
DEVICES="${DEVICES:-dev-0001 dev-0002 dev-0003}"

mkdir -p "$OUT" "$DATA"
if [ -s "$CERTS/server.crt" ]; then
  tls='s|/etc/mosquitto/certs/|'"$CERTS"'/|'
else
  # Drop the block from "listener 8883" up to and including its tls_version line.
  tls='/^listener 8883/,/^tls_version/d'
fi
sed -e "s|^listener 1883 127.0.0.1\$|listener $PORT|" \
    -e "$tls" \
    -e "s|^password_file .*|password_file $OUT/edgefleet.passwd|" \
    -e "s|^acl_file .*|acl_file $OUT/edgefleet.acl|" \
    -e "s|^persistence_location .*|persistence_location $DATA/|" \
    "$CONF_IN" >"$OUT/edgefleet.conf"

# Accounts are rewritten at every start, so changing a password in the environment takes effect
# with a restart; mosquitto_passwd -U hashes the plain-text file in place.
umask 077
{
  echo "$CONTROLPLANE_USER:$CONTROLPLANE_PASSWORD"
  for d in $DEVICES; do echo "$d:$DEVICE_PASSWORD"; done
} >"$OUT/edgefleet.passwd"
mosquitto_passwd -U "$OUT/edgefleet.passwd"
# The ACL documented in mosquitto.conf, for this prefix.
cat >"$OUT/edgefleet.acl" <<ACL
user $CONTROLPLANE_USER
topic readwrite $PREFIX/#

pattern read  $PREFIX/trust
pattern read  $PREFIX/bundles/+/carousel
pattern read  $PREFIX/devices/%c/desired
pattern read  $PREFIX/devices/%c/ack
pattern read  $PREFIX/devices/%c/blocks
pattern read  $PREFIX/devices/%c/cmd
pattern write $PREFIX/devices/%c/reported
pattern write $PREFIX/devices/%c/status
pattern write $PREFIX/devices/%c/blocks/req
pattern write $PREFIX/devices/%c/upload/#
pattern write $PREFIX/devices/%c/cmd/result
pattern write $PREFIX/shards/+/devices/%c/telemetry/+
ACL
# Mosquitto reads these after dropping root for the mosquitto user (as non-root it stays itself).
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
  chown mosquitto "$OUT/edgefleet.passwd" "$OUT/edgefleet.acl" "$DATA"
fi
[ "${1:-}" = prepare ] && exit 0
exec mosquitto -c "$OUT/edgefleet.conf"
