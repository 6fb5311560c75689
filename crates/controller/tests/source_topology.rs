//! The installer-shaped source (`generated-failure-domain`, no region/zone tag
//! in vCenter) becomes part of a zonal cluster once the target failure domain
//! is added: the cloud provider and the storage operator's problem detector
//! then need region/zone tags on the source datacenter and compute cluster
//! (cloud-provider-vsphere `pkg/common/connectionmanager/zones.go`,
//! vsphere-problem-detector `pkg/check/zones.go`; openshift-sim reports the
//! `storage` operator Degraded otherwise). CreateTags tags the source, and a
//! rollback removes only what it made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use kube::Api;
use openshift_sim::{Scenario, Site};
use std::time::Duration;
use vcfm_api::openshift::Infrastructure;
use vcfm_api::{MigrationPhase, PhaseName};
use vcfm_vsphere::{Cardinality, CategorySpec};

/// `(region, zone, datacenter path, cluster path)` of the seeded source failure domain.
async fn source_domain(env: &Env) -> (String, String, String, String) {
    let infra = Api::<Infrastructure>::all(env.client.clone())
        .get("cluster")
        .await
        .unwrap();
    let fd = infra
        .failure_domains()
        .iter()
        .find(|f| f.server == env.sim.source().server)
        .cloned()
        .expect("a source failure domain");
    (
        fd.region,
        fd.zone,
        format!("/{}", fd.topology.datacenter.trim_matches('/')),
        fd.topology.compute_cluster,
    )
}

/// Tag names of `category` attached to the object at `path` on the source.
async fn attached(env: &Env, category: &str, path: &str, dc: bool) -> Vec<String> {
    let vc = env.sim.vsphere_client(Site::Source).unwrap();
    let obj = if dc {
        vc.find_datacenter(path).await.unwrap()
    } else {
        vc.find_cluster(path).await.unwrap()
    };
    let Some(cat) = vc.find_category(category).await.unwrap() else {
        return vec![];
    };
    vc.attached_tags_of_category(&obj, &cat.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_source_topology_is_tagged_and_the_migration_completes() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    let (region, zone, dc, cluster) = source_domain(&env).await;
    assert!(
        attached(&env, "openshift-region", &dc, true)
            .await
            .is_empty()
    );
    assert!(
        attached(&env, "openshift-zone", &cluster, false)
            .await
            .is_empty()
    );
    env.spawn_controller();
    env.create_migration("move", env.spec(FD, 1, false)).await;
    let m = env.wait_terminal("move", Duration::from_secs(240)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::Completed),
        "{}",
        summary(&m)
    );
    assert_eq!(
        attached(&env, "openshift-region", &dc, true).await,
        [region]
    );
    assert_eq!(
        attached(&env, "openshift-zone", &cluster, false).await,
        [zone]
    );
    // Recorded like the target's, under the source server.
    let st = m.status.as_ref().unwrap();
    let src: Vec<_> = st
        .created_vsphere_objects
        .iter()
        .filter(|o| o.server == env.sim.source().server)
        .map(|o| o.kind.as_str())
        .collect();
    assert_eq!(
        src.iter().filter(|k| **k == "TagAttachment").count(),
        2,
        "{:?}",
        st.created_vsphere_objects
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_removes_only_the_source_tags_vcfm_made() {
    let mut env = Env::start(Scenario {
        workers: 1,
        ..Scenario::default()
    })
    .await;
    let (region, zone, dc, cluster) = source_domain(&env).await;
    // The administrator made the region category and tag beforehand (not attached).
    let vc = env.sim.vsphere_client(Site::Source).unwrap();
    let cat = vc
        .ensure_category(&CategorySpec {
            name: "openshift-region".into(),
            description: "made by the administrator".into(),
            cardinality: Cardinality::Single,
            associable_types: vec![
                "urn:vim25:Datacenter".into(),
                "urn:vim25:ClusterComputeResource".into(),
            ],
        })
        .await
        .unwrap();
    let admin_tag = vc.ensure_tag(&cat.id, &region, "by hand").await.unwrap();
    env.spawn_controller();
    env.create_migration("m", env.spec(FD, 1, true)).await;
    for p in &PhaseName::ALL[..10] {
        env.wait(
            "m",
            &format!("{p} waiting"),
            Duration::from_secs(120),
            |m| waiting_for_approval(m) == Some(*p),
        )
        .await;
        env.approve("m", &[*p]).await;
    }
    env.wait(
        "m",
        "CreateWorkers waiting",
        Duration::from_secs(120),
        |m| waiting_for_approval(m) == Some(PhaseName::CreateWorkers),
    )
    .await;
    assert_eq!(
        attached(&env, "openshift-region", &dc, true).await,
        std::slice::from_ref(&region)
    );
    assert_eq!(
        attached(&env, "openshift-zone", &cluster, false).await,
        [zone]
    );
    let m = env.roll_back("m", Duration::from_secs(180)).await;
    assert_eq!(
        phase_of(&m),
        Some(MigrationPhase::RollbackCompleted),
        "{}",
        summary(&m)
    );
    // vcfm's attachments and its zone category are gone; the administrator's
    // category and tag stay.
    assert!(
        attached(&env, "openshift-region", &dc, true)
            .await
            .is_empty()
    );
    assert!(vc.find_category("openshift-zone").await.unwrap().is_none());
    let cat_after = vc.find_category("openshift-region").await.unwrap().unwrap();
    assert_eq!(cat_after.id, cat.id);
    assert_eq!(
        vc.find_tag(&cat.id, &region).await.unwrap().unwrap().id,
        admin_tag.id
    );
    env.shutdown().await;
}

/// A source user that may not tag: Preflight refuses with the commands to
/// run, and nothing is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_user_that_cannot_tag_is_refused_by_preflight_with_the_commands() {
    let mut env = Env::start(Scenario {
        workers: 1,
        faults: openshift_sim::Faults {
            source_user_cannot_tag: true,
            ..Default::default()
        },
        ..Scenario::default()
    })
    .await;
    let (region, zone, dc, cluster) = source_domain(&env).await;
    let before = env.snapshot().await;
    env.spawn_controller();
    env.create_migration("m", env.spec(FD, 1, false)).await;
    let m = env
        .wait("m", "Preflight to fail", Duration::from_secs(60), |m| {
            phase_of(m) == Some(MigrationPhase::Failed)
        })
        .await;
    let msg = &m.status.as_ref().unwrap().phase_history[0].message;
    for want in [
        openshift_sim::SOURCE_LIMITED_USER.to_string(),
        "InventoryService.Tagging.AttachTag".into(),
        "govc tags.category.create -t Datacenter -t ClusterComputeResource openshift-region".into(),
        format!("govc tags.create -c openshift-zone {zone}"),
        format!("govc tags.attach -c openshift-region {region} '{dc}'"),
        format!("govc tags.attach -c openshift-zone {zone} '{cluster}'"),
    ] {
        assert!(msg.contains(&want), "{want:?} not in {msg}");
    }
    assert_same_state(&before, &env.snapshot().await, "after a refused Preflight");
    env.shutdown().await;
}
