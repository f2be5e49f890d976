#!/usr/bin/env bash
# Build Portcullis and run it on examples/quickstart.toml, with an HTTP upstream started alongside.
# Needs only the Rust toolchain and Node.js (npx fetches the reference MCP servers on first run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bin portcullis

# The HTTP upstream: the reference server in Streamable HTTP mode on 127.0.0.1:3001.
PORT=3001 npx -y @modelcontextprotocol/server-everything@2026.8.31 streamableHttp >/tmp/portcullis-quickstart-upstream.log 2>&1 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  (exec 3<>/dev/tcp/127.0.0.1/3001) 2>/dev/null && break
  sleep 0.5
done

./target/release/portcullis serve -c examples/quickstart.toml
