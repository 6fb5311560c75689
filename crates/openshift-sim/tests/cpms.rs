//! The control-plane machine set operator: an Active CPMS pointed at a target failure
//! domain rolls the masters one at a time with truthful counters; an unknown failure
//! domain degrades it visibly; a deleted CPMS comes back Inactive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{eventually, list_machines, vms_in};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use openshift_sim::{Scenario, SimCluster, Site};
use vcfm_api::openshift::{
    ClusterOperator, ControlPlaneMachineSet, Infrastructure, Machine, find_condition,
};

fn cpms_api(c: &kube::Client) -> Api<ControlPlaneMachineSet> {
    Api::namespaced(c.clone(), "openshift-machine-api")
}

fn is_master(m: &Machine) -> bool {
    m.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("machine.openshift.io/cluster-api-machine-role"))
        .map(String::as_str)
        == Some("master")
}

/// Adds the target vCenter and a failure domain `name` to the Infrastructure (the cluster
/// runs the day-2 gate, so no CRD rule needs lifting).
async fn add_target_failure_domain(sim: &SimCluster, name: &str) {
    let infra_api: Api<Infrastructure> = Api::all(sim.client());
    let infra = infra_api.get("cluster").await.unwrap();
    let mut v = serde_json::to_value(&infra).unwrap();
    let vs = &mut v["spec"]["platformSpec"]["vsphere"];
    let t = sim.target();
    vs["vcenters"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"server": t.server, "port": 443, "datacenters": [t.datacenter]}));
    vs["failureDomains"]
        .as_array_mut()
        .unwrap()
        .push(openshift_sim::failure_domain_json(
            name, "region-b", "zone-b", t,
        ));
    infra_api
        .replace(
            "cluster",
            &PostParams::default(),
            &serde_json::from_value(v).unwrap(),
        )
        .await
        .unwrap();
}

async fn prepare_target(sim: &SimCluster) {
    sim.vsphere_client(Site::Target)
        .unwrap()
        .ensure_folder(&sim.target().folder)
        .await
        .unwrap();
    common::add_target_credentials(sim).await;
    common::wait_target_credentials_propagated(sim).await;
}

