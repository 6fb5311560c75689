//! `vcfm bundle`: the OLM bundle (registry+v1 format) generated from `deploy/`, so that
//! OperatorHub installs exactly what `kubectl apply -k deploy/` installs.
//!
//! Layout and naming follow operator-sdk's `generate bundle` (operator-framework/
//! operator-sdk internal/generate/collector and internal/cmd/operator-sdk/generate/bundle):
//! `manifests/` with the ClusterServiceVersion, the CRD and the other objects OLM may
//! install from a bundle (Service, ClusterRole, ClusterRoleBinding, ServiceMonitor: the
//! kinds operator-framework/operator-registry `pkg/lib/bundle/supported_resources.go`
//! accepts), and `metadata/annotations.yaml`.
//!
//! How `deploy/` maps onto the CSV (operator-framework/api pkg/operators/v1alpha1
//! clusterserviceversion_types.go):
//! - the Deployment becomes `install.spec.deployments` (image from the kustomization);
//! - Roles in the operator's namespace become `permissions`;
//! - ClusterRoles bound by ClusterRoleBindings become `clusterPermissions`;
//! - Roles in other namespaces (and ClusterRoles bound there by RoleBindings) cannot be
//!   expressed: OLM creates a CSV's `permissions` only in the OperatorGroup's target
//!   namespaces. Their rules go into `clusterPermissions` unchanged (same verbs, same
//!   `resourceNames`), which is wider than the kustomize install; the README says so.
//! - the metrics reader ClusterRole and its binding, the metrics Service and the
//!   ServiceMonitor are shipped as bundle objects.
//!
//! Install modes: OwnNamespace only. The controller watches migrations cluster-wide, but
//! the credentials, backups, Lease and Events it needs are granted in its own namespace,
//! so a migration works only there.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// The operator's package name in the catalog.
pub const PACKAGE: &str = "vcfm";
/// The channel the bundle is published on.
pub const CHANNEL: &str = "candidate";
const SA: &str = "vcfm-controller";
const CSV_KIND: &str = "ClusterServiceVersion";

fn load(deploy: &Path) -> anyhow::Result<(Vec<Value>, String)> {
    let kust_path = deploy.join("kustomization.yaml");
    let kust: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(&kust_path)
            .with_context(|| format!("reading {}", kust_path.display()))?,
    )
    .with_context(|| format!("parsing {}", kust_path.display()))?;
    let mut docs = vec![];
    for r in kust["resources"].as_array().into_iter().flatten() {
        let Some(file) = r.as_str() else { continue };
        // The examples are for the administrator to edit, not for OLM to install.
        if file.starts_with("examples/") {
            continue;
        }
        let p = deploy.join(file);
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", p.display()))?;
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    let image = kust["images"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == "vcfm")
        .map(|i| {
            format!(
                "{}:{}",
                i["newName"].as_str().unwrap_or("vcfm"),
                i["newTag"].as_str().unwrap_or("latest")
            )
        })
        .context("deploy/kustomization.yaml names no image for vcfm")?;
    Ok((docs, image))
}

fn kind_name(d: &Value) -> (&str, &str, Option<&str>) {
    (
        d["kind"].as_str().unwrap_or(""),
        d["metadata"]["name"].as_str().unwrap_or(""),
        d["metadata"]["namespace"].as_str(),
    )
}

fn binds_sa(binding: &Value, sa_ns: &str) -> bool {
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["kind"] == "ServiceAccount" && s["name"] == SA && s["namespace"] == sa_ns)
}

fn rules_of(docs: &[Value], kind: &str, name: &str, ns: Option<&str>) -> Vec<Value> {
    docs.iter()
        .find(|d| kind_name(d) == (kind, name, ns))
        .and_then(|d| d["rules"].as_array().cloned())
        .unwrap_or_default()
}

