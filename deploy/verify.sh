#!/usr/bin/env bash
# Builds and runs the deploy files for real, then validates the ones that cannot run here.
# Called by deploy/test.sh after the cargo tests (it reuses target/debug/{logexport,splunk-emulator});
# runs on its own too:
#
#   deploy/verify.sh
#
# 1. Tools: Debian's docker.io (20.10, BuildKit) and docker-compose (1.29), debootstrap,
#    nginx-light, prometheus (promtool), and kubernetes-validate (PyPI), installed when missing.
#    dockerd is started when it is not running, and stopped again at the end.
# 2. Images, all without a registry:
#    - logexport-base:bookworm: a Debian bookworm minbase made with debootstrap, cached as
#      ~/.cache/logexport/base-bookworm.tar (and as the Docker image itself);
#    - logexport:local from deploy/Dockerfile with the host's debug binaries
#      (deploy/build-image.sh --debug; production images use release binaries);
#    - logexport-offline/{postgres,s3,smtp} from deploy/offline/Dockerfile: Postgres 15, Garage
#      (the binary deploy/garage.sh installed) and an aiosmtpd sink, on the same base.
# 3. The Compose stack (compose.yaml + compose.offline.yaml, project logexport-verify): the image
#    runs as uid 10001 with a read-only root filesystem and the API's health check turns healthy;
#    an export goes through the published API port as a client would (token from
#    `logexport token create` in the api container, POST, poll the status), its archive is
#    downloaded through the presigned link and its rows are counted against the emulator's own
#    count; with 2 workers, the one running a second export is killed (SIGKILL) mid-export and
#    the export still completes once (one archive with every row once, one e-mail); `stop`
#    (SIGTERM) ends every service with exit code 0.
# 4. Static checks: kubernetes-validate --strict on k8s/ (the OpenShift Routes against
#    k8s/beside-quay/route.schema.json, deploy/check_route.py), promtool check rules on the
#    alert rules, and the nginx template filled in, `nginx -t`, and run in front of two small
#    backends to see which one answers each path. (The Grafana dashboard is checked by the cargo
#    test metrics::the_scrape_parses_and_the_alerts_and_dashboard_name_served_metrics.)
#
# Environment: API_HOST_PORT (18080), S3_HOST_PORT (19000), SPLUNK_HOST_PORT (18089),
# S3_CONSOLE_HOST_PORT (19001), KEEP_STACK=1 leaves the stack running for a look.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/logexport"
DOCKER=/usr/bin/docker                  # Debian's client (another docker on PATH may lack BuildKit)
BASE_IMAGE=logexport-base:bookworm
BASE_TAR="$CACHE/base-bookworm.tar"
PROJECT=logexport-verify
export API_HOST_PORT="${API_HOST_PORT:-18080}" S3_HOST_PORT="${S3_HOST_PORT:-19000}"
export SPLUNK_HOST_PORT="${SPLUNK_HOST_PORT:-18089}" S3_CONSOLE_HOST_PORT="${S3_CONSOLE_HOST_PORT:-19001}"
API="http://127.0.0.1:$API_HOST_PORT"
SPLUNK_TOKEN=demo-splunk-token
WORK="$(mktemp -d)"
START=$SECONDS

step() { printf '\n==> verify: %s (%ss)\n' "$*" "$((SECONDS - START))"; }
die() { echo "verify.sh: FAILED: $*" >&2; exit 1; }
compose() {
    docker-compose -p "$PROJECT" -f deploy/compose.yaml -f deploy/compose.offline.yaml "$@"
}

