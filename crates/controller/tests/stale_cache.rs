//! The controller reads migrations, and the cluster objects its phases edit,
//! from watch caches and writes with the resourceVersion it read: an edit that
//! lands between its read and its write is a 409, a fresh read and a retry,
//! never lost and never acted past. Sim tier (kube-sim holds the controller's
//! write while the test makes the other edit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube_sim::{FaultAction, FaultRule};
use openshift_sim::Scenario;
use serde_json::json;
use std::time::{Duration, Instant};
use vcfm_api::openshift::Infrastructure;
use vcfm_api::{PhaseName, PhaseStatus};

/// Waits until kube-sim has taken every injected fault (the held write is in flight).
async fn until_taken(faults: &kube_sim::Faults, what: &str) {
    let start = Instant::now();
    while !faults.active().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the controller never wrote {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_made_while_the_controller_writes_status_is_kept_and_obeyed() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("m", 1, PhaseName::Preflight, json!({}))
        .await;
    // The controller's next status write (Backup starting) is held for 2 s.
    let faults = env.sim.kube().faults();
    faults.inject(
        FaultRule::new(FaultAction::Delay { millis: 2000 })
            .verb("update")
            .resource("vmwarecloudfoundationmigrations/status")
            .times(1),
    );
    env.approve("m", &[PhaseName::Backup]).await;
    until_taken(&faults, "status").await;
    // Its write is in flight, computed on the version before this edit.
    env.set_state("m", "Paused").await;
    let m = env
        .wait(
            "m",
            "the migration to pause",
            Duration::from_secs(60),
            |m| {
                m.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Paused" && c.status == "True")
                })
            },
        )
        .await;
    assert_eq!(
        m.spec.state,
        vcfm_api::MigrationState::Paused,
        "{}",
        summary(&m)
    );
    let cur = m
        .status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .map(|c| c.name);
    assert_eq!(cur, Some(PhaseName::Backup), "{}", summary(&m));
    // Nothing past Backup started while paused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = env.api().get("m").await.unwrap();
    assert!(
        history(&m).iter().all(|(p, _)| *p <= PhaseName::Backup),
        "{}",
        summary(&m)
    );
    // Resumed, it finishes with every phase run once.
    env.approve("m", &PhaseName::ALL).await;
    env.set_state("m", "Running").await;
    let m = env.wait_terminal("m", Duration::from_secs(240)).await;
    assert_eq!(
        phase_of(&m),
        Some(vcfm_api::MigrationPhase::Completed),
        "{}",
        summary(&m)
    );
    let finals: Vec<PhaseName> = history(&m)
        .into_iter()
        .filter(|(_, s)| *s != PhaseStatus::Running)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(finals, PhaseName::ALL.to_vec(), "{}", summary(&m));
    env.shutdown().await;
}

