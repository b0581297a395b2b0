#!/usr/bin/env bash
# README command 2: runs every test on this machine, starting what the tests need.
#
#   deploy/test.sh
#
# - Postgres: uses the one on 127.0.0.1:5432 (starts the local cluster when it is down); every test
#   creates its own database (logexport_test_*), stale ones from earlier runs are dropped first.
# - Garage (S3 store that checks SigV4 and presigned signatures): deploy/garage.sh installs it once
#   with cargo (cached in ~/.cargo/bin), starts a single node and writes .test-env/garage.env.
# - Python: aiosmtpd (the SMTP server the notification tests start), splunk-sdk (the fidelity test),
#   schemathesis and openapi-spec-validator (the API contract step), installed with pip when missing.
# - Rust: cargo fmt --check, clippy -D warnings, the unit and integration tests (cargo nextest), then
#   the API contract and fuzz step (deploy/fuzz-api.sh), the splunk-sdk fidelity test against the
#   emulator binary.
# - Deploy files (deploy/verify.sh): builds the image and runs the Compose stack with Docker,
#   exports through it, validates the Kubernetes/OpenShift manifests, alert rules and nginx template.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
step() { printf '\n==> %s\n' "$*"; }

step "Postgres"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432
psql -h 127.0.0.1 -U postgres -d postgres -Atc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'logexport_test_%'" |
    while read -r db; do dropdb -h 127.0.0.1 -U postgres --if-exists "$db" || true; done

step "Python test dependencies"
if ! python3 -c 'import aiosmtpd, splunklib, prometheus_client, yaml, schemathesis, openapi_spec_validator' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check -r deploy/requirements-test.txt
fi

step "zstd CLI"
# The export tests decompress zstd archives with the command-line tool, as an operator would.
if ! command -v zstd >/dev/null; then
    apt-get install -y -qq zstd || { apt-get update -qq && apt-get install -y -qq zstd; }
fi

step "Garage (S3)"
# Shared by every checkout on this machine (CI runs a fresh one), so one server is reused.
export GARAGE_STATE_DIR="${GARAGE_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/logexport/garage}"
deploy/garage.sh
# shellcheck disable=SC1091
source .test-env/garage.env

if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy"
cargo clippy --all-targets -- -D warnings

step "unit and integration tests"
cargo build --bins
cargo nextest run --lib --bins --tests --no-fail-fast

step "API contract: OpenAPI document and schemathesis fuzzing (deploy/fuzz-api.sh, about 2 minutes)"
deploy/fuzz-api.sh

step "splunk-sdk fidelity test"
SPLUNK_EMULATOR_BIN="$ROOT/target/debug/splunk-emulator" python3 tests/sdk_fidelity.py

step "deploy files: image, Compose stack, export through it, manifests (deploy/verify.sh)"
# Reuses the debug binaries built above (no release build in CI): about 1 minute with the base
# image and the stand-in images cached, 4 on a fresh machine (Docker installed from Debian).
deploy/verify.sh

step "all tests passed"
