#!/usr/bin/env bash
# The benchmark harness (issue 6): on one mock upstream and one load, side by side in one run:
#   (a) the mock called directly            (b) bench/proxy, a minimal hyper reverse proxy (the floor)
#   (c) Portcullis, every feature off         (d) Portcullis, every feature that exists on (auth, scope, mint_obo)
#   (e) a peer gateway from npm (supergateway, pinned) over the stdio mock, next to (f) Portcullis over the same
#       stdio mock
# then 10,000 idle sessions against Portcullis (RSS before/after). Prints markdown on stdout, progress on stderr.
#
#   bench/run.sh                                  # ≈ 2.5 min: 6 s per run, 3 loads × 6 paths, idle sessions
#   DURATION=10s RATE=5000 CONC=32 bench/run.sh
#
# Env: DURATION (5s), WARMUP (1s), CONC (32), RATE (5000, the open-loop row), IDLE_SESSIONS (10000),
#      SKIP_BUILD=1 (use the existing release binaries), SKIP_PEER=1, SKIP_IDLE=1, PATHS="a b c d e f" (subset).
# Everything (load generator, gateways, mock) shares this machine's cores; the figures include that contention.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
RATE=${RATE:-5000}
CONC=${CONC:-32}
IDLE_SESSIONS=${IDLE_SESSIONS:-10000}
PATHS=${PATHS:-a b c d e f}
SUPERGATEWAY_VERSION=4.0.0
PEERS=$ROOT/bench/.peers
WORK=$(mktemp -d)
trap 'cleanup_pids; rm -rf "$WORK"' EXIT

build_release
if [[ -z "${SKIP_PEER:-}" && ! -x $PEERS/node_modules/.bin/supergateway ]] ||
    [[ -z "${SKIP_PEER:-}" && $(jq -r .version "$PEERS/node_modules/supergateway/package.json" 2>/dev/null) != "$SUPERGATEWAY_VERSION" ]]; then
    echo "installing supergateway@$SUPERGATEWAY_VERSION into bench/.peers" >&2
    mkdir -p "$PEERS"
    npm install --silent --no-audit --no-fund --prefix "$PEERS" "supergateway@$SUPERGATEWAY_VERSION" >&2
fi

CLK_TCK=$(getconf CLK_TCK)
# CPU time (user + system) of one process in clock ticks; fields after the ")" that closes the command name.
cpu_ticks() { [[ -n $1 ]] && sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}' || echo 0; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
per_call() { # TICKS CALLS -> µs per call
    awk -v t="$1" -v c="$2" -v hz="$CLK_TCK" 'BEGIN { if (c > 0) printf "%.1f", t * 1e6 / hz / c; else print "-" }'
}
loadavg() { cut -d' ' -f1 /proc/loadavg; }

ROWS=()
declare -A TPUT P99 GCPU
LOADS=("c=1" "c=$CONC" "rate=$RATE")

# measure KEY NAME URL TOOL GATEWAY_PID MOCK_PID [HEADER]
measure() {
    local key=$1 name=$2 url=$3 tool=$4 gw=$5 mock=$6 header=${7:-}
    for load in "${LOADS[@]}"; do
        local args=(--url "$url" --tool "$tool" --duration "$DURATION" --warmup "$WARMUP" --json)
        [[ -n $header ]] && args+=(--header "$header")
        case $load in
            c=*) args+=(--concurrency "${load#c=}") ;;
            rate=*) args+=(--concurrency "$CONC" --rate "${load#rate=}") ;;
        esac
        local g0 m0 g1 m1 json la0 la1
        la0=$(loadavg)
        g0=$(cpu_ticks "$gw")
        m0=$(cpu_ticks "$mock")
        /usr/bin/time -f '%U %S' -o "$WORK/time" "$HARNESS" load "${args[@]}" >"$WORK/report.json"
        g1=$(cpu_ticks "$gw")
        m1=$(cpu_ticks "$mock")
        la1=$(loadavg)
        json=$(cat "$WORK/report.json")
        echo "$key $name $load: $json" >&2
        local all gcpu mcpu lcpu rss
        all=$(jq .all_calls <<<"$json")
        gcpu=$([[ -n $gw ]] && per_call $((g1 - g0)) "$all" || echo "-")
        mcpu=$([[ -n $mock ]] && per_call $((m1 - m0)) "$all" || echo "-")
        lcpu=$(awk -v c="$all" '{ if (c > 0) printf "%.1f", ($1 + $2) * 1e6 / c; else print "-" }' "$WORK/time")
        rss=$([[ -n $gw ]] && awk -v k="$(rss_kib "$gw")" 'BEGIN {printf "%.1f", k / 1024}' || echo "-")
        TPUT[$key,$load]=$(jq .throughput <<<"$json")
        P99[$key,$load]=$(jq .p99_us <<<"$json")
        GCPU[$key,$load]=$gcpu
        ROWS+=("$(jq -r --arg n "($key) $name" --arg l "$load" --arg g "$gcpu" --arg m "$mcpu" --arg lg "$lcpu" \
            --arg r "$rss" --arg la "$la0→$la1" \
            '"| \($n) | \($l) | \(.throughput | floor) | \(.p50_us) | \(.p99_us) | \(.p999_us) | \(.errors) | \(.late) | \($g) | \($r) | \($m) | \($lg) | \($la) |"' \
            <<<"$json")")
    done
}

