#!/usr/bin/env bash
# Install the pinned non-Rust peers used by the end-to-end tests.
#   .venv/              Python: mcp (SDK client + MCPServer fixture), mcp-server-time
#   tests/peers/        npm: server-everything, server-filesystem, @modelcontextprotocol/sdk (TS v1 client)
# Idempotent: each half is skipped when its stamp matches the pinned versions.
# Usage: scripts/test-deps.sh [--force]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY_PINS=(mcp==2.3.0 mcp-server-time==2026.10.19)
PYTHON="${PYTHON:-python3}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf 'test-deps: %s\n' "$*" >&2; }

# ---------- Python ----------
py_stamp_want="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ${PY_PINS[*]}"
py_stamp=".venv/.portcullis-test-deps"
if [[ $FORCE == 0 && -x .venv/bin/python && -f $py_stamp && "$(cat "$py_stamp")" == "$py_stamp_want" ]]; then
  log "python deps up to date (${PY_PINS[*]})"
else
  log "installing python deps into .venv: ${PY_PINS[*]}"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${PY_PINS[@]}"
  .venv/bin/python -c 'import mcp.client, mcp.server.mcpserver' >/dev/null
  [[ -x .venv/bin/mcp-server-time ]] || { log "mcp-server-time entry point missing"; exit 1; }
  printf '%s' "$py_stamp_want" > "$py_stamp"
fi

# ---------- npm ----------
npm_stamp="tests/peers/node_modules/.portcullis-test-deps"
npm_hash() { cat tests/peers/package.json; cat tests/peers/package-lock.json 2>/dev/null || true; }
npm_want="$(npm_hash | sha256sum | cut -d' ' -f1)"
if [[ $FORCE == 0 && -f $npm_stamp && "$(cat "$npm_stamp")" == "$npm_want" ]]; then
  log "npm peers up to date"
else
  log "installing npm peers into tests/peers"
  if [[ -f tests/peers/package-lock.json ]]; then
    (cd tests/peers && npm ci --no-audit --no-fund --loglevel=error) >&2
  else
    (cd tests/peers && npm install --no-audit --no-fund --loglevel=error --save-exact) >&2
  fi
  for bin in mcp-server-everything mcp-server-filesystem; do
    [[ -e tests/peers/node_modules/.bin/$bin ]] || { log "missing tests/peers/node_modules/.bin/$bin"; exit 1; }
  done
  npm_want="$(npm_hash | sha256sum | cut -d' ' -f1)"
  printf '%s' "$npm_want" > "$npm_stamp"
fi

log "ok"
