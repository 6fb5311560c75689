//! `vcfm-demo`, run as a user runs it (the real binary, stdout not a
//! terminal so it prints plain progress lines), at test speed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::process::{Command, Stdio};

fn demo(args: &[&str]) -> (bool, String) {
    demo_with_input(args, "")
}

/// Runs `vcfm-demo ARGS` (at test speed unless ARGS set one) with `input` on stdin.
fn demo_with_input(args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vcfm-demo"));
    cmd.args(["--timeout", "240"]).args(args);
    if !args.contains(&"--speed") {
        cmd.args(["--speed", "max"]);
    }
    let mut child = cmd
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The figures of one vCenter row of the summary: before, created, destroyed, after, calls.
fn vcenter_row(text: &str, label: &str) -> Vec<u64> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{label} ")))
        .unwrap_or_else(|| panic!("no {label} row in:\n{text}"));
    line.split_whitespace()
        .skip(2)
        .take(5)
        .map(|n| n.parse().unwrap_or_else(|_| panic!("row {line:?}")))
        .collect()
}

fn phase_result(text: &str, phase: &str) -> String {
    let summary = text.split("Summary:").nth(1).expect("a summary");
    let line = summary
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(phase))
        .unwrap_or_else(|| panic!("no {phase} in summary:\n{summary}"));
    line.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn demo_runs_a_whole_migration_and_reports_it() {
    // The README's example: a bigger cluster at a faster pace than the default.
    let (ok, text) = demo(&["--workers", "3", "--speed", "10"]);
    assert!(ok, "demo failed:\n{text}");
    assert!(text.contains("Result: Completed"), "{text}");
    // Live progress, as plain lines: every phase reported while running and at its end.
    for p in vcfm_api::PhaseName::ALL {
        assert!(
            text.lines().any(|l| l.contains(&format!(
                "{:>2}/15 {:<22} Running",
                p.number(),
                p.as_str()
            )) || l.contains(&format!(
                "{:>2}/15 {:<22} Completed",
                p.number(),
                p.as_str()
            ))),
            "no progress line for {p}:\n{text}"
        );
        assert_eq!(phase_result(&text, p.as_str()), "Completed", "{p}:\n{text}");
    }
    assert!(text.contains("waiting for:"), "{text}");
    // 3 masters + 3 workers leave the source and are recreated on the target.
    let src = vcenter_row(&text, "source");
    let tgt = vcenter_row(&text, "target");
    assert_eq!(&src[..4], &[6, 0, 6, 0], "source row:\n{text}");
    assert_eq!(&tgt[..4], &[0, 6, 0, 6], "target row:\n{text}");
    assert!(src[4] > 0 && tgt[4] > src[4], "vSphere calls:\n{text}");
    let api = text
        .lines()
        .find(|l| l.contains("Kubernetes API requests by the controller"))
        .expect("API request count");
    let n: u64 = api
        .split("): ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{api}"));
    assert!(n > 100, "{api}");
    // Never prints a password (the simulators' and the target Secret's).
    assert!(!text.contains("Passw0rd"), "{text}");
}

#[test]
fn demo_fail_at_shows_the_rollback_and_exits_non_zero() {
    let (ok, text) = demo(&["--workers", "1", "--fail-at", "CreateWorkers"]);
    assert!(!ok, "a failed migration must exit non-zero:\n{text}");
    assert!(text.contains("Result: RollbackCompleted"), "{text}");
    assert!(text.contains("Rollback (PhaseFailure)"), "{text}");
    assert!(text.contains("CreateWorkers failed: machine"), "{text}");
    for p in ["Preflight", "UpdateInfrastructure", "CreateWorkers"] {
        assert_eq!(phase_result(&text, p), "RolledBack", "{p}:\n{text}");
    }
    assert_eq!(phase_result(&text, "RecreateCPMS"), "not");
    // Nothing moved: the source keeps its 4 VMs, the target has none.
    assert_eq!(&vcenter_row(&text, "source")[..4], &[4, 0, 0, 4], "{text}");
    assert_eq!(&vcenter_row(&text, "target")[..4], &[0, 0, 0, 0], "{text}");
}