want() { [[ " $PATHS " == *" $1 "* ]]; }

start_mock "$WORK/mock.out"
write_configs "$WORK" "$MOCK_URL"
TOKEN=$(cat "$WORK/token")

want a && measure a "mock, direct" "$MOCK_URL" echo "" "$MOCK"

if want b; then
    "$PROXY" --listen 127.0.0.1:0 --upstream "$MOCK_URL" >"$WORK/proxy.out" 2>&1 &
    PX=$!
    PIDS+=("$PX")
    PX_URL=$(wait_for "$WORK/proxy.out" 'listening on (http://[^ ]+)')
    measure b "bench/proxy (hyper floor)" "$PX_URL" echo "$PX" "$MOCK"
    kill "$PX"
    wait "$PX" 2>/dev/null || true
fi

if want c; then
    start_gateway "$WORK/off.toml"
    measure c "Portcullis, features off" "$GW_URL" mock__echo "$GW" "$MOCK"
    stop_gateway
fi

if want d; then
    start_gateway "$WORK/on.toml"
    measure d "Portcullis, auth+scope+OBO on" "$GW_URL/bench" mock__echo "$GW" "$MOCK" "Authorization: Bearer $TOKEN"
    stop_gateway
fi

if want f; then
    cat >"$WORK/stdio.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[[upstream]]