/// Cleanup edits Infrastructure `cluster`, the cloud-provider ConfigMap and
/// `kube-system/vsphere-creds` as its watch caches show them. Each of those
/// writes is held while someone else changes the object: the controller's
/// write, based on what it read before, must be refused (409) and redone on a
/// fresh read. A write without the resourceVersion would instead put back the
/// stale Infrastructure or ConfigMap (the other edit lost) and empty
/// vsphere-creds of every credential (its check that a credential remains
/// judged on the stale read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_never_overwrites_edits_made_between_its_cache_reads_and_its_writes() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("m", 1, PhaseName::ScaleOldMachines, json!({}))
        .await;
    let source = env.sim.source().server.clone();
    let target = env.sim.target().server.clone();
    let infra = Api::<Infrastructure>::all(env.client.clone());
    let cms = Api::<ConfigMap>::namespaced(env.client.clone(), "openshift-config");
    let secrets = Api::<Secret>::namespaced(env.client.clone(), "kube-system");
    let merge = |v: serde_json::Value| Patch::Merge(v);
    let pp = PatchParams::default();

    // 1. Infrastructure: the controller's update is held while a label is added.
    let faults = env.sim.kube().faults();
    let hold = |verb: &str, resource: &str, name: &str| {
        FaultRule::new(FaultAction::Delay { millis: 2000 })
            .verb(verb)
            .resource(resource)
            .name(name)
            .times(1)
    };
    faults.inject(hold("update", "infrastructures", "cluster"));
    env.approve("m", &[PhaseName::Cleanup]).await;
    until_taken(&faults, "Infrastructure cluster").await;
    let label = json!({"metadata": {"labels": {"example.com/edited-by": "someone-else"}}});
    infra.patch("cluster", &pp, &merge(label)).await.unwrap();

    // 2. The cloud-provider ConfigMap: held while another key is added.
    faults.inject(
        hold("update", "configmaps", "cloud-provider-config").namespace("openshift-config"),
    );
    until_taken(&faults, "openshift-config/cloud-provider-config").await;
    let key = json!({"data": {"edited-by-someone-else": "kept"}});
    cms.patch("cloud-provider-config", &pp, &merge(key))
        .await
        .unwrap();

    // 3. vsphere-creds: held while someone removes the target's credentials.
    faults.inject(hold("patch", "secrets", "vsphere-creds").namespace("kube-system"));
    until_taken(&faults, "kube-system/vsphere-creds").await;
    let creds = secrets.get("vsphere-creds").await.unwrap();
    let data = creds.data.clone().unwrap_or_default();
    let target_keys = [format!("{target}.username"), format!("{target}.password")];
    let removed: serde_json::Map<String, serde_json::Value> = target_keys
        .iter()
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    secrets
        .patch("vsphere-creds", &pp, &merge(json!({"data": removed})))
        .await
        .unwrap();

    // Judged on a fresh read, removing the source pair would leave no
    // credentials: Cleanup refuses and keeps it.
    let m = env
        .wait("m", "Cleanup to refuse", Duration::from_secs(120), |m| {
            phase_status(m, PhaseName::Cleanup) == Some(PhaseStatus::Failed)
        })
        .await;
    let failed = history(&m);
    assert!(
        failed.contains(&(PhaseName::Cleanup, PhaseStatus::Failed)),
        "{}",
        summary(&m)
    );
    let msg = m
        .status
        .as_ref()
        .and_then(|s| s.phase_history.last())
        .map(|h| h.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains("refusing to leave the cluster without vCenter credentials"),
        "{msg}"
    );
    let creds = secrets.get("vsphere-creds").await.unwrap();
    let keys: Vec<&String> = creds
        .data
        .as_ref()
        .map(|d| d.keys().collect())
        .unwrap_or_default();
    assert!(
        keys.contains(&&format!("{source}.username"))
            && keys.contains(&&format!("{source}.password")),
        "the source credentials were removed on a stale read: {keys:?}"
    );

    // The other edits survived, and the controller's own landed on top of them.
    let i = infra.get("cluster").await.unwrap();
    assert_eq!(
        i.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("example.com/edited-by"))
            .map(String::as_str),
        Some("someone-else"),
        "the label added while Cleanup's Infrastructure write was held is gone"
    );
    let spec = serde_json::to_string(&i.spec).unwrap();
    assert!(
        !spec.contains(&source),
        "Infrastructure still names {source}"
    );
    let cm = cms.get("cloud-provider-config").await.unwrap();
    let cm_data = cm.data.unwrap_or_default();
    assert_eq!(
        cm_data.get("edited-by-someone-else").map(String::as_str),
        Some("kept"),
        "the key added while Cleanup's ConfigMap write was held is gone"
    );
    assert!(
        cm_data.get("config").is_some_and(|c| !c.contains(&source)),
        "the cloud config still names {source}: {cm_data:?}"
    );

    // The credentials put back and the phase retried, the migration completes.
    let restore: std::collections::BTreeMap<String, ByteString> = target_keys
        .iter()
        .filter_map(|k| Some((k.clone(), data.get(k)?.clone())))
        .collect();
    assert_eq!(
        restore.len(),
        2,
        "the target's credentials were in vsphere-creds"
    );
    secrets
        .patch("vsphere-creds", &pp, &merge(json!({"data": restore})))
        .await
        .unwrap();
    env.approve("m", &[PhaseName::Verify]).await;
    env.patch_spec("m", json!({"retryToken": "credentials-restored"}))
        .await;
    let m = env
        .wait(
            "m",
            "the migration to complete",
            Duration::from_secs(180),
            |m| phase_of(m) == Some(vcfm_api::MigrationPhase::Completed),
        )
        .await;
    assert!(
        history(&m).contains(&(PhaseName::Cleanup, PhaseStatus::Completed)),
        "{}",
        summary(&m)
    );
    let creds = secrets.get("vsphere-creds").await.unwrap();
    let keys: Vec<&String> = creds
        .data
        .as_ref()
        .map(|d| d.keys().collect())
        .unwrap_or_default();
    assert!(
        !keys.iter().any(|k| k.starts_with(&format!("{source}."))),
        "{keys:?}"
    );
    env.shutdown().await;
}