/// The `specDescriptors` of the main spec fields, with the console widgets OpenShift
/// documents (operator-framework/api `x-descriptors`, OpenShift console
/// frontend/packages/operator-lifecycle-manager descriptors).
fn spec_descriptors() -> Value {
    json!([
        {"path": "state", "displayName": "State",
         "description": "Pending, Running, Paused or Rollback: what the controller should do with the migration.",
         "x-descriptors": ["urn:alm:descriptor:com.tectonic.ui:select:Pending", "urn:alm:descriptor:com.tectonic.ui:select:Running",
                           "urn:alm:descriptor:com.tectonic.ui:select:Paused", "urn:alm:descriptor:com.tectonic.ui:select:Rollback"]},
        {"path": "approvalMode", "displayName": "Approval Mode",
         "description": "Automatic runs every phase; Manual waits for an approval before each phase.",
         "x-descriptors": ["urn:alm:descriptor:com.tectonic.ui:select:Automatic", "urn:alm:descriptor:com.tectonic.ui:select:Manual"]},
        {"path": "rollbackOnFailure", "displayName": "Roll Back On Failure",
         "description": "Undo the completed phases when a phase fails before the point of no return.",
         "x-descriptors": ["urn:alm:descriptor:com.tectonic.ui:booleanSwitch"]},
        {"path": "targetVCenterCredentialsSecret", "displayName": "Target vCenter Credentials",
         "description": "Secret in the migration's namespace with <server>.username and <server>.password for every target vCenter.",
         "x-descriptors": ["urn:alm:descriptor:io.kubernetes:Secret"]},
        {"path": "failureDomains", "displayName": "Target Failure Domains",
         "description": "The target vCenter's failure domains, in OpenShift's vSphere failure-domain shape.",
         "x-descriptors": ["urn:alm:descriptor:com.tectonic.ui:advanced"]},
        {"path": "machineSetConfig.replicas", "displayName": "Worker Replicas",
         "description": "How many workers the new MachineSets create on the target.",
         "x-descriptors": ["urn:alm:descriptor:com.tectonic.ui:podCount"]},
        {"path": "approvedPhases", "displayName": "Approved Phases",
         "description": "Phases approved in Manual mode (vcfm approve appends here).",
         "x-descriptors": ["urn:alm:descriptor:com.tectonic.ui:hidden"]}
    ])
}

fn status_descriptors() -> Value {
    json!([
        {"path": "phase", "displayName": "Phase", "description": "The phase the migration is in.",
         "x-descriptors": ["urn:alm:descriptor:io.kubernetes.phase"]},
        {"path": "conditions", "displayName": "Conditions", "description": "Ready, Progressing and Degraded, with reasons.",
         "x-descriptors": ["urn:alm:descriptor:io.kubernetes.conditions"]},
        {"path": "message", "displayName": "Message", "description": "What the migration does or waits for, and what to do next.",
         "x-descriptors": ["urn:alm:descriptor:text"]}
    ])
}

const DESCRIPTION: &str =
    "vcfm moves a running OpenShift cluster on vSphere from one vCenter to another \
(for example onto a VMware Cloud Foundation workload domain) without reinstalling it.

A `VmwareCloudFoundationMigration` names the target failure domains and a Secret with the \
target vCenter credentials. The controller then walks fifteen phases: preflight checks, a \
backup of everything it changes, the cluster's vSphere credentials and cloud-provider \
configuration, new workers on the target, the control plane through the \
ControlPlaneMachineSet, and the cleanup of the source. It recreates machines through the \
Machine API as an administrator would; it never touches the VMs itself.

* **Approvals**: in Manual mode each phase waits for `vcfm approve`.
* **Pause, resume, retry**: at any safe point.
* **Rollback**: every phase before the point of no return (RecreateCPMS) is undone \
from the backup, automatically on failure if you ask for it.

Install into the suggested namespace `vcfm-system`. Metrics are served over TLS to \
Prometheus (ServiceMonitor included); `oc adm must-gather --image=<the vcfm-must-gather image>` \
collects support data without secrets.";

