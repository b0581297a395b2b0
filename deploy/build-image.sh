#!/usr/bin/env bash
# Builds the logexport container image from binaries built on this machine (deploy/Dockerfile).
#
#   deploy/build-image.sh [--release | --debug] [--base IMAGE] [--tag TAG] [--no-cargo]
#
#   --release      cargo build --release --bins, then package target/release/* (production;
#                  the default)
#   --debug        package target/debug/* (what deploy/verify.sh does: deploy/test.sh has just
#                  built them, and a release build takes ~20 minutes on 2 cores). Debug binaries
#                  are slower; never ship them.
#   --base IMAGE   the Debian bookworm base (default debian:bookworm-slim from the registry;
#                  deploy/verify.sh passes a locally imported one, logexport-base:bookworm)
#   --tag TAG      image name (default logexport:local)
#   --no-cargo     do not run cargo: the binaries must already be there
#
# The binaries are copied with their debug sections stripped into a small staging context
# (target/image-context), so the 6 GB target/ directory is never sent to the Docker daemon.
# DOCKER (default /usr/bin/docker) chooses the client.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKER="${DOCKER:-/usr/bin/docker}"
PROFILE=release
BASE=debian:bookworm-slim
TAG=logexport:local
CARGO=1
while [ $# -gt 0 ]; do
    case "$1" in
        --release) PROFILE=release ;;
        --debug) PROFILE=debug ;;
        --base) BASE="${2:?--base needs an image}"; shift ;;
        --tag) TAG="${2:?--tag needs a name}"; shift ;;
        --no-cargo) CARGO=0 ;;
        *) echo "build-image.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
    shift
done

cd "$ROOT"
if [ "$CARGO" = 1 ]; then
    if [ "$PROFILE" = release ]; then cargo build --release --locked --bins; else cargo build --locked --bins; fi
fi
CONTEXT="$ROOT/target/image-context"
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/bin" "$CONTEXT/worker-config"
for bin in logexport splunk-emulator; do
    src="target/$PROFILE/$bin"
    [ -x "$src" ] || { echo "build-image.sh: $src is missing; build it (cargo build --bins, with --release for release) or drop --no-cargo" >&2; exit 1; }
    strip --strip-debug -o "$CONTEXT/bin/$bin" "$src"
done
cp worker-config/logexport.toml "$CONTEXT/worker-config/"
cp deploy/Dockerfile "$CONTEXT/Dockerfile"
DOCKER_BUILDKIT=1 "$DOCKER" build --quiet --build-arg "BASE_IMAGE=$BASE" -t "$TAG" "$CONTEXT" >/dev/null
echo "build-image.sh: built $TAG ($PROFILE binaries on $BASE)"