DOCKERD_PID=""
NGINX_DIR=""
BACKEND_PIDS=()
cleanup() {
    local rc=$?
    set +e
    for pid in "${BACKEND_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    [ -n "$NGINX_DIR" ] && [ -f "$NGINX_DIR/nginx.pid" ] && kill "$(cat "$NGINX_DIR/nginx.pid")" 2>/dev/null
    if [ "${KEEP_STACK:-0}" != 1 ] && [ -n "${STACK_UP:-}" ]; then
        [ "$rc" != 0 ] && compose logs --no-color --tail=40 >&2
        compose down -v --remove-orphans >/dev/null 2>&1
    fi
    if [ -n "$DOCKERD_PID" ] && [ "${KEEP_STACK:-0}" != 1 ]; then
        kill "$DOCKERD_PID" && wait "$DOCKERD_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
    [ "$rc" = 0 ] || echo "verify.sh: failed after $((SECONDS - START))s" >&2
}
trap cleanup EXIT
trap 'echo "verify.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

# ---------------------------------------------------------------------------------------------
step "tools"
missing=()
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v promtool >/dev/null || missing+=(prometheus)
command -v envsubst >/dev/null || missing+=(gettext-base)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi
command -v kubernetes-validate >/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
python3 -c 'import jsonschema, yaml' 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check jsonschema pyyaml

if ! "$DOCKER" info >/dev/null 2>&1; then
    mkdir -p "$CACHE"
    echo "starting dockerd (log: $CACHE/dockerd.log)"
    dockerd >"$CACHE/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 1 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
    "$DOCKER" info >/dev/null 2>&1 || die "dockerd did not start; see $CACHE/dockerd.log"
fi

# ---------------------------------------------------------------------------------------------
step "images"
if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ ! -s "$BASE_TAR" ]; then
        # The machine's own Debian mirror (deb822 .sources or one-line .list files).
        mirror="$({ cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
            /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
            sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p; s/^deb \(http[^ ]*debian\) bookworm .*/\1/p' | head -n1)"
        echo "debootstrap bookworm from ${mirror:=http://deb.debian.org/debian} (about a minute, once)"
        rootfs="$WORK/rootfs"
        debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
            || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
        mkdir -p "$CACHE"
        tar -C "$rootfs" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
        rm -rf "$rootfs"
    fi
    "$DOCKER" import "$BASE_TAR" "$BASE_IMAGE" >/dev/null
fi
[ -x target/debug/logexport ] && [ -x target/debug/splunk-emulator ] || cargo build --locked --bins
DOCKER="$DOCKER" deploy/build-image.sh --debug --no-cargo --base "$BASE_IMAGE"

