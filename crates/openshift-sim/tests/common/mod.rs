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
    let mut last = String::new();
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
