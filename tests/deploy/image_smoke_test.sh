#!/usr/bin/env bash
# The container image, built and run the way a cluster runs it: builds the Dockerfile's `cpu` target
# with Debian's buildah and runs it with podman (no Docker daemon, no registry), then checks
#   - the four binaries start, as uid 10001; no compiler, build tool, header or source is left in the
#     image, which is at most STATETUNE_IMAGE_MAX_MB (700) MB (docs/deploy.md has the measured size);
#   - convert-dataset says where data sets go (and reads them when mounted there); a generation runs
#     on a CPU without AVX (QEMU's Nehalem), where the CPU kernels pick their x86-64-v2 build;
#   - statetune-serve with the default model and a mounted tenants file: the image's HEALTHCHECK
#     passes (gRPC health SERVING), a generation streams, and SIGTERM drains: a generation in flight
#     when it arrives completes, the server logs server.stopped with nothing cancelled, and exits 0.
# No registry is reachable from CI, so the base image debian:12 is made here with mmdebstrap from the
# machine's own Debian mirror. podman's layer cache (/var/lib/containers) and the build stage's ccache
# mount make a rebuild on the same machine fast. .ci/run calls this after the test suite (not
# scripts/test.sh: it takes minutes). Needs root; installs buildah, podman, runc, mmdebstrap and
# qemu-user-static.
# Usage: tests/deploy/image_smoke_test.sh
# Environment: STATETUNE_IMAGE (default localhost/statetune:cpu), STATETUNE_IMAGE_MAX_MB (700),
#              STATETUNE_SHARED_DIR (../shared beside the checkout: its datasets/ are mounted),
#              STATETUNE_IMAGE_PREBUILT=1: check $STATETUNE_IMAGE as it is, without building it.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
[[ $(id -u) == 0 ]] || exec sudo -E "$0" "$@"
IMAGE=${STATETUNE_IMAGE:-localhost/statetune:cpu}
MAX_MB=${STATETUNE_IMAGE_MAX_MB:-700}
SHARED=${STATETUNE_SHARED_DIR:-$SRC/../shared}
BASE=docker.io/library/debian:12
# runc and rlimits every container can have, without touching the machine's configuration.
export CONTAINERS_CONF=$SRC/tests/deploy/containers.conf

