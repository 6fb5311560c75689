//! What still references a failure domain, as the machine API's admission
//! policies see it, so that vCenters are removed only once nothing does.
//!
//! openshift/machine-api-operator `pkg/webhooks/vap.go` (applied with the
//! `VSphereMultiVCenterDay2` gate, release-4.23 and later) denies an
//! Infrastructure update whose failure domains no longer contain:
//! - the `machine.openshift.io/region`+`zone` pair of any Machine in
//!   `openshift-machine-api` (the vSphere machine controller sets them from the
//!   tags of the VM's host ancestry),
//! - the same pair on any MachineSet's template labels (0 replicas included),
//! - any failure domain name the ControlPlaneMachineSet lists.
//!
//! Cleanup and the UpdateInfrastructure rollback check the same before they
//! write and wait (with the phase's deadline) while something still refers to
//! a domain they remove, naming it; a denial met anyway (a Machine created in
//! between) is treated the same way.

use crate::error::PhaseError;
use crate::openshift::machines;
use vcfm_api::openshift::{ControlPlaneMachineSet, Machine, MachineSet, VSphereFailureDomain};

pub const REGION_LABEL: &str = "machine.openshift.io/region";
pub const ZONE_LABEL: &str = "machine.openshift.io/zone";

fn pair_kept(kept: &[VSphereFailureDomain], region: &str, zone: &str) -> bool {
    region.is_empty()
        || zone.is_empty()
        || kept.iter().any(|fd| fd.region == region && fd.zone == zone)
}

/// What would make an Infrastructure update to `kept` failure domains be
/// denied, one line each (empty: nothing refers to a removed domain).
pub fn blockers(
    kept: &[VSphereFailureDomain],
    machines: &[Machine],
    sets: &[MachineSet],
    cpms: &[ControlPlaneMachineSet],
) -> Vec<String> {
    let mut out = vec![];
    let label = |l: Option<&std::collections::BTreeMap<String, String>>, k: &str| {
        l.and_then(|l| l.get(k)).cloned().unwrap_or_default()
    };
    for m in machines {
        let l = m.metadata.labels.as_ref();
        let (r, z) = (label(l, REGION_LABEL), label(l, ZONE_LABEL));
        if !pair_kept(kept, &r, &z) {
            out.push(format!(
                "Machine {} (region={r}, zone={z}{})",
                m.metadata.name.as_deref().unwrap_or(""),
                if m.metadata.deletion_timestamp.is_some() {
                    ", being deleted"
                } else {
                    ""
                }
            ));
        }
    }
    for ms in sets {
        let l = ms.template_labels();
        let (r, z) = (label(l, REGION_LABEL), label(l, ZONE_LABEL));
        if !pair_kept(kept, &r, &z) {
            out.push(format!(
                "MachineSet {} (region={r}, zone={z}, {} replica(s))",
                ms.metadata.name.as_deref().unwrap_or(""),
                ms.spec.replicas.unwrap_or(1)
            ));
        }
    }
    for c in cpms {
        let missing: Vec<&str> = c
            .failure_domain_names()
            .into_iter()
            .filter(|n| !kept.iter().any(|fd| fd.name == *n))
            .collect();
        if !missing.is_empty() {
            out.push(format!(
                "ControlPlaneMachineSet {} (failure domain(s) {})",
                c.metadata.name.as_deref().unwrap_or(""),
                missing.join(", ")
            ));
        }
    }
    out
}

/// Whether an API error is an admission policy's denial.
pub fn is_policy_denial(e: &PhaseError) -> bool {
    e.to_string().contains("ValidatingAdmissionPolicy")
}

/// Source Machines no MachineSet owns and the CPMS does not manage (not
/// control plane): nothing would ever remove them, and once the source
/// vCenter is forgotten their controller cannot either.
pub fn orphans_on<'a>(
    machines: &'a [Machine],
    sets: &[MachineSet],
    server: &str,
) -> Vec<&'a Machine> {
    machines
        .iter()
        .filter(|m| m.server().as_deref() == Some(server))
        .filter(|m| {
            !m.metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| o.iter().any(|r| r.kind == "MachineSet"))
        })
        .filter(|m| {
            m.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("machine.openshift.io/cluster-api-machine-role"))
                .is_none_or(|r| r != "master")
        })
        // A Machine a MachineSet still selects is that set's, owner or not.
        .filter(|m| {
            !sets
                .iter()
                .any(|ms| machines::machines_of(ms, std::slice::from_ref(m)).len() == 1)
        })
        .collect()
}