/// Backup reads the migration's backup Secret from its watch and writes all
/// its backups in one patch. A backup of the same key that lands between
/// that read and that write (a replica that lost its lease mid-step, a crash
/// and restart) was the first and must stay: the patch, computed on the
/// older copy, is refused (409) and redone on a fresh read, which keeps the
/// key as it is and records in status the HMAC of what is there. A patch
/// without the resourceVersion would replace it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_written_between_the_cache_read_and_the_backup_write_is_kept() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("m", 1, PhaseName::Preflight, json!({}))
        .await;
    let secrets = Api::<Secret>::namespaced(env.client.clone(), &env.ns);
    let faults = env.sim.kube().faults();
    faults.inject(
        FaultRule::new(FaultAction::Delay { millis: 2000 })
            .verb("patch")
            .resource("secrets")
            .name("m-backup")
            .namespace(&env.ns)
            .times(1),
    );
    env.approve("m", &[PhaseName::Backup]).await;
    until_taken(&faults, "the backups").await;
    // The controller's patch is in flight; the first backup of the key lands now.
    let first = br#"{"apiVersion":"config.openshift.io/v1","kind":"Infrastructure","metadata":{"name":"cluster"},"spec":{"note":"the first backup"}}"#.to_vec();
    let patch = json!({"data": {"infrastructure.json": ByteString(first.clone())}});
    secrets
        .patch("m-backup", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();

    let m = env
        .wait("m", "Backup to finish", Duration::from_secs(120), |m| {
            phase_done(m, PhaseName::Backup)
        })
        .await;
    assert_eq!(
        phase_status(&m, PhaseName::Backup),
        Some(PhaseStatus::Completed),
        "{}",
        summary(&m)
    );
    let s = secrets.get("m-backup").await.unwrap();
    let data = s.data.clone().unwrap_or_default();
    assert_eq!(
        data.get("infrastructure.json")
            .map(|b| String::from_utf8_lossy(&b.0).into_owned()),
        Some(String::from_utf8_lossy(&first).into_owned()),
        "the backup written while the controller's patch was held was replaced"
    );
    // The other backups were written on top, and status vouches for what is there.
    for k in ["vsphere-creds.json", "cloud-provider-config.json"] {
        assert!(data.contains_key(k), "{k} missing: {:?}", data.keys());
    }
    let key = vcfm_controller::backup::digest_key(&s).expect("a digest key");
    let manifests = m
        .status
        .as_ref()
        .map(|s| s.backup_manifests.clone())
        .unwrap_or_default();
    let infra = manifests
        .iter()
        .find(|b| b.key == "infrastructure.json")
        .expect("a manifest of infrastructure.json");
    assert!(
        vcfm_controller::backup::verify(&key, &first, &infra.hmac_sha256),
        "status does not vouch for the backup that is in the Secret"
    );
    env.shutdown().await;
}

/// Without the `VSphereMultiVCenterDay2` gate, UpdateInfrastructure lifts the
/// Infrastructure CRD's vcenters rule, writes the Infrastructure and puts the
/// rule back, reading the CRD from its watch. Someone else's edit of the CRD
/// made while the lift is held must survive the lift and the restore: the
/// lift, based on the older copy, is refused (409) and redone on a fresh read.
/// A replace without the resourceVersion would put back the older CRD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_the_infrastructure_crd_made_while_the_rule_is_lifted_is_kept() {
    const CRD: &str = "infrastructures.config.openshift.io";
    let mut env = Env::start(Scenario {
        workers: 1,
        multi_vcenter_day2_gate: false,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("m", 1, PhaseName::CreateFolder, json!({}))
        .await;
    let crds = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(env.client.clone());
    let rules_before = vcfm_controller::openshift::infra::has_vcenters_rule(
        &serde_json::to_value(crds.get(CRD).await.unwrap()).unwrap(),
    );
    assert!(rules_before, "the seeded CRD carries the vcenters rule");
    let faults = env.sim.kube().faults();
    faults.inject(
        FaultRule::new(FaultAction::Delay { millis: 2000 })
            .verb("update")
            .resource("customresourcedefinitions")
            .name(CRD)
            .times(1),
    );
    env.approve("m", &[PhaseName::UpdateInfrastructure]).await;
    until_taken(&faults, "the Infrastructure CRD").await;
    let note = json!({"metadata": {"annotations": {"example.com/edited-by": "someone-else"}}});
    crds.patch(CRD, &PatchParams::default(), &Patch::Merge(note))
        .await
        .unwrap();

    let m = env
        .wait(
            "m",
            "UpdateInfrastructure to finish",
            Duration::from_secs(120),
            |m| phase_done(m, PhaseName::UpdateInfrastructure),
        )
        .await;
    assert_eq!(
        phase_status(&m, PhaseName::UpdateInfrastructure),
        Some(PhaseStatus::Completed),
        "{}",
        summary(&m)
    );
    let crd = crds.get(CRD).await.unwrap();
    assert_eq!(
        crd.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("example.com/edited-by"))
            .map(String::as_str),
        Some("someone-else"),
        "the annotation added while the controller's CRD write was held is gone"
    );
    assert!(
        vcfm_controller::openshift::infra::has_vcenters_rule(&serde_json::to_value(&crd).unwrap()),
        "the vcenters rule was not put back"
    );
    let target = env.sim.target().server.clone();
    let i = Api::<Infrastructure>::all(env.client.clone())
        .get("cluster")
        .await
        .unwrap();
    assert!(
        i.vcenters().iter().any(|v| v.server == target),
        "Infrastructure does not list {target}"
    );
    env.shutdown().await;
}

