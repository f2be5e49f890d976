#!/usr/bin/env bash
# Build Portcullis and run it on examples/quickstart.toml, with an HTTP upstream started alongside.
# Needs only the Rust toolchain and Node.js (npx fetches the reference MCP servers on first run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bin portcullis
BIN="${CARGO_TARGET_DIR:-target}/release/portcullis"

# The HTTP upstream: Portcullis's own fault-injecting mock MCP server (Streamable HTTP) on 127.0.0.1:3001,
# with a little realistic latency.
"$BIN" mock-server --listen 127.0.0.1:3001 --latency lognormal:p50=5ms,p99=40ms --seed 1 \
  >/tmp/portcullis-quickstart-upstream.log 2>&1 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  (exec 3<>/dev/tcp/127.0.0.1/3001) 2>/dev/null && break
  sleep 0.5
done

"$BIN" serve -c examples/quickstart.toml