/// Preflight's note on the source Machines no MachineSet owns, of `machines`
/// and `sets` (the watch caches' lists).
pub fn orphan_warning(machines: &[Machine], sets: &[MachineSet], source: &str) -> Option<String> {
    let names: Vec<&str> = orphans_on(machines, sets, source)
        .iter()
        .filter_map(|m| m.metadata.name.as_deref())
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "Machine(s) {} on the source vCenter belong to no MachineSet: ScaleOldMachines deletes them (drained, VMs destroyed) since nothing could manage them once the source vCenter is removed; recreate what they run on the target",
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fd(name: &str, r: &str, z: &str) -> VSphereFailureDomain {
        serde_json::from_value(json!({"name": name, "region": r, "zone": z, "server": "s",
            "topology": {"datacenter": "d", "computeCluster": "/d/host/c", "datastore": "/d/datastore/x",
                "networks": ["n"]}}))
        .unwrap()
    }

    #[test]
    fn references_to_a_removed_domain_block_like_the_policies() {
        let kept = [fd("t", "tr", "tz")];
        let m: Machine = serde_json::from_value(json!({"metadata": {"name": "old-w",
            "labels": {REGION_LABEL: "generated-region", ZONE_LABEL: "generated-zone"}}, "spec": {}}))
        .unwrap();
        let unlabelled: Machine = serde_json::from_value(
            json!({"metadata": {"name": "x", "labels": {REGION_LABEL: ""}}, "spec": {}}),
        )
        .unwrap();
        let ms: MachineSet = serde_json::from_value(json!({"metadata": {"name": "old-set"},
            "spec": {"replicas": 0, "template": {"metadata": {"labels":
                {REGION_LABEL: "generated-region", ZONE_LABEL: "generated-zone"}}}}}))
        .unwrap();
        let cpms: ControlPlaneMachineSet =
            serde_json::from_value(json!({"metadata": {"name": "cluster"},
            "spec": {"template": {"machineType": "machines_v1beta1_machine_openshift_io",
                "machines_v1beta1_machine_openshift_io": {"failureDomains": {"platform": "VSphere",
                    "vsphere": [{"name": "generated-failure-domain"}]}}}}}))
            .unwrap();
        let b = blockers(&kept, &[m, unlabelled], &[ms], &[cpms]);
        assert_eq!(b.len(), 3, "{b:?}");
        assert!(b[0].starts_with("Machine old-w"));
        assert!(b[1].contains("0 replica(s)"));
        assert!(b[2].contains("generated-failure-domain"));
        assert!(
            blockers(
                &[
                    fd("g", "generated-region", "generated-zone"),
                    fd("t", "tr", "tz")
                ],
                &[],
                &[],
                &[]
            )
            .is_empty()
        );
    }

    fn machine(
        name: &str,
        server: &str,
        labels: serde_json::Value,
        owner: Option<&str>,
    ) -> Machine {
        let owners: Vec<_> = owner
            .map(|o| {
                json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
                "name": o, "uid": "u"})
            })
            .into_iter()
            .collect();
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels,
            "ownerReferences": owners},
            "spec": {"providerSpec": {"value": {"apiVersion": "machine.openshift.io/v1beta1",
                "kind": "VSphereMachineProviderSpec", "numCPUs": 4, "memoryMiB": 8192,
                "template": "/DC0/vm/rhcos", "workspace": {"server": server, "datacenter": "DC0"}}}}}))
        .unwrap()
    }

    #[test]
    fn only_source_workers_nothing_manages_are_orphans() {
        let set: MachineSet = serde_json::from_value(json!({"metadata": {"name": "w"},
            "spec": {"selector": {"matchLabels": {"machine.openshift.io/cluster-api-machineset": "w"}}}}))
        .unwrap();
        let of_set = json!({"machine.openshift.io/cluster-api-machineset": "w"});
        let machines = [
            machine("owned", "src", json!({}), Some("w")),
            // Selected by the set though its owner reference is gone.
            machine("selected", "src", of_set, None),
            machine(
                "master-0",
                "src",
                json!({"machine.openshift.io/cluster-api-machine-role": "master"}),
                None,
            ),
            machine("on-target", "tgt", json!({}), None),
            machine("lone", "src", json!({}), None),
        ];
        let names: Vec<_> = orphans_on(&machines, std::slice::from_ref(&set), "src")
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        assert_eq!(names, ["lone"]);
        let w = orphan_warning(&machines, &[set], "src").expect("a warning");
        assert!(
            w.starts_with("Machine(s) lone on the source vCenter"),
            "{w}"
        );
        assert_eq!(orphan_warning(&machines[..1], &[], "src"), None);
    }
}
