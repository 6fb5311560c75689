#!/usr/bin/env bash
# Builds the real tier from Go modules only (tools/real/versions.env names every version):
#   kube-apiserver, kube-controller-manager  k8s.io/kubernetes (wrapper go.mod, staging modules pinned by replace)
#   etcd                                     go.etcd.io/etcd/server/v3 (the version k8s itself pins)
#   machine-controller-manager, nodelink-controller, machineset-controller
#                                            github.com/openshift/machine-api-operator
#   control-plane-machine-set-operator       github.com/openshift/cluster-control-plane-machine-set-operator
# into target/real/bin/. A binary is rebuilt only when versions.env or this script is newer than it.
# Go's module and build caches are the machine's own (GOMODCACHE/GOCACHE may point elsewhere).
# Usage: tools/real/build.sh [k8s|openshift|all]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
out="$root/target/real"
bin="$out/bin"
mkdir -p "$bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
what="${1:-all}"

fresh() { # fresh BIN...: true when every named binary is newer than the inputs
  local b
  for b in "$@"; do
    [ -x "$bin/$b" ] && [ "$bin/$b" -nt "$here/versions.env" ] && [ "$bin/$b" -nt "$here/build.sh" ] || return 1
  done
}

timed() { # timed LABEL CMD...: runs CMD, reports wall time and peak RSS on stderr
  local label="$1"; shift
  local t0=$SECONDS
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "real: $label: %e s wall, %M KiB peak RSS" "$@"
  else
    "$@"
  fi
  echo "real: $label done in $((SECONDS - t0)) s" >&2
}

build_k8s() {
  fresh kube-apiserver kube-controller-manager etcd && return 0
  local K="$K8S_VERSION" S="v0.${K8S_VERSION#1.}" minor
  minor="$(echo "$K" | cut -d. -f2)"
  local src="$out/src/k8s"
  rm -rf "$src"; mkdir -p "$src"; cd "$src"
  go mod init vcfm.invalid/realk8s >/dev/null 2>&1
  # k8s.io/kubernetes publishes its go.mod with every staging module at v0.0.0; point each at its real release.
  local kmod
  kmod="$(go mod download -json "k8s.io/kubernetes@v$K" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  local m
  for m in $(awk '$1 ~ /^k8s\.io\/[a-z0-9-]+$/ && $2 == "v0.0.0" {print $1}' "$kmod" | sort -u); do
    go mod edit -replace="$m=$m@$S"
  done
  # The main module's godebug line sets the binary's defaults: keep k8s's own.
  sed -n 's/^godebug \(.*\)/\1/p' "$kmod" | while read -r kv; do go mod edit -godebug="$kv"; done
  go get "k8s.io/kubernetes@v$K" >/dev/null
  go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K" "k8s.io/kubernetes/cmd/kube-controller-manager@v$K"
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy
  local v="-X k8s.io/component-base/version.gitVersion=v$K -X k8s.io/component-base/version.gitMajor=1"
  v+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  v+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K -X k8s.io/client-go/pkg/version.gitMajor=1"
  v+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  timed kube-apiserver go build -trimpath -pgo=off -ldflags "-s -w $v" -o "$bin/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  timed kube-controller-manager go build -trimpath -pgo=off -ldflags "-s -w $v" -o "$bin/kube-controller-manager.tmp" k8s.io/kubernetes/cmd/kube-controller-manager
  timed etcd go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3
  for m in kube-apiserver kube-controller-manager etcd; do mv -f "$bin/$m.tmp" "$bin/$m"; done
  cd "$root"
}

# One wrapper module per component family: Go's MVS would otherwise build each operator
# against the other's newer openshift/api (CPMS 2025-10 does not compile against MAO
# 2026-02's: FeatureGateCPMSMachineNamePrefix is gone).
wrapper() { # wrapper NAME: a fresh wrapper module under target/real/src/NAME, entered
  local src="$out/src/$1"
  rm -rf "$src"; mkdir -p "$src"; cd "$src"
  go mod init "vcfm.invalid/real$1" >/dev/null 2>&1
}

install_bin() { # install_bin NAME PKG LDFLAGS: builds PKG into bin/NAME (atomically)
  timed "$1" go build -trimpath -ldflags "-s -w $3" -o "$bin/$1.tmp" "$2"
  mv -f "$bin/$1.tmp" "$bin/$1"
}

build_mao() {
  fresh machine-controller-manager nodelink-controller machineset-controller && return 0
  local mao=github.com/openshift/machine-api-operator
  wrapper mao
  go get -tool "$mao/cmd/vsphere@$MAO_VERSION" "$mao/cmd/nodelink-controller@$MAO_VERSION" "$mao/cmd/machineset@$MAO_VERSION"
  go mod tidy
  local v="-X $mao/pkg/version.Raw=v$OCP_RELEASE"
  install_bin machine-controller-manager "$mao/cmd/vsphere" "$v"
  install_bin nodelink-controller "$mao/cmd/nodelink-controller" "$v"
  install_bin machineset-controller "$mao/cmd/machineset" "$v"
}

build_cpms() {
  fresh control-plane-machine-set-operator && return 0
  local cpms=github.com/openshift/cluster-control-plane-machine-set-operator
  wrapper cpms
  go mod edit -replace="github.com/openshift/api=github.com/openshift/api@$CPMS_OPENSHIFT_API_VERSION"
  go get -tool "$cpms/cmd/control-plane-machine-set-operator@$CPMS_VERSION"
  go mod tidy
  install_bin control-plane-machine-set-operator "$cpms/cmd/control-plane-machine-set-operator" ""
}

# CRDs the real operators need that OpenShift's API CRD set in shared/ lacks: the IPAM kinds
# the machine controller's scheme registers (machine-api-operator third_party/cluster-api/crd).
copy_crds() {
  local crds="$out/crds"
  [ -f "$crds/.done" ] && [ "$crds/.done" -nt "$here/versions.env" ] && return 0
  local dir
  dir="$(go mod download -json "github.com/openshift/machine-api-operator@$MAO_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  rm -rf "$crds"; mkdir -p "$crds"
  cp "$dir"/third_party/cluster-api/crd/*.yaml "$crds/"
  # The DNS config the Machine webhook reads at start (pkg/webhooks/machine_webhook.go getDNS),
  # from the openshift/api the machine API is built with.
  local api
  api="$(cd "$out/src/mao" && go list -m -f '{{.Dir}}' github.com/openshift/api)"
  cp "$api/config/v1/zz_generated.crd-manifests/0000_10_config-operator_01_dnses.crd.yaml" "$crds/"
  # The FeatureGate status the cluster-config-operator writes lists every gate of the release;
  # the CPMS operator panics on a gate it knows but the status lacks. Its own openshift/api's
  # payload manifest is the list it knows (not a CRD: kept apart from crds/).
  local capi
  capi="$(cd "$out/src/cpms" && go list -m -f '{{.Dir}}' github.com/openshift/api)"
  mkdir -p "$out/featuregates"
  cp "$capi/payload-manifests/featuregates/featureGate-SelfManagedHA-Default.yaml" "$out/featuregates/"
  touch "$crds/.done"
}

case "$what" in
  k8s) build_k8s ;;
  openshift) build_mao; build_cpms; copy_crds ;;
  all) build_k8s; build_mao; build_cpms; copy_crds ;;
  *) echo "usage: $0 [k8s|openshift|all]" >&2; exit 2 ;;
esac
ls -1 "$bin"
