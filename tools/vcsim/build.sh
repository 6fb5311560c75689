#!/usr/bin/env bash
# Builds vcfm's vCenter simulator (tools/vcsim/main.go over govmomi's simulator, a Go module)
# into <workspace>/target/vcsim/vcsim. govmomi's version is GOVMOMI_VERSION in
# tools/real/versions.env (the default below when that file or line is missing); when
# go.mod requires another version, go.mod and go.sum are updated to it (commit them).
# Rebuilds only when the binary is missing or older than main.go, go.mod, go.sum or this
# script. Uses the machine's default Go module and build caches.
# Usage: tools/vcsim/build.sh            (prints the binary path on success)
#        VCSIM_OUT=/path/vcsim tools/vcsim/build.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${VCSIM_OUT:-$root/target/vcsim/vcsim}"
export GOTOOLCHAIN=local CGO_ENABLED=0

# shellcheck source=../ci/gomod.sh
source "$root/tools/ci/gomod.sh"
version="$(versions_env_value vcsim GOVMOMI_VERSION v0.56.0)"
require_go vcsim "$here"
pin_module vcsim "$here" github.com/vmware/govmomi "$version"
build_if_stale vcsim "$here" "$out" "$here/main.go" "$here/go.mod" "$here/go.sum" "$here/build.sh"
