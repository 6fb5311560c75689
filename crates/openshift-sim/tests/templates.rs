//! The simulated machine controller treats templates as machine-api-operator does
//! (`pkg/controller/vsphere/session/session.go` `FindVM`, `reconciler.go` `clone`): a plain
//! template name is searched in the whole datacenter and a duplicate fails the Machine; a
//! template below virtual hardware 15 is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{eventually, list_machines, machinesets};
use kube::api::PostParams;
use openshift_sim::{Scenario, SimCluster, Site};
use vcfm_vsphere::sim::VcsimOptions;

/// The error message of the first Machine of `set` once it failed.
async fn failure_of(c: &kube::Client, set: &str) -> String {
    eventually("the machine to fail", Duration::from_secs(30), || async {
        let m = list_machines(c)
            .await
            .into_iter()
            .find(|m| {
                m.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(set))
            })
            .ok_or("no machine yet")?;
        match m.phase() {
            "Failed" => Ok(m.status.and_then(|s| s.error_message).unwrap_or_default()),
            p => Err(format!("phase {p:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_and_old_hardware_fail_machines_as_machine_api_does() {
    let sim = SimCluster::start(Scenario {
        workers: 0,
        target_vcsim: Some(VcsimOptions {
            template_hardware_version: Some("vmx-13".into()),
            duplicate_template_folder: Some("library/copies".into()),
            ..VcsimOptions::default()
        }),
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    common::add_target_credentials(&sim).await;
    common::wait_target_credentials_propagated(&sim).await;
    let t = sim.target().clone();
    let vc = sim.vsphere_client(Site::Target).unwrap();
    vc.ensure_folder(&t.folder).await.unwrap();

    // By name only, as the CPMS keeps it: two VMs carry it.
    let by_name = format!("{}-worker-byname", sim.infra_id());
    let mut ms = common::target_machineset(&sim, &by_name, 1).await;
    let mut v = serde_json::to_value(&ms).unwrap();
    let name = t.template.rsplit('/').next().unwrap().to_string();
    v["spec"]["template"]["spec"]["providerSpec"]["value"]["template"] = serde_json::json!(name);
    ms = serde_json::from_value(v).unwrap();
    machinesets(&c)
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
    let text = failure_of(&c, &by_name).await;
    assert!(
        text.ends_with("multiple templates found, specify one in config"),
        "{text}"
    );

    // By path: found, but its hardware is too old.
    let by_path = format!("{}-worker-bypath", sim.infra_id());
    let ms = common::target_machineset(&sim, &by_path, 1).await;
    machinesets(&c)
        .create(&PostParams::default(), &ms)
        .await
        .unwrap();
    let text = failure_of(&c, &by_path).await;
    assert!(
        text.contains("Hardware lower than 15 is not supported")
            && text.contains("template version is 13"),
        "{text}"
    );
    sim.shutdown().await;
}