GARAGE="$(command -v garage || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")"
[ -x "$GARAGE" ] || die "garage is not installed; run deploy/garage.sh (cargo install garage@2.5.0)"
OFFLINE="$ROOT/target/offline-context"
rm -rf "$OFFLINE" && mkdir -p "$OFFLINE/bin"
cp deploy/offline/*.sh deploy/smtp_sink.py "$OFFLINE/"
cp "$GARAGE" "$OFFLINE/bin/garage"
for target in postgres s3 smtp; do
    DOCKER_BUILDKIT=1 "$DOCKER" build --quiet --target "$target" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        -f deploy/offline/Dockerfile -t "logexport-offline/$target" "$OFFLINE" >/dev/null
done
echo "built logexport:local and logexport-offline/{postgres,s3,smtp}"

# ---------------------------------------------------------------------------------------------
step "compose stack up (2 workers)"
# The plain file (registry images) must parse too, with this docker-compose.
docker-compose -p "$PROJECT" -f deploy/compose.yaml config -q
compose down -v --remove-orphans >/dev/null 2>&1 || true
STACK_UP=1
compose up -d --scale worker=2 >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "docker-compose up failed"; }
container() { compose ps -q "$1" | head -n1; }
healthy=""
for _ in $(seq 1 90); do
    id="$(container api)"
    [ -n "$id" ] && healthy="$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$id")"
    [ "$healthy" = healthy ] && break
    sleep 1
done
[ "$healthy" = healthy ] || die "the api container's health check is '$healthy' after 90 s"
curl -fsS "$API/readyz" >/dev/null || die "GET /readyz through the published port failed"
[ "$(compose ps -q worker | wc -l)" = 2 ] || die "expected 2 worker containers"

step "image: non-root, read-only root filesystem"
api="$(container api)"
[ "$("$DOCKER" exec "$api" id -u)" = 10001 ] || die "the api runs as uid $("$DOCKER" exec "$api" id -u), not 10001"
[ "$("$DOCKER" inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$api")" = true ] || die "root filesystem is writable"
if "$DOCKER" exec "$api" touch /app/probe 2>/dev/null; then die "the api could write to /app"; fi
echo "uid 10001, read-only root filesystem, health check healthy"

# ---------------------------------------------------------------------------------------------
# Helpers for the export checks.
TOKEN="$("$DOCKER" exec "$api" logexport token create --user alice --admin-org ns0 --admin-org ns1 | tail -n1)"
[ -n "$TOKEN" ] || die "token create printed nothing"
status() { curl -fsS -H "Authorization: Bearer $TOKEN" "$API/api/v1/exportlogs/$1"; }
field() { python3 -c 'import json,sys; v=json.load(sys.stdin); [v:=v[k] for k in sys.argv[1].split(".")]; print("" if v is None else v)' "$1"; }
request_export() { # NAMESPACE START END -> export id
    curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        "$API/api/v1/organization/$1/exportlogs?starttime=$2&endtime=$3" \
        -d '{"callback_email": "alice@example.com"}' | field export_id
}
wait_state() { # ID STATE SECONDS
    local state=""
    for _ in $(seq 1 "$3"); do
        state="$(status "$1" | field state)"
        [ "$state" = "$2" ] && return 0
        case "$state" in succeeded|failed|timed_out|invalid|cancelled) break ;; esac
        sleep 1
    done
    status "$1" >&2
    die "export $1 is '$state', expected '$2'"
}
splunk_count() { # NAMESPACE EARLIEST LATEST (epoch seconds): Splunk's own count of the events
    curl -fsS -H "Authorization: Bearer $SPLUNK_TOKEN" \
        "http://127.0.0.1:$SPLUNK_HOST_PORT/services/search/v2/jobs/export" \
        --data-urlencode "search=search index=quay_logs account=\"$1\" | stats count" \
        -d "earliest_time=$2" -d "latest_time=$3" -d output_mode=json |
        python3 -c 'import json,sys
rows=[json.loads(l) for l in sys.stdin if l.strip()]
print([r["result"]["count"] for r in rows if "result" in r and not r.get("preview")][-1])'
}
download_rows() { # ID -> rows in the archive; checks that no row is there twice
    local url
    url="$(status "$1" | field exported_data_url)"
    [ -n "$url" ] || die "export $1 has no download link"
    # The link names the endpoint the workers use (http://s3:9000): reach it through the published
    # port, as an /etc/hosts entry would. The signature covers the host, so the URL stays intact.
    curl -fsS --connect-to "s3:9000:127.0.0.1:$S3_HOST_PORT" -o "$WORK/$1.json" "$url" \
        || die "downloading export $1 through its link failed"
    python3 - "$WORK/$1.json" "$1" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["export_id"] == sys.argv[2], doc["export_id"]
logs = doc["logs"]
assert logs[-1] == {"terminator": True}, "the archive does not end with the terminator"
rows = [json.dumps(l, sort_keys=True) for l in logs[:-1]]
assert len(set(rows)) == len(rows), f"{len(rows) - len(set(rows))} rows are in the archive twice"
print(len(rows))
PY
}
mails_for() { "$DOCKER" exec "$(container smtp)" sh -c "grep -l '$1' /var/mail-sink/*.eml 2>/dev/null | wc -l"; }

# ---------------------------------------------------------------------------------------------
step "export through the API"
# January 2nd, 2024 (UTC) of organization ns0.
id1="$(request_export ns0 01/02/2024 01/02/2024)"
wait_state "$id1" succeeded 120
rows="$(download_rows "$id1")"
expected="$(splunk_count ns0 1704153600 1704240000)"
exported="$(status "$id1" | field logs_exported)"
echo "export $id1: $rows rows in the archive, $exported reported, Splunk counts $expected"
[ "$rows" -gt 0 ] && [ "$rows" = "$expected" ] && [ "$exported" = "$expected" ] \
    || die "row counts disagree"
for _ in $(seq 1 30); do [ "$(mails_for "$id1")" -ge 1 ] && break; sleep 1; done
[ "$(mails_for "$id1")" = 1 ] || die "expected one e-mail for $id1, found $(mails_for "$id1")"

step "a worker killed mid-export"
# All of January for ns1: the emulator streams slowly (compose.offline.yaml), so this lasts long
# enough to kill the worker holding it.
id2="$(request_export ns1 01/01/2024 01/31/2024)"
wait_state "$id2" running 60
# The job row names the worker holding it (worker_id starts with the container's host name,
# which is its short container id).
holder="$("$DOCKER" exec "$(container postgres)" psql -U logexport -d logexport -Atc \
    "SELECT worker_id FROM export_jobs WHERE id = '$id2'")"
victim=""
for w in $(compose ps -q worker); do
    case "$holder" in "${w:0:12}"*) victim="$w" ;; esac
done
[ -n "$victim" ] || die "export $id2 is held by '$holder', which is no worker container"
sleep 2
[ "$(status "$id2" | field state)" = running ] || die "export $id2 ended before the worker could be killed"
"$DOCKER" kill -s KILL "$victim" >/dev/null
echo "killed worker ${victim:0:12} while it ran $id2"
wait_state "$id2" succeeded 240
rows="$(download_rows "$id2")"
expected="$(splunk_count ns1 1704067200 1706745600)"
attempts="$(status "$id2" | field attempts)"
echo "export $id2: succeeded after the kill ($attempts attempts counted), $rows rows, Splunk counts $expected"
[ "$rows" = "$expected" ] || die "the archive holds $rows rows, Splunk counts $expected"
sleep 5   # a quiet period: a second notification would show up by now
[ "$(mails_for "$id2")" = 1 ] || die "expected exactly one e-mail for $id2, found $(mails_for "$id2")"

step "stop (SIGTERM) ends every service cleanly"
compose stop -t 60 >/dev/null 2>&1
bad=0
for service in postgres s3 smtp splunk api worker; do
    for c in $(compose ps -q "$service"); do
        [ "$c" = "$victim" ] && continue
        code="$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$c")"
        echo "$service ${c:0:12}: exit code $code"
        [ "$code" = 0 ] || bad=1
    done
done
[ "$bad" = 0 ] || die "a service did not stop gracefully on SIGTERM"
# The whole log goes to a file before grep reads it: `docker logs | grep -q` fails under pipefail
# whenever grep exits on its match while docker logs is still writing (SIGPIPE, exit 141).
logged() { # CONTAINER TEXT -> whether the container's log holds TEXT
    "$DOCKER" logs "$1" >"$WORK/container.log" 2>&1 && grep -qF "$2" "$WORK/container.log"
}
logged "$(container api)" "shutdown signal received" || die "the api did not log its shutdown"
for w in $(compose ps -q worker); do
    [ "$w" = "$victim" ] && continue
    logged "$w" "worker stopped" || die "worker ${w:0:12} did not drain and stop"
done
logged "$(container splunk)" "splunk-emulator stopped" || die "the emulator did not log its stop"
compose down -v --remove-orphans >/dev/null 2>&1
STACK_UP=""

# ---------------------------------------------------------------------------------------------
step "Kubernetes and OpenShift manifests"
kubernetes-validate --strict --quiet deploy/k8s/*.yaml deploy/k8s/beside-quay/ingress.yaml \
    deploy/k8s/beside-quay/gateway.yaml
python3 deploy/check_route.py deploy/k8s/beside-quay/route.yaml
echo "kubernetes-validate --strict: ok; Routes: ok"

step "Prometheus alert rules"
promtool check rules deploy/prometheus/logexport-alerts.yml

step "nginx template: nginx -t, then which backend answers each path"
NGINX_DIR="$WORK/nginx"
mkdir -p "$NGINX_DIR/tmp"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend() { # NAME PORT: answers every request with "NAME METHOD PATH"
    python3 - "$1" "$2" <<'PY' &
import http.server, sys
name, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        body = f"{name} {self.command} {self.path}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_DELETE = do_PUT = answer
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
    BACKEND_PIDS+=($!)
}
quay_port="$(free_port)"; logexport_port="$(free_port)"; proxy_port="$(free_port)"
backend quay "$quay_port"
backend logexport "$logexport_port"
LISTEN="127.0.0.1:$proxy_port" QUAY_UPSTREAM="127.0.0.1:$quay_port" QUAY_SCHEME=http \
    LOGEXPORT_UPSTREAM="127.0.0.1:$logexport_port" \
    envsubst '${LISTEN} ${QUAY_UPSTREAM} ${QUAY_SCHEME} ${LOGEXPORT_UPSTREAM}' \
    <deploy/nginx/logexport-beside-quay.conf.template >"$NGINX_DIR/site.conf"
cat >"$NGINX_DIR/nginx.conf" <<CONF
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $NGINX_DIR/tmp/body;
    proxy_temp_path $NGINX_DIR/tmp/proxy;
    fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
    scgi_temp_path $NGINX_DIR/tmp/scgi;
    include $NGINX_DIR/site.conf;
}
CONF
nginx -t -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf"
nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf"
for port in "$quay_port" "$logexport_port" "$proxy_port"; do
    for _ in $(seq 1 50); do curl -fs -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
done
routes_ok=1
expect() { # BACKEND METHOD PATH
    local got
    got="$(curl -s -X "$2" "http://127.0.0.1:$proxy_port$3" | cut -d' ' -f1)"
    printf '%-10s %-6s %-50s -> %s\n' "$1" "$2" "$3" "$got"
    [ "$got" = "$1" ] || routes_ok=0
}
expect logexport GET /api/v1/user/logs
expect logexport GET /api/v1/superuser/aggregatelogs
expect logexport POST /api/v1/user/exportlogs
expect logexport GET '/api/v1/organization/acme/logs?starttime=01/01/2024'
expect logexport POST /api/v1/organization/acme/exportlogs
expect logexport GET /api/v1/repository/acme/app/aggregatelogs
expect logexport POST /api/v1/repository/acme/app/exportlogs
expect logexport GET /api/v1/exportlogs
expect logexport GET /api/v1/exportlogs/0b6c3a53-1b1e-4a8e-9b1a-1b1e4a8e9b1a
expect logexport DELETE /api/v1/exportlogs/0b6c3a53-1b1e-4a8e-9b1a-1b1e4a8e9b1a
expect logexport GET /api/v1/exportlogs/0b6c3a53-1b1e-4a8e-9b1a-1b1e4a8e9b1a/download
expect logexport GET '/exportedlogs/abc.json?expires=1&signature=x'
expect quay GET /
expect quay GET /v2/
expect quay GET /api/v1/user/
expect quay GET /api/v1/organization/acme
expect quay GET /api/v1/organization/acme/logs/extra
expect quay GET /api/v1/organization/a%2Fb/logs
expect quay GET /api/v1/repository/acme/app/tag/
expect quay GET /api/v1/user/logsx
expect quay GET /api/v1/superuser/users/
[ "$routes_ok" = 1 ] || die "the nginx template sends a path to the wrong backend"

step "all deploy checks passed in $((SECONDS - START))s"
