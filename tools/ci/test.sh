#!/usr/bin/env bash
# Runs the whole test suite. nextest runs every test in its own process (the
# simulators are per-test processes, so this isolates them); plain cargo test
# is the fallback where nextest is absent. Doc tests first, so the suite's
# own summary is the last thing printed.
set -euo pipefail
cd "$(dirname "$0")/../.."

if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doc tests.
  cargo test --workspace --all-features --doc
  cargo nextest run --workspace --all-features --no-fail-fast
else
  cargo test --workspace --all-features --no-fail-fast
fi
