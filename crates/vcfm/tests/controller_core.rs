//! The controller engine and phases 1–4, end to end: the real `vcfm`
//! binary (controller and CLI) against kube-sim over HTTPS and two TLS vcsim
//! instances. Each test builds its own cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::time::Duration;
use support::{Env, NS, Options, Vcfm};
use testbed::condition;
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus};

const T: Duration = Duration::from_secs(60);

fn history(m: &Vcfm) -> Vec<(PhaseName, PhaseStatus)> {
    m.status
        .as_ref()
        .map(|s| {
            s.phase_history
                .iter()
                .map(|e| (e.phase, e.status))
                .collect()
        })
        .unwrap_or_default()
}

fn completed(m: &Vcfm, p: PhaseName) -> bool {
    history(m)
        .iter()
        .any(|(ph, st)| *ph == p && matches!(st, PhaseStatus::Completed | PhaseStatus::Skipped))
}

fn waiting_for_approval_of(m: &Vcfm, p: PhaseName) -> bool {
    m.status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .is_some_and(|c| {
            c.name == p
                && c.status == PhaseStatus::WaitingForApproval
                && c.requires_approval
                && !c.approved
        })
}

fn phase(m: &Vcfm) -> Option<MigrationPhase> {
    m.status.as_ref().and_then(|s| s.phase)
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "vcfm failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Manual mode, approving phases 1–4 up front: the migration then stops,
/// waiting for approval of phase 5, after doing exactly phases 1–4.
fn approved_1_to_4(m: &mut serde_json::Value) {
    m["spec"]["approvalMode"] = "Manual".into();
    m["spec"]["approvedPhases"] =
        serde_json::json!(["Preflight", "Backup", "DisableCVO", "UpdateSecrets"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_mode_runs_phases_1_to_4_without_approval_then_pauses_on_request() {
    let mut env = Env::start(Options::default()).await;
    let creds_before = env.secret_data("kube-system", "vsphere-creds").await;
    env.start_controller();
    env.create(&env.migration("auto", |_| {})).await.unwrap();
    let m = env
        .wait_for("auto", "UpdateSecrets to complete", T, |m| {
            completed(m, PhaseName::UpdateSecrets)
        })
        .await;
    // Pause before anything else is judged, so later phases do not change what we check.
    ok(env.vcfm(&["pause", "auto"]));

    let st = m.status.clone().unwrap();
    assert_eq!(
        &history(&m)[..4],
        &[
            (PhaseName::Preflight, PhaseStatus::Completed),
            (PhaseName::Backup, PhaseStatus::Completed),
            (PhaseName::DisableCvo, PhaseStatus::Completed),
            (PhaseName::UpdateSecrets, PhaseStatus::Completed),
        ]
    );
    assert!(
        st.phase_history
            .iter()
            .all(|e| e.status != PhaseStatus::WaitingForApproval)
    );
    let src = st.source_vcenter.clone().unwrap();
    assert_eq!(src.server, env.source.server());
    assert_eq!(st.cluster.as_ref().unwrap().infra_id, env.sim.infra_id());
    assert!(!st.cluster.as_ref().unwrap().multi_vcenter_day2);
    assert!(
        !st.warnings.is_empty(),
        "preflight lists the prerequisites it cannot check"
    );

    // Backup: a Secret owned by the migration, keyed HMACs in status (the
    // key only in the Secret, so status is no oracle for guessed contents).
    let backup = env.secret_data(NS, "auto-backup").await;
    // Seven backups and the record of what UpdateSecrets wrote (for rollback).
    assert_eq!(st.backup_manifests.len(), 8, "{:?}", st.backup_manifests);
    assert!(
        st.backup_manifests
            .iter()
            .any(|b| b.key == "vsphere-creds.changes.json")
    );
    let key = hex::decode(&backup[vcfm_controller::backup::DIGEST_KEY]).unwrap();
    assert_eq!(key.len(), 32);
    let status_json = serde_json::to_string(&st).unwrap();
    assert!(!status_json.contains(&backup[vcfm_controller::backup::DIGEST_KEY]));
    for b in &st.backup_manifests {
        let data = backup
            .get(&b.key)
            .unwrap_or_else(|| panic!("backup {} missing", b.key));
        assert_eq!(
            vcfm_controller::backup::hmac_hex(&key, data.as_bytes()),
            b.hmac_sha256
        );
    }
    // DisableCVO on the gate-off path, UpdateSecrets adds and keeps.
    assert_eq!(env.cvo_replicas().await, 0);
    let creds = env.secret_data("kube-system", "vsphere-creds").await;
    let tgt = env.target.server();
    assert_eq!(
        creds.get(&format!("{tgt}.username")).map(String::as_str),
        Some(env.target.username())
    );
    assert_eq!(
        creds.get(&format!("{tgt}.password")).map(String::as_str),
        Some(env.target.password())
    );
    for (k, v) in &creds_before {
        assert_eq!(creds.get(k), Some(v), "existing key {k} must be untouched");
    }

    let m = env
        .wait_for("auto", "the pause to take effect", T, |m| {
            condition(m, "Paused").is_some_and(|c| c.0 == "True")
        })
        .await;
    for r in ["PhaseStarted", "PhaseCompleted", "Paused"] {
        env.wait_event(r).await;
    }
    let status = ok(env.vcfm(&["status", "auto"]));
    assert!(
        status.contains("Paused") && status.contains("vcfm resume auto"),
        "{status}"
    );
    assert!(status.contains(env.source.server()), "{status}");
    drop(m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_mode_waits_at_each_phase_until_vcfm_approve() {
    let mut env = Env::start(Options::default()).await;
    env.start_controller();
    env.create(&env.migration("manual", |m| m["spec"]["approvalMode"] = "Manual".into()))
        .await
        .unwrap();
    let before = env.snapshot().await;
    env.wait_for("manual", "Preflight to wait for approval", T, |m| {
        waiting_for_approval_of(m, PhaseName::Preflight)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = env.api().get("manual").await.unwrap();
    assert!(
        history(&m).is_empty(),
        "nothing may run before approval: {:?}",
        history(&m)
    );
    assert_eq!(
        env.snapshot().await,
        before,
        "nothing in the cluster may change before approval"
    );
    let s = ok(env.vcfm(&["status", "manual"]));
    assert!(s.contains("vcfm approve manual Preflight"), "{s}");

    for p in [
        PhaseName::Preflight,
        PhaseName::Backup,
        PhaseName::DisableCvo,
        PhaseName::UpdateSecrets,
    ] {
        let out = ok(env.vcfm(&["approve", "manual"]));
        assert!(
            out.contains(p.as_str()),
            "approve without a phase approves the waiting one: {out}"
        );
        let next = p.next().unwrap();
        env.wait_for("manual", &format!("{next} to wait for approval"), T, |m| {
            completed(m, p) && waiting_for_approval_of(m, next)
        })
        .await;
    }
    let m = env.api().get("manual").await.unwrap();
    assert_eq!(
        m.spec.approved_phases,
        [
            PhaseName::Preflight,
            PhaseName::Backup,
            PhaseName::DisableCvo,
            PhaseName::UpdateSecrets
        ]
    );
    assert_eq!(condition(&m, "WaitingForApproval").unwrap().0, "True");
    env.wait_event("ApprovalRequired").await;
    // An unknown phase name is refused by the CLI with the list of valid ones.
    let bad = env.vcfm(&["approve", "manual", "Deploy"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RecreateCPMS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_mid_phase_stops_and_resume_continues_the_same_phase() {
    let mut env = Env::start(Options {
        cvo_delay_ms: 3000,
        ..Default::default()
    })
    .await;
    env.start_controller();
    env.create(&env.migration("pausing", approved_1_to_4))
        .await
        .unwrap();
    env.wait_for("pausing", "DisableCVO to be running", T, |m| {
        m.status
            .as_ref()
            .and_then(|s| s.current_phase_state.as_ref())
            .is_some_and(|c| c.name == PhaseName::DisableCvo && c.status == PhaseStatus::Running)
    })
    .await;
    ok(env.vcfm(&["pause", "pausing"]));
    let m = env
        .wait_for("pausing", "Paused", T, |m| {
            condition(m, "Paused").is_some_and(|c| c.0 == "True")
        })
        .await;
    assert!(condition(&m, "Paused").unwrap().1.contains("DisableCVO"));
    // While paused the phase does not advance even after the CVO has stopped.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m = env.api().get("pausing").await.unwrap();
    assert!(!completed(&m, PhaseName::DisableCvo), "{:?}", history(&m));
    ok(env.vcfm(&["resume", "pausing"]));
    let m = env
        .wait_for("pausing", "UpdateSecrets after resume", T, |m| {
            completed(m, PhaseName::UpdateSecrets)
        })
        .await;
    let runs = history(&m)
        .iter()
        .filter(|(p, _)| *p == PhaseName::DisableCvo)
        .count();
    assert_eq!(
        runs, 1,
        "resume continues the phase, it does not start it again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_phase_rolls_back_once_when_rollback_on_failure_is_set() {
    let mut env = Env::start(Options::default()).await;
    let creds_before = env.secret_data("kube-system", "vsphere-creds").await;
    // The API refuses the credentials update: a fatal error for UpdateSecrets.
    env.sim.faults().inject(
        kube_sim::FaultRule::new(kube_sim::FaultAction::Error { code: 403 })
            .verb("patch")
            .resource("secrets")
            .name("vsphere-creds"),
    );
    env.start_controller();
    env.create(&env.migration("fails", approved_1_to_4))
        .await
        .unwrap();
    let m = env
        .wait_for("fails", "RollbackCompleted", T, |m| {
            phase(m) == Some(MigrationPhase::RollbackCompleted)
        })
        .await;
    let st = m.status.clone().unwrap();
    let failed = st
        .phase_history
        .iter()
        .find(|e| e.status == PhaseStatus::Failed)
        .unwrap();
    assert_eq!(failed.phase, PhaseName::UpdateSecrets);
    assert!(
        failed.message.contains("403") || failed.message.to_lowercase().contains("forbidden"),
        "{}",
        failed.message
    );
    let rb = st.rollback.clone().unwrap();
    assert_eq!(
        rb.rolled_back_phases,
        [
            PhaseName::UpdateSecrets,
            PhaseName::DisableCvo,
            PhaseName::Backup,
            PhaseName::Preflight
        ]
    );
    assert_eq!(condition(&m, "RolledBack").unwrap().0, "True");
    env.wait_for("fails", "CVO back", T, |_| true).await;
    assert_eq!(
        env.cvo_replicas().await,
        1,
        "rollback always ends with the CVO back at 1"
    );
    assert_eq!(
        env.secret_data("kube-system", "vsphere-creds").await,
        creds_before
    );
    // Exactly once: more reconciles and a manual request do not roll back again.
    let refused = env.vcfm(&["rollback", "fails"]);
    assert!(!refused.status.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = env.api().get("fails").await.unwrap();
    assert_eq!(
        again.status.unwrap().phase_history.len(),
        st.phase_history.len()
    );
    env.wait_event("PhaseFailed").await;
    env.wait_event("RollbackStarted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rollback_on_failure_the_migration_stops_and_vcfm_rollback_undoes_it() {
    let mut env = Env::start(Options::default()).await;
    let creds_before = env.secret_data("kube-system", "vsphere-creds").await;
    env.sim.faults().inject(
        kube_sim::FaultRule::new(kube_sim::FaultAction::Error { code: 403 })
            .verb("patch")
            .resource("secrets")
            .name("vsphere-creds"),
    );
    env.start_controller();
    env.create(&env.migration("stops", |m| {
        approved_1_to_4(m);
        m["spec"]["rollbackOnFailure"] = false.into();
    }))
    .await
    .unwrap();
    let m = env
        .wait_for("stops", "Failed", T, |m| {
            phase(m) == Some(MigrationPhase::Failed)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m2 = env.api().get("stops").await.unwrap();
    assert_eq!(
        phase(&m2),
        Some(MigrationPhase::Failed),
        "no rollback without rollbackOnFailure"
    );
    assert!(m2.status.as_ref().unwrap().rollback.is_none());
    assert_eq!(env.cvo_replicas().await, 0);
    let (st, msg) = condition(&m, "Failed").unwrap();
    assert_eq!(st, "True");
    assert!(
        msg.contains("UpdateSecrets failed") && msg.contains("Rollback"),
        "{msg}"
    );
    env.sim.faults().clear();
    ok(env.vcfm(&["rollback", "stops"]));
    env.wait_for("stops", "RollbackCompleted", T, |m| {
        phase(m) == Some(MigrationPhase::RollbackCompleted)
    })
    .await;
    assert_eq!(env.cvo_replicas().await, 1);
    assert_eq!(
        env.secret_data("kube-system", "vsphere-creds").await,
        creds_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_phase_4_restores_secret_and_cvo_exactly_once() {
    let mut env = Env::start(Options::default()).await;
    let creds_before = env.secret_data("kube-system", "vsphere-creds").await;
    env.start_controller();
    env.create(&env.migration("undo", approved_1_to_4))
        .await
        .unwrap();
    env.wait_for("undo", "phase 5 to wait", T, |m| {
        waiting_for_approval_of(m, PhaseName::CreateTags)
    })
    .await;
    assert_ne!(
        env.secret_data("kube-system", "vsphere-creds").await,
        creds_before
    );
    ok(env.vcfm(&["rollback", "undo"]));
    let m = env
        .wait_for("undo", "RollbackCompleted", T, |m| {
            phase(m) == Some(MigrationPhase::RollbackCompleted)
        })
        .await;
    assert_eq!(
        env.secret_data("kube-system", "vsphere-creds").await,
        creds_before
    );
    assert_eq!(env.cvo_replicas().await, 1);
    let st = m.status.unwrap();
    let rolled: Vec<PhaseName> = st
        .phase_history
        .iter()
        .filter(|e| e.status == PhaseStatus::RolledBack)
        .map(|e| e.phase)
        .collect();
    assert_eq!(
        rolled,
        [
            PhaseName::UpdateSecrets,
            PhaseName::DisableCvo,
            PhaseName::Backup,
            PhaseName::Preflight
        ]
    );
    let second = env.vcfm(&["rollback", "undo"]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("at most once"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_server_errors_during_status_writes_are_survived() {
    let mut env = Env::start(Options::default()).await;
    let faults = env.sim.faults();
    faults.inject(
        kube_sim::FaultRule::new(kube_sim::FaultAction::Conflict)
            .verb("update")
            .resource("vmwarecloudfoundationmigrations/status")
            .times(6),
    );
    faults.inject(
        kube_sim::FaultRule::new(kube_sim::FaultAction::Error { code: 503 })
            .verb("update")
            .resource("vmwarecloudfoundationmigrations/status")
            .times(4),
    );
    faults.inject(
        kube_sim::FaultRule::new(kube_sim::FaultAction::Error { code: 500 })
            .verb("get")
            .resource("vmwarecloudfoundationmigrations")
            .times(3),
    );
    env.start_controller();
    env.create(&env.migration("flaky", approved_1_to_4))
        .await
        .unwrap();
    let m = env
        .wait_for("flaky", "phase 5 to wait", T, |m| {
            waiting_for_approval_of(m, PhaseName::CreateTags)
        })
        .await;
    let h = history(&m);
    assert_eq!(h.len(), 4, "{h:?}");
    assert!(
        faults.active().iter().all(|r| r.count == Some(0)) || faults.active().is_empty(),
        "every injected fault fired: {:?}",
        faults.active()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_many_points_the_controller_ends_exactly_like_an_uninterrupted_run() {
    let mut env = Env::start(Options {
        cvo_delay_ms: 400,
        ..Default::default()
    })
    .await;
    env.create(&env.migration("crashy", approved_1_to_4))
        .await
        .unwrap();
    // A fixed, varied schedule of kills (seeded, so a failure reproduces).
    let mut seed: u64 = 0x5eed_1234;
    let mut kills = 0;
    loop {
        env.start_controller();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(150 + seed % 600)).await;
        env.kill_controller();
        kills += 1;
        let m = env.api().get("crashy").await.unwrap();
        if waiting_for_approval_of(&m, PhaseName::CreateTags) || kills > 40 {
            break;
        }
    }
    env.start_controller();
    let m = env
        .wait_for("crashy", "phase 5 to wait", T, |m| {
            waiting_for_approval_of(m, PhaseName::CreateTags)
        })
        .await;
    assert!(
        kills >= 3,
        "the schedule killed the controller only {kills} times"
    );
    let st = m.status.clone().unwrap();
    let h = history(&m);
    assert_eq!(
        h,
        [
            (PhaseName::Preflight, PhaseStatus::Completed),
            (PhaseName::Backup, PhaseStatus::Completed),
            (PhaseName::DisableCvo, PhaseStatus::Completed),
            (PhaseName::UpdateSecrets, PhaseStatus::Completed),
        ],
        "no phase ran twice after {kills} kills"
    );
    let mut keys: Vec<&str> = st.backup_manifests.iter().map(|b| b.key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        8,
        "no backup or change record lost or duplicated: {:?}",
        st.backup_manifests
    );
    let backup = env.secret_data(NS, "crashy-backup").await;
    assert_eq!(
        backup.len(),
        9,
        "seven backups, UpdateSecrets' change record and one HMAC key"
    );
    let key = hex::decode(&backup[vcfm_controller::backup::DIGEST_KEY]).unwrap();
    for b in &st.backup_manifests {
        assert_eq!(
            vcfm_controller::backup::hmac_hex(&key, backup[&b.key].as_bytes()),
            b.hmac_sha256
        );
    }
    // The backup holds the original, not an already-modified copy.
    let creds_backup: serde_json::Value =
        serde_json::from_str(&backup["vsphere-creds.json"]).unwrap();
    assert_eq!(
        creds_backup["data"].as_object().unwrap().len(),
        2,
        "the backup of vsphere-creds predates the target keys"
    );
    assert_eq!(env.cvo_replicas().await, 0);
    assert_eq!(
        env.secret_data("kube-system", "vsphere-creds").await.len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_reaches_status_events_or_logs() {
    let mut env = Env::start(Options::default()).await;
    env.start_controller();
    env.create(&env.migration("secretive", approved_1_to_4))
        .await
        .unwrap();
    let m = env
        .wait_for("secretive", "phase 5 to wait", T, |m| {
            waiting_for_approval_of(m, PhaseName::CreateTags)
        })
        .await;
    // A wrong password too, so that error paths are covered.
    let bad = env.migration("wrongpw", |m| {
        m["spec"]["targetVCenterCredentialsSecret"]["name"] = "bad-creds".into()
    });
    let tgt = env.target.server().to_string();
    let bad_secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bad-creds", "namespace": NS},
        "stringData": {format!("{tgt}.username"): "administrator@vsphere.local", format!("{tgt}.password"): "Wr0ng-Secret-Pa55"}
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client.clone(), NS)
        .create(&Default::default(), &bad_secret)
        .await
        .unwrap();
    // One migration at a time: the first must be gone before the second runs.
    env.api()
        .delete("secretive", &Default::default())
        .await
        .unwrap();
    env.create(&bad).await.unwrap();
    env.wait_for("wrongpw", "Preflight to fail", T, |m| {
        phase(m) == Some(MigrationPhase::Failed)
    })
    .await;

    let status = serde_json::to_string(&env.api().get("wrongpw").await.unwrap().status).unwrap()
        + &serde_json::to_string(&m.status).unwrap();
    let events = env.events_text().await;
    let logs = env.controller_logs();
    assert!(
        logs.contains("RetrieveServiceContent") || logs.contains("Login"),
        "trace logging of vSphere calls is on"
    );
    for secret in [
        env.source.password(),
        env.target.password(),
        "Wr0ng-Secret-Pa55",
    ] {
        assert!(!status.contains(secret), "a password reached status");
        assert!(!events.contains(secret), "a password reached an Event");
        assert!(
            !logs.contains(secret),
            "a password reached the controller log"
        );
    }
    assert!(
        !logs.contains("vmware-api-session-id: ") || logs.contains("vmware-api-session-id: ***")
    );
    assert!(
        status.contains("incorrect user name or password"),
        "the status says what is wrong: {status}"
    );
}

fn current(m: &Vcfm) -> Option<vcfm_api::PhaseState> {
    m.status.as_ref()?.current_phase_state.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_cause_is_fixed_vcfm_retry_reruns_the_failed_phase() {
    let mut env = Env::start(Options::default()).await;
    env.start_controller();
    env.create(&env.migration("retry", |m| {
        approved_1_to_4(m);
        m["spec"]["targetVCenterCredentialsSecret"]["name"] = "late-creds".into();
    }))
    .await
    .unwrap();
    let m = env
        .wait_for("retry", "Preflight to fail", T, |m| {
            phase(m) == Some(MigrationPhase::Failed)
        })
        .await;
    let failed = condition(&m, "Failed").unwrap().1;
    assert!(failed.contains("late-creds"), "{failed}");
    assert!(failed.contains("vcfm retry"), "{failed}");
    // `resume` is for pauses: on a failure it points to `retry` and changes nothing.
    let out = env.vcfm(&["resume", "retry"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vcfm retry retry"), "{err}");
    // The Secret appears, and the administrator approves a later phase ahead
    // of time: a spec edit, but no request to retry. Nothing reruns.
    let tgt = env.target.server().to_string();
    let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "late-creds", "namespace": NS},
        "stringData": {format!("{tgt}.username"): env.target.username(), format!("{tgt}.password"): env.target.password()}
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client.clone(), NS)
        .create(&Default::default(), &s)
        .await
        .unwrap();
    ok(env.vcfm(&["approve", "retry", "Verify"]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = env.api().get("retry").await.unwrap();
    assert_eq!(phase(&m), Some(MigrationPhase::Failed));
    assert_eq!(history(&m).len(), 1, "an approval must not rerun Preflight");
    assert!(m.spec.approved_phases.contains(&PhaseName::Verify));
    // `vcfm status` says how to go on.
    let status = ok(env.vcfm(&["status", "retry"]));
    assert!(status.contains("`vcfm retry retry`"), "{status}");
    // The explicit request.
    let out = ok(env.vcfm(&["retry", "retry"]));
    assert!(out.contains("retry its failed phase Preflight"), "{out}");
    let m = env
        .wait_for("retry", "phase 5 to wait after the retry", T, |m| {
            waiting_for_approval_of(m, PhaseName::CreateTags)
        })
        .await;
    let h = history(&m);
    assert_eq!(h[0], (PhaseName::Preflight, PhaseStatus::Failed));
    assert_eq!(
        &h[1..],
        &[
            (PhaseName::Preflight, PhaseStatus::Completed),
            (PhaseName::Backup, PhaseStatus::Completed),
            (PhaseName::DisableCvo, PhaseStatus::Completed),
            (PhaseName::UpdateSecrets, PhaseStatus::Completed),
        ]
    );
    assert_eq!(m.spec.state, vcfm_api::MigrationState::Running);
    let token = m
        .spec
        .retry_token
        .clone()
        .expect("vcfm retry records a token");
    assert_eq!(
        m.status.as_ref().unwrap().observed_retry_token.as_deref(),
        Some(token.as_str())
    );
    env.wait_event("PhaseRetry").await;
    // Nothing has failed now: a retry is refused and changes nothing.
    let again = env.vcfm(&["retry", "retry"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("has not failed"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let m = env.api().get("retry").await.unwrap();
    assert_eq!(m.spec.retry_token.as_deref(), Some(token.as_str()));
}

/// The deadline counts active time only: DisableCVO gets 8 s, is paused for
/// longer (across a controller restart), and still completes after resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_longer_than_the_phase_deadline_does_not_time_the_phase_out() {
    const DEADLINE_S: i64 = 8;
    let mut env = Env::start(Options {
        cvo_delay_ms: 3000,
        ..Default::default()
    })
    .await;
    env.start_controller();
    env.create(&env.migration("overnight", |m| {
        approved_1_to_4(m);
        m["spec"]["phaseTimeouts"] = serde_json::json!({ "DisableCVO": format!("{DEADLINE_S}s") });
    }))
    .await
    .unwrap();
    env.wait_for("overnight", "DisableCVO to be running", T, |m| {
        current(m)
            .is_some_and(|c| c.name == PhaseName::DisableCvo && c.status == PhaseStatus::Running)
    })
    .await;
    ok(env.vcfm(&["pause", "overnight"]));
    let m = env
        .wait_for("overnight", "the pause clock to start", T, |m| {
            condition(m, "Paused").is_some_and(|c| c.0 == "True")
                && current(m).is_some_and(|c| c.paused_since.is_some())
        })
        .await;
    let since = current(&m).unwrap().paused_since;
    // A controller restart during the pause neither restarts nor loses it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.kill_controller();
    env.start_controller();
    tokio::time::sleep(Duration::from_secs(DEADLINE_S as u64)).await;
    let m = env.api().get("overnight").await.unwrap();
    let c = current(&m).unwrap();
    assert_eq!(c.paused_since, since, "the first pause start is kept");
    assert_eq!(
        (c.name, c.status),
        (PhaseName::DisableCvo, PhaseStatus::Running)
    );
    ok(env.vcfm(&["resume", "overnight"]));
    let m = env
        .wait_for("overnight", "UpdateSecrets after resume", T, |m| {
            completed(m, PhaseName::UpdateSecrets) || phase(m) == Some(MigrationPhase::Failed)
        })
        .await;
    assert_ne!(
        phase(&m),
        Some(MigrationPhase::Failed),
        "{:?}",
        condition(&m, "Failed")
    );
    let st = m.status.clone().unwrap();
    assert!(st.rollback.is_none());
    let cvo: Vec<_> = st
        .phase_history
        .iter()
        .filter(|e| e.phase == PhaseName::DisableCvo)
        .collect();
    assert_eq!(cvo.len(), 1, "DisableCVO ran once");
    assert_eq!(cvo[0].status, PhaseStatus::Completed);
    // It really was on the clock longer than its deadline.
    let wall = cvo[0]
        .completion_time
        .as_ref()
        .unwrap()
        .0
        .duration_since(cvo[0].start_time.as_ref().unwrap().0);
    assert!(wall.as_secs() > DEADLINE_S, "DisableCVO took only {wall}");
    assert!(
        condition(&m, "Paused").is_none(),
        "the Paused condition goes with the pause"
    );
    assert_eq!(env.cvo_replicas().await, 0);
}

/// A backup changed in its Secret after it was taken is not restored: the
/// HMAC in status (keyed by a secret the tamperer cannot derive from status)
/// no longer matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_backup_is_refused_on_rollback() {
    use k8s_openapi::ByteString;
    let mut env = Env::start(Options::default()).await;
    env.start_controller();
    env.create(&env.migration("tamper", approved_1_to_4))
        .await
        .unwrap();
    env.wait_for("tamper", "phase 5 to wait", T, |m| {
        waiting_for_approval_of(m, PhaseName::CreateTags)
    })
    .await;
    let backup = env.secret_data(NS, "tamper-backup").await;
    let mut creds: serde_json::Value = serde_json::from_str(&backup["vsphere-creds.json"]).unwrap();
    let src = env.source.server().to_string();
    creds["data"][format!("{src}.password")] =
        serde_json::to_value(ByteString(b"attacker-chosen".to_vec())).unwrap();
    let forged = serde_json::to_vec(&creds).unwrap();
    let patch = serde_json::json!({"data": {"vsphere-creds.json": ByteString(forged)}});
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client.clone(), NS)
        .patch(
            "tamper-backup",
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let live_before = env.secret_data("kube-system", "vsphere-creds").await;
    ok(env.vcfm(&["rollback", "tamper"]));
    let m = env
        .wait_for("tamper", "RollbackCompleted", T, |m| {
            phase(m) == Some(MigrationPhase::RollbackCompleted)
        })
        .await;
    let (status, msg) = condition(&m, "RolledBack").unwrap();
    assert_eq!(status, "False");
    assert!(
        msg.contains("UpdateSecrets") && msg.contains("does not match the HMAC"),
        "{msg}"
    );
    assert!(
        history(&m).contains(&(PhaseName::UpdateSecrets, PhaseStatus::RollbackFailed)),
        "{:?}",
        history(&m)
    );
    let live = env.secret_data("kube-system", "vsphere-creds").await;
    assert_eq!(live, live_before, "the forged backup was not written back");
    assert!(!live.values().any(|v| v == "attacker-chosen"));
    // The other steps still ran: the CVO is back.
    assert_eq!(env.cvo_replicas().await, 1);
}
