# vcfm developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build test lint fmt crd bundle bundle-validate demo deps vcsim real-parts clean

all: build

## Install what the tests need on a fresh machine (Go for vcsim, kubectl).
deps:
	@bash tools/ci/deps.sh

## Build the vCenter simulator (cached under target/vcsim/).
vcsim: deps
	@bash tools/vcsim/build.sh

## Build the real tier from Go modules (kube-apiserver, etcd, kube-controller-manager, the machine
## API and CPMS operators) into target/real/bin/; versions in tools/real/versions.env.
real-parts: deps
	@bash tools/real/build.sh all

build:
	$(CARGO) build --workspace --all-targets

## Formatting and lints, warnings are errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate deploy/crds from the Rust types (a test fails when they drift; `vcfm crd`
## prints the checked-in file, so the binary carries no schema generator).
crd:
	$(CARGO) run -q -p vcfm-api --features schema --example crd > deploy/crds/vmwarecloudfoundationmigrations.yaml.tmp
	mv deploy/crds/vmwarecloudfoundationmigrations.yaml.tmp deploy/crds/vmwarecloudfoundationmigrations.yaml

## Regenerate the OLM bundle (bundle/) from deploy/ (crates/vcfm/tests/bundle.rs fails when it is stale).
bundle:
	$(CARGO) run -q -p vcfm -- bundle --deploy-dir deploy --out bundle

## Validate bundle/ with operator-framework's validation library (built by tools/olm/build.sh,
## version in tools/real/versions.env), for the oldest supported OpenShift's Kubernetes.
bundle-validate: deps
	@"$$(bash tools/olm/build.sh)" -k8s-version 1.31 bundle

## Every test: installs what is missing, builds vcsim and the real tier, lints, then runs the
## whole suite on the sim tier and the e2e scenarios again on the real tier.
test: vcsim real-parts lint bundle-validate
	@bash tools/ci/test.sh

## A whole migration on the embedded simulated environment.
demo: vcsim
	@bash tools/ci/demo.sh

clean:
	$(CARGO) clean
