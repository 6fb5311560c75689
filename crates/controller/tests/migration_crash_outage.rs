//! Crash safety (the controller killed at seeded random points across a whole
//! migration always reaches the same end state, with nothing duplicated) and
//! an API outage during the control-plane rollout (the migration continues).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use openshift_sim::{Faults, Scenario};
use std::time::{Duration, Instant};
use vcfm_api::{MigrationPhase, PhaseName};
use vcfm_controller::LeaderElection;

const WORKERS: u32 = 2;
const MIN_KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_the_controller_always_finishes_the_same_way() {
    // Replay a failure with VCFM_CRASH_SEED=<printed seed>.
    let seed = std::env::var("VCFM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de_u64);
    eprintln!("crash test seed {seed} (VCFM_CRASH_SEED to replay)");
    let mut rng = Rng::new(seed);
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.create_migration("crashy", env.spec(FD, WORKERS, false))
        .await;
    let start = Instant::now();
    let mut kills = vec![];
    // Kill until the migration ends: the faster the cluster, the closer the kills.
    loop {
        tokio::time::sleep(Duration::from_millis(rng.range(100, 600))).await;
        let m = env.api().get("crashy").await.unwrap();
        if phase_of(&m).is_some_and(|p| p.is_terminal()) {
            break;
        }
        let at = m
            .status
            .as_ref()
            .and_then(|s| s.current_phase_state.as_ref())
            .map(|c| format!("{}@{}%", c.name, c.progress))
            .unwrap_or_else(|| "start".into());
        env.kill_controller().await;
        kills.push(at);
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        env.spawn_controller();
    }
    let m = env.wait_terminal("crashy", Duration::from_secs(300)).await;
    eprintln!(
        "{} kills at {:?}; finished in {:.1}s",
        kills.len(),
        kills,
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "seed {seed}: {}",
        summary(&m)
    );
    assert!(
        kills.len() >= MIN_KILLS,
        "only {} kills happened before the migration ended",
        kills.len()
    );
    let phases_hit: std::collections::BTreeSet<&str> =
        kills.iter().filter_map(|k| k.split('@').next()).collect();
    assert!(
        phases_hit.len() >= 5,
        "kills should spread over the migration: {phases_hit:?}"
    );
    let state = env.snapshot().await;
    let findings = migrated_findings(&env, &state, WORKERS as usize);
    assert!(findings.is_empty(), "seed {seed}: {findings:#?}");
    // Nothing created twice on the target.
    assert_eq!(
        state
            .target
            .folders
            .get(env.sim.infra_id())
            .copied()
            .unwrap_or(0),
        1
    );
    assert_eq!(
        state
            .target
            .categories
            .get(&format!("openshift-{}", env.sim.infra_id())),
        Some(&1)
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_during_the_control_plane_rollout_does_not_fail_the_migration() {
    let outage = Duration::from_secs(12);
    let mut env = Env::start(Scenario {
        workers: WORKERS,
        faults: Faults {
            api_outage_during_cpms_rollout: Some(outage),
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    // Leader election with the production timings: the lease survives the outage.
    env.leader_election = Some(LeaderElection::new(NS, "e2e-controller"));
    env.spawn_controller();
    env.create_migration("outage", env.spec(FD, WORKERS, false))
        .await;
    // Watch from the outside: the outage must hit while RecreateCPMS runs. The
    // client retries 503s by itself, so the outage shows as a long read.
    let started = Instant::now();
    let mut last_phase = None;
    let mut longest: (Duration, Option<PhaseName>) = (Duration::ZERO, None);
    let m = loop {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the migration did not finish"
        );
        let t = Instant::now();
        let read = env.api().get("outage").await;
        if t.elapsed() > longest.0 {
            longest = (t.elapsed(), last_phase);
        }
        match read {
            Ok(m) => {
                if phase_of(&m).is_some_and(|p| p.is_terminal()) {
                    break m;
                }
                last_phase = m
                    .status
                    .as_ref()
                    .and_then(|s| s.current_phase_state.as_ref())
                    .map(|c| c.name);
            }
            Err(kube::Error::Api(e)) if e.code == 503 => {}
            Err(e) => panic!("unexpected error reading the migration: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        longest.0 + Duration::from_secs(3) >= outage && longest.1 == Some(PhaseName::RecreateCpms),
        "the API was unavailable during RecreateCPMS: longest read {longest:?}"
    );
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "{}",
        summary(&m)
    );
    let st = m.status.as_ref().unwrap();
    assert_eq!(
        st.phase_history
            .iter()
            .filter(|h| h.phase == PhaseName::RecreateCpms)
            .count(),
        1,
        "RecreateCPMS ran once, without a false failure: {}",
        summary(&m)
    );
    let findings = migrated_findings(&env, &env.snapshot().await, WORKERS as usize);
    assert!(findings.is_empty(), "{findings:#?}");
    eprintln!("outage of {outage:?} survived: {}", durations(&m));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_workers_outside_the_machine_network_are_reported() {
    let mut env = Env::start(Scenario {
        workers: 1,
        faults: Faults {
            target_network_outside_machine_network: true,
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    // Manual mode, approved up to CreateWorkers: the control plane stays put.
    let mut spec = env.spec(FD, 1, true);
    let upto: Vec<PhaseName> = PhaseName::ALL
        .iter()
        .copied()
        .filter(|p| *p <= PhaseName::CreateWorkers)
        .collect();
    spec["approvedPhases"] = serde_json::to_value(&upto).unwrap();
    env.create_migration("wrongnet", spec).await;
    let m = env
        .wait(
            "wrongnet",
            "RecreateCPMS to wait for approval",
            Duration::from_secs(120),
            |m| waiting_for_approval(m) == Some(PhaseName::RecreateCpms),
        )
        .await;
    let st = m.status.as_ref().unwrap();
    let warning = st
        .warnings
        .iter()
        .find(|w| w.contains("outside the cluster's machine network"))
        .unwrap_or_else(|| panic!("no network warning in {:?}", st.warnings));
    assert!(warning.contains("172.31."), "{warning}");
    let logged = st
        .phase_history
        .iter()
        .filter(|h| h.phase == PhaseName::CreateWorkers)
        .flat_map(|h| h.logs.iter())
        .any(|l| l.level == vcfm_api::LogLevel::Warning && l.message.contains("machine network"));
    assert!(logged, "{}", summary(&m));
    // Reported once, not on every reconcile.
    assert_eq!(
        st.warnings
            .iter()
            .filter(|w| w.contains("outside the cluster's machine network"))
            .count(),
        1
    );
    env.shutdown().await;
}

/// The controller's GETs of `resource` so far (kube-sim's counters).
fn controller_gets(env: &Env, resource: &str) -> u64 {
    env.sim
        .kube()
        .stats()
        .snapshot()
        .into_iter()
        .filter(|(k, _)| k.user == CONTROLLER_USER && k.verb == "get" && k.resource == resource)
        .map(|(_, n)| n)
        .sum()
}

/// Cleanup records in status that its removals are done; killed after doing
/// them but before that record (and before restarting the pods), the next
/// controller checks them once more (finding nothing left to remove),
/// restarts the pods and finishes. Once recorded, the steps that wait for the
/// restarted pods read neither the ClusterVersion nor the Infrastructure CRD
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_cleanup_removals_and_their_status_record_cleanup_finishes() {
    use kube_sim::{FaultAction, FaultRule};
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("c", 1, PhaseName::ScaleOldMachines, serde_json::json!({}))
        .await;
    let faults = env.sim.kube().faults();
    // Cleanup starts (status says so) but cannot write the Infrastructure
    // for the next 15 s.
    let mut blocked = FaultRule::new(FaultAction::Error { code: 500 })
        .verb("update")
        .resource("infrastructures")
        .name("cluster");
    blocked.duration_ms = Some(15_000);
    faults.inject(blocked);
    env.approve("c", &[PhaseName::Cleanup]).await;
    env.wait("c", "Cleanup to run", Duration::from_secs(120), |m| {
        current(m) == Some((PhaseName::Cleanup, vcfm_api::PhaseStatus::Running))
    })
    .await;
    // From now on no status write lands, and no pod is restarted; then the
    // removals go through.
    faults.inject(
        FaultRule::new(FaultAction::Error { code: 500 })
            .resource("vmwarecloudfoundationmigrations/status"),
    );
    for verb in ["delete", "deletecollection"] {
        faults.inject(
            FaultRule::new(FaultAction::Error { code: 500 })
                .verb(verb)
                .resource("pods"),
        );
    }
    assert!(
        faults
            .active()
            .iter()
            .any(|r| r.resource.as_deref() == Some("infrastructures")),
        "Cleanup took longer than 15 s to start: the test proves nothing"
    );
    let source = env.sim.source().server.clone();
    let start = Instant::now();
    loop {
        let st = env.snapshot().await;
        let removed = !serde_json::to_string(&st.infrastructure_spec)
            .unwrap()
            .contains(source.as_str())
            && !st.cloud_config.contains(source.as_str())
            && !st
                .creds
                .keys()
                .any(|k| k.starts_with(&format!("{source}.")));
        let metadata =
            kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client.clone(), NS)
                .get_opt("c-installer-metadata")
                .await
                .unwrap();
        if removed && metadata.is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "Cleanup never removed the source vCenter"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.kill_controller().await;
    let m = env.api().get("c").await.unwrap();
    let progress = m
        .status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .map(|c| c.progress);
    assert!(
        progress.is_some_and(|p| p < vcfm_controller::phases::CLEANUP_REMOVED),
        "status must not record the removals yet: {}",
        summary(&m)
    );
    faults.clear();
    // The replacements of the pods the next controller restarts take 5 s to
    // appear, so that Cleanup waits for them over several steps.
    let mut slow = FaultRule::new(FaultAction::Error { code: 500 })
        .verb("create")
        .resource("pods");
    slow.duration_ms = Some(5_000);
    faults.inject(slow);

    env.spawn_controller();
    let cv_before = controller_gets(&env, "config.openshift.io/clusterversions");
    let crd_before = controller_gets(&env, "apiextensions.k8s.io/customresourcedefinitions");
    let m = env.wait_completed("c", PhaseName::Cleanup).await;
    let steps = m
        .status
        .as_ref()
        .and_then(|s| {
            s.phase_history
                .iter()
                .find(|h| h.phase == PhaseName::Cleanup)
        })
        .map(|h| h.message.clone())
        .unwrap_or_default();
    // Everything but the CVO, which Verify scales back up.
    let findings: Vec<String> = migrated_findings(&env, &env.snapshot().await, 1)
        .into_iter()
        .filter(|f| !f.starts_with("CVO at"))
        .collect();
    assert!(findings.is_empty(), "{findings:#?}\n{}", summary(&m));
    // The removals were checked once by the new controller, not on every wait.
    let cv = controller_gets(&env, "config.openshift.io/clusterversions") - cv_before;
    let crd = controller_gets(&env, "apiextensions.k8s.io/customresourcedefinitions") - crd_before;
    eprintln!("after the restart: {cv} ClusterVersion and {crd} CRD reads; Cleanup: {steps}");
    assert!(
        cv <= 1 && crd <= 1,
        "Cleanup read the ClusterVersion {cv} and the Infrastructure CRD {crd} times after the restart ({steps})"
    );
    env.shutdown().await;
}
