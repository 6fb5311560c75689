//! The CRD has one source of truth, the Rust types: the manifest shipped under
//! deploy/crds must be exactly what they generate, and `vcfm crd` prints it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::process::Command;

#[test]
fn deploy_crd_matches_vcfm_crd_byte_for_byte() {
    let out = Command::new(env!("CARGO_BIN_EXE_vcfm"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vcfm crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crds/vmwarecloudfoundationmigrations.yaml"
    );
    let shipped = std::fs::read(path).unwrap();
    assert!(
        out.stdout == shipped,
        "deploy/crds is stale: run `make crd` and commit the result"
    );
}

/// What `vcfm crd` prints is the checked-in manifest; this proves that manifest is
/// exactly what the Rust types generate (schema, CEL rules, printer columns).
#[test]
fn deploy_crd_is_what_the_types_generate() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crds/vmwarecloudfoundationmigrations.yaml"
    );
    let shipped = std::fs::read_to_string(path).unwrap();
    assert!(
        shipped == vcfm_api::crd_yaml().unwrap(),
        "deploy/crds is stale: run `make crd` and commit the result"
    );
}

#[test]
fn version_flag_reports_the_crate_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_vcfm"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("vcfm {}", env!("CARGO_PKG_VERSION"))
    );
}
