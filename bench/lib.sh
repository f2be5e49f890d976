# Helpers shared by bench/run.sh and bench/gate.sh (sourced, not run).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET/release/pc-bench
HARNESS=$TARGET/release/pc-harness
PROXY=$TARGET/release/pc-proxy
GATEWAY=$TARGET/release/portcullis
PIDS=()

build_release() {
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        (cd "$ROOT" && cargo build --release -p portcullis -p portcullis-sim -p portcullis-bench-proxy >&2)
    fi
}

# Kill what this script started (by pid), then wait for it.
cleanup_pids() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}

# wait_for FILE REGEX [SECONDS]: print the first capture group of the first line of FILE matching REGEX.
wait_for() {
    local file=$1 re=$2 limit=${3:-30}
    for _ in $(seq $((limit * 10))); do
        if [[ -s $file ]] && line=$(grep -Em1 "$re" "$file"); then
            [[ $line =~ $re ]] && echo "${BASH_REMATCH[1]}" && return 0
        fi
        sleep 0.1
    done
    echo "bench: timed out waiting for /$re/ in $file:" >&2
    cat "$file" >&2
    return 1
}

# A free loopback TCP port.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT [SECONDS]: until something accepts on 127.0.0.1:PORT.
wait_port() {
    local port=$1 limit=${2:-30}
    for _ in $(seq $((limit * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench: nothing listens on 127.0.0.1:$port after ${limit}s" >&2
    return 1
}

# start_mock OUTFILE: the mock over HTTP; sets MOCK (pid) and MOCK_URL.
start_mock() {
    "$BENCH" mock --listen 127.0.0.1:0 >"$1" 2>&1 &
    MOCK=$!
    PIDS+=("$MOCK")
    MOCK_URL=$(wait_for "$1" 'listening on (http://[^ ]+)')
}

# write_configs DIR MOCK_URL: the gateway configs for case (c) features off and (d) auth on, plus a token for (d)
# in DIR/token. Sets D_FEATURES (what (d) has on).
write_configs() {
    local dir=$1 url=$2
    cat >"$dir/off.toml" <<EOF
# (c) every optional feature off: anonymous, one HTTP upstream, no credential.
[server]
listen = "127.0.0.1:0"
max_sessions = 20000

[[upstream]]
name = "mock"
url = "$url"
EOF
    cat >"$dir/on.toml" <<EOF
# (d) every feature that exists today: JWT auth (EdDSA dev key, JWKS file), a topic that requires a scope,
# and a gateway-minted On-Behalf-Of JWT per upstream call (mint_obo). Policy, audit and scheduling do not exist yet.
[server]
listen = "127.0.0.1:0"
max_sessions = 20000

[auth]
resource = "http://127.0.0.1:8080/mcp"
authorization_servers = ["http://127.0.0.1:8080/dev-issuer"]
dev_signing_key_file = "dev-signing-key.pem"

[[auth.jwt]]
issuer = "http://127.0.0.1:8080/dev-issuer"
jwks_file = "dev-jwks.json"

[[upstream]]
name = "mock"
url = "$url"
credential = { kind = "mint_obo", key_file = "obo-signing-key.pem", alg = "EdDSA", issuer = "http://127.0.0.1:8080", scope = "tools:{tool}" }

[[topic]]
name = "bench"
tools = ["mock__*"]
scopes = ["mcp:bench"]
EOF
    if [[ ! -s $dir/obo-signing-key.pem ]]; then
        "$GATEWAY" keys signing --out "$dir/obo-signing-key.pem" >/dev/null
    fi
    "$GATEWAY" token mint -c "$dir/on.toml" --sub bench-user --roles agent --scopes mcp:bench --ttl 4h >"$dir/token"
    D_FEATURES="JWT bearer auth (EdDSA, JWKS file) + topic scope check + mint_obo upstream credential (EdDSA); policy/audit/scheduling not implemented yet"
}

# start_gateway CONFIG [WRAPPER...]: start the gateway (optionally under WRAPPER, e.g. valgrind); sets GW, GW_URL.
start_gateway() {
    local cfg=$1
    shift
    PORTCULLIS_LOG=warn "$@" "$GATEWAY" serve -c "$cfg" >"$cfg.out" 2>&1 &
    GW=$!
    PIDS+=("$GW")
    GW_URL=$(wait_for "$cfg.out" 'Portcullis is listening on (http://[^ ]+)' "${START_LIMIT:-30}")/mcp
}

stop_gateway() {
    kill -TERM "$GW" 2>/dev/null || true
    wait "$GW" 2>/dev/null || true
}
