//! `openshift-sim --kubeconfig-out FILE` starts the whole environment; kubectl sees an
//! OpenShift-looking cluster; SIGTERM stops everything it started.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=20s")
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refuses(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
}

#[test]
fn binary_serves_kubectl_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_openshift-sim"))
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .args(["--pace", "instant", "--workers", "2", "--infra-machineset"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(json) = line.strip_prefix("OPENSHIFT_SIM_READY ") {
                let _ = tx.send(json.to_string());
            }
        }
    });
    let ready = match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(r) => r,
        Err(e) => {
            let _ = child.kill();
            panic!("openshift-sim did not get ready: {e}");
        }
    };
    let info: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let infra_id = info["infraID"].as_str().unwrap().to_string();

    let out = kubectl(
        &kubeconfig,
        &["get", "machines,machinesets,co,infrastructure", "-A"],
    );
    assert!(out.contains(&format!("{infra_id}-master-0")), "{out}");
    assert!(out.contains(&format!("{infra_id}-worker-0")), "{out}");
    assert!(out.contains(&format!("{infra_id}-infra-0")), "{out}");
    assert!(out.contains("Running"), "{out}");
    assert!(out.contains("machine-config"), "{out}");
    assert!(
        out.contains("infrastructure.config.openshift.io/cluster"),
        "{out}"
    );
    let id = kubectl(
        &kubeconfig,
        &[
            "get",
            "infrastructure",
            "cluster",
            "-o",
            "jsonpath={.status.infrastructureName}",
        ],
    );
    assert_eq!(id, infra_id);
    let servers: Vec<String> = ["source", "target"]
        .iter()
        .map(|s| format!("{}:443", info[s]["server"].as_str().unwrap()))
        .collect();
    let api = info["apiServer"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://")
        .to_string();
    assert!(
        !refuses(&api) && servers.iter().all(|s| !refuses(s)),
        "everything is up"
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("openshift-sim did not exit on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit: {status}");
    assert!(refuses(&api), "kube-sim stopped");
    for s in &servers {
        assert!(refuses(s), "vcsim {s} stopped");
    }
}
