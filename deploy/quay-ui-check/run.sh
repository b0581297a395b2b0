#!/usr/bin/env bash
# By-hand check: Quay's own React UI (quay/quay web/, built unchanged) talking to logexport
# through the nginx example of deploy/nginx, in headless Chromium. Not part of deploy/test.sh.
#
#   deploy/quay-ui-check/run.sh            # everything: install, build, start, check, stop
#   KEEP=1 deploy/quay-ui-check/run.sh     # leave the stack running (open http://127.0.0.1:$PROXY_PORT)
#
# Needs: the local Postgres, Node 20 + npm, Python 3, cargo's target/debug binaries (built when
# missing), apt-get for nginx/chromium when missing. Work files under $WORK (default
# /tmp/quay-ui-check); the Quay checkout and its node_modules stay there, never in this repo.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/deploy/quay-ui-check"
WORK=${WORK:-/tmp/quay-ui-check}
QUAY_REF=${QUAY_REF:-master}            # quay/quay commit or branch of the UI to check
QUAY_WEB=${QUAY_WEB:-$WORK/quay/web}    # an existing checkout's web/ may be given instead
STANDIN_PORT=${STANDIN_PORT:-18090}
LOGEXPORT_PORT=${LOGEXPORT_PORT:-18080}
PROXY_PORT=${PROXY_PORT:-18088}
SPLUNK_PORT=${SPLUNK_PORT:-18089}
DB=${DB:-logexport_uicheck}
# quay: logexport asks the stand-in (needs [auth] mode = "quay");
# tokens: fallback for a logexport without it — nginx adds one logexport token to the routed paths.
AUTH_MODE=${AUTH_MODE:-quay}
mkdir -p "$WORK" "$WORK/shots"
PIDS=()
cleanup() {
  if [[ -z "${KEEP:-}" ]]; then
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  fi
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

say "tools"
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
command -v chromium >/dev/null || need_apt+=(chromium)
if ((${#need_apt[@]})); then apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"; fi
if [[ ! -x $ROOT/target/debug/logexport || ! -x $ROOT/target/debug/splunk-emulator ]]; then
  (cd "$ROOT" && cargo build --bins)
fi
if [[ ! -d $WORK/node/node_modules/playwright-core ]]; then
  mkdir -p "$WORK/node" && (cd "$WORK/node" && npm init -y >/dev/null && npm install --no-audit --no-fund playwright-core)
fi

say "Quay's web UI ($QUAY_REF), built for production"
if [[ ! -f $QUAY_WEB/package.json ]]; then
  rm -rf "$WORK/quay" && mkdir -p "$WORK/quay"
  curl -fsSL "https://codeload.github.com/quay/quay/tar.gz/$QUAY_REF" | tar -xz -C "$WORK/quay" --strip-components=1 --wildcards '*/web/*' \
    || { echo "cannot download quay/quay ($QUAY_REF); give a checkout's web/ as QUAY_WEB=..."; exit 1; }
fi
if [[ ! -f $QUAY_WEB/dist/index.html ]]; then
  (cd "$QUAY_WEB" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund \
    && npx webpack --config webpack.prod.js --no-devtool)
fi

say "Postgres database $DB"
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null

say "Splunk emulator: synthetic events for ns0..ns2 over the last 30 days, and for the user alice"
START=$(date -u -d '30 days ago' +%Y-%m-%dT00:00:00Z)
END=$(date -u +%Y-%m-%dT%H:%M:%SZ)
python3 - "$WORK/alice.ndjson" <<'PY'
import json, sys, time
now = int(time.time())
kinds = ["push_repo", "pull_repo", "create_tag", "delete_tag", "create_repo"]
with open(sys.argv[1], "w") as f:
    for i in range(57):   # 57 events: three pages of 20 in the Logs tab
        f.write(json.dumps({"kind": kinds[i % 5], "account": "alice", "performer": "alice",
            "performer_email": "alice@example.com", "performer_kind": "user", "repository": "app",
            "ip": "192.0.2.%d" % (i + 1), "metadata_json": {"repo": "app", "namespace": "alice", "tag": "v%d" % i},
            "datetime": now - 3600 * 11 * (i + 1)}) + "\n")
PY
"$ROOT/target/debug/splunk-emulator" --bind 127.0.0.1:$SPLUNK_PORT --token uicheck-token \
  --synthetic 9000 --synthetic-namespaces 3 --synthetic-start "$START" --synthetic-end "$END" \
  --data "$WORK/alice.ndjson" >"$WORK/emulator.log" 2>&1 &
PIDS+=($!)

say "Quay stand-in on :$STANDIN_PORT (serves the built UI)"
python3 "$HERE/quay_standin.py" --bind 127.0.0.1:$STANDIN_PORT --ui-dir "$QUAY_WEB/dist" >"$WORK/standin.log" 2>&1 &
PIDS+=($!)

say "logexport on :$LOGEXPORT_PORT (auth mode $AUTH_MODE)"
cat >"$WORK/logexport.toml" <<TOML
[server]
bind = "127.0.0.1:$LOGEXPORT_PORT"
public_url = "http://127.0.0.1:$PROXY_PORT"
signing_key = "uicheck-signing-key"

[database]
url = "postgres://postgres@127.0.0.1:5432/$DB"

[splunk]
host = "127.0.0.1"
port = $SPLUNK_PORT
url_scheme = "http"
bearer_token = "uicheck-token"

[storage]
kind = "local"
[storage.local]
path = "$WORK/exported-logs"

[email]
transport = "file"
file_dir = "$WORK/exported-mail"

[callback]
allowed_hosts = ["127.0.0.1/32"]

[logs]
page_token_key = "uicheck-page-token-key"
TOML
if [[ $AUTH_MODE == quay ]]; then
  cat >>"$WORK/logexport.toml" <<TOML

[auth]
mode = "quay"
quay_url = "http://127.0.0.1:$STANDIN_PORT"
allowed_origins = ["http://127.0.0.1:$PROXY_PORT"]
TOML
  export LOGEXPORT_SERVER__TRUSTED_PROXIES='["127.0.0.1/32"]'   # nginx's X-Forwarded-For
fi
LX=("$ROOT/target/debug/logexport" --config "$WORK/logexport.toml")
"${LX[@]}" migrate >"$WORK/logexport.log" 2>&1 || {
  tail -n 3 "$WORK/logexport.log"
  [[ $AUTH_MODE == quay ]] && echo "this logexport may not have [auth] mode = \"quay\" yet: AUTH_MODE=tokens runs the fallback"
  exit 1
}
"${LX[@]}" run >>"$WORK/logexport.log" 2>&1 &
PIDS+=($!)

say "nginx on :$PROXY_PORT (deploy/nginx/logexport-beside-quay.conf.template)"
sed -e "s/\${LISTEN}/127.0.0.1:$PROXY_PORT/" -e "s/\${QUAY_UPSTREAM}/127.0.0.1:$STANDIN_PORT/" \
    -e "s/\${QUAY_SCHEME}/http/" -e "s/\${LOGEXPORT_UPSTREAM}/127.0.0.1:$LOGEXPORT_PORT/" \
    "$ROOT/deploy/nginx/logexport-beside-quay.conf.template" >"$WORK/beside-quay.conf"
if [[ $AUTH_MODE == tokens ]]; then
  TOKEN=$("${LX[@]}" token create --user alice --admin-org ns0 --admin-repo ns1/web --superuser)
  # Only for this fallback: the routed locations carry one logexport token (and must then
  # repeat the server's headers, which nginx does not merge into a location that sets its own).
  sed -i "s|proxy_pass http://logexport_backend;|proxy_pass http://logexport_backend; proxy_set_header Authorization \"Bearer $TOKEN\"; proxy_set_header Connection \"\"; proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;|" "$WORK/beside-quay.conf"
fi
cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 256; }
http {
  access_log $WORK/nginx-access.log;
  client_body_temp_path $WORK/nginx-tmp; proxy_temp_path $WORK/nginx-tmp;
  fastcgi_temp_path $WORK/nginx-tmp; uwsgi_temp_path $WORK/nginx-tmp; scgi_temp_path $WORK/nginx-tmp;
  include $WORK/beside-quay.conf;
}
NGINX
mkdir -p "$WORK/nginx-tmp"
nginx -t -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log"
nginx -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log"

say "waiting for the services"
for url in "http://127.0.0.1:$LOGEXPORT_PORT/readyz" "http://127.0.0.1:$STANDIN_PORT/config" "http://127.0.0.1:$PROXY_PORT/config"; do
  for _ in $(seq 100); do curl -fs -o /dev/null "$url" && break; sleep 0.2; done
  curl -fs -o /dev/null "$url" || { echo "not up: $url"; exit 1; }
done

say "routing: which backend answers which path (x-request-id is set only by logexport)"
for p in /api/v1/organization/ns0/logs /api/v1/repository/ns1/web/aggregatelogs /api/v1/user/exportlogs \
         /api/v1/superuser/logs /api/v1/exportlogs/00000000-0000-0000-0000-000000000000 /exportedlogs/x \
         /api/v1/user/ /api/v1/organization/ns0 /api/v1/repository/ns1/web /config /organization/ns0 \
         /api/v1/organization/ns0/logs/x /api/v1/organization/a%2Fb/logs /api/v1/repository/a%2Fb/logs; do
  if curl -s -D - -o /dev/null "http://127.0.0.1:$PROXY_PORT$p" | grep -qi '^x-request-id'; then b=logexport; else b=quay; fi
  printf '  %-62s -> %s (%s)\n' "$p" "$b" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PROXY_PORT$p")"
done

if [[ $AUTH_MODE == quay ]]; then
  say "identity through Quay (OAuth bearer tokens of the stand-in), as an operator checks after the switch"
  code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
  B="http://127.0.0.1:$PROXY_PORT/api/v1"
  before=$(curl -s "http://127.0.0.1:$STANDIN_PORT/_standin/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["user_calls_by_logexport"])')
  fail=0
  expect() { local want=$1 got; shift; got=$(code "$@"); printf '  %-3s (want %s)  %s\n' "$got" "$want" "${*: -1}"; [[ $got == "$want" ]] || fail=1; }
  expect 200 -H 'Authorization: Bearer alice-oauth' "$B/organization/ns0/logs"
  expect 200 -H 'Authorization: Bearer alice-oauth' "$B/organization/alice/aggregatelogs"
  expect 200 -H 'Authorization: Bearer alice-oauth' "$B/repository/ns1/web/logs"
  expect 403 -H 'Authorization: Bearer alice-oauth' "$B/organization/ns1/logs"
  expect 403 -H 'Authorization: Bearer alice-oauth' "$B/repository/ns1/api/logs"
  expect 403 -H 'Authorization: Bearer alice-oauth' "$B/superuser/logs"
  expect 200 -H 'Authorization: Bearer root-oauth' "$B/superuser/logs"
  expect 401 -H 'Authorization: Bearer not-a-quay-token' "$B/organization/ns0/logs"
  expect 401 "$B/organization/ns0/logs"
  after=$(curl -s "http://127.0.0.1:$STANDIN_PORT/_standin/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["user_calls_by_logexport"])')
  echo "  logexport asked Quay's /api/v1/user/ $((after - before)) times for these 9 requests (3 credentials, cached)"
  ((fail == 0)) || { echo "identity checks failed"; exit 1; }
fi

say "browser check (headless Chromium, playwright-core)"
AUTH_MODE=$AUTH_MODE NODE_PATH="$WORK/node/node_modules" BASE="http://127.0.0.1:$PROXY_PORT" SHOTS="$WORK/shots" \
STANDIN="http://127.0.0.1:$STANDIN_PORT" node "$HERE/check.cjs"
echo "stand-in: $(curl -s "http://127.0.0.1:$STANDIN_PORT/_standin/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("logexport asked /api/v1/user/ %d times and its permission questions (members, permissions) %d times; %d callback(s) received; endpoints the UI asked for that the stand-in does not serve: %s" % (d["user_calls_by_logexport"], d["question_calls_by_logexport"], len(d["hooks"]), sorted(set(d["unknown"])) or "none"))')"
say "screenshots in $WORK/shots; logs in $WORK/*.log"
if [[ -n ${KEEP:-} ]]; then echo "KEEP=1: still running; open http://127.0.0.1:$PROXY_PORT (alice / alice-pw, root / root-pw)"; fi
