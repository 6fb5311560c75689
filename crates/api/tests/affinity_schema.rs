//! `regionAffinity` / `zoneAffinity` of a target failure domain: the same fields, limits
//! and CEL rules as OpenShift's Infrastructure CRD (`VSpherePlatformFailureDomainSpec`,
//! gate `VSphereHostVMGroupZonal`), so UpdateInfrastructure never writes what the real
//! API server would refuse, and bad combinations are refused at creation already.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use kube::CustomResourceExt;
use serde_json::{Value, json};
use vcfm_api::{VmwareCloudFoundationMigration, ZoneAffinityType};

fn example() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/examples/migration.yaml"
    );
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn schema() -> Value {
    let crd = serde_json::to_value(VmwareCloudFoundationMigration::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn cel_errors(obj: &Value) -> Vec<String> {
    match kube_cel::Validator::new().validate(&schema(), obj, None) {
        Ok(()) => vec![],
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

/// The example with its failure domain's affinity set to `region` / `zone`.
fn with_affinity(region: Option<Value>, zone: Option<Value>) -> Value {
    let mut obj = example();
    let fd = obj["spec"]["failureDomains"][0].as_object_mut().unwrap();
    if let Some(r) = region {
        fd.insert("regionAffinity".into(), r);
    }
    if let Some(z) = zone {
        fd.insert("zoneAffinity".into(), z);
    }
    obj
}

fn host_group() -> Value {
    json!({"vmGroup": "zone-a-vms", "hostGroup": "zone-a-hosts", "vmHostRule": "zone-a-rule"})
}

#[test]
fn a_host_group_zone_in_a_cluster_region_is_accepted_and_parses() {
    let obj = with_affinity(
        Some(json!({"type": "ComputeCluster"})),
        Some(json!({"type": "HostGroup", "hostGroup": host_group()})),
    );
    assert_eq!(cel_errors(&obj), Vec::<String>::new());
    let m: VmwareCloudFoundationMigration = serde_json::from_value(obj).unwrap();
    let fd = &m.spec.failure_domains[0];
    assert_eq!(
        fd.zone_affinity.as_ref().unwrap().type_,
        ZoneAffinityType::HostGroup
    );
    assert_eq!(fd.vm_group(), Some("zone-a-vms"));
    // And back out unchanged (UpdateInfrastructure writes these fields as they are).
    let back = serde_json::to_value(fd).unwrap();
    assert_eq!(back["zoneAffinity"]["hostGroup"], host_group());
    assert_eq!(back["regionAffinity"], json!({"type": "ComputeCluster"}));

    let obj = with_affinity(
        Some(json!({"type": "Datacenter"})),
        Some(json!({"type": "ComputeCluster"})),
    );
    assert_eq!(cel_errors(&obj), Vec::<String>::new());
    let m: VmwareCloudFoundationMigration = serde_json::from_value(obj).unwrap();
    assert_eq!(m.spec.failure_domains[0].vm_group(), None);
}

#[test]
fn mismatched_region_and_zone_types_are_refused() {
    for (region, zone, message) in [
        (
            Some(json!({"type": "Datacenter"})),
            json!({"type": "HostGroup", "hostGroup": host_group()}),
            "when zoneAffinity type is HostGroup, regionAffinity type must be ComputeCluster",
        ),
        (
            None,
            json!({"type": "HostGroup", "hostGroup": host_group()}),
            "when zoneAffinity type is HostGroup, regionAffinity type must be ComputeCluster",
        ),
        (
            Some(json!({"type": "ComputeCluster"})),
            json!({"type": "ComputeCluster"}),
            "when zoneAffinity type is ComputeCluster, regionAffinity type must be Datacenter",
        ),
    ] {
        let errs = cel_errors(&with_affinity(region.clone(), Some(zone.clone())));
        assert!(
            errs.iter().any(|e| e.contains(message)),
            "{region:?} {zone}: {errs:?}"
        );
    }
}

#[test]
fn host_group_is_required_for_a_host_group_zone_and_forbidden_otherwise() {
    let message = "hostGroup is required when type is HostGroup, and forbidden otherwise";
    let errs = cel_errors(&with_affinity(
        Some(json!({"type": "ComputeCluster"})),
        Some(json!({"type": "HostGroup"})),
    ));
    assert!(errs.iter().any(|e| e.contains(message)), "{errs:?}");
    let errs = cel_errors(&with_affinity(
        Some(json!({"type": "Datacenter"})),
        Some(json!({"type": "ComputeCluster", "hostGroup": host_group()})),
    ));
    assert!(errs.iter().any(|e| e.contains(message)), "{errs:?}");
}

#[test]
fn unknown_affinity_types_do_not_parse() {
    let obj = with_affinity(Some(json!({"type": "Host"})), None);
    let err = serde_json::from_value::<VmwareCloudFoundationMigration>(obj)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Host"), "{err}");
}

fn shared_dir() -> std::path::PathBuf {
    std::env::var("VCFM_SHARED_DIR").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
        std::path::PathBuf::from,
    )
}

/// Types, enums, length limits, required fields and CEL rules of a schema, without the
/// descriptions (ours are shorter) and `nullable` (our optional fields also take an
/// explicit null, which parses as absent and is never written back).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "description" && k.as_str() != "nullable")
                .map(|(k, v)| {
                    let v = if k == "x-kubernetes-validations" {
                        // The same rule text, up to the YAML line folding.
                        let mut rules: Vec<Value> = v
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| json!({"rule": r["rule"], "message": r["message"]}))
                            .collect();
                        rules.sort_by_key(|r| r.to_string());
                        Value::Array(rules)
                    } else if k == "required" || k == "enum" {
                        let mut l = v.as_array().unwrap().clone();
                        l.sort_by_key(|x| x.to_string());
                        Value::Array(l)
                    } else {
                        shape(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn the_fields_and_rules_mirror_the_infrastructure_crd() {
    let path = shared_dir()
        .join("openshift-crds/default/0000_10_config-operator_01_infrastructures.crd.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set VCFM_SHARED_DIR)", path.display()));
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    let infra_fd = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["platformSpec"]["properties"]["vsphere"]["properties"]["failureDomains"]["items"];
    assert!(
        infra_fd.is_object(),
        "no failureDomains items in {}",
        path.display()
    );
    let ours = &schema()["properties"]["spec"]["properties"]["failureDomains"]["items"];
    for field in ["regionAffinity", "zoneAffinity"] {
        assert_eq!(
            shape(&ours["properties"][field]),
            shape(&infra_fd["properties"][field]),
            "{field}"
        );
    }
    let theirs = shape(infra_fd)["x-kubernetes-validations"].clone();
    let mine = shape(ours)["x-kubernetes-validations"].clone();
    assert_eq!(mine, theirs);
}
