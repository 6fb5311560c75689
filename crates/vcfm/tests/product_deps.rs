//! The shipped controller carries no simulator. What the Dockerfile builds,
//! resolved by `cargo tree` with the Dockerfile's own `cargo build` arguments,
//! links neither kube-sim nor openshift-sim, and the vSphere client without its
//! `sim` feature (VM clone / destroy, session termination, session secrets).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::process::Command;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The `cargo build` arguments of the Dockerfile, as `cargo tree` arguments.
fn dockerfile_build_args() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{WORKSPACE}/Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let builds: Vec<&str> = joined
        .lines()
        .filter(|l| l.trim_start().starts_with("RUN") && l.contains("cargo build"))
        .collect();
    assert_eq!(
        builds.len(),
        1,
        "one `RUN cargo build` in the Dockerfile: {builds:?}"
    );
    let after = builds[0].split("cargo build").nth(1).unwrap();
    let cmd = after.split("&&").next().unwrap();
    let mut words = cmd.split_whitespace();
    let mut out = vec![];
    while let Some(w) = words.next() {
        match w {
            // Selection and features carry over; `cargo tree` has no profile or bin choice.
            "-p" | "--package" | "-F" | "--features" | "--target" => {
                out.push(w.to_string());
                out.push(words.next().unwrap().to_string());
            }
            "--locked" | "--frozen" | "--no-default-features" | "--all-features" => {
                out.push(w.to_string());
            }
            "--release" => {}
            "--bin" => {
                words.next();
            }
            w if w.starts_with("--features=") || w.starts_with("--package=") => {
                out.push(w.to_string());
            }
            other => panic!(
                "the Dockerfile's cargo build uses {other:?}, which this check does not translate; teach it"
            ),
        }
    }
    assert!(
        out.windows(2).any(|w| w == ["-p", "vcfm"]),
        "the Dockerfile builds -p vcfm: {out:?}"
    );
    out
}

fn cargo_tree(args: &[String], extra: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .arg("tree")
        .arg("--manifest-path")
        .arg(format!("{WORKSPACE}/Cargo.toml"))
        .args(["--offline", "--prefix", "none", "--color", "never"])
        .args(args)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree {args:?} {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn packages(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn the_image_links_no_simulator() {
    let args = dockerfile_build_args();
    let tree = cargo_tree(&args, &["-e", "normal"]);
    let pkgs = packages(&tree);
    // It is the product's tree: the controller and the vSphere client are in it.
    for wanted in ["vcfm", "vcfm-controller", "vcfm-vsphere", "kube"] {
        assert!(pkgs.contains(&wanted), "{wanted} missing from:\n{tree}");
    }
    for sim in [
        "kube-sim",
        "openshift-sim",
        "vcfm-demo",
        "testbed",
        "real-tier",
    ] {
        assert!(!pkgs.contains(&sim), "the image links {sim}:\n{tree}");
    }
}

#[test]
fn the_image_builds_the_vsphere_client_without_its_sim_feature() {
    let args = dockerfile_build_args();
    let inverted = cargo_tree(&args, &["-e", "normal,features", "-i", "vcfm-vsphere"]);
    assert!(inverted.contains("vcfm-vsphere v"), "{inverted}");
    assert!(
        !inverted.contains("vcfm-vsphere feature \"sim\""),
        "the image enables vcfm-vsphere's sim feature:\n{inverted}"
    );
    // The same query sees the feature where it is on: the check can fail.
    let sim = cargo_tree(
        &["-p".into(), "openshift-sim".into()],
        &["-e", "normal,features", "-i", "vcfm-vsphere"],
    );
    assert!(sim.contains("vcfm-vsphere feature \"sim\""), "{sim}");
}

#[test]
fn the_image_carries_no_crd_schema_generator() {
    // `vcfm crd` prints the checked-in manifest (tests/crd.rs proves it is what the
    // types generate): the product leaves vcfm-api's `schema` feature (schemars
    // derives, k8s-openapi's schemas) off.
    let args = dockerfile_build_args();
    let inverted = cargo_tree(&args, &["-e", "normal,features", "-i", "vcfm-api"]);
    assert!(inverted.contains("vcfm-api v"), "{inverted}");
    assert!(
        !inverted.contains("vcfm-api feature \"schema\""),
        "the image enables vcfm-api's schema feature:\n{inverted}"
    );
    let k8s = cargo_tree(&args, &["-e", "normal,features", "-i", "k8s-openapi"]);
    assert!(
        !k8s.contains("k8s-openapi feature \"schemars\""),
        "the image builds k8s-openapi's JSON schemas:\n{k8s}"
    );
    // The same query sees the feature where it is on: the check can fail.
    let sim = cargo_tree(
        &["-p".into(), "openshift-sim".into()],
        &["-e", "normal,features", "-i", "vcfm-api"],
    );
    assert!(sim.contains("vcfm-api feature \"schema\""), "{sim}");
}

#[test]
fn the_image_links_no_http2_and_no_env_filter() {
    // The controller's only TLS server (secure metrics) offers HTTP/1.1 alone and no
    // client negotiates HTTP/2 (tests/metrics_http1.rs); RUST_LOG is read as a
    // `Targets` list. Either feature coming back adds hundreds of KB of code to
    // every page the controller keeps resident.
    let args = dockerfile_build_args();
    let tree = cargo_tree(&args, &["-e", "normal"]);
    let pkgs = packages(&tree);
    for unwanted in ["h2", "matchers"] {
        assert!(
            !pkgs.contains(&unwanted),
            "the image links {unwanted}:\n{tree}"
        );
    }
    let sub = cargo_tree(
        &args,
        &["-e", "normal,features", "-i", "tracing-subscriber"],
    );
    assert!(sub.contains("tracing-subscriber v"), "{sub}");
    assert!(
        !sub.contains("tracing-subscriber feature \"env-filter\""),
        "the image enables tracing-subscriber's env-filter:\n{sub}"
    );
    // The same query sees both where they are on: the check can fail.
    let sim = cargo_tree(&["-p".into(), "kube-sim".into()], &["-e", "normal"]);
    assert!(packages(&sim).contains(&"h2"), "{sim}");
    let sim = cargo_tree(
        &["-p".into(), "kube-sim".into()],
        &["-e", "normal,features", "-i", "tracing-subscriber"],
    );
    assert!(
        sim.contains("tracing-subscriber feature \"env-filter\""),
        "{sim}"
    );
}
