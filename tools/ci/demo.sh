#!/usr/bin/env bash
# `make demo`: a whole migration on the simulated environment (two vcsim
# vCenters, kube-sim, openshift-sim), shown live. The Makefile has already
# installed the packages and built vcsim (target/vcsim/vcsim). Extra
# arguments go to `vcfm-demo` (e.g. tools/ci/demo.sh --manual), the demo's own
# binary: the product binary `vcfm` carries no simulator.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${VCFM_SHARED_DIR:-}" ] && [ ! -d ../shared/openshift-crds ]; then
  echo "make demo: the OpenShift CRDs are not at ../shared/openshift-crds; set VCFM_SHARED_DIR to the directory holding openshift-crds/." >&2
  exit 1
fi
cargo build -q -p vcfm-demo --bin vcfm-demo
exec cargo run -q -p vcfm-demo --bin vcfm-demo -- "$@"
