//! The shipped examples parse into our types and pass the CRD's own CEL rules,
//! and the broken variants an administrator is likely to write are refused
//! with a message that names the problem. (Structural schema checks through a
//! real API server live in the `vcfm` crate's kube-sim tests.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use kube::CustomResourceExt;
use serde_json::{Value, json};
use vcfm_api::{MigrationState, PhaseName, VmwareCloudFoundationMigration};

fn example() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/examples/migration.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
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

#[test]
fn example_is_valid() {
    let obj = example();
    assert_eq!(cel_errors(&obj), Vec::<String>::new());
    let m: VmwareCloudFoundationMigration = serde_json::from_value(obj).unwrap();
    assert_eq!(m.spec.state, MigrationState::Pending);
    assert_eq!(m.target_secret_namespace(), Some("vcfm-system"));
    assert_eq!(m.target_servers(), ["vcenter-wld01.example.com"]);
    assert_eq!(m.worker_failure_domains().len(), 1);
}

#[test]
fn defaults_apply_when_fields_are_omitted() {
    let mut obj = example();
    let spec = obj["spec"].as_object_mut().unwrap();
    for k in [
        "state",
        "approvalMode",
        "rollbackOnFailure",
        "controlPlaneMachineSetConfig",
    ] {
        spec.remove(k);
    }
    let m: VmwareCloudFoundationMigration = serde_json::from_value(obj).unwrap();
    assert_eq!(m.spec.state, MigrationState::Pending);
    assert_eq!(m.spec.approval_mode, vcfm_api::ApprovalMode::Automatic);
    assert!(m.spec.rollback_on_failure);
    assert_eq!(m.control_plane_failure_domains().len(), 1);
    // The schema carries the same defaults for the API server to apply.
    let s = schema();
    let props = &s["properties"]["spec"]["properties"];
    assert_eq!(props["state"]["default"], "Pending");
    assert_eq!(props["approvalMode"]["default"], "Automatic");
    assert_eq!(props["rollbackOnFailure"]["default"], true);
}

#[test]
fn unknown_failure_domain_reference_is_rejected() {
    let mut obj = example();
    obj["spec"]["machineSetConfig"]["failureDomain"] = json!("wld02-az9");
    let errs = cel_errors(&obj);
    assert!(
        errs.iter()
            .any(|e| e
                .contains("machineSetConfig.failureDomain must name one of spec.failureDomains")),
        "{errs:?}"
    );

    let mut obj = example();
    obj["spec"]["controlPlaneMachineSetConfig"]["failureDomain"] = json!("nope");
    let errs = cel_errors(&obj);
    assert!(
        errs.iter()
            .any(|e| e.contains("controlPlaneMachineSetConfig.failureDomain")),
        "{errs:?}"
    );
}

#[test]
fn duplicate_failure_domain_names_are_rejected() {
    let mut obj = example();
    let fd = obj["spec"]["failureDomains"][0].clone();
    obj["spec"]["failureDomains"]
        .as_array_mut()
        .unwrap()
        .push(fd);
    let errs = cel_errors(&obj);
    assert!(
        errs.iter()
            .any(|e| e.contains("failure domain names must be unique")),
        "{errs:?}"
    );
}

#[test]
fn bad_phase_timeouts_are_rejected() {
    let mut obj = example();
    obj["spec"]["phaseTimeouts"] = json!({"CreateWorker": "1h"});
    let errs = cel_errors(&obj);
    assert!(
        errs.iter()
            .any(|e| e.contains("phaseTimeouts keys must be phase names")),
        "{errs:?}"
    );
    let mut obj = example();
    obj["spec"]["phaseTimeouts"] = json!({"CreateWorkers": "an hour"});
    let errs = cel_errors(&obj);
    assert!(
        errs.iter()
            .any(|e| e.contains("phaseTimeouts values must be durations")),
        "{errs:?}"
    );
}

#[test]
fn bad_enum_and_missing_template_do_not_parse() {
    let mut obj = example();
    obj["spec"]["state"] = json!("Runing");
    let err = serde_json::from_value::<VmwareCloudFoundationMigration>(obj)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Runing"), "{err}");

    let mut obj = example();
    obj["spec"]["failureDomains"][0]["topology"]
        .as_object_mut()
        .unwrap()
        .remove("template");
    let err = serde_json::from_value::<VmwareCloudFoundationMigration>(obj)
        .unwrap_err()
        .to_string();
    assert!(err.contains("template"), "{err}");
}

#[test]
fn schema_declares_every_status_field_so_nothing_is_pruned() {
    let s = schema();
    let status = s["properties"]["status"]["properties"].as_object().unwrap();
    for field in [
        "observedGeneration",
        "phase",
        "conditions",
        "phaseHistory",
        "currentPhaseState",
        "backupManifests",
        "sourceVCenter",
        "cluster",
        "createdVSphereObjects",
        "warnings",
        "rollback",
        "startTime",
        "completionTime",
    ] {
        assert!(
            status.contains_key(field),
            "status.{field} missing from the CRD schema"
        );
    }
    let conds = &status["conditions"];
    assert_eq!(conds["x-kubernetes-list-type"], "map");
    assert_eq!(conds["x-kubernetes-list-map-keys"], json!(["type"]));
    let state = &status["currentPhaseState"]["properties"];
    for f in [
        "requiresApproval",
        "approved",
        "progress",
        "lastHeartbeat",
        "waitingFor",
    ] {
        assert!(state.get(f).is_some(), "currentPhaseState.{f} missing");
    }
    assert_eq!(
        status["phaseHistory"]["items"]["properties"]["logs"]["maxItems"],
        50
    );
    // Every phase name is a valid approvedPhases entry and nothing else is.
    let allowed = s["properties"]["spec"]["properties"]["approvedPhases"]["items"]["enum"].clone();
    let names: Vec<Value> = PhaseName::ALL.iter().map(|p| json!(p.as_str())).collect();
    assert_eq!(allowed, Value::Array(names));
}

#[test]
fn crd_has_status_subresource_short_name_and_printer_columns() {
    let crd = serde_json::to_value(VmwareCloudFoundationMigration::crd()).unwrap();
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["vcfm"]));
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["subresources"]["status"], json!({}));
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Phase", "State", "Approval", "Progress", "Age"]);
}
