//! `vcfm` as a kubectl/oc plugin: linked as `kubectl-vcfm` on PATH, the real
//! kubectl finds and runs it, and its help and hints name it `kubectl vcfm`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use kube::api::{Api, PostParams};
use serde_json::json;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use vcfm_api::{MigrationState, VmwareCloudFoundationMigration};

const NS: &str = "vcfm-system";

/// A directory holding `NAME -> the vcfm binary`, as a user installs the plugin.
fn plugin_dir(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vcfm"), dir.path().join(name)).unwrap();
    dir
}

fn path_with(dir: &Path) -> OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// `kubectl ARGS` with the plugin directory first on PATH.
fn kubectl(dir: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .args(args)
        .env("PATH", path_with(dir))
        .stdin(Stdio::null())
        .output()
        .expect("kubectl is installed (tools/ci/deps.sh)")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn kubectl_vcfm_help_names_the_plugin() {
    let dir = plugin_dir("kubectl-vcfm");
    let help = stdout(&kubectl(dir.path(), &["vcfm", "--help"]));
    assert!(
        help.contains("Usage: kubectl vcfm [OPTIONS] <COMMAND>"),
        "{help}"
    );
    for cmd in ["status", "approve", "pause", "resume", "rollback", "plan"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd}:\n{help}"
        );
    }
    assert!(!help.contains("demo"), "the product has no demo:\n{help}");
    let sub = stdout(&kubectl(dir.path(), &["vcfm", "status", "--help"]));
    assert!(
        sub.contains("Usage: kubectl vcfm status [OPTIONS] <NAME>"),
        "{sub}"
    );

    // Called by its own name it stays `vcfm`, and says how to install the plugin.
    let plain = stdout(
        &Command::new(env!("CARGO_BIN_EXE_vcfm"))
            .arg("--help")
            .output()
            .unwrap(),
    );
    assert!(plain.contains("Usage: vcfm [OPTIONS] <COMMAND>"), "{plain}");
    assert!(plain.contains("kubectl-vcfm"), "{plain}");
}

#[test]
fn oc_plugin_name_is_oc_vcfm() {
    // oc runs `oc-vcfm` before `kubectl-vcfm`, with the same argv[0] convention.
    let dir = plugin_dir("oc-vcfm");
    let help = stdout(
        &Command::new(dir.path().join("oc-vcfm"))
            .arg("--help")
            .output()
            .unwrap(),
    );
    assert!(
        help.contains("Usage: oc vcfm [OPTIONS] <COMMAND>"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_vcfm_status_and_resume_act_on_the_migration() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = kube_sim::KubeSim::builder()
        .kubeconfig_path(tmp.path().join("kubeconfig"))
        .start()
        .await
        .unwrap();
    sim.apply_yaml(&vcfm_api::crd_yaml().unwrap()).unwrap();
    sim.apply_yaml(include_str!("../../../deploy/namespace.yaml"))
        .unwrap();
    let client = sim.client().await.unwrap();
    let m: VmwareCloudFoundationMigration = serde_json::from_value(json!({
        "apiVersion": "migration.openshift.io/v1alpha1",
        "kind": "VmwareCloudFoundationMigration",
        "metadata": {"name": "move", "namespace": NS},
        "spec": {
            "state": "Pending",
            "targetVCenterCredentialsSecret": {"name": "target-creds"},
            "failureDomains": [{
                "name": "wld01", "region": "region-b", "zone": "az1", "server": "vc2.example.com",
                "topology": {"datacenter": "DC1", "computeCluster": "/DC1/host/C1",
                    "datastore": "/DC1/datastore/ds1", "networks": ["VM Network"],
                    "template": "/DC1/vm/rhcos"}
            }],
            "machineSetConfig": {"replicas": 2}
        }
    }))
    .unwrap();
    let api: Api<VmwareCloudFoundationMigration> = Api::namespaced(client, NS);
    api.create(&PostParams::default(), &m).await.unwrap();

    let dir = plugin_dir("kubectl-vcfm");
    let kubeconfig = sim.kubeconfig_path().to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["vcfm"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--kubeconfig", &kubeconfig]);
        kubectl(dir.path(), &all)
    };
    let status = stdout(&tokio::task::block_in_place(|| run(&["status", "move"])));
    assert!(status.contains("move"), "{status}");
    // The next step is spelled the way the user is calling vcfm.
    assert!(
        status.contains("start it with `kubectl vcfm resume move`."),
        "{status}"
    );
    stdout(&tokio::task::block_in_place(|| run(&["resume", "move"])));
    let after = api.get("move").await.unwrap();
    assert_eq!(after.spec.state, MigrationState::Running);

    // Errors name the plugin too (no controller runs, so no phase waits).
    let approve = tokio::task::block_in_place(|| run(&["approve", "move"]));
    assert!(!approve.status.success());
    let err = String::from_utf8_lossy(&approve.stderr);
    assert!(
        err.contains("name one: `kubectl vcfm approve move PHASE`"),
        "{err}"
    );
}
