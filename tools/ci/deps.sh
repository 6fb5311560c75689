#!/usr/bin/env bash
# Installs the system packages the test suite needs, only when missing, so a
# fresh machine (CI) and a developer's machine run the same `make test`.
# Go: the vCenter simulator (tools/vcsim) is a Go module built from the Go module proxy;
# it needs the Go named by the `go` line of tools/vcsim/go.mod or later (GOTOOLCHAIN=local).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)

if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

go_need="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$root/tools/vcsim/go.mod")"
go_have="$(go env GOVERSION | sed 's/^go//; s/[^0-9.].*//')"
if [ "$(printf '%s\n%s\n' "$go_need" "$go_have" | sort -V | head -n1)" != "$go_need" ]; then
  echo "deps: Go $go_have is too old: the vCenter simulator (govmomi) needs Go >= $go_need; install a newer Go first" >&2
  exit 1
fi

# cargo-nextest runs every test in its own process and more tests than cores at once (they
# mostly wait on simulators): built once from crates.io into target/tools/ (cached with the
# build, like vcsim and the real tier), skipped when present.
NEXTEST_VERSION=0.9.151
if ! "$root/target/tools/bin/cargo-nextest" nextest --version 2>/dev/null | grep -q " $NEXTEST_VERSION"; then
  echo "deps: installing cargo-nextest $NEXTEST_VERSION into target/tools"
  # default-no-update: every default feature but self-update (nextest's advice for CI builds).
  cargo install --locked --quiet --root "$root/target/tools" cargo-nextest --version "$NEXTEST_VERSION" \
    --no-default-features --features default-no-update
fi
