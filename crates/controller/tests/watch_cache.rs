//! Reconciles read migrations from the controller's watch cache: the
//! one-migration-at-a-time rule still holds, and the API server sees one list
//! of migrations (the watch's), not one list or get per reconcile. Sim tier (kube-sim's
//! request counters).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use openshift_sim::Scenario;
use serde_json::json;
use std::time::Duration;
use vcfm_api::PhaseName;

const MIGRATIONS: &str = "/vmwarecloudfoundationmigrations";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_read_migrations_from_the_watch_cache_not_a_list_each() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("first", 1, PhaseName::UpdateSecrets, json!({}))
        .await;
    // A second migration is held back while the first is active.
    env.create_migration("second", env.spec(FD, 1, false)).await;
    let m = env
        .wait(
            "second",
            "the second migration to be blocked",
            Duration::from_secs(60),
            |m| {
                m.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Blocked"
                            && c.status == "True"
                            && c.reason == "AnotherMigrationActive"
                    })
                })
            },
        )
        .await;
    assert!(
        m.status.as_ref().unwrap().start_time.is_none(),
        "the second migration did not start:\n{}",
        summary(&m)
    );
    let stats = env.sim.kube().stats();
    let count = |verb: &str| -> u64 {
        stats
            .snapshot()
            .iter()
            .filter(|(k, _)| {
                k.user == CONTROLLER_USER && k.verb == verb && k.resource.ends_with(MIGRATIONS)
            })
            .map(|(_, n)| n)
            .sum()
    };
    let (gets, lists) = (count("get"), count("list"));
    let writes: u64 = stats
        .snapshot()
        .iter()
        .filter(|(k, _)| {
            k.user == CONTROLLER_USER
                && k.verb == "update"
                && k.resource.ends_with(&format!("{MIGRATIONS}/status"))
        })
        .map(|(_, n)| n)
        .sum();
    // Reconciles read their own migration and the others from the cache,
    // filled by the watch's initial list (a relist after a dropped watch may
    // add one); a get is only the re-read after a conflicting write.
    assert!(
        writes >= 5,
        "only {writes} status writes: reconciles did not run"
    );
    assert!(
        lists <= 2,
        "{lists} lists of migrations for {writes} status writes: reconciles list instead of reading the cache"
    );
    assert!(
        gets <= 3,
        "{gets} gets of migrations for {writes} status writes: reconciles read the API instead of the cache"
    );
    env.shutdown().await;
}

/// The controller's requests of `verb` on `resource` (kube-sim's counters).
fn controller_requests(env: &Env, verb: &str, resource: &str) -> u64 {
    env.sim
        .kube()
        .stats()
        .snapshot()
        .iter()
        .filter(|(k, _)| k.user == CONTROLLER_USER && k.verb == verb && k.resource == resource)
        .map(|(_, n)| n)
        .sum()
}

/// The first read of a Secret, a ConfigMap or the Infrastructure CRD starts
/// its named watch and reads the object from that watch's first list: no GET
/// beside the watch (issue 16). Preflight and Backup read the target
/// credentials, kube-system/vsphere-creds, the cloud-provider ConfigMap, the
/// Infrastructure CRD and the backup Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_reads_of_named_objects_come_from_their_watches_not_gets() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    let m = env
        .migrate_through("m", 1, PhaseName::Backup, json!({}))
        .await;
    assert!(
        m.status.as_ref().is_some_and(|s| s.cluster.is_some()),
        "Preflight recorded the cluster:\n{}",
        summary(&m)
    );
    for resource in [
        "secrets",
        "configmaps",
        "apiextensions.k8s.io/customresourcedefinitions",
    ] {
        assert!(
            controller_requests(&env, "watch", resource) >= 1,
            "{resource} were read through a watch"
        );
        assert_eq!(
            controller_requests(&env, "get", resource),
            0,
            "{resource}: a GET beside the watch that was started to read it"
        );
    }
    env.shutdown().await;
}

/// The vSphere pods the restarts select: namespace and label (`key=value`)
/// or, for the machine-config-operator, name prefix.
const RESTARTED: &[(&str, &str)] = &[
    (
        "openshift-cloud-controller-manager",
        "k8s-app=vsphere-cloud-controller-manager",
    ),
    (
        "openshift-cloud-controller-manager-operator",
        "k8s-app=cloud-manager-operator",
    ),
    ("openshift-machine-api", "api=clusterapi"),
    (
        "openshift-cluster-csi-drivers",
        "app=vmware-vsphere-csi-driver-controller",
    ),
    (
        "openshift-cluster-csi-drivers",
        "app=vmware-vsphere-csi-driver-node",
    ),
    (
        "openshift-cluster-storage-operator",
        "name=cluster-storage-operator",
    ),
    (
        "openshift-machine-config-operator",
        "machine-config-operator-",
    ),
];

