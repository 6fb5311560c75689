#!/usr/bin/env bash
# Builds govmomi's vCenter simulator (tools/vcsim/main.go) into <workspace>/target/vcsim/vcsim.
# Installs Debian's golang-go and golang-github-vmware-govmomi-dev when missing, and rebuilds
# only when the binary is missing or older than main.go (or this script).
# Usage: tools/vcsim/build.sh            (prints the binary path on success)
#        VCSIM_OUT=/path/vcsim tools/vcsim/build.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${VCSIM_OUT:-$root/target/vcsim/vcsim}"
gopath=/usr/share/gocode

if ! command -v go >/dev/null 2>&1 || [ ! -d "$gopath/src/github.com/vmware/govmomi/simulator" ]; then
  echo "vcsim: installing golang-go and golang-github-vmware-govmomi-dev" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y golang-go golang-github-vmware-govmomi-dev
fi

if [ -x "$out" ] && [ "$out" -nt "$here/main.go" ] && [ "$out" -nt "$here/build.sh" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$(dirname "$out")"
echo "vcsim: building $out" >&2
tmp="$out.tmp.$$"
(cd "$here" && GOPATH="$gopath" GO111MODULE=off GOCACHE="${GOCACHE:-$root/target/vcsim/gocache}" go build -o "$tmp" main.go) || { rm -f "$tmp"; exit 1; }
mv -f "$tmp" "$out"
echo "$out"
