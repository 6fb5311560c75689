#!/usr/bin/env bash
# Runs the whole test suite, then the end-to-end scenarios again on the real tier.
#
# Sim tier: every test, against kube-sim and openshift-sim (and vcsim). nextest runs every
# test in its own process; plain cargo test is the fallback where nextest is absent. Doc
# tests first.
#
# Real tier (VCFM_TIER=real): the controller e2e scenarios against the real etcd,
# kube-apiserver and kube-controller-manager and the real machine API and CPMS operators
# (built by `make real-parts`), one at a time (each starts its own control plane).
# Scenarios that inject API-server faults exist on the sim tier only (kube-sim's fault
# injection); they are not in the list below.
set -euo pipefail
cd "$(dirname "$0")/../.."

if cargo nextest --version >/dev/null 2>&1; then
  cargo test --workspace --all-features --doc
  cargo nextest run --workspace --all-features --no-fail-fast
else
  cargo test --workspace --all-features --no-fail-fast
fi

echo "test: real tier"
VCFM_TIER=real cargo test -p vcfm-controller --all-features \
  --test migration_automatic \
  -- --test-threads=1
