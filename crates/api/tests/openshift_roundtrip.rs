//! Reading an OpenShift object into our types and writing it back must give
//! back every field, known or not: vcfm updates live cluster objects and must
//! never drop what it does not model.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vcfm_api::openshift::*;

fn fixture(name: &str) -> Value {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn round_trip<K: DeserializeOwned + Serialize>(name: &str) -> K {
    let original = fixture(name);
    let typed: K = serde_json::from_value(original.clone()).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, original, "{name} changed in a read/write round trip");
    typed
}

#[test]
fn infrastructure_keeps_networking_vips_and_unknown_fields() {
    let infra: Infrastructure = round_trip("infrastructure.yaml");
    assert_eq!(infra.infra_id(), Some("mycluster-x7k2p"));
    assert_eq!(infra.vcenters().len(), 1);
    assert_eq!(infra.vcenters()[0].server, "vcenter-old.example.com");
    assert_eq!(infra.vcenters()[0].datacenters, ["dc1"]);
    let fd = &infra.failure_domains()[0];
    assert_eq!(fd.topology.compute_cluster, "/dc1/host/cluster1");
    assert_eq!(fd.extra["futureFailureDomainField"], "keep-me");
    let vsphere = infra.vsphere().unwrap();
    assert!(vsphere.extra.contains_key("nodeNetworking"));
    assert!(vsphere.extra.contains_key("apiServerInternalIPs"));
}

#[test]
fn cluster_version_reports_version_and_upgrade_state() {
    let cv: ClusterVersion = round_trip("clusterversion.yaml");
    assert_eq!(cv.desired_version(), Some("4.18.9"));
    assert!(!cv.is_progressing());
}

#[test]
fn feature_gate_is_looked_up_for_the_running_version_only() {
    let fg: FeatureGate = round_trip("featuregate.yaml");
    assert_eq!(fg.is_enabled("4.18.9", MULTI_VCENTER_DAY2_GATE), Some(true));
    assert_eq!(
        fg.is_enabled("4.17.20", MULTI_VCENTER_DAY2_GATE),
        Some(false)
    );
    assert_eq!(fg.is_enabled("4.19.0", MULTI_VCENTER_DAY2_GATE), None);
}

#[test]
fn cluster_operator_instability_names_the_condition_and_message() {
    let co: ClusterOperator = round_trip("clusteroperator.yaml");
    let why = co.instability();
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].starts_with("Degraded=True") && why[0].contains("vCenter count changed"),
        "{why:?}"
    );
}

#[test]
fn cluster_operator_with_missing_conditions_is_not_stable() {
    let co: ClusterOperator = serde_json::from_value(serde_json::json!({
        "apiVersion": "config.openshift.io/v1", "kind": "ClusterOperator",
        "metadata": {"name": "dns"},
        "spec": {},
        "status": {"conditions": [{"type": "Available", "status": "True"},
                                  {"type": "Degraded", "status": "Unknown"}]}
    }))
    .unwrap();
    assert_eq!(
        co.instability(),
        ["Progressing not reported", "Degraded=Unknown"]
    );
}

#[test]
fn machine_set_exposes_role_and_vsphere_workspace() {
    let ms: MachineSet = round_trip("machineset.yaml");
    assert_eq!(ms.role(), Some("worker"));
    assert_eq!(ms.server().as_deref(), Some("vcenter-old.example.com"));
    let ps = ms.provider_spec().unwrap().unwrap();
    assert_eq!(ps.num_cpus, Some(4));
    assert_eq!(
        ps.network.unwrap().devices[0].network_name.as_deref(),
        Some("VM Network")
    );
    // Fields we do not model survive inside the provider spec too.
    assert_eq!(ps.extra["numCoresPerSocket"], 4);
}

#[test]
fn provider_spec_rewrite_keeps_unknown_fields() {
    let mut ms: MachineSet = round_trip("machineset.yaml");
    let mut ps = ms.provider_spec().unwrap().unwrap();
    ps.template = Some("/dc2/vm/rhcos".into());
    ps.workspace.as_mut().unwrap().server = Some("vcenter-new.example.com".into());
    let spec = ms.spec.template.as_mut().unwrap().spec.as_mut().unwrap();
    spec.provider_spec
        .as_mut()
        .unwrap()
        .set_vsphere(&ps)
        .unwrap();
    let value = serde_json::to_value(&ms).unwrap();
    let v = &value["spec"]["template"]["spec"]["providerSpec"]["value"];
    assert_eq!(v["template"], "/dc2/vm/rhcos");
    assert_eq!(v["workspace"]["server"], "vcenter-new.example.com");
    assert_eq!(v["snapshot"], "");
    assert_eq!(v["kind"], "VSphereMachineProviderSpec");
    assert_eq!(
        value["spec"]["template"]["spec"]["lifecycleHooks"],
        serde_json::json!({})
    );
}

#[test]
fn machine_exposes_phase_node_and_server() {
    let m: Machine = round_trip("machine.yaml");
    assert_eq!(m.phase(), "Running");
    assert_eq!(m.server().as_deref(), Some("vcenter-old.example.com"));
    let st = m.status.as_ref().unwrap();
    assert_eq!(
        st.node_ref.as_ref().unwrap().name.as_deref(),
        Some("mycluster-x7k2p-worker-0-abcde")
    );
    assert_eq!(
        m.spec.spec.provider_id.as_deref(),
        Some("vsphere://4211c3f0-6d3c-4f7e-a8d2-9c1b2a3d4e5f")
    );
}

#[test]
fn cpms_rollout_is_trusted_only_for_the_observed_generation() {
    let mut cpms: ControlPlaneMachineSet = round_trip("controlplanemachineset.yaml");
    assert_eq!(cpms.failure_domain_names(), ["generated-failure-domain"]);
    assert_eq!(cpms.spec.state.as_deref(), Some("Inactive"));
    assert!(cpms.rollout_complete());
    // A spec change bumps the generation; old counters must not count as done.
    cpms.metadata.generation = Some(2);
    assert!(!cpms.rollout_complete());
    let st = cpms.status.as_mut().unwrap();
    st.observed_generation = Some(2);
    st.updated_replicas = Some(1);
    assert!(!cpms.rollout_complete());
    cpms.status.as_mut().unwrap().updated_replicas = Some(3);
    assert!(cpms.rollout_complete());
}

#[test]
fn cluster_csi_driver_management_state() {
    let d: ClusterCSIDriver = round_trip("clustercsidriver.yaml");
    assert_eq!(d.spec.management_state.as_deref(), Some("Managed"));
    assert_eq!(d.metadata.name.as_deref(), Some(VSPHERE_CSI_DRIVER));
}
