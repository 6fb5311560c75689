//! The machine-api operator's ValidatingAdmissionPolicies that protect vSphere
//! failure domains in use (openshift/machine-api-operator `pkg/webhooks/vap.go`,
//! applied by `syncVSphereFailureDomainVAPs` in `pkg/operator/sync.go` on
//! VSphere when the `VSphereMultiVCenterDay2` gate is on; in the operator since
//! release-4.23). An Infrastructure update is denied when it drops a failure
//! domain that a Machine (its `machine.openshift.io/region`/`zone` labels), a
//! MachineSet (the same labels on its template, whatever its replicas) or the
//! ControlPlaneMachineSet (failure domain names) still references. Each policy
//! is evaluated once per param object in `openshift-machine-api`; none there
//! means allow.
//!
//! The objects below carry the same match rules, conditions, variables and
//! expressions, so kube-sim (sim tier) and kube-apiserver (real tier) enforce
//! what a real cluster enforces.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

const MAPI_NS: &str = "openshift-machine-api";

fn policy(name: &str, param_api: &str, param_kind: &str, vars: Value, validation: Value) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "paramKind": {"apiVersion": param_api, "kind": param_kind},
            "matchConstraints": {
                "matchPolicy": "Equivalent",
                "namespaceSelector": {},
                "objectSelector": {},
                "resourceRules": [{
                    "apiGroups": ["config.openshift.io"],
                    "apiVersions": ["v1"],
                    "resources": ["infrastructures"],
                    "operations": ["UPDATE"],
                }],
            },
            "matchConditions": [{
                "name": "is-vsphere-platform",
                "expression": "object.?status.platformStatus.type.orValue(\"\") == \"VSphere\"",
            }],
            "variables": vars,
            "validations": [validation],
            "failurePolicy": "Fail",
        },
    })
}

fn binding(name: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "paramRef": {"selector": {}, "namespace": MAPI_NS, "parameterNotFoundAction": "Allow"},
            "validationActions": ["Deny"],
        },
    })
}

const FDS: &str = "object.?spec.platformSpec.vsphere.failureDomains.orValue([])";

/// The three policies and their bindings, in the order the operator applies them.
pub fn objects() -> Vec<Value> {
    let machine = "vsphere-failure-domain-in-use-by-machine";
    let cpms = "vsphere-failure-domain-in-use-by-cpms";
    let machineset = "vsphere-failure-domain-in-use-by-machineset";
    vec![
        policy(
            machine,
            "machine.openshift.io/v1beta1",
            "Machine",
            json!([
                {"name": "fds", "expression": FDS},
                {"name": "machineRegion", "expression": "params.?metadata.labels[\"machine.openshift.io/region\"].orValue(\"\")"},
                {"name": "machineZone", "expression": "params.?metadata.labels[\"machine.openshift.io/zone\"].orValue(\"\")"},
            ]),
            json!({
                "expression": "variables.machineRegion == \"\" || variables.machineZone == \"\" ||\nvariables.fds.exists(fd,\n  fd.region == variables.machineRegion && fd.zone == variables.machineZone\n)",
                "messageExpression": "\"Infrastructure update would remove vSphere failure domain (region=\" + variables.machineRegion + \", zone=\" + variables.machineZone + \") that is still in use by Machine '\" + params.metadata.name + \"'\"",
                "reason": "Invalid",
            }),
        ),
        binding(machine),
        policy(
            cpms,
            "machine.openshift.io/v1",
            "ControlPlaneMachineSet",
            json!([
                {"name": "fds", "expression": FDS},
                {"name": "cpmsFDs", "expression": "(has(params.spec.template.machines_v1beta1_machine_openshift_io) &&\n has(params.spec.template.machines_v1beta1_machine_openshift_io.failureDomains) &&\n has(params.spec.template.machines_v1beta1_machine_openshift_io.failureDomains.vsphere))\n  ? params.spec.template.machines_v1beta1_machine_openshift_io.failureDomains.vsphere\n  : []"},
            ]),
            json!({
                "expression": "variables.cpmsFDs.size() == 0 ||\nvariables.cpmsFDs.all(cpmsfd,\n  variables.fds.exists(infrafd, infrafd.name == cpmsfd.name)\n)",
                "messageExpression": "\"Infrastructure update would remove vSphere failure domain(s) still referenced by ControlPlaneMachineSet '\" + params.metadata.name + \"': [\" + variables.cpmsFDs.filter(cpmsfd, !variables.fds.exists(infrafd, infrafd.name == cpmsfd.name)).map(cpmsfd, cpmsfd.name).join(\", \") + \"]\"",
                "reason": "Invalid",
            }),
        ),
        binding(cpms),
        policy(
            machineset,
            "machine.openshift.io/v1beta1",
            "MachineSet",
            json!([
                {"name": "fds", "expression": FDS},
                {"name": "msRegion", "expression": "params.?spec.template.metadata.labels[\"machine.openshift.io/region\"].orValue(\"\")"},
                {"name": "msZone", "expression": "params.?spec.template.metadata.labels[\"machine.openshift.io/zone\"].orValue(\"\")"},
            ]),
            json!({
                "expression": "variables.msRegion == \"\" || variables.msZone == \"\" || variables.fds.exists(fd, fd.region == variables.msRegion && fd.zone == variables.msZone)",
                "messageExpression": "\"Infrastructure update would remove vSphere failure domain (region=\" + variables.msRegion + \", zone=\" + variables.msZone + \") that is still in use by MachineSet '\" + params.metadata.name + \"'\"",
                "reason": "Invalid",
            }),
        ),
        binding(machineset),
    ]
}

/// Applies the policies as the operator does (created when absent).
pub(crate) async fn install(client: &kube::Client) -> Result<(), String> {
    let pp = PostParams::default();
    for obj in objects() {
        let res = if obj["kind"] == "ValidatingAdmissionPolicy" {
            let p: ValidatingAdmissionPolicy =
                serde_json::from_value(obj).map_err(|e| e.to_string())?;
            Api::<ValidatingAdmissionPolicy>::all(client.clone())
                .create(&pp, &p)
                .await
                .map(|_| ())
        } else {
            let b: ValidatingAdmissionPolicyBinding =
                serde_json::from_value(obj).map_err(|e| e.to_string())?;
            Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                .create(&pp, &b)
                .await
                .map(|_| ())
        };
        match res {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                return Err(format!(
                    "applying the machine API's admission policies: {e}"
                ));
            }
        }
    }
    Ok(())
}
