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

version=v0.56.0
versions="$root/tools/real/versions.env"
if [ -f "$versions" ]; then
  v="$(sed -n 's/^GOVMOMI_VERSION=\([^[:space:]#]*\).*/\1/p' "$versions" | tail -n1)"
  [ -n "$v" ] && version="$v"
fi

if ! command -v go >/dev/null 2>&1; then
  bash "$root/tools/ci/deps.sh" >&2
fi
# go.mod's go line is the oldest toolchain that can build it (GOTOOLCHAIN=local: no download).
need="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$here/go.mod")"
have="$(go env GOVERSION | sed 's/^go//; s/[^0-9.].*//')"
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
  echo "vcsim: Go $have is older than the $need that tools/vcsim/go.mod needs; install Go >= $need" >&2
  exit 1
fi

current="$(sed -n 's#^[[:space:]]*github.com/vmware/govmomi \(v[^[:space:]]*\).*#\1#p; s#^require github.com/vmware/govmomi \(v[^[:space:]]*\).*#\1#p' "$here/go.mod" | head -n1)"
if [ "$current" != "$version" ]; then
  echo "vcsim: go.mod requires govmomi $current, versions.env says $version: updating go.mod and go.sum" >&2
  (cd "$here" && go get "github.com/vmware/govmomi@$version" && go mod tidy)
fi

fresh=1
for f in main.go go.mod go.sum build.sh; do
  [ -x "$out" ] && [ "$out" -nt "$here/$f" ] || fresh=0
done
if [ "$fresh" = 1 ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$(dirname "$out")"
echo "vcsim: building $out (govmomi $version)" >&2
tmp="$out.tmp.$$"
(cd "$here" && go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$tmp" .) || { rm -f "$tmp"; exit 1; }
mv -f "$tmp" "$out"
echo "$out"
