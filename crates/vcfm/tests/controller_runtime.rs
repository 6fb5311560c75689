//! The controller as a process: health, readiness and metrics on the port it
//! is told, leader election that hands over on a clean shutdown, and a
//! standby that does nothing while another replica leads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};
use support::{Env, NS, Options};
use testbed::free_port;
use vcfm_api::{PhaseName, PhaseStatus};

/// A plain HTTP/1.0 GET (no chunked encoding to undo); returns (status code, body), or None when nothing listens.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
        .to_string();
    Some((code, body))
}

async fn wait_http(port: u16, path: &str, want: u16) -> String {
    let start = Instant::now();
    loop {
        if let Some((code, body)) = http_get(port, path)
            && code == want
        {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{path} on :{port} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(c: &Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn lease_holder(env: &Env) -> Option<String> {
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(env.client.clone(), NS);
    api.get_opt("vcfm-controller")
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_are_served_on_the_listen_port() {
    let mut env = Env::start(Options::default()).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut c = env.spawn_controller(&["--listen", &listen], &[]);
    assert_eq!(wait_http(port, "/healthz", 200).await.trim(), "ok");
    wait_http(port, "/readyz", 200).await;
    env.create(&env.migration("metered", |m| {
        m["spec"]["approvalMode"] = "Manual".into();
        m["spec"]["approvedPhases"] = serde_json::json!(["Preflight"]);
    }))
    .await
    .unwrap();
    env.wait_for("metered", "Backup to wait", Duration::from_secs(60), |m| {
        m.status
            .as_ref()
            .and_then(|s| s.current_phase_state.as_ref())
            .is_some_and(|c| {
                c.name == PhaseName::Backup && c.status == PhaseStatus::WaitingForApproval
            })
    })
    .await;
    // The reconcile that wrote that status is counted when it returns, a
    // moment later: poll (bounded) until every family has samples.
    let wanted = [
        "vcfm_reconciles_total{outcome=\"ok\",error_class=\"none\"}",
        "vcfm_phase_duration_seconds_count{phase=\"Preflight\"} 1",
        "vcfm_vsphere_calls_total{",
    ];
    let start = Instant::now();
    loop {
        let metrics = wait_http(port, "/metrics", 200).await;
        if wanted.iter().all(|w| metrics.contains(w)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "missing one of {wanted:?} in:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A status write that fails with 500 on all its attempts fails one
    // reconcile, then one that conflicts on all its attempts fails the next:
    // each is counted once, with its class, and retried (with backoff) until
    // one gets through. Both rules match every status write and each write
    // consumes one occurrence of both, the first rule's answer winning, so
    // the first eight writes get 500 and the next eight 409. Nothing else
    // writes the migration's status meanwhile: the approval below is a patch
    // of the spec and progress is watched through /metrics.
    let faults = env.sim.faults();
    faults.inject(
        kube_sim::FaultRule::new(kube_sim::FaultAction::Error { code: 500 })
            .verb("update")
            .resource("vmwarecloudfoundationmigrations/status")
            .name("metered")
            .times(8),
    );
    faults.inject(
        kube_sim::FaultRule::new(kube_sim::FaultAction::Conflict)
            .verb("update")
            .resource("vmwarecloudfoundationmigrations/status")
            .times(16),
    );
    env.api()
        .patch(
            "metered",
            &Default::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"spec": {"approvedPhases": ["Preflight", "Backup"]}}),
            ),
        )
        .await
        .unwrap();
    let failed = [
        "vcfm_reconciles_total{outcome=\"error\",error_class=\"kube_transient\"} 1\n",
        "vcfm_reconciles_total{outcome=\"error\",error_class=\"status_conflict\"} 1\n",
    ];
    let start = Instant::now();
    loop {
        let metrics = wait_http(port, "/metrics", 200).await;
        if metrics.contains("vcfm_phase_duration_seconds_count{phase=\"Backup\"} 1") {
            for f in failed {
                assert!(metrics.contains(f), "want {f:?} in:\n{metrics}");
            }
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "Backup did not complete after the failed writes:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sigterm(&c);
    let start = Instant::now();
    while c.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the controller did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.wait().unwrap().success(), "a clean shutdown exits 0");
    assert!(
        http_get(port, "/healthz").is_none(),
        "nothing listens after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_a_clean_shutdown_hands_over_at_once() {
    let mut env = Env::start(Options::default()).await;
    let (pa, pb) = (free_port(), free_port());
    let le = [
        "--leader-elect",
        "--lease-namespace",
        NS,
        "--lease-duration",
        "60",
    ];
    let la = format!("127.0.0.1:{pa}");
    let mut args_a = vec!["--listen", la.as_str()];
    args_a.extend(le);
    let mut a = env.spawn_controller(&args_a, &[("POD_NAME", "replica-a")]);
    wait_http(pa, "/readyz", 200).await;
    assert_eq!(lease_holder(&env).await.as_deref(), Some("replica-a"));

    let lb = format!("127.0.0.1:{pb}");
    let mut args_b = vec!["--listen", lb.as_str()];
    args_b.extend(le);
    let mut b = env.spawn_controller(&args_b, &[("POD_NAME", "replica-b")]);
    wait_http(pb, "/healthz", 200).await;
    assert_eq!(
        http_get(pb, "/readyz").map(|r| r.0),
        Some(503),
        "a standby is alive but not ready"
    );

    // The leader acts: the migration waits for approval of Preflight.
    env.create(&env.migration("led", |m| m["spec"]["approvalMode"] = "Manual".into()))
        .await
        .unwrap();
    env.wait_for("led", "Preflight to wait", Duration::from_secs(60), |m| {
        m.status
            .as_ref()
            .and_then(|s| s.current_phase_state.as_ref())
            .is_some_and(|c| c.status == PhaseStatus::WaitingForApproval)
    })
    .await;

    // A clean shutdown releases the lease; the standby takes over well before
    // the 60 s lease would have expired, and carries on.
    let handover = Instant::now();
    sigterm(&a);
    wait_http(pb, "/readyz", 200).await;
    assert!(
        handover.elapsed() < Duration::from_secs(30),
        "handover took {:?}",
        handover.elapsed()
    );
    assert_eq!(lease_holder(&env).await.as_deref(), Some("replica-b"));
    assert!(a.wait().unwrap().success(), "the old leader exits cleanly");
    let out = env.vcfm(&["approve", "led", "Preflight"]);
    assert!(out.status.success());
    env.wait_for(
        "led",
        "Preflight done by the new leader",
        Duration::from_secs(60),
        |m| {
            m.status.as_ref().is_some_and(|s| {
                s.phase_history
                    .iter()
                    .any(|e| e.phase == PhaseName::Preflight && e.status == PhaseStatus::Completed)
            })
        },
    )
    .await;
    let _ = b.kill();
    let _ = b.wait();
}

/// A kubeconfig whose server refuses every connection (nothing listens on a port just freed).
fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster: {{server: \"http://127.0.0.1:{}\"}}\ncontexts:\n- name: gone\n  context: {{cluster: gone, user: u}}\ncurrent-context: gone\nusers:\n- name: u\n  user: {{}}\n",
            free_port()
        ),
    )
    .unwrap();
    kubeconfig
}

/// The controller reads RUST_LOG as `target=level` directives only; one it cannot
/// read (EnvFilter's span syntax) is said in the log, not silently replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_log_it_cannot_read_is_reported() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("vcfm-rust-log-{}", std::process::id()));
    let kubeconfig = unreachable_kubeconfig(&dir);
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vcfm"))
        .args(["controller", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("RUST_LOG", "vcfm_controller[reconcile{phase=Backup}]=debug")
        .env_remove("KUBECONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = c.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = vec![];
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.contains("RUST_LOG is not a comma-separated list") => break true,
            Ok(l) => seen.push(l),
            Err(_) => break false,
        }
    };
    let _ = c.kill();
    let _ = c.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(found, "no warning about RUST_LOG in:\n{}", seen.join("\n"));
}

/// A SIGTERM stops the controller even while the API server cannot be reached:
/// kube-runtime waits for the migrations' first list before it reconciles, and
/// that wait used to outlast the signal until the kubelet's SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_stops_the_controller_while_the_api_server_is_unreachable() {
    let dir = std::env::temp_dir().join(format!("vcfm-dead-api-{}", std::process::id()));
    let kubeconfig = unreachable_kubeconfig(&dir);
    let port = free_port();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vcfm"))
        .args(["controller", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "text",
        ])
        .env_remove("KUBECONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_http(port, "/healthz", 200).await;
    // Let it get as far as it can: the controller runs, its watches retry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigterm(&c);
    let start = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = c.kill();
            panic!("the controller did not stop within a minute of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(c.wait().unwrap().success(), "a shutdown exits 0");
    let _ = std::fs::remove_dir_all(&dir);
}
