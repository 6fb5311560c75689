#!/usr/bin/env bash
# Builds the OLM bundle validator (tools/olm/main.go over github.com/operator-framework/api's
# validation library, the one `operator-sdk bundle validate` runs) into
# <workspace>/target/tools/bundle-validate. The library's version is
# OPERATOR_FRAMEWORK_API_VERSION in tools/real/versions.env; when go.mod requires another,
# go.mod and go.sum are updated to it (commit them). Rebuilds only when the binary is
# missing or older than main.go, go.mod, go.sum, versions.env or this script.
# Usage: tools/olm/build.sh            (prints the binary path on success)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${BUNDLE_VALIDATE_OUT:-$root/target/tools/bundle-validate}"
export GOTOOLCHAIN=local CGO_ENABLED=0
# shellcheck source=../ci/gomod.sh
source "$root/tools/ci/gomod.sh"
version="$(versions_env_value bundle-validate OPERATOR_FRAMEWORK_API_VERSION "")"
require_go bundle-validate "$here"
pin_module bundle-validate "$here" github.com/operator-framework/api "$version"
build_if_stale bundle-validate "$here" "$out" "$here/main.go" "$here/go.mod" "$here/go.sum" \
  "$here/build.sh" "$root/tools/real/versions.env"