async fn activate(c: &kube::Client, fd: &str) -> i64 {
    let patch = serde_json::json!({"spec": {"state": "Active", "template": {"machines_v1beta1_machine_openshift_io": {
        "failureDomains": {"platform": "VSphere", "vsphere": [{"name": fd}]}}}}});
    let cpms = cpms_api(c)
        .patch("cluster", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    cpms.metadata.generation.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_cpms_rolls_masters_to_the_target_one_by_one() {
    // A long observation delay keeps the stale-counter window wide even on a loaded machine.
    let mut delays = openshift_sim::Delays::instant();
    delays.cpms_observe = Duration::from_secs(1);
    let sim = SimCluster::start(Scenario {
        workers: 0,
        multi_vcenter_day2_gate: true,
        delays,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    prepare_target(&sim).await;
    add_target_failure_domain(&sim, "target-fd").await;
    let old: Vec<String> = list_machines(&c)
        .await
        .iter()
        .filter(|m| is_master(m))
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(old.len(), 3);
    let generation = activate(&c, "target-fd").await;

    let target = sim.target().server.clone();
    let on_target = |m: &Machine| m.server().as_deref() == Some(target.as_str());
    let start = Instant::now();
    let mut saw_stale = false;
    let mut max_live = 0;
    let mut max_deleting = 0;
    let mut updated_seen = Vec::new();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "rollout did not finish; updated so far {updated_seen:?}"
        );
        let cpms = cpms_api(&c).get("cluster").await.unwrap();
        let st = cpms.status.clone().unwrap();
        let masters: Vec<Machine> = list_machines(&c)
            .await
            .into_iter()
            .filter(is_master)
            .collect();
        let live: Vec<&Machine> = masters
            .iter()
            .filter(|m| m.metadata.deletion_timestamp.is_none())
            .collect();
        let deleting = masters.len() - live.len();
        let ready_target = live
            .iter()
            .filter(|m| on_target(m) && m.phase() == "Running")
            .count();
        max_live = max_live.max(live.len());
        max_deleting = max_deleting.max(deleting);
        if st.observed_generation != Some(generation) {
            // Not observed yet: the old generation's counters, still all "updated".
            assert_eq!(
                (st.replicas, st.updated_replicas, st.ready_replicas),
                (Some(3), Some(3), Some(3))
            );
            saw_stale = true;
        } else {
            let updated = st.updated_replicas.unwrap();
            assert!(
                updated as usize <= ready_target,
                "updatedReplicas {updated} but only {ready_target} ready target masters"
            );
            if updated_seen.last() != Some(&updated) {
                updated_seen.push(updated);
            }
            if cpms.rollout_complete() && masters.len() == 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(
        saw_stale,
        "the old counters stayed visible until the generation was observed"
    );
    assert!(
        max_live <= 4,
        "at most one surge master at a time, saw {max_live}"
    );
    assert!(
        max_deleting <= 1,
        "old masters deleted one at a time, saw {max_deleting}"
    );
    assert!(
        updated_seen.windows(2).all(|w| w[0] <= w[1]),
        "updatedReplicas never goes back: {updated_seen:?}"
    );
    assert_eq!(updated_seen.last(), Some(&3));

    let masters: Vec<Machine> = list_machines(&c)
        .await
        .into_iter()
        .filter(is_master)
        .collect();
    assert!(
        masters
            .iter()
            .all(|m| on_target(m) && m.phase() == "Running")
    );
    let tvms = vms_in(
        &sim.vsphere_client(Site::Target).unwrap(),
        &sim.target().folder,
    )
    .await
    .unwrap();
    let svms = vms_in(
        &sim.vsphere_client(Site::Source).unwrap(),
        &sim.source().folder,
    )
    .await
    .unwrap();
    for m in &masters {
        assert!(tvms.contains(m.metadata.name.as_ref().unwrap()));
    }
    eventually(
        "old master VMs destroyed",
        Duration::from_secs(10),
        || async {
            let svms = vms_in(
                &sim.vsphere_client(Site::Source).unwrap(),
                &sim.source().folder,
            )
            .await?;
            if old.iter().any(|o| svms.contains(o)) {
                Err(format!("{svms:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let _ = svms;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_failure_domain_degrades_and_deleted_cpms_returns_inactive() {
    let sim = SimCluster::start(Scenario {
        workers: 0,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    let generation = activate(&c, "no-such-fd").await;
    let cond = eventually("Degraded condition", Duration::from_secs(20), || async {
        let cpms = cpms_api(&c)
            .get("cluster")
            .await
            .map_err(|e| e.to_string())?;
        let st = cpms.status.unwrap();
        if st.observed_generation != Some(generation) {
            return Err("not observed".into());
        }
        find_condition(&st.conditions, "Degraded")
            .filter(|d| d.status == "True")
            .cloned()
            .ok_or_else(|| "not degraded".to_string())
    })
    .await;
    assert!(
        cond.message.unwrap().contains("\"no-such-fd\" not found"),
        "message names the failure domain"
    );
    assert_eq!(
        list_machines(&c)
            .await
            .iter()
            .filter(|m| is_master(m))
            .count(),
        3,
        "no master touched"
    );
    let cos: Api<ClusterOperator> = Api::all(c.clone());
    eventually(
        "control-plane-machine-set operator Degraded",
        Duration::from_secs(20),
        || async {
            let co = cos
                .get("control-plane-machine-set")
                .await
                .map_err(|e| e.to_string())?;
            let bad = co.instability();
            if bad
                .iter()
                .any(|b| b.starts_with("Degraded=True") && b.contains("no-such-fd"))
            {
                Ok(())
            } else {
                Err(format!("{bad:?}"))
            }
        },
    )
    .await;

    cpms_api(&c)
        .delete("cluster", &DeleteParams::default())
        .await
        .unwrap();
    let back = eventually("CPMS recreated", Duration::from_secs(20), || async {
        let got = cpms_api(&c)
            .get_opt("cluster")
            .await
            .map_err(|e| e.to_string())?;
        match got {
            Some(cp)
                if cp.metadata.deletion_timestamp.is_none()
                    && cp.metadata.generation == Some(1) =>
            {
                Ok(cp)
            }
            _ => Err("not yet".into()),
        }
    })
    .await;
    assert_eq!(back.spec.state.as_deref(), Some("Inactive"));
    assert_eq!(
        back.failure_domain_names(),
        vec!["generated-failure-domain"]
    );
    sim.shutdown().await;
}
