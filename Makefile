# vcfm developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build test lint fmt crd demo deps vcsim clean

all: build

## Install what the tests need on a fresh machine (Go for vcsim, kubectl).
deps:
	@bash tools/ci/deps.sh

## Build the vCenter simulator (cached under target/vcsim/).
vcsim: deps
	@bash tools/vcsim/build.sh

build:
	$(CARGO) build --workspace --all-targets

## Formatting and lints, warnings are errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate deploy/crds from the Rust types (a test fails when they drift).
crd:
	$(CARGO) run -q -p vcfm -- crd > deploy/crds/vmwarecloudfoundationmigrations.yaml

## Every test: installs what is missing, lints, then runs the whole suite.
test: vcsim lint
	@bash tools/ci/test.sh

## A whole migration on the embedded simulated environment.
demo: vcsim
	@bash tools/ci/demo.sh

clean:
	$(CARGO) clean
