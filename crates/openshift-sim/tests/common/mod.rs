//! Helpers shared by the integration tests: bounded polling and object lookups through the
//! HTTP API only.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::ListParams;
use vcfm_api::openshift::{Machine, MachineSet};

/// Polls `f` until it returns `Some`, failing the test with `what` and the last observation
/// after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn machines(client: &kube::Client) -> Api<Machine> {
    Api::namespaced(client.clone(), "openshift-machine-api")
}

pub fn machinesets(client: &kube::Client) -> Api<MachineSet> {
    Api::namespaced(client.clone(), "openshift-machine-api")
}

pub async fn list_machines(client: &kube::Client) -> Vec<Machine> {
    machines(client)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Names of the VMs in a folder (templates excluded).
pub async fn vms_in(vc: &vcfm_vsphere::Client, folder: &str) -> Result<Vec<String>, String> {
    let f = vc.find_folder(folder).await.map_err(|e| e.to_string())?;
    let vms = vc.list_vms(&f, false).await.map_err(|e| e.to_string())?;
    Ok(vms
        .into_iter()
        .filter(|v| !v.template)
        .map(|v| v.name)
        .collect())
}

/// A worker MachineSet named `name` for the target vCenter of `sim`, copied from the seeded
/// worker MachineSet the way a migration does it.
pub async fn target_machineset(
    sim: &openshift_sim::SimCluster,
    name: &str,
    replicas: i32,
) -> MachineSet {
    let c = sim.client();
    let src = machinesets(&c)
        .get(&format!("{}-worker-0", sim.infra_id()))
        .await
        .unwrap();
    let t = sim.target();
    let mut v = serde_json::to_value(&src).unwrap();
    v["metadata"] = serde_json::json!({"name": name, "namespace": "openshift-machine-api",
        "labels": src.metadata.labels});
    v.as_object_mut().unwrap().remove("status");
    let ms_label = "machine.openshift.io/cluster-api-machineset";
    v["spec"]["replicas"] = serde_json::json!(replicas);
    v["spec"]["selector"]["matchLabels"][ms_label] = serde_json::json!(name);
    v["spec"]["template"]["metadata"]["labels"][ms_label] = serde_json::json!(name);
    let ps = &mut v["spec"]["template"]["spec"]["providerSpec"]["value"];
    ps["workspace"] = serde_json::json!({"server": t.server, "datacenter": t.datacenter,
        "datastore": t.datastore, "folder": t.folder, "resourcePool": t.resource_pool});
    ps["template"] = serde_json::json!(t.template);
    ps["network"] = serde_json::json!({"devices": [{"networkName": t.network}]});
    serde_json::from_value(v).unwrap()
}

/// Adds the target vCenter's credentials to `kube-system/vsphere-creds`, as UpdateSecrets does.
pub async fn add_target_credentials(sim: &openshift_sim::SimCluster) {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};
    let t = sim.target();
    let secrets: Api<Secret> = Api::namespaced(sim.client(), "kube-system");
    let patch = serde_json::json!({"stringData": {
        format!("{}.username", t.server): t.username,
        format!("{}.password", t.server): t.password}});
    secrets
        .patch(
            "vsphere-creds",
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .unwrap();
}

/// Waits until the cloud-credential operator copied the target credentials for the
/// Machine API (creating target Machines earlier makes them fail, as in a real cluster).
pub async fn wait_target_credentials_propagated(sim: &openshift_sim::SimCluster) {
    use k8s_openapi::api::core::v1::Secret;
    let key = format!("{}.username", sim.target().server);
    let copies: Api<Secret> = Api::namespaced(sim.client(), "openshift-machine-api");
    eventually(
        "target credentials propagated",
        Duration::from_secs(10),
        || async {
            let s = copies
                .get("vsphere-cloud-credentials")
                .await
                .map_err(|e| e.to_string())?;
            if s.data.unwrap_or_default().contains_key(&key) {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )
    .await
}
