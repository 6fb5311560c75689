//! `vcfm demo`, run as a user runs it (the real binary, stdout not a
//! terminal so it prints plain progress lines), at test speed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::process::{Command, Stdio};

fn demo(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vcfm"))
        .arg("demo")
        .args(["--speed", "max", "--timeout", "240"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
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
    let (ok, text) = demo(&["--workers", "2"]);
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
    // 3 masters + 2 workers leave the source and are recreated on the target.
    let src = vcenter_row(&text, "source");
    let tgt = vcenter_row(&text, "target");
    assert_eq!(&src[..4], &[5, 0, 5, 0], "source row:\n{text}");
    assert_eq!(&tgt[..4], &[0, 5, 0, 5], "target row:\n{text}");
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
