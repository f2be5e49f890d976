#!/usr/bin/env bash
# The one command that runs every check and test. CI (.ci/run) calls exactly this.
#   1. installs the pinned test peers (Python mcp SDK in .venv/, npm servers/clients in tests/peers/)
#   2. cargo fmt --check, cargo clippy -D warnings
#   3. the whole test suite (unit + end-to-end with real peers) under cargo-nextest
#   4. the performance regression gate: callgrind instructions per tools/call vs bench/callgrind-baseline.json
#      (fails on > 10 % over; a release build, then ≈ 20 s). PORTCULLIS_SKIP_GATE=1 skips it locally.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --profile ci
else
  cargo test --workspace
fi
if [[ "${PORTCULLIS_SKIP_GATE:-0}" != 1 ]]; then
  bench/gate.sh
fi
