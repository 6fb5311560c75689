//! A migration rolled back after CreateWorkers, then a second migration of the same
//! cluster: its CreateWorkers must bring its machines up like the first one did.
//!
//! On the real tier this stalled: the real machine controller's clone of the target
//! template came out with the template's NIC twice ("invalid network count: expected=1
//! current=2"), because vcsim let the first migration's worker share the template's
//! vmdk and the rollback's destroy deleted it; the vcsim helper now gives a clone's disk
//! edits the clone's own file, as vCenter does (`cloneOwnDisks` in tools/vcsim/main.go).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use openshift_sim::{Scenario, Tier};
use serde_json::json;
use std::time::Duration;
use vcfm_api::{MigrationPhase, PhaseName};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_migration_after_a_rollback_creates_its_workers() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("first", 1, PhaseName::CreateWorkers, json!({}))
        .await;
    let m = env.roll_back("first", Duration::from_secs(600)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::RollbackCompleted),
        "{}",
        summary(&m)
    );
    let deadline = match Tier::from_env() {
        Tier::Sim => Duration::from_secs(240),
        Tier::Real => Duration::from_secs(900),
    };
    let mut spec = env.spec(FD, 1, false);
    spec["approvalMode"] = json!("Automatic");
    env.create_migration("second", spec).await;
    let start = std::time::Instant::now();
    let m = loop {
        let m = env.api().get("second").await.unwrap();
        let done = history(&m)
            .iter()
            .any(|(p, s)| *p == PhaseName::CreateWorkers && *s == vcfm_api::PhaseStatus::Completed);
        if done || start.elapsed() > deadline.min(Duration::from_secs(300)) {
            break m;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let done = history(&m)
        .iter()
        .any(|(p, s)| *p == PhaseName::CreateWorkers && *s == vcfm_api::PhaseStatus::Completed);
    let mut dump = String::new();
    if !done {
        for site in [openshift_sim::Site::Target] {
            let vc = env.sim.vsphere_client(site).unwrap();
            let root = vc.find_folder("/DC0/vm").await.unwrap();
            let vms: Vec<_> = vc.list_vms(&root, true).await.unwrap();
            let refs: Vec<_> = vms.iter().map(|v| v.vm.clone()).collect();
            for o in vc
                .retrieve_properties(
                    "VirtualMachine",
                    &refs,
                    &["name", "config.hardware.device", "config.template"],
                )
                .await
                .unwrap()
            {
                let nics: Vec<String> = o
                    .props
                    .get("config.hardware.device")
                    .map(|d| {
                        d.children
                            .iter()
                            .filter(|c| c.child("macAddress").is_some())
                            .map(|c| {
                                format!(
                                    "{}:{}:{}",
                                    c.xsi_type.clone().unwrap_or_default(),
                                    c.child_text("key").unwrap_or(""),
                                    c.child_text("macAddress").unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                dump.push_str(&format!(
                    "{} template={} nics={nics:?}\n",
                    o.str("name").unwrap_or(""),
                    o.str("config.template").unwrap_or("")
                ));
            }
        }
    }
    assert!(
        done,
        "{}\n{dump}\n{}",
        summary(&m),
        env.sim.operator_logs(60).unwrap_or_default()
    );
    env.shutdown().await;
}
