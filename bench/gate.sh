#!/usr/bin/env bash
# The regression gate (issue 6): instructions per tools/call, counted by callgrind, for
#   off — Portcullis with every feature off (HTTP upstream: the pc-bench mock, run natively)
#   on  — Portcullis with auth + topic scope + mint_obo on (the same configs as bench/run.sh (c) and (d))
# compared with bench/callgrind-baseline.json; exits 1 when a case costs more than the tolerance (10 %) over it.
#
#   bench/gate.sh               # build, measure, compare (≈ 30 s after the build)
#   bench/gate.sh --update      # measure and write the figures as the new baseline (commit it with the change)
#   bench/gate.sh --stages      # also print the per-call inclusive cost of the main functions (callgrind_annotate)
#   bench/gate.sh --floor       # also count bench/proxy (the hyper floor) the same way, for reference (not gated)
#
# How: the gateway runs under `valgrind --tool=callgrind`; a deterministic client (pc-harness calls: one session,
# one call at a time) makes WARMUP + N1 calls in one run and WARMUP + N2 in another; (Ir(B) - Ir(A)) / (N2 - N1)
# cancels startup, warmup and shutdown and is what one more call costs. Only the gateway runs under valgrind.
# Env: WARMUP (50), N1 (100), N2 (500), SKIP_BUILD=1, KEEP=DIR (keep the callgrind files there).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
WARMUP=${WARMUP:-50}
N1=${N1:-100}
N2=${N2:-500}
BASELINE=$ROOT/bench/callgrind-baseline.json
UPDATE=
STAGES=
FLOOR=
for a in "$@"; do
    case $a in
        --update) UPDATE=1 ;;
        --stages) STAGES=1 ;;
        --floor) FLOOR=1 ;;
        *)
            echo "usage: bench/gate.sh [--update] [--stages] [--floor]" >&2
            exit 2
            ;;
    esac
done
command -v valgrind >/dev/null || {
    echo "bench/gate.sh: valgrind is not installed (apt-get install valgrind)" >&2
    exit 2
}

if [[ -n "${KEEP:-}" ]]; then
    WORK=$KEEP
    mkdir -p "$WORK"
    trap 'cleanup_pids' EXIT
else
    WORK=$(mktemp -d)
    trap 'cleanup_pids; rm -rf "$WORK"' EXIT
fi

build_release
start_mock "$WORK/mock.out"
write_configs "$WORK" "$MOCK_URL"
TOKEN=$(cat "$WORK/token")

# run CASE CALLS: one callgrind run of the gateway with config CASE serving WARMUP + CALLS calls.
run() {
    local case=$1 n=$2 url hdr=()
    START_LIMIT=120 start_gateway "$WORK/$case.toml" valgrind --tool=callgrind --callgrind-out-file="$WORK/$case.$n.out"
    url=$GW_URL
    if [[ $case == on ]]; then
        url=$GW_URL/bench
        hdr=(--header "Authorization: Bearer $TOKEN")
    fi
    "$HARNESS" calls --url "$url" "${hdr[@]}" --tool mock__echo --warmup "$WARMUP" --calls "$n" >&2
    stop_gateway
}

ARGS=()
for case in off on; do
    run "$case" "$N1"
    run "$case" "$N2"
    ARGS+=(--case "$case=$WORK/$case.$N1.out:$((WARMUP + N1)):$WORK/$case.$N2.out:$((WARMUP + N2))")
done

if [[ -n $FLOOR ]]; then
    for n in $((WARMUP + N1)) $((WARMUP + N2)); do
        valgrind --tool=callgrind --callgrind-out-file="$WORK/floor.$n.out" "$PROXY" --listen 127.0.0.1:0 \
            --upstream "$MOCK_URL" >"$WORK/floor.$n.log" 2>&1 &
        PX=$!
        PIDS+=("$PX")
        url=$(wait_for "$WORK/floor.$n.log" 'listening on (http://[^ ]+)' 120)
        "$HARNESS" calls --url "$url" --tool echo --warmup 0 --calls "$n" >&2
        kill -TERM "$PX"
        wait "$PX" 2>/dev/null || true
    done
    echo "floor (bench/proxy, not gated):"
    "$HARNESS" gate --baseline "$WORK/floor.json" --update \
        --case "floor=$WORK/floor.$((WARMUP + N1)).out:$((WARMUP + N1)):$WORK/floor.$((WARMUP + N2)).out:$((WARMUP + N2))" \
        >/dev/null
    jq -r '"  bench/proxy: \(.cases.floor) Ir per call"' "$WORK/floor.json"
fi

if [[ -n $STAGES ]]; then
    # The main stages of a call; inclusive per-call Ir of each function whose name contains one of these.
    PATTERNS=(
        "portcullis_protocol::message::Message::parse"
        "portcullis_gateway::dispatch"
        "portcullis_gateway::identity"
        "portcullis_auth::"
        "portcullis_obo::"
        "portcullis_upstream::conn"
        "portcullis_upstream::http"
        "portcullis_gateway::http"
        "portcullis_gateway::modern"
        "hyper::proto::h1"
        "hyper_util::client"
        "reqwest::"
        "axum::"
        "tokio::runtime::scheduler"
        "mi_malloc"
        "mi_free"
        "__memcpy"
        "__send"
        "__libc_recv"
        "writev"
        "epoll_wait"
    )
    for case in off on; do
        for n in "$N1" "$N2"; do
            callgrind_annotate --inclusive=yes --auto=no --threshold=99.9 "$WORK/$case.$n.out" >"$WORK/$case.$n.annotate" 2>/dev/null
        done
        echo "== $case: per-call inclusive Ir by function (functions matching the stage patterns) =="
        match=()
        for p in "${PATTERNS[@]}"; do match+=(--match "$p"); done
        "$HARNESS" stages --a "$WORK/$case.$N1.annotate" --b "$WORK/$case.$N2.annotate" --calls $((N2 - N1)) \
            "${match[@]}" --top "${TOP:-60}"
    done
fi

if [[ -n $UPDATE ]]; then
    "$HARNESS" gate --baseline "$BASELINE" "${ARGS[@]}" --update \
        --note "$(date -u +%F) at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + working tree'): bench/gate.sh, WARMUP=$WARMUP N1=$N1 N2=$N2, valgrind $(valgrind --version | sed 's/valgrind-//')"
else
    "$HARNESS" gate --baseline "$BASELINE" "${ARGS[@]}"
fi
