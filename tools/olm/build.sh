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
versions="$root/tools/real/versions.env"
version="$(sed -n 's/^OPERATOR_FRAMEWORK_API_VERSION=\([^[:space:]#]*\).*/\1/p' "$versions" | tail -n1)"
[ -n "$version" ] || { echo "bundle-validate: no OPERATOR_FRAMEWORK_API_VERSION in $versions" >&2; exit 1; }

if ! command -v go >/dev/null 2>&1; then
  bash "$root/tools/ci/deps.sh" >&2
fi
need="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$here/go.mod")"
have="$(go env GOVERSION | sed 's/^go//; s/[^0-9.].*//')"
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
  echo "bundle-validate: Go $have is older than the $need that tools/olm/go.mod needs; install Go >= $need" >&2
  exit 1
fi

current="$(sed -n 's#^require github.com/operator-framework/api \(v[^[:space:]]*\).*#\1#p; s#^[[:space:]]*github.com/operator-framework/api \(v[^[:space:]]*\)$#\1#p' "$here/go.mod" | head -n1)"
if [ "$current" != "$version" ]; then
  echo "bundle-validate: go.mod requires operator-framework/api $current, versions.env says $version: updating go.mod and go.sum" >&2
  (cd "$here" && go get "github.com/operator-framework/api@$version" && go mod tidy)
fi

fresh=1
for f in "$here/main.go" "$here/go.mod" "$here/go.sum" "$here/build.sh" "$versions"; do
  [ -x "$out" ] && [ "$out" -nt "$f" ] || fresh=0
done
if [ "$fresh" = 1 ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
echo "bundle-validate: building $out (operator-framework/api $version)" >&2
tmp="$out.tmp.$$"
(cd "$here" && go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$tmp" .) || { rm -f "$tmp"; exit 1; }
mv -f "$tmp" "$out"
echo "$out"
