//! The set of served resource types: a fixed table of built-ins plus one entry per
//! established CustomResourceDefinition, replaced in place when the CRD changes so
//! that discovery, validation and routing see the new definition on the next request.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube_cel::CompiledSchema;
use serde_json::Value;

use crate::error::Cause;

/// Where the scale subresource reads and writes replicas.
#[derive(Debug, Clone)]
pub(crate) struct ScaleSpec {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// An additional printer column of a CRD version.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub json_path: String,
    pub priority: i64,
}

/// One served version of a resource.
pub(crate) struct VersionDef {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    /// `openAPIV3Schema` for CRD versions.
    pub schema: Option<Arc<Value>>,
    /// Compiled CEL rules of `schema`.
    pub compiled: Option<Arc<CompiledSchema>>,
    pub columns: Vec<Column>,
    pub status: bool,
    pub scale: Option<ScaleSpec>,
}

/// A resource type as routing, discovery and validation see it.
pub(crate) struct ResourceDef {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub versions: Vec<VersionDef>,
    /// Defined by a CRD (schema validated, pruned, defaulted).
    pub custom: bool,
}

impl ResourceDef {
    /// Storage key: `group/plural`, version independent.
    pub fn key(&self) -> String {
        res_key(&self.group, &self.plural)
    }
    /// Where objects of this type live in the store: [`Self::key`], except for
    /// `events.k8s.io` Events, which are core Events served converted (see `events`).
    pub fn storage_key(&self) -> String {
        if self.is_event_view() {
            res_key("", "events")
        } else {
            self.key()
        }
    }
    /// `events.k8s.io` Events: a converted view of the core Event store.
    pub fn is_event_view(&self) -> bool {
        crate::events::is_events_group(&self.group, &self.plural)
    }
    pub fn version(&self, v: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|x| x.name == v && x.served)
    }
    pub fn storage_version(&self) -> &str {
        self.versions
            .iter()
            .find(|v| v.storage)
            .or(self.versions.first())
            .map(|v| v.name.as_str())
            .unwrap_or("v1")
    }
    pub fn api_version(&self, v: &str) -> String {
        if self.group.is_empty() {
            v.to_string()
        } else {
            format!("{}/{}", self.group, v)
        }
    }
    pub fn has_status(&self, v: &str) -> bool {
        self.versions.iter().any(|x| x.name == v && x.status)
    }
}

/// Kubernetes version ordering (v1 > v1beta2 > v1beta1 > v1alpha1 > others), as sort key.
fn version_priority(v: &str) -> (u8, i64, i64, String) {
    let parse = |s: &str| -> Option<(u8, i64, i64)> {
        let rest = s.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((0, -major, 0));
        }
        for (rank, pre) in [(1u8, "beta"), (2u8, "alpha")] {
            if let Some(n) = tail.strip_prefix(pre) {
                return Some((rank, -major, -n.parse::<i64>().ok()?));
            }
        }
        None
    };
    match parse(v) {
        Some((r, a, b)) => (r, a, b, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

pub(crate) fn res_key(group: &str, plural: &str) -> String {
    format!("{group}/{plural}")
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    scale: bool,
}

const BUILTINS: &[Builtin] = &[
    b("", "namespaces", "Namespace", false, &["ns"], true, false),
    b("", "secrets", "Secret", true, &[], false, false),
    b("", "configmaps", "ConfigMap", true, &["cm"], false, false),
    b("", "pods", "Pod", true, &["po"], true, false),
    b("", "nodes", "Node", false, &["no"], true, false),
    b("", "events", "Event", true, &["ev"], false, false),
    b("", "services", "Service", true, &["svc"], true, false),
    b(
        "",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        false,
    ),
    b(
        "",
        "persistentvolumes",
        "PersistentVolume",
        false,
        &["pv"],
        true,
        false,
    ),
    b(
        "",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        true,
        false,
    ),
    b(
        "apps",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        true,
        true,
    ),
    b(
        "events.k8s.io",
        "events",
        "Event",
        true,
        &["ev"],
        false,
        false,
    ),
    b(
        "policy",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        true,
        false,
    ),
    b(
        "coordination.k8s.io",
        "leases",
        "Lease",
        true,
        &[],
        false,
        false,
    ),
    b(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "roles",
        "Role",
        true,
        &[],
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        false,
        false,
    ),
    // ValidatingAdmissionPolicy, evaluated by `vap`.
    b(
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        false,
        &[],
        true,
        false,
    ),
    b(
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        false,
        &[],
        false,
        false,
    ),
];

const fn b(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    scale: bool,
) -> Builtin {
    Builtin {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
        short,
        status,
        scale,
    }
}

/// All served resource types.
#[derive(Clone)]
pub(crate) struct Registry {
    defs: BTreeMap<String, Arc<ResourceDef>>,
    /// Group order as discovery lists it: built-in groups first, CRD groups after.
    builtin_groups: Vec<String>,
}

impl Registry {
    pub fn new() -> Self {
        let mut defs = BTreeMap::new();
        let mut builtin_groups: Vec<String> = Vec::new();
        for bi in BUILTINS {
            if !builtin_groups.iter().any(|g| g == bi.group) {
                builtin_groups.push(bi.group.to_string());
            }
            let def = ResourceDef {
                group: bi.group.into(),
                plural: bi.plural.into(),
                singular: bi.kind.to_lowercase(),
                kind: bi.kind.into(),
                list_kind: format!("{}List", bi.kind),
                namespaced: bi.namespaced,
                short_names: bi.short.iter().map(|s| s.to_string()).collect(),
                categories: if ["pods", "deployments", "services"].contains(&bi.plural) {
                    vec!["all".into()]
                } else {
                    vec![]
                },
                versions: vec![VersionDef {
                    name: bi.version.into(),
                    served: true,
                    storage: true,
                    schema: None,
                    compiled: None,
                    columns: vec![],
                    status: bi.status,
                    scale: bi.scale.then(|| ScaleSpec {
                        spec_replicas: ".spec.replicas".into(),
                        status_replicas: ".status.replicas".into(),
                        label_selector: None,
                    }),
                }],
                custom: false,
            };
            defs.insert(def.key(), Arc::new(def));
        }
        Registry {
            defs,
            builtin_groups,
        }
    }

    pub fn get(&self, group: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.defs.get(&res_key(group, plural)).cloned()
    }

    /// Find a resource served at `group/version`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.get(group, plural)
            .filter(|d| d.version(version).is_some())
    }

    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceDef>> {
        self.defs
            .values()
            .find(|d| d.group == group && d.kind == kind)
            .cloned()
    }

    pub fn install(&mut self, def: ResourceDef) {
        self.defs.insert(def.key(), Arc::new(def));
    }

    pub fn remove(&mut self, group: &str, plural: &str) {
        self.defs.remove(&res_key(group, plural));
    }

    /// Groups with their served versions (preferred first), in discovery order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut order: Vec<String> = self.builtin_groups.clone();
        let mut extra: Vec<String> = self
            .defs
            .values()
            .map(|d| d.group.clone())
            .filter(|g| !order.contains(g))
            .collect();
        extra.sort();
        extra.dedup();
        order.extend(extra);
        let mut out = Vec::new();
        for g in order {
            let mut versions: Vec<String> = Vec::new();
            for d in self.defs.values().filter(|d| d.group == g) {
                // Storage version first so it becomes the preferred version.
                let mut vs: Vec<&VersionDef> = d.versions.iter().filter(|v| v.served).collect();
                vs.sort_by_key(|v| !v.storage);
                for v in vs {
                    if !versions.contains(&v.name) {
                        versions.push(v.name.clone());
                    }
                }
            }
            if !versions.is_empty() {
                versions.sort_by_key(|v| version_priority(v));
                out.push((g, versions));
            }
        }
        // autoscaling/v1 exists for the Scale kind referenced by scale subresources.
        out
    }

    pub fn resources_in(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        self.defs
            .values()
            .filter(|d| d.group == group && d.version(version).is_some())
            .cloned()
            .collect()
    }
}