name = "mock"
command = ["$BENCH", "mock", "--stdio"]
EOF
    start_gateway "$WORK/stdio.toml"
    STDIO_MOCK=$(cat /proc/"$GW"/task/*/children | tr ' ' '\n' | grep -m1 . || true)
    measure f "Portcullis → stdio mock" "$GW_URL" mock__echo "$GW" "$STDIO_MOCK"
    stop_gateway
fi

if want e && [[ -z "${SKIP_PEER:-}" ]]; then
    # supergateway's README: `--stdio CMD --outputTransport streamableHttp [--stateful]`; stateful keeps one child
    # per session (the stateless default spawns a new server for every request, which is not a gateway to compare).
    PORT=$(free_port)
    "$PEERS/node_modules/.bin/supergateway" --stdio "$BENCH mock --stdio" --outputTransport streamableHttp \
        --stateful --port "$PORT" --logLevel none >"$WORK/sg.out" 2>&1 &
    SG=$!
    PIDS+=("$SG")
    wait_port "$PORT"
    # Its stdio child exists once a session opens; count the node process as "gateway", the child as "mock".
    measure e "supergateway@$SUPERGATEWAY_VERSION → stdio mock" "http://127.0.0.1:$PORT/mcp" echo "$SG" ""
    kill "$SG"
    wait "$SG" 2>/dev/null || true
fi

IDLE=()
if [[ -z "${SKIP_IDLE:-}" ]]; then
    for cfg in off on; do
        start_gateway "$WORK/$cfg.toml"
        url=$GW_URL
        hdr=()
        if [[ $cfg == on ]]; then
            url=$GW_URL/bench
            hdr=(--header "Authorization: Bearer $TOKEN")
        fi
        "$HARNESS" calls --url "$url" --tool mock__echo "${hdr[@]}" --warmup 0 --calls 100 >/dev/null
        before=$(rss_kib "$GW")
        out=$("$HARNESS" sessions --url "$url" "${hdr[@]}" --count "$IDLE_SESSIONS" --concurrency 16)
        sleep 1
        after=$(rss_kib "$GW")
        echo "idle $cfg: $out; RSS $before → $after KiB" >&2
        IDLE+=("$(awk -v c="$cfg" -v b="$before" -v a="$after" -v n="$IDLE_SESSIONS" -v o="$out" 'BEGIN {
            printf "| %s | %s | %.1f | %.1f | %.0f |", (c == "on" ? "(d) auth+scope+OBO on" : "(c) features off"),
                o, b / 1024, a / 1024, (a - b) * 1024 / n }')")
        stop_gateway
    done
fi

# ratio A B LOAD: A's throughput / B's.
ratio() {
    local a=${TPUT[$1,$3]:-} b=${TPUT[$2,$3]:-}
    [[ -n $a && -n $b ]] && awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }' || echo "-"
}
# cpu_ratio A B LOAD: B's CPU per call / A's = A's throughput per core over B's.
cpu_ratio() {
    local a=${GCPU[$1,$3]:-} b=${GCPU[$2,$3]:-}
    [[ -n $a && -n $b && $a != - && $b != - ]] &&
        awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.1f×", b / a; else print "-" }' || echo "-"
}
p99_over() {
    local a=${P99[$1,$3]:-} b=${P99[$2,$3]:-}
    [[ -n $a && -n $b ]] && echo "$((a - b)) µs" || echo "-"
}

cat <<EOF
Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); $(uname -sr); commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' + working tree').
Load generator (pc-harness load), gateways and mock all run on these cores (no pinning); load average is shown per
row (start→end). Each run: ${WARMUP} warmup, then ${DURATION} measured; 1 MCP session; tool \`echo\` (64-byte result).
\`c=N\`: closed loop, N calls in flight. \`rate=R\`: open loop at R calls/s over ${CONC} connections, latency from
each call's scheduled send time (\`late\`: sends that went out behind schedule). CPU: process user+sys time over the
run (warmup included) / every call made; for (b)–(f) the "gateway" is the proxy/gateway process, for (e) the node
process (its stdio child is the mock). RSS: gateway VmRSS after the run.
(d) features on: $D_FEATURES.

| path | load | calls/s | p50 µs | p99 µs | p99.9 µs | errors | late | gateway CPU µs/call | gateway RSS MiB | mock CPU µs/call | loadgen CPU µs/call | load avg |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
EOF
printf '%s\n' "${ROWS[@]}"
cat <<EOF

Ratios (throughput at c=$CONC unless noted; "per core" = calls per gateway CPU-second = 1 / CPU per call):

| ratio | value |
|---|---|
| (c)/(b) throughput, c=$CONC | $(ratio c b "c=$CONC") |
| (d)/(b) throughput, c=$CONC | $(ratio d b "c=$CONC") |
| (c)/(b) throughput, c=1 | $(ratio c b c=1) |
| (d)/(b) throughput, c=1 | $(ratio d b c=1) |
| (b)/(a), (c)/(a), (d)/(a) throughput, c=$CONC | $(ratio b a "c=$CONC"), $(ratio c a "c=$CONC"), $(ratio d a "c=$CONC") |
| (c) per core / (b) per core, c=$CONC | $(cpu_ratio c b "c=$CONC") |
| (d) per core / (b) per core, c=$CONC | $(cpu_ratio d b "c=$CONC") |
| (f) Portcullis / (e) supergateway throughput, c=$CONC | $(ratio f e "c=$CONC") |
| (f) Portcullis / (e) supergateway per core, c=$CONC | $(cpu_ratio f e "c=$CONC") |
| (f) Portcullis / (e) supergateway per core, c=1 | $(cpu_ratio f e c=1) |
| p99 overhead at $RATE calls/s: (c)−(a), (d)−(a), (b)−(a) | $(p99_over c a "rate=$RATE"), $(p99_over d a "rate=$RATE"), $(p99_over b a "rate=$RATE") |
EOF
if ((${#IDLE[@]})); then
    cat <<EOF

Idle sessions: ${IDLE_SESSIONS} sessions opened (\`initialize\` + \`notifications/initialized\`, then left idle) against a
gateway that has served 100 calls; RSS before and 1 s after.

| gateway | opened | RSS before MiB | RSS after MiB | bytes per session |
|---|---|---|---|---|
EOF
    printf '%s\n' "${IDLE[@]}"
fi
