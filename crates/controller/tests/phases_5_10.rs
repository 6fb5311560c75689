//! Phases 1–10 against a simulated OpenShift cluster (kube-sim, openshift-sim,
//! two vcsims, all over HTTP): the target is taught to the cluster, a re-run
//! of every phase changes nothing, and a rollback from phase 10 restores the
//! cluster exactly while removing only what the migration created.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_os;

use common_os::*;
use openshift_sim::{ConfigFormat, Scenario, Site};
use serde_json::json;
use std::time::Duration;
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus};
use vcfm_vsphere::{Cardinality, CategorySpec};

/// A topology category another cluster's installer made on the target (associable with
/// datacenters only, as openshift-install creates it), with its own tag
/// and, when `with_ours`, an unattached tag named like our region.
async fn pre_existing_region_category(env: &Env, with_ours: bool) {
    let vc = env.sim.vsphere_client(Site::Target).unwrap();
    let cat = vc
        .ensure_category(&CategorySpec {
            name: "openshift-region".into(),
            description: "Added by openshift-install do not remove".into(),
            cardinality: Cardinality::Single,
            associable_types: vec!["urn:vim25:Datacenter".into()],
        })
        .await
        .unwrap();
    vc.ensure_tag(&cat.id, "other-region", "another cluster")
        .await
        .unwrap();
    if with_ours {
        vc.ensure_tag(&cat.id, REGION, "made by hand")
            .await
            .unwrap();
    }
}

async fn roll_back_and_check(env: &Env, name: &str, before: &Observed) {
    roll_back(env, name, before, false).await;
}

/// Rolls back from phase 10 and checks the cluster is as before. With
/// `foreign_child`, something not made by the migration sits in the cluster
/// folder, which must then be kept (and said so).
async fn roll_back(env: &Env, name: &str, before: &Observed, foreign_child: bool) {
    let m = env.roll_back(name, Duration::from_secs(90)).await;
    eprintln!("{}", summary(&m));
    let st = m.status.as_ref().unwrap();
    assert_eq!(
        st.phase,
        Some(MigrationPhase::RollbackCompleted),
        "{}",
        summary(&m)
    );
    let rb = st
        .conditions
        .iter()
        .find(|c| c.type_ == "RolledBack")
        .unwrap_or_else(|| panic!("no RolledBack condition:\n{}", summary(&m)));
    assert_eq!(rb.status, "True", "{}", summary(&m));
    for p in &FIRST_TEN[4..] {
        assert!(
            st.rollback.as_ref().unwrap().rolled_back_phases.contains(p),
            "{p} not rolled back:\n{}",
            summary(&m)
        );
    }
    // The CVO comes back (DisableCVO rollback waits for it).
    let after = env.observe().await;
    assert_eq!(
        after.infra_spec, before.infra_spec,
        "Infrastructure restored"
    );
    assert_eq!(
        after.crd_spec, before.crd_spec,
        "CRD (and its rule) restored"
    );
    assert_eq!(
        after.cloud_config, before.cloud_config,
        "cloud-provider-config restored"
    );
    assert_eq!(after.creds, before.creds, "vsphere-creds restored");
    assert_eq!(
        after.cvo_replicas, before.cvo_replicas,
        "CVO replicas restored"
    );
    // Only what the migration created is gone; the other cluster's category and tag stay.
    if foreign_child {
        let h = st
            .phase_history
            .iter()
            .rev()
            .find(|h| h.phase == PhaseName::CreateFolder)
            .unwrap();
        assert!(h.message.contains("kept folder"), "{}", h.message);
        assert!(h.message.contains("not empty"), "{}", h.message);
        assert!(after.target.folder.is_some(), "a non-empty folder is kept");
        assert_eq!(after.target.folder_tags, Some(Default::default()));
        let mut t = after.target.clone();
        t.folder = None;
        t.folder_tags = None;
        assert_eq!(t, before.target, "target vCenter otherwise as before");
    } else {
        assert_eq!(after.target, before.target, "target vCenter as before");
    }
    assert!(after.target.tags.contains("openshift-region/other-region"));
}