fn str_at(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn strings_at(v: &Value, p: &str) -> Vec<String> {
    v.pointer(p)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Build a resource definition from a CRD object, or the validation causes that stop it.
pub(crate) fn def_from_crd(crd: &Value) -> Result<ResourceDef, Vec<Cause>> {
    let mut causes = Vec::new();
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    let kind = str_at(crd, "/spec/names/kind");
    let name = str_at(crd, "/metadata/name");
    let scope = str_at(crd, "/spec/scope");
    if group.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.group",
            "Required value",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.plural",
            "Required value",
        ));
    }
    if kind.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.kind",
            "Required value",
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(Cause::new(
            "FieldValueNotSupported",
            "spec.scope",
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    let mut versions = Vec::new();
    let vs = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if vs.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    let storage_count = vs
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !vs.is_empty() && storage_count != 1 {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in vs.iter().enumerate() {
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let compiled = match &schema {
            Some(s) => {
                let c = kube_cel::compile_schema(&crate::cel_compat::adapt_schema(s));
                if let Some(err) = first_compile_error(&c) {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        format!("spec.versions[{i}].schema.openAPIV3Schema"),
                        format!("Invalid value: \"\": compilation failed: {err}"),
                    ));
                }
                Some(Arc::new(c))
            }
            None => None,
        };
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| Column {
                        name: str_at(c, "/name"),
                        type_: str_at(c, "/type"),
                        format: str_at(c, "/format"),
                        description: str_at(c, "/description"),
                        json_path: str_at(c, "/jsonPath"),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let scale = v.pointer("/subresources/scale").map(|s| ScaleSpec {
            spec_replicas: str_at(s, "/specReplicasPath"),
            status_replicas: str_at(s, "/statusReplicasPath"),
            label_selector: s
                .get("labelSelectorPath")
                .and_then(Value::as_str)
                .map(String::from),
        });
        versions.push(VersionDef {
            name: str_at(v, "/name"),
            served: v.get("served").and_then(Value::as_bool).unwrap_or(false),
            storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
            schema: schema.map(Arc::new),
            compiled,
            columns,
            status: v.pointer("/subresources/status").is_some(),
            scale,
        });
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    Ok(ResourceDef {
        singular: {
            let s = str_at(crd, "/spec/names/singular");
            if s.is_empty() { kind.to_lowercase() } else { s }
        },
        list_kind: {
            let s = str_at(crd, "/spec/names/listKind");
            if s.is_empty() {
                format!("{kind}List")
            } else {
                s
            }
        },
        group,
        plural,
        kind,
        namespaced: scope == "Namespaced",
        short_names: strings_at(crd, "/spec/names/shortNames"),
        categories: strings_at(crd, "/spec/names/categories"),
        versions,
        custom: true,
    })
}

fn first_compile_error(c: &CompiledSchema) -> Option<String> {
    if let Some(e) = c.compilation_errors().first() {
        return Some(e.to_string());
    }
    c.properties
        .values()
        .chain(c.items.as_deref())
        .chain(c.additional_properties.as_deref())
        .chain(c.all_of.iter())
        .chain(c.one_of.iter())
        .chain(c.any_of.iter())
        .find_map(first_compile_error)
}