/// The controller's watch of the CRD is held back (kube-sim delays its watch
/// request, pinned to the CRD's name, after the initial list) so that its
/// store keeps showing the CRD as it was before the rule was lifted. Putting
/// the rule back right after the Infrastructure write must still happen: the
/// controller reads the CRD its own lift returned, not the store that has not
/// seen that lift (which still shows the rule, and would leave it lifted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_is_put_back_although_the_crd_watch_has_not_seen_the_lift() {
    const CRD: &str = "infrastructures.config.openshift.io";
    let mut env = Env::start(Scenario {
        workers: 1,
        multi_vcenter_day2_gate: false,
        ..Scenario::default()
    })
    .await;
    let faults = env.sim.kube().faults();
    faults.inject(
        FaultRule::new(FaultAction::Delay { millis: 90_000 })
            .verb("watch")
            .resource("customresourcedefinitions")
            .name(CRD)
            .times(1),
    );
    env.spawn_controller();
    env.migrate_through("m", 1, PhaseName::CreateFolder, json!({}))
        .await;
    assert!(
        faults.active().is_empty(),
        "the CRD was read from a watch that is now held"
    );
    env.approve("m", &[PhaseName::UpdateInfrastructure]).await;
    let m = env
        .wait(
            "m",
            "UpdateInfrastructure to finish",
            Duration::from_secs(60),
            |m| phase_done(m, PhaseName::UpdateInfrastructure),
        )
        .await;
    assert_eq!(
        phase_status(&m, PhaseName::UpdateInfrastructure),
        Some(PhaseStatus::Completed),
        "{}",
        summary(&m)
    );
    let crds = Api::<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >::all(env.client.clone());
    let crd = serde_json::to_value(crds.get(CRD).await.unwrap()).unwrap();
    assert!(
        vcfm_controller::openshift::infra::has_vcenters_rule(&crd),
        "UpdateInfrastructure completed with the Infrastructure CRD's vcenters rule still lifted"
    );
    env.shutdown().await;
}

/// The controller's watch of Infrastructure `cluster` is held back likewise.
/// UpdateInfrastructure checks after its write that the Infrastructure lists
/// the target: it must judge on the newest version it has seen (what its write
/// returned, or the fresh read after a 409), not on the store that has seen
/// neither, which would keep the phase retrying until the watch catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_infrastructure_judges_its_write_although_the_watch_has_not_seen_it() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    let faults = env.sim.kube().faults();
    faults.inject(
        FaultRule::new(FaultAction::Delay { millis: 90_000 })
            .verb("watch")
            .resource("infrastructures")
            .name("cluster")
            .times(1),
    );
    env.spawn_controller();
    env.migrate_through("m", 1, PhaseName::CreateFolder, json!({}))
        .await;
    assert!(
        faults.active().is_empty(),
        "Infrastructure was read from a watch that is now held"
    );
    env.approve("m", &[PhaseName::UpdateInfrastructure]).await;
    let m = env
        .wait(
            "m",
            "UpdateInfrastructure to complete",
            Duration::from_secs(30),
            |m| phase_status(m, PhaseName::UpdateInfrastructure) == Some(PhaseStatus::Completed),
        )
        .await;
    let target = env.sim.target().server.clone();
    let i = Api::<Infrastructure>::all(env.client.clone())
        .get("cluster")
        .await
        .unwrap();
    assert!(
        i.vcenters().iter().any(|v| v.server == target),
        "{}",
        summary(&m)
    );
    env.shutdown().await;
}
