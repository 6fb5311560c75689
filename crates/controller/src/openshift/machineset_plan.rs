//! Which MachineSets vcfm creates on the target: one per source MachineSet (every
//! role, not only workers) and target failure domain, as `spec.machineSetConfig`
//! maps or excludes them by source name.
//!
//! Infra sets matter as much as worker sets: routers, the registry and monitoring
//! are pinned to infra nodes (node labels and taints in the set's template), and
//! their PodDisruptionBudgets stall the drain of the last source infra node when no
//! infra node exists on the target. The plan is a pure function, so Preflight
//! refuses what cannot be mapped before anything changes, and CreateWorkers builds
//! exactly what Preflight checked.

use crate::openshift::machines::{
    CREATED_BY_LABEL, is_worker_set, sanitize_label, source_machinesets,
};
use std::collections::BTreeMap;
use vcfm_api::openshift::MachineSet;
use vcfm_api::{FailureDomain, MachineSetMapping, VmwareCloudFoundationMigration};

/// Longest MachineSet name that leaves room for the Machine API's `-xxxxx`
/// suffix within a 63-character host name.
const MAX_NAME: usize = 57;

/// One MachineSet to create on the target.
#[derive(Debug, Clone)]
pub struct PlannedSet<'a> {
    /// The source set it copies (labels, taints, sizing, provider spec).
    pub source: &'a MachineSet,
    /// The source set's name.
    pub source_name: String,
    /// The machine role (`machine.openshift.io/cluster-api-machine-role`).
    pub role: String,
    pub fd: &'a FailureDomain,
    /// Name of the new set.
    pub name: String,
    /// Machines in this failure domain.
    pub replicas: i32,
}

/// What happens to every source MachineSet.
#[derive(Debug, Clone, Default)]
pub struct Plan<'a> {
    pub sets: Vec<PlannedSet<'a>>,
    /// Source sets the spec excludes: removed, not recreated.
    pub excluded: Vec<String>,
}

