//! Evictions honour PodDisruptionBudgets as the real API server's eviction subresource
//! does: 429 when the budget allows no disruption or is not yet processed, a taken
//! disruption otherwise, no check for pending pods.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{EvictParams, Patch, PatchParams, PostParams};
use kube_sim::KubeSim;
use serde_json::json;

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn a_budget_without_allowed_disruptions_refuses_the_eviction() {
    let sim = KubeSim::builder().start().await.unwrap();
    // kube-rs retries 429 by itself (for minutes): ask once, like kubectl's drain does.
    let kubeconfig = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    for name in ["r1", "r2", "pending"] {
        let p: Pod = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"app": "router"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        )
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
        if name != "pending" {
            pods.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})),
            )
            .await
            .unwrap();
        }
    }
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "router"},
        "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "router"}}}}))
    .unwrap();
    let created = pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    // Not processed by a disruption controller yet: refused.
    assert_eq!(
        code(pods.evict("r1", &EvictParams::default()).await.unwrap_err()),
        429
    );
    // A pending pod needs no budget.
    pods.evict("pending", &EvictParams::default())
        .await
        .unwrap();
    let st = |allowed: i32| {
        json!({"status": {"observedGeneration": created.metadata.generation,
        "disruptionsAllowed": allowed, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}})
    };
    pdbs.patch_status("router", &PatchParams::default(), &Patch::Merge(st(1)))
        .await
        .unwrap();
    pods.evict("r1", &EvictParams::default()).await.unwrap();
    let after = pdbs.get("router").await.unwrap().status.unwrap();
    assert_eq!(
        after.disruptions_allowed,
        Some(0),
        "the eviction took the disruption"
    );
    assert!(after.disrupted_pods.unwrap_or_default().contains_key("r1"));
    let e = pods.evict("r2", &EvictParams::default()).await.unwrap_err();
    assert_eq!(code(e), 429, "no disruption left");
    assert!(pods.get("r2").await.is_ok(), "r2 is still there");
    sim.shutdown().await;
}
