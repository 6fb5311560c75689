#!/usr/bin/env bash
# `make demo`: a whole migration on the simulated environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! cargo run -q -p vcfm -- demo --help >/dev/null 2>&1; then
  echo "make demo: 'vcfm demo' is not built yet (it lands with the deploy/demo work, issue 9)." >&2
  echo "Until then, 'make test' exercises every piece that exists against the simulators." >&2
  exit 1
fi
exec cargo run -q -p vcfm -- demo "$@"