/// The sets to create for a migration, or every reason the spec cannot be
/// carried out on this cluster (each an actionable sentence).
pub fn plan<'a>(
    migration: &'a VmwareCloudFoundationMigration,
    sets: &'a [MachineSet],
    source_server: &str,
    infra_id: &str,
) -> Result<Plan<'a>, Vec<String>> {
    let cfg = &migration.spec.machine_set_config;
    let mut problems = vec![];
    let sources: Vec<&MachineSet> = source_machinesets(sets, source_server)
        .into_iter()
        .filter(|ms| ms.metadata.deletion_timestamp.is_none())
        .collect();
    // A set whose provider spec names no vCenter vcfm can read is neither moved nor
    // removed: say so rather than leave its machines behind silently.
    for ms in sets.iter().filter(|ms| {
        ms.metadata.deletion_timestamp.is_none()
            && ms.server().is_none()
            && ms.role() != Some("master")
    }) {
        let why = match ms.provider_spec() {
            Err(e) => format!("its provider spec cannot be read: {e}"),
            Ok(None) => "it has no providerSpec".into(),
            Ok(Some(_)) => "its provider spec names no workspace.server".into(),
        };
        problems.push(format!(
            "MachineSet {}: vcfm cannot tell which vCenter its machines run on ({why}): fix its provider spec or delete the set",
            ms.metadata.name.as_deref().unwrap_or("")
        ));
    }
    let source_names: Vec<&str> = sources
        .iter()
        .filter_map(|ms| ms.metadata.name.as_deref())
        .collect();
    let mut mappings: BTreeMap<&str, &MachineSetMapping> = BTreeMap::new();
    for m in &cfg.machine_sets {
        if mappings.insert(m.name.as_str(), m).is_some() {
            problems.push(format!(
                "machineSetConfig.machineSets names MachineSet {} twice: keep one entry",
                m.name
            ));
        }
        if !source_names.contains(&m.name.as_str()) {
            problems.push(format!(
                "machineSetConfig.machineSets names MachineSet {}, which is not a MachineSet of the source vCenter {source_server} (source MachineSets: {}): fix the name or remove the entry",
                m.name,
                list_or_none(&source_names)
            ));
        }
        if let Some(fd) = &m.failure_domain
            && !migration.spec.failure_domains.iter().any(|f| &f.name == fd)
        {
            problems.push(format!(
                "machineSetConfig.machineSets entry {} names failure domain {fd:?}, which is not in spec.failureDomains",
                m.name
            ));
        }
    }

    // Roles of the sets that move, to name a set after its role when it is the only one.
    let moving: Vec<(&MachineSet, String, Option<&MachineSetMapping>)> = sources
        .iter()
        .filter_map(|ms| {
            let name = ms.metadata.name.as_deref()?;
            let mapping = mappings.get(name).copied();
            if mapping.is_some_and(|m| m.exclude) {
                return None;
            }
            Some((*ms, ms.role().unwrap_or_default().to_string(), mapping))
        })
        .collect();
    let mut per_role: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, role, _) in &moving {
        *per_role.entry(role.as_str()).or_default() += 1;
    }

    let mut out = Plan {
        excluded: sources
            .iter()
            .filter_map(|ms| ms.metadata.name.clone())
            .filter(|n| mappings.get(n.as_str()).is_some_and(|m| m.exclude))
            .collect(),
        ..Plan::default()
    };
    for (ms, role, mapping) in &moving {
        let source_name = ms.metadata.name.clone().unwrap_or_default();
        if role == "master" {
            problems.push(format!(
                "MachineSet {source_name} creates control-plane machines, which move with the ControlPlaneMachineSet: exclude it in machineSetConfig.machineSets"
            ));
            continue;
        }
        match ms.provider_spec() {
            Ok(Some(_)) => {}
            Ok(None) => {
                problems.push(format!(
                    "MachineSet {source_name} has no providerSpec to copy: exclude it in machineSetConfig.machineSets or give it a vSphere provider spec"
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!(
                    "MachineSet {source_name} has a provider spec vcfm cannot read ({e}): exclude it in machineSetConfig.machineSets or fix it"
                ));
                continue;
            }
        }
        let domains: Vec<&FailureDomain> = match mapping.and_then(|m| m.failure_domain.as_deref()) {
            Some(only) => migration
                .spec
                .failure_domains
                .iter()
                .filter(|f| f.name == only)
                .collect(),
            None => migration.worker_failure_domains(),
        };
        let replicas = match mapping.and_then(|m| m.replicas) {
            Some(r) => r,
            None if is_worker_set(ms) => cfg.replicas,
            None => ms.spec.replicas.unwrap_or(1).max(0),
        };
        // A set that is the only one of its role is named after the role, as the
        // installer names its sets; otherwise after the source set.
        let prefix = if !role.is_empty() && per_role.get(role.as_str()) == Some(&1) {
            format!("{}-{}-", sanitize_label(infra_id), sanitize_label(role))
        } else {
            format!("{}-", sanitize_label(&source_name))
        };
        for fd in domains {
            out.sets.push(PlannedSet {
                source: ms,
                source_name: source_name.clone(),
                role: role.clone(),
                fd,
                name: machineset_name(&prefix, &fd.name),
                replicas,
            });
        }
    }

    if !moving.is_empty() && !moving.iter().any(|(ms, _, _)| is_worker_set(ms)) {
        problems.push(format!(
            "every worker MachineSet of the source vCenter is excluded (machineSetConfig.machineSets): workloads would have no worker node on the target; recreate at least one of {}",
            list_or_none(
                &sources
                    .iter()
                    .filter(|ms| is_worker_set(ms))
                    .filter_map(|ms| ms.metadata.name.as_deref())
                    .collect::<Vec<_>>()
            )
        ));
    }
    if sources.iter().any(|ms| is_worker_set(ms)) && moving.is_empty() {
        problems.push(
            "machineSetConfig.machineSets excludes every source MachineSet: no worker would run on the target".into(),
        );
    }
    let mut by_name: BTreeMap<&str, &str> = BTreeMap::new();
    for p in &out.sets {
        if let Some(other) = by_name.insert(&p.name, &p.source_name) {
            problems.push(format!(
                "MachineSets {other} and {} would both become {} on the target: exclude one of them or shorten their names",
                p.source_name, p.name
            ));
        }
        if source_names.contains(&p.name.as_str()) {
            problems.push(format!(
                "the target MachineSet for {} would be named {}, which is a source MachineSet: rename the source set",
                p.source_name, p.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Problems with MachineSets that already carry a planned name but were not
/// created by this migration (another tool's or an earlier migration's sets).
pub fn name_conflicts(plan: &Plan<'_>, sets: &[MachineSet], created_by: &str) -> Vec<String> {
    plan.sets
        .iter()
        .filter_map(|p| {
            let existing = sets
                .iter()
                .find(|ms| ms.metadata.name.as_deref() == Some(p.name.as_str()))?;
            let ours = existing
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CREATED_BY_LABEL))
                .is_some_and(|v| v == created_by);
            (!ours).then(|| {
                format!(
                    "MachineSet {} already exists and was not created by this migration; vcfm would create it for source MachineSet {} in failure domain {}: rename or delete it",
                    p.name, p.source_name, p.fd.name
                )
            })
        })
        .collect()
}

/// Preflight's check of the MachineSets `sets` (the watch cache's list):
/// every source MachineSet can be recreated (or is excluded) as the spec of
/// `m` says, and no set in the way carries a planned name. One problem a line.
pub fn check(
    m: &VmwareCloudFoundationMigration,
    sets: &[MachineSet],
    source_server: &str,
    infra_id: &str,
) -> Vec<String> {
    match plan(m, sets, source_server, infra_id) {
        Ok(p) => name_conflicts(
            &p,
            sets,
            &super::machines::created_by_value(m.metadata.name.as_deref().unwrap_or("")),
        ),
        Err(found) => found,
    }
}

/// `<prefix><failure domain>`, shortened with a hash of the full failure-domain
/// name (and, for long prefixes, of the prefix) so that it fits machine suffixes.
pub fn machineset_name(prefix: &str, fd_name: &str) -> String {
    let fd = sanitize_label(fd_name);
    let fd = if fd.is_empty() {
        short_hash(fd_name)
    } else {
        fd
    };
    let full = format!("{prefix}{fd}");
    if full.len() <= MAX_NAME {
        return full;
    }
    let hash = short_hash(&full);
    // Keep at most half the room for the prefix, the rest for the failure domain.
    let prefix: String = if prefix.len() > MAX_NAME / 2 {
        let cut: String = prefix.chars().take(MAX_NAME / 2 - 1).collect();
        format!("{}-", cut.trim_end_matches('-'))
    } else {
        prefix.to_string()
    };
    let room = MAX_NAME.saturating_sub(prefix.len() + hash.len() + 1);
    let cut: String = fd.chars().take(room).collect();
    let cut = cut.trim_end_matches('-');
    if cut.is_empty() {
        format!("{prefix}{hash}")
    } else {
        format!("{prefix}{cut}-{hash}")
    }
}

fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")[..6].to_string()
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openshift::machines::worker_machineset_name;
    use serde_json::json;

    fn migration(
        machine_set_config: serde_json::Value,
        fds: &[&str],
    ) -> VmwareCloudFoundationMigration {
        let fds: Vec<_> = fds
            .iter()
            .map(|n| json!({"name": n, "region": "r", "zone": "z", "server": "vc-target",
                "topology": {"datacenter": "DC1", "computeCluster": "/DC1/host/C1",
                    "datastore": "/DC1/datastore/DS1", "networks": ["net"], "template": "/DC1/vm/rhcos"}}))
            .collect();
        serde_json::from_value(json!({"apiVersion": "migration.openshift.io/v1alpha1",
            "kind": "VmwareCloudFoundationMigration", "metadata": {"name": "mig", "namespace": "ns"},
            "spec": {"targetVCenterCredentialsSecret": {"name": "t"}, "failureDomains": fds,
                "machineSetConfig": machine_set_config}}))
        .expect("migration")
    }

    fn set(name: &str, role: &str, replicas: i32, server: &str) -> MachineSet {
        let mut spec = json!({"lifecycleHooks": {}, "metadata": {}, "providerSpec": {"value": {
            "apiVersion": "machine.openshift.io/v1beta1", "kind": "VSphereMachineProviderSpec",
            "numCPUs": 4, "memoryMiB": 8192, "template": "/DC0/vm/rhcos",
            "workspace": {"server": server, "datacenter": "DC0"}}}});
        if role == "infra" {
            spec["metadata"] = json!({"labels": {"node-role.kubernetes.io/infra": ""}});
            spec["taints"] =
                json!([{"key": "node-role.kubernetes.io/infra", "effect": "NoSchedule"}]);
        }
        serde_json::from_value(
            json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
            "metadata": {"name": name, "namespace": "openshift-machine-api"},
            "spec": {"replicas": replicas,
                "selector": {"matchLabels": {"machine.openshift.io/cluster-api-machineset": name}},
                "template": {"metadata": {"labels": {
                    "machine.openshift.io/cluster-api-machine-role": role,
                    "machine.openshift.io/cluster-api-machine-type": role,
                    "machine.openshift.io/cluster-api-machineset": name}},
                  "spec": spec}}}),
        )
        .expect("MachineSet")
    }

    fn names(p: &Plan<'_>) -> Vec<(String, String, i32)> {
        p.sets
            .iter()
            .map(|s| (s.name.clone(), s.fd.name.clone(), s.replicas))
            .collect()
    }

    #[test]
    fn every_role_moves_to_every_worker_failure_domain() {
        let m = migration(json!({"replicas": 2}), &["fd-a", "fd-b"]);
        let sets = vec![
            set("ocp-x-worker-0", "worker", 3, "vc-src"),
            set("ocp-x-infra-0", "infra", 3, "vc-src"),
            set("ocp-x-worker-target", "worker", 1, "vc-target"),
        ];
        let p = plan(&m, &sets, "vc-src", "ocp-x").expect("plans");
        assert_eq!(
            names(&p),
            vec![
                ("ocp-x-infra-fd-a".to_string(), "fd-a".to_string(), 3),
                ("ocp-x-infra-fd-b".to_string(), "fd-b".to_string(), 3),
                ("ocp-x-worker-fd-a".to_string(), "fd-a".to_string(), 2),
                ("ocp-x-worker-fd-b".to_string(), "fd-b".to_string(), 2),
            ],
            "infra keeps its own replica count per domain, workers take machineSetConfig.replicas"
        );
        assert_eq!(p.sets[0].role, "infra");
        // The worker name is the one earlier releases gave their single worker set.
        assert_eq!(p.sets[2].name, worker_machineset_name("ocp-x", "fd-a"));
        assert!(p.excluded.is_empty());
    }

    #[test]
    fn the_spec_maps_and_excludes_by_name() {
        let m = migration(
            json!({"replicas": 2, "machineSets": [
                {"name": "ocp-x-infra-0", "replicas": 1, "failureDomain": "fd-b"},
                {"name": "ocp-x-gpu-0", "exclude": true}]}),
            &["fd-a", "fd-b"],
        );
        let sets = vec![
            set("ocp-x-worker-0", "worker", 3, "vc-src"),
            set("ocp-x-infra-0", "infra", 3, "vc-src"),
            set("ocp-x-gpu-0", "worker", 1, "vc-src"),
        ];
        let p = plan(&m, &sets, "vc-src", "ocp-x").expect("plans");
        assert_eq!(
            names(&p),
            vec![
                ("ocp-x-infra-fd-b".to_string(), "fd-b".to_string(), 1),
                ("ocp-x-worker-fd-a".to_string(), "fd-a".to_string(), 2),
                ("ocp-x-worker-fd-b".to_string(), "fd-b".to_string(), 2),
            ]
        );
        assert_eq!(p.excluded, vec!["ocp-x-gpu-0".to_string()]);
    }

    #[test]
    fn two_sets_of_one_role_are_named_after_their_source() {
        let m = migration(json!({"replicas": 1}), &["fd-a"]);
        let sets = vec![
            set("ocp-x-worker-0", "worker", 3, "vc-src"),
            set("ocp-x-worker-gpu", "worker", 1, "vc-src"),
        ];
        let p = plan(&m, &sets, "vc-src", "ocp-x").expect("plans");
        assert_eq!(
            names(&p),
            vec![
                ("ocp-x-worker-0-fd-a".to_string(), "fd-a".to_string(), 1),
                ("ocp-x-worker-gpu-fd-a".to_string(), "fd-a".to_string(), 1),
            ]
        );
    }

    #[test]
    fn what_cannot_be_mapped_is_refused_with_the_fix() {
        let m = migration(
            json!({"replicas": 1, "machineSets": [
                {"name": "ocp-x-typo-0", "replicas": 1},
                {"name": "ocp-x-worker-0", "exclude": true}]}),
            &["fd-a"],
        );
        let mut broken = set("ocp-x-edge-0", "edge", 1, "vc-src");
        broken
            .spec
            .template
            .as_mut()
            .expect("template")
            .spec
            .as_mut()
            .expect("spec")
            .provider_spec = None;
        let sets = vec![
            set("ocp-x-worker-0", "worker", 3, "vc-src"),
            set("ocp-x-master-set", "master", 3, "vc-src"),
            broken,
        ];
        let problems = plan(&m, &sets, "vc-src", "ocp-x").expect_err("refused");
        let all = problems.join("\n");
        assert!(
            all.contains("ocp-x-typo-0, which is not a MachineSet of the source vCenter vc-src"),
            "{all}"
        );
        assert!(
            all.contains("ocp-x-master-set creates control-plane machines"),
            "{all}"
        );
        assert!(all.contains("MachineSet ocp-x-edge-0: vcfm cannot tell which vCenter its machines run on (it has no providerSpec)"), "{all}");
        assert!(
            all.contains("every worker MachineSet of the source vCenter is excluded"),
            "{all}"
        );
        assert_eq!(problems.len(), 4, "{all}");
    }

    #[test]
    fn existing_sets_with_a_planned_name_conflict_unless_ours() {
        let m = migration(json!({"replicas": 1}), &["fd-a"]);
        let mut sets = vec![set("ocp-x-worker-0", "worker", 3, "vc-src")];
        let mut other = set("ocp-x-worker-fd-a", "worker", 1, "vc-target");
        sets.push(other.clone());
        let p = plan(&m, &sets, "vc-src", "ocp-x").expect("plans");
        assert_eq!(name_conflicts(&p, &sets, "mig").len(), 1);
        other.metadata.labels = Some([(CREATED_BY_LABEL.to_string(), "mig".to_string())].into());
        let ours = vec![sets[0].clone(), other];
        assert!(name_conflicts(&p, &ours, "mig").is_empty());
    }

    #[test]
    fn preflight_reports_what_cannot_be_mapped_or_is_in_the_way() {
        let m = migration(json!({"replicas": 1}), &["fd-a"]);
        let source = set("ocp-x-worker-0", "worker", 3, "vc-src");
        assert!(check(&m, std::slice::from_ref(&source), "vc-src", "ocp-x").is_empty());
        // A set of another owner where vcfm would create one: named, with the fix.
        let squatter = set("ocp-x-worker-fd-a", "worker", 1, "vc-target");
        let found = check(&m, &[source.clone(), squatter], "vc-src", "ocp-x");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("MachineSet ocp-x-worker-fd-a already exists")
                && found[0].ends_with("rename or delete it"),
            "{}",
            found[0]
        );
        // One created by this migration (label = its name) is no conflict.
        let mut ours = set("ocp-x-worker-fd-a", "worker", 1, "vc-target");
        ours.metadata.labels = Some([(CREATED_BY_LABEL.to_string(), "mig".to_string())].into());
        assert!(check(&m, &[source.clone(), ours], "vc-src", "ocp-x").is_empty());
        // A spec that cannot be planned: the plan's own refusal.
        let m = migration(
            json!({"replicas": 1, "machineSets": [{"name": "ocp-x-worker-0", "exclude": true}]}),
            &["fd-a"],
        );
        let found = check(&m, &[source], "vc-src", "ocp-x");
        assert!(
            found.len() == 1 && found[0].contains("excludes every source MachineSet"),
            "{found:?}"
        );
    }

    #[test]
    fn long_names_fit_machine_suffixes_and_stay_distinct() {
        let long = "a-very-long-source-machineset-name-for-the-gpu-workers-0-";
        let a = machineset_name(long, "failure-domain-one");
        let b = machineset_name(long, "failure-domain-two");
        assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME, "{a} {b}");
        assert_ne!(a, b);
        assert!(!a.ends_with('-'));
        let fd_long = machineset_name(
            "ocp-x-worker-",
            "a-very-long-failure-domain-name-that-goes-on-and-on-and-on",
        );
        assert!(
            fd_long.len() <= MAX_NAME && fd_long.starts_with("ocp-x-worker-a-very"),
            "{fd_long}"
        );
    }
}