#[test]
fn demo_refuses_a_failure_past_the_point_of_no_return() {
    let (ok, text) = demo(&["--fail-at", "Cleanup"]);
    assert!(!ok);
    assert!(text.contains("point of no return"), "{text}");
}

#[test]
fn demo_manual_asks_for_each_phase_and_stops_when_input_ends() {
    // Approve the first four phases, then end the input: no approval, so the
    // demo stops (exit 1) with the migration waiting before CreateTags.
    let (ok, text) = demo_with_input(&["--manual", "--workers", "1"], "y\n\ny\nyes\n");
    assert!(!ok, "{text}");
    let asked: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("waits for your approval"))
        .collect();
    assert_eq!(asked.len(), 5, "{text}");
    for (i, p) in [
        "Preflight",
        "Backup",
        "DisableCVO",
        "UpdateSecrets",
        "CreateTags",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            asked[i].contains(&format!("{}/15 {p} waits", i + 1)),
            "{text}"
        );
    }
    assert!(text.contains("stopped at your request"), "{text}");
    let line = |n: usize, p: &str, st: &str| format!("{n:>2}/15 {p:<22} {st}");
    assert!(
        text.contains(&line(4, "UpdateSecrets", "Completed")),
        "{text}"
    );
    assert!(!text.contains(&line(5, "CreateTags", "Running")), "{text}");
}

#[test]
fn demo_keep_leaves_the_cluster_up_for_kubectl_and_vcfm() {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vcfm-demo"))
        .args(["--keep", "--speed", "max", "--workers", "1"])
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let kubeconfig = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(240))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("no kubeconfig printed:\n{seen}")
            });
        seen.push_str(&line);
        seen.push('\n');
        if let Some(p) = line.trim().strip_prefix("export KUBECONFIG=") {
            break p.to_string();
        }
    };
    assert!(seen.contains("Result: Completed"), "{seen}");
    let kubectl = Command::new("kubectl")
        .args([
            "get",
            "vcfm",
            "-n",
            "vcfm-system",
            "--kubeconfig",
            &kubeconfig,
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&kubectl.stdout).to_string();
    // What `vcfm status demo --kubeconfig FILE` prints (the vcfm binary is
    // another package's, so its code is called here as the library it is).
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = vcfm::cli::client(Some(std::path::Path::new(&kubeconfig)))
            .await
            .unwrap();
        vcfm::cli::status(client, "vcfm-system", "demo")
            .await
            .unwrap()
    });
    // Ctrl-C ends it.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let exit = child.wait().unwrap();
    assert!(kubectl.status.success(), "{listed}");
    assert!(
        listed.contains("demo") && listed.contains("Completed"),
        "{listed}"
    );
    assert!(status.contains("Phase:      Completed"), "{status}");
    assert!(exit.success(), "exit after Ctrl-C: {exit:?}");
}

#[test]
fn demo_fail_at_an_api_write_rolls_back_from_that_phase() {
    // The API server refuses UpdateInfrastructure's write (injected when the
    // phase is about to start): the phase fails and phases 1-7 roll back.
    let (ok, text) = demo(&["--workers", "1", "--fail-at", "UpdateInfrastructure"]);
    assert!(!ok, "{text}");
    assert!(text.contains("Result: RollbackCompleted"), "{text}");
    assert!(
        text.contains("UpdateInfrastructure failed:") && text.contains("Forbidden"),
        "{text}"
    );
    assert_eq!(phase_result(&text, "UpdateInfrastructure"), "RolledBack");
    assert_eq!(phase_result(&text, "Backup"), "RolledBack");
    assert_eq!(phase_result(&text, "UpdateConfig"), "not");
}
