#!/bin/bash
# Single-node Garage serving S3 on :9000 (region us-east-1): writes its configuration, starts the
# server, gives the node a role, creates GARAGE_BUCKET and imports the key GARAGE_ACCESS_KEY /
# GARAGE_SECRET_KEY (Garage's format: GK + 24 hex digits, and 64 hex digits), then touches
# /tmp/ready (the health check) and waits. SIGTERM stops the server and exits 0.
set -euo pipefail
: "${GARAGE_BUCKET:?}" "${GARAGE_ACCESS_KEY:?}" "${GARAGE_SECRET_KEY:?}"
STATE=/var/lib/garage
CONF=$STATE/garage.toml
if [ ! -f "$CONF" ]; then
    cat >"$CONF" <<TOML
metadata_dir = "$STATE/meta"
data_dir = "$STATE/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "0.0.0.0:9000"
root_domain = ".s3.garage.localhost"
TOML
fi
g() { garage -c "$CONF" "$@"; }
garage -c "$CONF" server &
server=$!
trap 'kill -TERM "$server"; wait "$server"; exit 0' TERM INT
until g status >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { echo "garage exited" >&2; exit 1; }
    sleep 0.5
done
if g status 2>/dev/null | grep -q "NO ROLE ASSIGNED"; then
    g layout assign -z dc1 -c 1G "$(g node id -q | cut -d@ -f1)" >/dev/null
    g layout apply --version 1 >/dev/null
fi
g bucket info "$GARAGE_BUCKET" >/dev/null 2>&1 || g bucket create "$GARAGE_BUCKET" >/dev/null
g key info "$GARAGE_ACCESS_KEY" >/dev/null 2>&1 \
    || g key import --yes -n logexport "$GARAGE_ACCESS_KEY" "$GARAGE_SECRET_KEY" >/dev/null
g bucket allow --read --write --owner "$GARAGE_BUCKET" --key "$GARAGE_ACCESS_KEY" >/dev/null
touch /tmp/ready
echo "garage ready: bucket $GARAGE_BUCKET on :9000"
wait "$server"
