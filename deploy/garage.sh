#!/usr/bin/env bash
# Starts a single-node Garage (S3-compatible store) for the integration tests and writes
# .test-env/garage.env with the endpoint, bucket and credentials the tests read.
#
# Idempotent: re-running reuses the running server, the layout, the bucket and the key.
#   deploy/garage.sh            # set up (installs garage 2.5.0 with cargo if missing)
#   deploy/garage.sh stop       # stop the server started here
#   source .test-env/garage.env
#
# Environment (all optional): GARAGE_STATE_DIR (default <repo>/.test-env/garage),
# GARAGE_S3_PORT (3900), GARAGE_RPC_PORT (3901), GARAGE_ADMIN_PORT (3903),
# GARAGE_BUCKET (logexport-test), GARAGE_REGION (us-east-1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${GARAGE_STATE_DIR:-$ROOT/.test-env/garage}"
ENV_FILE="$ROOT/.test-env/garage.env"
S3_PORT="${GARAGE_S3_PORT:-3900}"
RPC_PORT="${GARAGE_RPC_PORT:-3901}"
ADMIN_PORT="${GARAGE_ADMIN_PORT:-3903}"
BUCKET="${GARAGE_BUCKET:-logexport-test}"
REGION="${GARAGE_REGION:-us-east-1}"
KEY_NAME="logexport-test"
VERSION="2.5.0"
CONF="$STATE/garage.toml"
PID_FILE="$STATE/garage.pid"
LOG_FILE="$STATE/garage.log"

log() { echo "garage.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

find_garage() {
    if command -v garage >/dev/null 2>&1; then
        command -v garage
    elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
        echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage"
    fi
}

running_pid() {
    [ -f "$PID_FILE" ] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q garage "/proc/$pid/cmdline" 2>/dev/null \
        && echo "$pid"
}

if [ "${1:-}" = "stop" ]; then
    if pid="$(running_pid)"; then
        kill "$pid" && log "stopped garage (pid $pid)"
    else
        log "garage is not running"
    fi
    rm -f "$PID_FILE"
    exit 0
fi

GARAGE="$(find_garage)"
if [ -z "$GARAGE" ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to install garage"
    log "installing garage $VERSION with cargo (takes 10-15 minutes, once)"
    cargo install "garage@$VERSION" --locked
    GARAGE="$(find_garage)"
    [ -n "$GARAGE" ] || die "garage was installed but is not on PATH or in ~/.cargo/bin"
fi
g() { "$GARAGE" -c "$CONF" "$@"; }

mkdir -p "$STATE/meta" "$STATE/data"
if [ ! -f "$CONF" ]; then
    log "writing $CONF"
    umask 077
    cat >"$CONF" <<TOML
# Single-node Garage for logexport's tests (written by deploy/garage.sh).
metadata_dir = "$STATE/meta"
data_dir = "$STATE/data"
db_engine = "sqlite"
replication_factor = 1
# Blocks stored as they come: the archives are mostly compressed already, and zstd on every block
# would take CPU from the worker and the emulator that share this machine's cores.
compression_level = "none"

rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(openssl rand -hex 32 2>/dev/null || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
TOML
    umask 022
fi

if pid="$(running_pid)"; then
    log "garage already running (pid $pid)"
else
    if curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" 2>/dev/null; then
        die "port $S3_PORT already answers but not for the garage in $STATE (another checkout's?);" \
            "stop it (deploy/garage.sh stop in that checkout) or pick other ports with GARAGE_S3_PORT/GARAGE_RPC_PORT/GARAGE_ADMIN_PORT"
    fi
    log "starting garage (log: $LOG_FILE)"
    nohup "$GARAGE" -c "$CONF" server >>"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
fi

for _ in $(seq 1 60); do
    if g status >/dev/null 2>&1; then break; fi
    running_pid >/dev/null || die "garage exited; see $LOG_FILE"
    sleep 0.5
done
g status >/dev/null 2>&1 || die "garage does not answer; see $LOG_FILE"

# Give the single node a role once; later runs find it assigned.
NODE_ID="$(g node id -q 2>/dev/null | cut -d@ -f1)"
[ -n "$NODE_ID" ] || die "could not read the node id"
# The status is read whole first: `g status | grep -q` could fail under pipefail on SIGPIPE.
STATUS="$(g status 2>/dev/null || true)"
if grep -q "NO ROLE ASSIGNED" <<<"$STATUS"; then
    log "assigning layout to node ${NODE_ID:0:16}"
    g layout assign -z dc1 -c 1G "$NODE_ID" >/dev/null
    CURRENT="$(g layout show 2>/dev/null | sed -n 's/.*[Cc]urrent cluster layout version: *\([0-9]*\).*/\1/p' | head -n1)"
    g layout apply --version "$(( ${CURRENT:-0} + 1 ))" >/dev/null
fi

# The S3 API answers only once the layout is live.
for _ in $(seq 1 60); do
    if curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; then break; fi
    sleep 0.5
done

if ! g bucket info "$BUCKET" >/dev/null 2>&1; then
    log "creating bucket $BUCKET"
    g bucket create "$BUCKET" >/dev/null
fi

# Reuse the key recorded in the env file when garage still knows it; otherwise import a fresh
# one (generated here, so nothing has to be parsed out of the CLI's output).
ACCESS_KEY=""
SECRET_KEY=""
if [ -f "$ENV_FILE" ]; then
    ACCESS_KEY="$(sed -n 's/.*LOGEXPORT_TEST_S3_ACCESS_KEY=\([A-Za-z0-9]*\).*/\1/p' "$ENV_FILE")"
    SECRET_KEY="$(sed -n 's/.*LOGEXPORT_TEST_S3_SECRET_KEY=\([A-Za-z0-9]*\).*/\1/p' "$ENV_FILE")"
fi
if [ -z "$ACCESS_KEY" ] || [ -z "$SECRET_KEY" ] || ! g key info "$ACCESS_KEY" >/dev/null 2>&1; then
    ACCESS_KEY="GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    SECRET_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    log "importing access key $ACCESS_KEY"
    g key import --yes -n "$KEY_NAME" "$ACCESS_KEY" "$SECRET_KEY" >/dev/null
fi
g bucket allow --read --write --owner "$BUCKET" --key "$ACCESS_KEY" >/dev/null

mkdir -p "$(dirname "$ENV_FILE")"
umask 077
cat >"$ENV_FILE.tmp" <<ENV
# Written by deploy/garage.sh: the Garage S3 store the integration tests use.
export LOGEXPORT_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export LOGEXPORT_TEST_S3_REGION=$REGION
export LOGEXPORT_TEST_S3_BUCKET=$BUCKET
export LOGEXPORT_TEST_S3_ACCESS_KEY=$ACCESS_KEY
export LOGEXPORT_TEST_S3_SECRET_KEY=$SECRET_KEY
ENV
mv "$ENV_FILE.tmp" "$ENV_FILE"
log "ready: S3 at http://127.0.0.1:$S3_PORT, bucket $BUCKET; env in $ENV_FILE"