/// Gate off (CRD rule lifted around the update), YAML config, Automatic mode.
/// The cloud controller manager and its operator read the vSphere configuration: every pod
/// of theirs that ran before RestartPods was replaced, selected by the labels their
/// manifests give them (issue 13 item 11).
async fn assert_ccm_restarted(env: &Env, before: &Observed) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    for ns in [
        "openshift-cloud-controller-manager",
        "openshift-cloud-controller-manager-operator",
    ] {
        let pods = Api::<Pod>::namespaced(env.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        assert!(!pods.is_empty(), "{ns} has pods");
        for p in pods {
            assert!(
                !before
                    .pods
                    .contains(p.metadata.uid.as_deref().unwrap_or_default()),
                "{ns}/{} was not restarted after the configuration change",
                p.metadata.name.unwrap_or_default()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_off_yaml_automatic_teaches_the_target_idempotently_and_rolls_back() {
    let mut env = Env::start_in(
        Scenario {
            workers: 1,
            ..Scenario::default()
        },
        "p510-off-yaml",
    )
    .await;
    pre_existing_region_category(&env, true).await;
    let before = env.observe().await;
    env.spawn_controller();
    env.create_migration("m", env.phase_spec(false)).await;
    // Automatic all the way; switch to Manual while phase 10 runs so that the
    // migration stops before CreateWorkers, outside this test's scope.
    env.wait(
        "m",
        "MonitorHealth running",
        Duration::from_secs(120),
        |m| {
            assert_not_failed(m);
            current(m) == Some((PhaseName::MonitorHealth, PhaseStatus::Running))
        },
    )
    .await;
    env.patch_spec("m", json!({"approvalMode": "Manual"})).await;
    let m = env.wait_completed("m", PhaseName::MonitorHealth).await;
    assert!(m.spec.approved_phases.is_empty(), "no approval was needed");
    assert_eq!(
        phase_status(&m, PhaseName::DisableCvo),
        Some(PhaseStatus::Completed)
    );
    env.wait("m", "CreateWorkers waiting", Duration::from_secs(30), |m| {
        waiting_for_approval(m) == Some(PhaseName::CreateWorkers)
    })
    .await;

    let taught = env.observe().await;
    assert_taught_target(&env, &taught);
    assert_ccm_restarted(&env, &before).await;
    assert_eq!(
        taught.crd_spec, before.crd_spec,
        "the CRD rule is back in place"
    );
    assert_ne!(
        taught.versions["crd"], before.versions["crd"],
        "the rule was lifted"
    );
    assert_eq!(taught.cvo_replicas, 0);
    // The pre-existing shared category was reused, not duplicated.
    assert_eq!(
        taught.target.categories["openshift-region"],
        before.target.categories["openshift-region"]
    );
    // Only the target's entry was added: the original text is intact up to `labels:`.
    let cut = before.cloud_config.find("labels:").unwrap();
    assert!(
        taught
            .cloud_config
            .starts_with(&before.cloud_config[..cut - 1])
    );
    assert!(taught.cloud_config.ends_with(&before.cloud_config[cut..]));
    let status = m.status.as_ref().unwrap();
    assert!(
        status
            .created_vsphere_objects
            .iter()
            // The source's categories are vcfm's (the source had none).
            .filter(|o| o.server == env.sim.target().server)
            .all(|o| o.name != "openshift-region"),
        "a pre-existing category is not recorded as created: {:?}",
        status.created_vsphere_objects
    );
    // The pre-existing region tag is reused: only its attachment is ours.
    let region_tag = format!("openshift-region/{REGION}");
    assert!(
        !status
            .created_vsphere_objects
            .iter()
            .any(|o| o.kind == "Tag" && o.name == region_tag),
        "{:?}",
        status.created_vsphere_objects
    );
    assert!(
        status
            .created_vsphere_objects
            .iter()
            .any(|o| o.kind == "TagAttachment" && o.name.starts_with(&format!("{REGION} on "))),
        "{:?}",
        status.created_vsphere_objects
    );

    assert_idempotent(&env, "m").await;
    roll_back_and_check(&env, "m", &before).await;
    env.shutdown().await;
}

/// Gate on (plain update, CVO untouched), INI config, Manual mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_on_ini_manual_teaches_the_target_idempotently_and_rolls_back() {
    let mut env = Env::start_in(
        Scenario {
            workers: 1,
            multi_vcenter_day2_gate: true,
            config_format: ConfigFormat::Ini,
            ..Scenario::default()
        },
        "p510-on-ini",
    )
    .await;
    pre_existing_region_category(&env, false).await;
    let before = env.observe().await;
    env.spawn_controller();
    let created = env.create_migration("m", env.phase_spec(true)).await;
    env.approve_manually("m", &FIRST_TEN[..4]).await;
    env.wait("m", "CreateTags waiting", Duration::from_secs(60), |m| {
        waiting_for_approval(m) == Some(PhaseName::CreateTags)
    })
    .await;
    // A category this migration created just before a crash, never recorded:
    // its description names the migration, so the phase adopts it.
    let vc = env.sim.vsphere_client(Site::Target).unwrap();
    let orphan = vc
        .create_category(&CategorySpec {
            name: "openshift-zone".into(),
            description: format!(
                "Created by vcfm migration {}/m (uid {})",
                env.ns,
                created.metadata.uid.as_deref().unwrap()
            ),
            cardinality: Cardinality::Single,
            associable_types: vec![
                "urn:vim25:Datacenter".into(),
                "urn:vim25:ClusterComputeResource".into(),
            ],
        })
        .await
        .unwrap();
    env.approve_manually("m", &FIRST_TEN[4..]).await;
    let m = env.wait_completed("m", PhaseName::MonitorHealth).await;
    assert!(
        m.status
            .as_ref()
            .unwrap()
            .created_vsphere_objects
            .iter()
            .any(|o| o.kind == "TagCategory" && o.id == orphan),
        "the orphaned category is adopted: {:?}",
        m.status.as_ref().unwrap().created_vsphere_objects
    );
    assert_eq!(
        phase_status(&m, PhaseName::DisableCvo),
        Some(PhaseStatus::Skipped)
    );
    env.wait("m", "CreateWorkers waiting", Duration::from_secs(30), |m| {
        waiting_for_approval(m) == Some(PhaseName::CreateWorkers)
    })
    .await;

    let taught = env.observe().await;
    assert_taught_target(&env, &taught);
    assert_eq!(
        taught.versions["crd"], before.versions["crd"],
        "CRD never touched"
    );
    assert_eq!(taught.cvo_replicas, 1);
    assert!(
        taught.cloud_config.contains(&format!(
            "[VirtualCenter \"{}\"]\ndatacenters = \"{}\"\n",
            env.sim.target().server,
            env.sim.target().datacenter
        )),
        "{}",
        taught.cloud_config
    );
    assert!(
        taught
            .cloud_config
            .starts_with(&before.cloud_config[..before.cloud_config.find("[Labels]").unwrap() - 1])
    );

    assert_idempotent(&env, "m").await;
    // Someone put their own folder inside the cluster folder meanwhile.
    let folder = vc.find_folder(&env.sim.target().folder).await.unwrap();
    vc.create_folder(&folder, "not-ours").await.unwrap();
    roll_back(&env, "m", &before, true).await;
    env.shutdown().await;
}