/// A small SVG icon (OperatorHub shows one per operator).
const ICON_SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 64 64\"><rect width=\"64\" height=\"64\" rx=\"8\" fill=\"#1a4d7a\"/><path d=\"M12 22h16v20H12zM36 22h16v20H36z\" fill=\"none\" stroke=\"#fff\" stroke-width=\"3\"/><path d=\"M28 32h8m-4-4 4 4-4 4\" stroke=\"#fff\" stroke-width=\"3\" fill=\"none\"/></svg>";

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Generates the bundle's files (relative path → YAML text) from `deploy`.
pub fn generate(deploy: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let (docs, image) = load(deploy)?;
    let version = env!("CARGO_PKG_VERSION");
    let ns_doc = docs
        .iter()
        .find(|d| d["kind"] == "Namespace")
        .context("deploy/ has no Namespace")?;
    let op_ns = ns_doc["metadata"]["name"].as_str().unwrap_or("vcfm-system");

    let crd = docs
        .iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .context("deploy/ has no CRD")?;
    let crd_name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let crd_kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
    let served: Vec<&str> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .filter_map(|v| v["name"].as_str())
        .collect();
    let crd_version = served.first().copied().unwrap_or("v1alpha1");

    let mut deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .cloned()
        .context("deploy/ has no Deployment")?;
    for c in deployment["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if c["image"] == "vcfm" {
            c["image"] = json!(image);
        }
    }
    let dep_name = deployment["metadata"]["name"].clone();
    let dep_labels = deployment["metadata"]["labels"].clone();

    // RBAC, as described in the module documentation.
    let mut cluster_rules: Vec<Value> = vec![];
    let mut ns_rules: Vec<Value> = vec![];
    let mut extra: Vec<Value> = vec![];
    for b in &docs {
        let (kind, name, ns) = kind_name(b);
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or("");
        let role = b["roleRef"]["name"].as_str().unwrap_or("");
        match kind {
            "ClusterRoleBinding" if binds_sa(b, op_ns) => {
                cluster_rules.extend(rules_of(&docs, "ClusterRole", role, None));
            }
            "RoleBinding" if binds_sa(b, op_ns) => {
                let rules = if role_kind == "ClusterRole" {
                    rules_of(&docs, "ClusterRole", role, None)
                } else {
                    rules_of(&docs, "Role", role, ns)
                };
                if ns == Some(op_ns) {
                    ns_rules.extend(rules);
                } else {
                    cluster_rules.extend(rules);
                }
            }
            // Bindings of other subjects (Prometheus) ship as objects with their role.
            "ClusterRoleBinding" => {
                extra.push(b.clone());
                if let Some(r) = docs
                    .iter()
                    .find(|d| kind_name(d) == ("ClusterRole", role, None))
                {
                    extra.push(r.clone());
                }
            }
            "Service" => extra.push(b.clone()),
            "Namespace"
            | "CustomResourceDefinition"
            | "Deployment"
            | "ServiceAccount"
            | "ClusterRole"
            | "Role"
            | "RoleBinding" => {}
            other => bail!("deploy/ has a {other} ({name}) the bundle does not know how to ship"),
        }
    }
    // The same rule granted twice (in two namespaces) is granted once cluster-wide.
    let mut seen = std::collections::BTreeSet::new();
    cluster_rules.retain(|r| seen.insert(r.to_string()));
    let monitor_path = deploy.join("monitoring/servicemonitor.yaml");
    let monitor: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(&monitor_path)
            .with_context(|| format!("reading {}", monitor_path.display()))?,
    )?;
    extra.push(monitor);

    let example_path = deploy.join("examples/migration.yaml");
    let example: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(&example_path)
            .with_context(|| format!("reading {}", example_path.display()))?,
    )?;
    let mut example = example;
    if let Some(m) = example["metadata"].as_object_mut() {
        m.remove("namespace");
    }

    let must_gather_image = match image.rsplit_once(':') {
        Some((name, tag)) => format!("{name}-must-gather:{tag}"),
        None => format!("{image}-must-gather"),
    };
    let features = |v: bool| json!(if v { "true" } else { "false" });
    let csv = json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": CSV_KIND,
        "metadata": {
            "name": format!("{PACKAGE}.v{version}"),
            "namespace": "placeholder",
            "annotations": {
                "alm-examples": serde_json::to_string_pretty(&json!([example]))?,
                "capabilities": "Basic Install",
                "categories": "Modernization & Migration,Cloud Provider",
                "containerImage": image,
                "description": "Moves a running OpenShift cluster from one vCenter to another, phase by phase, with approvals and rollback.",
                "repository": "https://example.invalid/vcfm",
                "support": "vcfm maintainers",
                "operatorframework.io/suggested-namespace": op_ns,
                "operatorframework.io/cluster-monitoring": "true",
                // `oc adm must-gather` for this operator (Dockerfile target must-gather).
                "operators.openshift.io/must-gather-image": must_gather_image,
                "operators.operatorframework.io/internal-objects": "[]",
                // Deprecated by the features.* annotations below; kept for older consoles.
                "operators.openshift.io/infrastructure-features": "[]",
                // Images are referenced by tag, not digest: not installable disconnected.
                "features.operators.openshift.io/disconnected": features(false),
                // ring's primitives are not a FIPS-validated module.
                "features.operators.openshift.io/fips-compliant": features(false),
                // The cluster-wide proxy is not passed on to the vCenter connections.
                "features.operators.openshift.io/proxy-aware": features(false),
                // The metrics server does not follow the cluster's TLS security profile.
                "features.operators.openshift.io/tls-profiles": features(false),
                "features.operators.openshift.io/token-auth-aws": features(false),
                "features.operators.openshift.io/token-auth-azure": features(false),
                "features.operators.openshift.io/token-auth-gcp": features(false),
                "features.operators.openshift.io/cnf": features(false),
                "features.operators.openshift.io/cni": features(false),
                "features.operators.openshift.io/csi": features(false),
            },
        },
        "spec": {
            "displayName": "vCenter migration (vcfm)",
            "description": DESCRIPTION,
            "version": version,
            "minKubeVersion": "1.31.0",
            "maturity": "alpha",
            "provider": {"name": "vcfm maintainers"},
            "maintainers": [{"name": "vcfm maintainers", "email": "vcfm@example.invalid"}],
            "links": [{"name": "Source", "url": "https://example.invalid/vcfm"}],
            "keywords": ["vsphere", "vcenter", "vcf", "migration", "machine-api"],
            "icon": [{"base64data": base64(ICON_SVG.as_bytes()), "mediatype": "image/svg+xml"}],
            "installModes": [
                {"type": "OwnNamespace", "supported": true},
                {"type": "SingleNamespace", "supported": false},
                {"type": "MultiNamespace", "supported": false},
                {"type": "AllNamespaces", "supported": false},
            ],
            "customresourcedefinitions": {"owned": [{
                "name": crd_name,
                "version": crd_version,
                "kind": crd_kind,
                "displayName": "VMware Cloud Foundation Migration",
                "description": "A move of this cluster from its vCenter to another, phase by phase.",
                "resources": [
                    {"kind": "Secret", "name": "", "version": "v1"},
                    {"kind": "MachineSet", "name": "", "version": "v1beta1"},
                    {"kind": "ControlPlaneMachineSet", "name": "", "version": "v1"},
                    {"kind": "Infrastructure", "name": "", "version": "v1"},
                ],
                "specDescriptors": spec_descriptors(),
                "statusDescriptors": status_descriptors(),
            }]},
            "install": {"strategy": "deployment", "spec": {
                "deployments": [{
                    "name": dep_name,
                    "label": dep_labels,
                    "spec": deployment["spec"],
                }],
                "clusterPermissions": [{"serviceAccountName": SA, "rules": cluster_rules}],
                "permissions": [{"serviceAccountName": SA, "rules": ns_rules}],
            }},
        },
    });

    let mut files = BTreeMap::new();
    let yaml = |v: &Value| serde_saphyr::to_string(v).context("rendering YAML");
    files.insert(
        format!("manifests/{PACKAGE}.clusterserviceversion.yaml"),
        yaml(&csv)?,
    );
    let (group, plural) = crd_name
        .split_once('.')
        .map(|(p, g)| (g.to_string(), p.to_string()))
        .unwrap_or_default();
    files.insert(format!("manifests/{group}_{plural}.yaml"), yaml(crd)?);
    for mut o in extra {
        // OLM installs bundle objects into the operator's namespace itself.
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let (kind, name, _) = kind_name(&o);
        let api = o["apiVersion"].as_str().unwrap_or("v1");
        let (g, v) = api.split_once('/').unwrap_or(("", api));
        let file = if g.is_empty() {
            format!("manifests/{name}_{v}_{}.yaml", kind.to_lowercase())
        } else {
            format!("manifests/{name}_{g}_{v}_{}.yaml", kind.to_lowercase())
        };
        files.insert(file, yaml(&o)?);
    }
    let annotations = json!({"annotations": {
        "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
        "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
        "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
        "operators.operatorframework.io.bundle.package.v1": PACKAGE,
        "operators.operatorframework.io.bundle.channels.v1": CHANNEL,
        "operators.operatorframework.io.bundle.channel.default.v1": CHANNEL,
        // The OpenShift versions the catalog may offer the bundle on.
        "com.redhat.openshift.versions": "v4.18",
    }});
    files.insert("metadata/annotations.yaml".into(), yaml(&annotations)?);
    let mut dockerfile =
        String::from("# Generated by `vcfm bundle` from deploy/ (make bundle).\nFROM scratch\n");
    for (k, v) in annotations["annotations"].as_object().into_iter().flatten() {
        dockerfile.push_str(&format!("LABEL {k}={}\n", v.as_str().unwrap_or_default()));
    }
    dockerfile.push_str("COPY manifests /manifests/\nCOPY metadata /metadata/\n");
    files.insert("bundle.Dockerfile".into(), dockerfile);
    for text in files.values_mut() {
        if !text.starts_with('#') {
            *text = format!(
                "# Generated by `vcfm bundle` from deploy/ (make bundle); do not edit.\n{text}"
            );
        }
    }
    Ok(files)
}

/// Writes [`generate`]'s files under `out`, removing files of an older bundle.
pub fn write(deploy: &Path, out: &Path) -> anyhow::Result<usize> {
    let files = generate(deploy)?;
    for sub in ["manifests", "metadata"] {
        let d = out.join(sub);
        if d.is_dir() {
            std::fs::remove_dir_all(&d).with_context(|| format!("clearing {}", d.display()))?;
        }
    }
    for (rel, text) in &files {
        let p = out.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(files.len())
}