/// The uids of the pods [`RESTARTED`] selects, once the simulated operators
/// have stopped rolling them (nothing terminating, the same pods twice in a row).
async fn settled_pods(env: &Env) -> std::collections::BTreeSet<String> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        let mut uids = std::collections::BTreeSet::new();
        let mut terminating = false;
        for (ns, sel) in RESTARTED {
            let lp = match sel.contains('=') {
                true => ListParams::default().labels(sel),
                false => ListParams::default(),
            };
            for p in Api::<Pod>::namespaced(env.client.clone(), ns)
                .list(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|p| {
                    sel.contains('=')
                        || p.metadata.name.as_ref().is_some_and(|n| n.starts_with(sel))
                })
            {
                terminating |= p.metadata.deletion_timestamp.is_some();
                uids.extend(p.metadata.uid);
            }
        }
        if !terminating && last.as_ref() == Some(&uids) {
            return uids;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the vSphere pods did not settle"
        );
        last = Some(uids);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A one-worker migration whose next phase, RestartPods, waits for approval.
async fn before_restart_pods() -> Env {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    env.spawn_controller();
    env.migrate_through("m", 1, PhaseName::UpdateConfig, json!({}))
        .await;
    env
}

/// Approves RestartPods and waits until it has finished.
async fn restart_pods(env: &Env) -> Vcfm {
    env.approve("m", &[PhaseName::RestartPods]).await;
    env.wait(
        "m",
        "MonitorHealth to wait for approval",
        Duration::from_secs(120),
        |m| waiting_for_approval(m) == Some(PhaseName::MonitorHealth),
    )
    .await
}

/// RestartPods restarts the CSI controller and node groups, which select on
/// the same label key in one namespace, with one DeleteCollection
/// (`app in (controller,node)`) instead of one each, and still reports them
/// as two groups (issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_pods_deletes_groups_sharing_a_label_key_with_one_request() {
    let env = before_restart_pods().await;
    let before = settled_pods(&env).await;
    env.sim.kube().stats().reset();
    let m = restart_pods(&env).await;
    // Every pod of the restarted groups was replaced.
    let after = settled_pods(&env).await;
    assert!(!before.is_empty());
    assert!(
        before.is_disjoint(&after),
        "pods that ran before RestartPods still run"
    );
    // The groups: the cloud controller manager (two label sets, the same
    // pods), its operator, the machine API, the CSI driver controller and
    // node (one request), the storage operator; the machine-config-operator
    // pod goes by name.
    assert_eq!(
        controller_requests(&env, "deletecollection", "pods"),
        5,
        "one DeleteCollection per namespace and label key"
    );
    assert_eq!(controller_requests(&env, "delete", "pods"), 1);
    let log = &m
        .status
        .as_ref()
        .unwrap()
        .phase_history
        .iter()
        .find(|e| e.phase == PhaseName::RestartPods)
        .unwrap()
        .logs;
    let planned: Vec<&str> = log
        .iter()
        .filter_map(|l| l.fields.get("restartGroups"))
        .flat_map(|v| v.lines())
        .collect();
    for g in [
        "openshift-cluster-csi-drivers/pods -l app=vmware-vsphere-csi-driver-controller",
        "openshift-cluster-csi-drivers/pods -l app=vmware-vsphere-csi-driver-node",
    ] {
        assert!(
            planned.contains(&g),
            "{g} reported as its own group: {planned:?}"
        );
    }
    env.shutdown().await;
}

/// A pod RestartPods deletes by name (the machine-config operator's: its group
/// has no label selector) is remembered as deleted: the steps that run before
/// the pod watch shows it going do not delete it again (a second delete would
/// be one more request, or, on a cluster with graceful deletion, a deletion of
/// whatever replaced it under that name). kube-sim holds the pod watches of
/// that namespace for 10 s from the approval, while the other restarts go on
/// and wake the migration (and the harness's 300 ms poll steps it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_by_name_is_not_deleted_again_while_its_watch_lags() {
    use kube_sim::{FaultAction, FaultRule};
    let env = before_restart_pods().await;
    settled_pods(&env).await;
    env.sim.kube().stats().reset();
    let hold = Duration::from_secs(10);
    let start = std::time::Instant::now();
    env.sim.kube().faults().inject(
        FaultRule::new(FaultAction::HoldEvents)
            .verb("watch")
            .resource("pods")
            .namespace("openshift-machine-config-operator")
            .for_duration(hold),
    );
    restart_pods(&env).await;
    assert!(
        start.elapsed() >= hold,
        "RestartPods finished before the held watch showed the replacement"
    );
    assert_eq!(
        controller_requests(&env, "delete", "pods"),
        1,
        "the machine-config operator's pod was deleted more than once"
    );
    env.shutdown().await;
}