TMP=$(mktemp -d)
NAME=statetune-smoke-$$
GEN_PID=
cleanup() {
  [[ -n $GEN_PID ]] && kill "$GEN_PID" 2>/dev/null
  podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
die() {
  echo "FAIL: $*"
  podman logs "$NAME" 2>&1 | tail -n 30 || true
  exit 1
}
step() { echo "== $(date -u +%T) $*"; }
# Containers have no network: every check talks to the server over the container's loopback. One-off
# containers skip the HEALTHCHECK (podman would try to schedule it through systemd).
run() { podman run --rm --network none --no-healthcheck "$@"; }

# ---- tools -----------------------------------------------------------------------------------------
missing=()
for p in buildah podman runc mmdebstrap qemu-user-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---- base image --------------------------------------------------------------------------------------
PREBUILT=${STATETUNE_IMAGE_PREBUILT:-0}
if [[ $PREBUILT != 1 ]] && ! podman image exists "$BASE"; then
  step "making $BASE with mmdebstrap (minbase, this machine's mirror)"
  sources=/etc/apt/sources.list.d/debian.sources
  [[ -f $sources ]] || sources=/etc/apt/sources.list
  # The machine's settings for that mirror go along (e.g. a snapshot whose Release files expired).
  aptopts=()
  while IFS= read -r opt; do aptopts+=("--aptopt=$opt"); done < <(apt-config dump |
    grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' || true)
  # Like Debian's slim images: no manuals, translations or docs other than the copyright files.
  mmdebstrap --variant=minbase --format=tar "${aptopts[@]}" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    bookworm "$TMP/debian12.tar" "$sources" >"$TMP/mmdebstrap.log" 2>&1 ||
    { tail -n 30 "$TMP/mmdebstrap.log"; die "mmdebstrap"; }
  podman import "$TMP/debian12.tar" "$BASE" >/dev/null
  rm -f "$TMP/debian12.tar"
fi

# ---- build -----------------------------------------------------------------------------------------
t0=$SECONDS
if [[ $PREBUILT != 1 ]]; then
  step "building the cpu target as $IMAGE (log: $TMP/build.log)"
  # docker format: OCI images have no HEALTHCHECK. --pull=never: the base is the local one.
  buildah bud --pull=never --format docker --layers --target cpu --tag "$IMAGE" \
    --build-arg STATETUNE_JOBS="$(nproc)" --file "$SRC/Dockerfile" "$SRC" >"$TMP/build.log" 2>&1 ||
    { tail -n 60 "$TMP/build.log"; die "buildah bud"; }
fi
build_s=$((SECONDS - t0))
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "built in ${build_s} s; $((size / 1000000)) MB"
((size <= MAX_MB * 1000000)) || die "the image is $((size / 1000000)) MB, above $MAX_MB MB"
healthcheck=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")
[[ $healthcheck == *"statetune health"* ]] || die "the image has no HEALTHCHECK: $healthcheck"

# ---- the image's contents ----------------------------------------------------------------------------
step "binaries, user, leftovers"
out=$(run "$IMAGE" sh -c '
  [ "$(id -u):$(id -g)" = 10001:10001 ] || { echo "runs as $(id -u):$(id -g)"; exit 1; }
  for b in statetune-serve statetune-train statetune statetune-engine; do
    $b --help >/dev/null 2>&1 || { echo "$b --help failed"; exit 1; }
  done
  for t in gcc g++ cc c++ cmake ninja make git ccache protoc; do
    if command -v $t >/dev/null; then echo "build tool left: $t"; exit 1; fi
  done
  for p in /src /build /usr/include/torch /usr/include/grpcpp /usr/include/google/protobuf; do
    if [ -e $p ]; then echo "left over: $p"; exit 1; fi
  done
  echo ok' 2>&1) || die "$out"

step "data sets: where they go, and read when mounted there"
out=$(run "$IMAGE" statetune-engine convert-dataset --dataset rte --out /tmp/rte.jsonl 2>&1) &&
  die "convert-dataset without data sets succeeded: $out"
[[ $out == *"/var/lib/statetune/datasets/glue (STATETUNE_DATASETS_DIR)"* ]] ||
  die "convert-dataset does not say where data sets go: $out"
if [[ -d $SHARED/datasets/glue ]]; then
  out=$(run -v "$SHARED/datasets:/var/lib/statetune/datasets:ro" "$IMAGE" \
    statetune-engine convert-dataset --dataset rte --max-examples 5 --out /tmp/rte.jsonl 2>&1) ||
    die "convert-dataset with mounted data sets: $out"
  [[ $out == "wrote 5 examples of rte/train"* ]] || die "convert-dataset: $out"
fi

# A node without AVX: QEMU emulating a Nehalem (x86-64-v2, no AVX) runs the image's binary. Built
# with -march=x86-64-v3, as before the kernels chose their level at start-up, it died with SIGILL.
step "generation on an emulated CPU without AVX (qemu -cpu Nehalem)"
out=$(run -v /usr/bin/qemu-x86_64-static:/usr/local/bin/qemu-x86_64:ro "$IMAGE" \
  qemu-x86_64 -cpu Nehalem /usr/local/bin/statetune-engine generate --prompt "The" --max-tokens 8 \
  --threads 2 2>&1) || die "statetune-engine generate without AVX: $out"
[[ $out == *"8 generated"* ]] || die "statetune-engine generate without AVX: $out"

# ---- serving -----------------------------------------------------------------------------------------
step "statetune-serve: health, generation, drain on SIGTERM"
KEY=smoke-$RANDOM$RANDOM
cat >"$TMP/tenants.json" <<JSON
{"admin_key_sha256": "$(run "$IMAGE" statetune hash-key "admin-$KEY")",
 "tenants": [{"name": "smoke", "api_keys_sha256": ["$(run "$IMAGE" statetune hash-key "$KEY")"]}]}
JSON
chmod 644 "$TMP/tenants.json"
podman run -d --name "$NAME" --network none \
  -v "$TMP/tenants.json:/etc/statetune/tenants.json:ro" "$IMAGE" >/dev/null
# The image's own HEALTHCHECK command, until SERVING (the model loads after the server listens).
deadline=$((SECONDS + 600))
until podman healthcheck run "$NAME" >/dev/null 2>&1; do
  [[ $(podman inspect --format '{{.State.Running}}' "$NAME") == true ]] || die "statetune-serve exited"
  ((SECONDS < deadline)) || die "not healthy within 600 s"
  sleep 1
done
grep -q 'cpu.kernels' <<<"$(podman logs "$NAME" 2>&1)" || die "no cpu.kernels line in the log"
out=$(podman exec "$NAME" statetune generate --api-key "$KEY" --prompt "Once upon a time" \
  --max-tokens 16 --temperature 0 --timeout 120 2>&1) || die "generate: $out"
[[ $out == *"16 generated"* ]] || die "generate: $out"

# A second container in the server's network namespace streams a longer generation; SIGTERM goes to
# the server once tokens flow. Draining lets that request finish, then the process exits 0.
podman run --rm --network "container:$NAME" "$IMAGE" statetune generate --api-key "$KEY" \
  --prompt "Once upon a time" --max-tokens 96 --temperature 0 --timeout 300 \
  >"$TMP/long.out" 2>"$TMP/long.err" &
GEN_PID=$!
deadline=$((SECONDS + 300))
until [[ -s $TMP/long.out ]]; do
  kill -0 "$GEN_PID" 2>/dev/null || die "the long generation ended before streaming: $(cat "$TMP/long.err")"
  ((SECONDS < deadline)) || die "the long generation streamed nothing within 300 s"
  sleep 0.1
done
kill -0 "$GEN_PID" 2>/dev/null || die "the long generation finished before SIGTERM: nothing to drain"
podman kill --signal TERM "$NAME" >/dev/null
wait "$GEN_PID" || die "the generation in flight failed during the drain: $(cat "$TMP/long.err")"
GEN_PID=
grep -q "96 generated" "$TMP/long.err" || die "the generation in flight was cut: $(cat "$TMP/long.err")"
code=$(podman wait "$NAME")
[[ $code == 0 ]] || die "statetune-serve exited with $code after SIGTERM"
logs=$(podman logs "$NAME" 2>&1)
grep -q 'server.draining.*SIGTERM' <<<"$logs" || die "no server.draining (SIGTERM) line"
grep -q 'server.stopped.*cancelled.\{1,3\}0' <<<"$logs" || die "server.stopped did not report 0 cancelled"

echo "PASS: image $IMAGE, $((size / 1000000)) MB, built in ${build_s} s"
