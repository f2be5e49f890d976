#!/usr/bin/env bash
# tools/call throughput and latency: the mock MCP server called directly, through the gateway with the mock as an
# HTTP upstream, and through the gateway with the mock as a stdio upstream. Prints a markdown table.
#
#   bench/run.sh                          # 5 s per run, 1 s warmup, open loop at 2000 calls/s
#   DURATION=10s RATE=5000 bench/run.sh
#
# Everything (load generator, gateway, mock) shares this machine's cores; the figures include that contention.
# Env: DURATION (5s), WARMUP (1s), RATE (2000), CONC (32), SKIP_BUILD=1 to use the existing release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
RATE=${RATE:-2000}
CONC=${CONC:-32}

if [[ -z "${SKIP_BUILD:-}" ]]; then
    cargo build --release -p portcullis -p portcullis-sim >&2
fi
BENCH=$ROOT/target/release/pc-bench
GATEWAY=$ROOT/target/release/portcullis
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# wait_for FILE REGEX: print the first capture group of the first line of FILE matching REGEX (30 s limit).
wait_for() {
    local file=$1 re=$2
    for _ in $(seq 300); do
        if [[ -s $file ]] && line=$(grep -Em1 "$re" "$file"); then
            [[ $line =~ $re ]] && echo "${BASH_REMATCH[1]}" && return 0
        fi
        sleep 0.1
    done
    echo "run.sh: timed out waiting for /$re/ in $file:" >&2
    cat "$file" >&2
    return 1
}

CLK_TCK=$(getconf CLK_TCK)
# CPU time (user + system) in clock ticks; fields after the ")" that closes the command name.
cpu_ticks() { [[ -n $1 ]] && sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}' || echo 0; }
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

per_call() { # TICKS CALLS -> µs per call
    awk -v t="$1" -v c="$2" -v hz="$CLK_TCK" 'BEGIN { if (c > 0) printf "%.1f", t * 1e6 / hz / c; else print "-" }'
}

ROWS=()
# measure NAME URL TOOL GATEWAY_PID MOCK_PID
measure() {
    local name=$1 url=$2 tool=$3 gw=$4 mock=$5
    for load in "c=1" "c=$CONC" "rate=$RATE"; do
        local args=(--url "$url" --tool "$tool" --duration "$DURATION" --warmup "$WARMUP" --json)
        case $load in
            c=*) args+=(--concurrency "${load#c=}") ;;
            rate=*) args+=(--concurrency "$CONC" --rate "${load#rate=}") ;;
        esac
        local g0 m0 g1 m1 json
        g0=$(cpu_ticks "$gw")
        m0=$(cpu_ticks "$mock")
        /usr/bin/time -f '%U %S' -o "$WORK/time" "$BENCH" load "${args[@]}" >"$WORK/report.json"
        g1=$(cpu_ticks "$gw")
        m1=$(cpu_ticks "$mock")
        json=$(cat "$WORK/report.json")
        echo "$name $load: $json" >&2
        local all calls gcpu mcpu lcpu rss
        all=$(jq .all_calls <<<"$json")
        gcpu=$([[ -n $gw ]] && per_call $((g1 - g0)) "$all" || echo "-")
        mcpu=$(per_call $((m1 - m0)) "$all")
        lcpu=$(awk -v c="$all" '{ if (c > 0) printf "%.1f", ($1 + $2) * 1e6 / c; else print "-" }' "$WORK/time")
        rss=$([[ -n $gw ]] && rss_mib "$gw" || echo "-")
        ROWS+=("$(jq -r --arg n "$name" --arg l "$load" --arg g "$gcpu" --arg m "$mcpu" --arg lg "$lcpu" --arg r "$rss" \
            '"| \($n) | \($l) | \(.throughput | floor) | \(.p50_us) | \(.p90_us) | \(.p99_us) | \(.p999_us) | \(.max_us) | \(.errors) | \($g) | \($m) | \($lg) | \($r) |"' \
            <<<"$json")")
    done
}

# The mock over HTTP, used directly and as the gateway's HTTP upstream.
"$BENCH" mock --listen 127.0.0.1:0 >"$WORK/mock.out" 2>&1 &
MOCK=$!
PIDS+=("$MOCK")
MOCK_URL=$(wait_for "$WORK/mock.out" 'listening on (http://[^ ]+)')

measure "direct (mock over HTTP)" "$MOCK_URL" echo "" "$MOCK"

# start_gateway CONFIG: start the gateway, set GW and GW_URL.
start_gateway() {
    PORTCULLIS_LOG=warn "$GATEWAY" serve -c "$1" >"$1.out" 2>&1 &
    GW=$!
    PIDS+=("$GW")
    GW_URL=$(wait_for "$1.out" 'Portcullis is listening on (http://[^ ]+)')/mcp
}

stop_gateway() {
    kill "$GW"
    wait "$GW" 2>/dev/null || true
}

cat >"$WORK/http.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[[upstream]]
name = "mock"
url = "$MOCK_URL"
EOF
start_gateway "$WORK/http.toml"
measure "gateway → HTTP upstream" "$GW_URL" mock__echo "$GW" "$MOCK"
stop_gateway

cat >"$WORK/stdio.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[[upstream]]
name = "mock"
command = ["$BENCH", "mock", "--stdio"]
EOF
start_gateway "$WORK/stdio.toml"
STDIO_MOCK=$(cat /proc/"$GW"/task/*/children | tr ' ' '\n' | grep -m1 . || true)
measure "gateway → stdio upstream" "$GW_URL" mock__echo "$GW" "$STDIO_MOCK"
stop_gateway

cat <<EOF
Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); $(uname -sr).
Load generator, gateway and mock all run on these cores (no pinning), so the figures include their contention.
Each run: ${WARMUP} warmup, then ${DURATION} measured; 1 MCP session; tool \`echo\` (64-byte result); loopback.
\`c=N\`: closed loop, N calls in flight. \`rate=R\`: open loop at R calls/s over ${CONC} connections, latency
from each call's scheduled send time. CPU columns: process CPU time (user+sys) over the run, warmup included,
divided by every call made. RSS: gateway VmRSS after the run.

| path | load | calls/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | gateway CPU µs/call | mock CPU µs/call | loadgen CPU µs/call | gateway RSS MiB |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
EOF
printf '%s\n' "${ROWS[@]}"
