//! The real OpenShift CRDs (Default and multi-vCenter day-2 feature sets) are served,
//! and their CEL rules behave as on a real cluster for the vCenter migration.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on purpose.

mod common;

use common::*;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{ApiResource, Discovery};
use serde_json::{Value, json};

const INFRA: &str = r#"
apiVersion: config.openshift.io/v1
kind: Infrastructure
metadata: {name: cluster}
spec:
  cloudConfig: {key: config, name: cloud-provider-config}
  platformSpec:
    type: VSphere
    vsphere:
      vcenters:
      - {server: vc1.example.com, port: 443, datacenters: [dc1]}
      failureDomains:
      - name: fd1
        region: r1
        zone: z1
        server: vc1.example.com
        topology: {datacenter: dc1, computeCluster: /dc1/host/c1, networks: [net], datastore: /dc1/datastore/ds1}
"#;

fn two_vcenters() -> Value {
    json!({"spec": {"platformSpec": {"vsphere": {"vcenters": [
        {"server": "vc1.example.com", "port": 443, "datacenters": ["dc1"]},
        {"server": "vc2.example.com", "port": 443, "datacenters": ["dc2"]},
    ]}}}})
}

fn infra_api(client: kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("config.openshift.io", "v1", "Infrastructure"),
        "infrastructures",
    );
    Api::all_with(client, &ar)
}

fn crd_files(set: &str) -> Vec<std::path::PathBuf> {
    let dir = shared_dir().join("openshift-crds").join(set);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        10,
        "expected the 10 OpenShift CRDs in {}",
        dir.display()
    );
    files
}

#[tokio::test]
async fn serves_every_openshift_crd_of_both_feature_sets() {
    for set in ["default", "multi-vcenter-day2"] {
        let sim = sim().await;
        let n = sim
            .apply_yaml_dir(&shared_dir().join("openshift-crds").join(set))
            .unwrap();
        assert_eq!(n, 10);
        let client = sim.client().await.unwrap();
        let discovery = Discovery::new(client.clone()).run().await.unwrap();
        for f in crd_files(set) {
            let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            let group = crd["spec"]["group"].as_str().unwrap();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap();
            let (ar, caps) = discovery
                .groups()
                .flat_map(|g| g.resources_by_stability())
                .find(|(ar, _)| ar.group == group && ar.kind == kind)
                .unwrap_or_else(|| panic!("{kind}.{group} not discovered ({set})"));
            assert_eq!(ar.plural, plural);
            let namespaced = crd["spec"]["scope"] == "Namespaced";
            assert_eq!(
                caps.scope == kube::discovery::Scope::Namespaced,
                namespaced,
                "{kind}"
            );
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            assert!(
                api.list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .is_empty()
            );
        }
        // MachineSets declare the scale subresource.
        let ms = discovery
            .groups()
            .flat_map(|g| g.resources_by_stability())
            .find(|(ar, _)| ar.kind == "MachineSet")
            .unwrap();
        assert!(
            ms.1.subresources.iter().any(|(ar, _)| ar.plural == "scale"),
            "machinesets/scale served"
        );
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn adding_a_vcenter_is_rejected_by_default_and_accepted_on_day2() {
    // Default feature set: OpenShift's own message.
    let default_sim = sim().await;
    default_sim
        .apply_yaml_dir(&shared_dir().join("openshift-crds/default"))
        .unwrap();
    default_sim.apply_yaml(INFRA).unwrap();
    let api = infra_api(default_sim.client().await.unwrap());
    let e = status(
        api.patch(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(two_vcenters()),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "Infrastructure.config.openshift.io \"cluster\" is invalid: spec.platformSpec.vsphere.vcenters: Invalid value: \"array\": vcenters cannot be added or removed once set"
    );
    assert_eq!(
        e.details.unwrap().causes[0].field,
        "spec.platformSpec.vsphere.vcenters"
    );
    default_sim.shutdown().await;

    // Day-2 gate set: the same update is accepted.
    let sim = sim().await;
    sim.apply_yaml_dir(&shared_dir().join("openshift-crds/multi-vcenter-day2"))
        .unwrap();
    sim.apply_yaml(INFRA).unwrap();
    let api = infra_api(sim.client().await.unwrap());
    let out = api
        .patch(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(two_vcenters()),
        )
        .await
        .unwrap();
    assert_eq!(
        out.data["spec"]["platformSpec"]["vsphere"]["vcenters"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // ...but emptying the list is still refused by the day-2 rule.
    let empty = json!({"spec": {"platformSpec": {"vsphere": {"vcenters": []}}}});
    let e = status(
        api.patch("cluster", &PatchParams::default(), &Patch::Merge(empty))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("vcenters must have at least 1 item"),
        "{}",
        e.message
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn lifting_and_restoring_the_infrastructure_rule_takes_effect_immediately() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let sim = sim().await;
    sim.apply_yaml_dir(&shared_dir().join("openshift-crds/default"))
        .unwrap();
    sim.apply_yaml(INFRA).unwrap();
    let client = sim.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let api = infra_api(client);
    let original = crds
        .get("infrastructures.config.openshift.io")
        .await
        .unwrap();

    // Lift the rule (as the migration controller does) with a JSON patch.
    let mut v = serde_json::to_value(&original).unwrap();
    let rules = v
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/platformSpec/properties/vsphere/properties/vcenters/x-kubernetes-validations")
        .unwrap()
        .as_array_mut()
        .unwrap();
    let idx = rules
        .iter()
        .position(|r| r["message"] == "vcenters cannot be added or removed once set")
        .unwrap();
    let ptr = format!(
        "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/platformSpec/properties/vsphere/properties/vcenters/x-kubernetes-validations/{idx}"
    );
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": ptr}])).unwrap();
    crds.patch(
        "infrastructures.config.openshift.io",
        &PatchParams::default(),
        &Patch::<()>::Json(jp),
    )
    .await
    .unwrap();
    api.patch(
        "cluster",
        &PatchParams::default(),
        &Patch::Merge(two_vcenters()),
    )
    .await
    .unwrap();

    // Restore it: removing a vCenter is now refused again.
    let mut current = crds
        .get("infrastructures.config.openshift.io")
        .await
        .unwrap();
    current.spec = original.spec;
    crds.replace(
        "infrastructures.config.openshift.io",
        &PostParams::default(),
        &current,
    )
    .await
    .unwrap();
    let one = json!({"spec": {"platformSpec": {"vsphere": {"vcenters": [{"server": "vc1.example.com", "port": 443, "datacenters": ["dc1"]}]}}}});
    let e = status(
        api.patch("cluster", &PatchParams::default(), &Patch::Merge(one))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message
            .contains("vcenters cannot be added or removed once set"),
        "{}",
        e.message
    );
    sim.shutdown().await;
}
