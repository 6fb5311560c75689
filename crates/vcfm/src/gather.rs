//! `vcfm gather`: what support asks for first, in one directory, without a secret.
//!
//! Follows the must-gather conventions (openshift/must-gather `collection-scripts/gather`,
//! `oc adm must-gather`): best effort, one file per object kind, whatever could not be
//! read listed in `gather-errors.txt` rather than stopping; the must-gather image's
//! `/usr/bin/gather` (tools/must-gather/gather) runs it into `/must-gather`.
//!
//! Secret values are never written. Secrets (the vCenter credentials, the target
//! credentials each migration names, the backups) appear as name, type, keys and value
//! sizes; not even hashes, since a hash of a short password can be tested offline. As a
//! second line of defence every value of those Secrets that could be read is scrubbed from
//! every file before it is written (logs included).

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, LogParams};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vcfm_api::VmwareCloudFoundationMigration;

/// The controller's pods carry this label (deploy/deployment.yaml).
const CONTROLLER_SELECTOR: &str = "app.kubernetes.io/name=vcfm-controller";
/// The label the backup Secrets carry (vcfm_controller::backup::BACKUP_LABEL).
const BACKUP_LABEL: &str = vcfm_controller::backup::BACKUP_LABEL;
/// Placeholder for a scrubbed secret value.
const REDACTED: &str = "<redacted>";
/// Values shorter than this are not scrubbed (they would mangle ordinary text); the
/// Secrets are never written, so this only narrows the second line of defence.
const MIN_SCRUB_LEN: usize = 4;

/// What was gathered, for the command's output.
#[derive(Debug, Default)]
pub struct Summary {
    pub dir: PathBuf,
    pub files: usize,
    pub errors: Vec<String>,
}

struct Gatherer {
    client: kube::Client,
    dir: PathBuf,
    scrub: Vec<String>,
    files: usize,
    errors: Vec<String>,
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// An object as support wants to read it: without `managedFields` (noise) and without
/// the last-applied annotation (it can hold a whole Secret's data).
fn tidy(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    v
}

/// A Secret reduced to what support may see: where it is, its type, its keys and sizes.
fn secret_summary(s: &Secret) -> Value {
    let keys: Vec<Value> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| json!({"key": k, "bytes": v.0.len()}))
        .collect();
    let mut labels = s.metadata.labels.clone().unwrap_or_default();
    labels.retain(|_, v| v.len() < 256);
    json!({
        "name": s.metadata.name,
        "namespace": s.metadata.namespace,
        "type": s.type_,
        "labels": labels,
        "annotations": s.metadata.annotations.clone().map(|mut a| {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            a
        }),
        "creationTimestamp": s.metadata.creation_timestamp,
        "keys": keys,
    })
}

impl Gatherer {
    fn error(&mut self, what: &str, e: impl std::fmt::Display) {
        self.errors.push(format!("{what}: {e}"));
    }

    fn scrubbed(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.scrub {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    fn write(&mut self, rel: &str, text: &str) {
        let path = self.dir.join(rel);
        let res = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, self.scrubbed(text)));
        match res {
            Ok(()) => self.files += 1,
            Err(e) => self.error(&format!("writing {rel}"), e),
        }
    }

    fn write_yaml(&mut self, rel: &str, v: &Value) {
        match serde_saphyr::to_string(v) {
            Ok(t) => self.write(rel, &t),
            Err(e) => self.error(&format!("rendering {rel}"), e),
        }
    }

    /// Remembers every value of `s` so that it is scrubbed from whatever is written.
    fn learn_secret(&mut self, s: &Secret) {
        for v in s.data.iter().flatten().map(|(_, v)| v) {
            if let Ok(text) = std::str::from_utf8(&v.0) {
                let text = text.trim();
                if text.len() >= MIN_SCRUB_LEN && !self.scrub.iter().any(|s| s == text) {
                    self.scrub.push(text.to_string());
                }
            }
        }
        // Longest first, so that a value containing another is replaced whole.
        self.scrub.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    async fn list(&mut self, res: &ApiResource, ns: Option<&str>, what: &str) -> Vec<Value> {
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, res),
            None => Api::all_with(self.client.clone(), res),
        };
        match api.list(&ListParams::default()).await {
            Ok(l) => l
                .items
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .map(tidy)
                .collect(),
            Err(e) => {
                self.error(&format!("listing {what}"), e);
                vec![]
            }
        }
    }

    async fn get(&mut self, res: &ApiResource, ns: Option<&str>, name: &str) -> Option<Value> {
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, res),
            None => Api::all_with(self.client.clone(), res),
        };
        match api.get(name).await {
            Ok(o) => serde_json::to_value(o).ok().map(tidy),
            Err(e) => {
                let at = ns.map(|n| format!("{n}/")).unwrap_or_default();
                self.error(&format!("reading {} {at}{name}", res.kind), e);
                None
            }
        }
    }

    async fn dump_list(&mut self, rel: &str, res: &ApiResource, ns: Option<&str>) -> Vec<Value> {
        let items = self.list(res, ns, &res.plural).await;
        self.write_yaml(
            rel,
            &json!({"apiVersion": "v1", "kind": "List", "items": items}),
        );
        items
    }

    async fn secret(&mut self, ns: &str, name: &str) -> Option<Secret> {
        match Api::<Secret>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
        {
            Ok(s) => {
                self.learn_secret(&s);
                Some(s)
            }
            Err(e) => {
                self.error(&format!("reading Secret {ns}/{name}"), e);
                None
            }
        }
    }
}

/// Gathers into `dir` (created). `controller_ns` is where the controller runs.
pub async fn gather(
    client: kube::Client,
    controller_ns: &str,
    dir: &Path,
) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut g = Gatherer {
        client: client.clone(),
        dir: dir.to_path_buf(),
        scrub: vec![],
        files: 0,
        errors: vec![],
    };

    // Secrets first: their values are what every later file is scrubbed of.
    let migrations: Vec<VmwareCloudFoundationMigration> =
        match Api::<VmwareCloudFoundationMigration>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                g.error("listing VmwareCloudFoundationMigrations", e);
                vec![]
            }
        };
    let mut secrets: Vec<Value> = vec![];
    let mut wanted: BTreeSet<(String, String)> =
        BTreeSet::from([("kube-system".to_string(), "vsphere-creds".to_string())]);
    for m in &migrations {
        let ns = m.metadata.namespace.clone().unwrap_or_default();
        wanted.insert((ns, m.spec.target_vcenter_credentials_secret.name.clone()));
    }
    for (ns, name) in &wanted {
        if let Some(s) = g.secret(ns, name).await {
            secrets.push(secret_summary(&s));
        }
    }
    let mut backup_namespaces: BTreeSet<String> = migrations
        .iter()
        .filter_map(|m| m.metadata.namespace.clone())
        .collect();
    backup_namespaces.insert(controller_ns.to_string());
    let mut backups = vec![];
    for ns in &backup_namespaces {
        let lp = ListParams::default().labels(BACKUP_LABEL);
        match Api::<Secret>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
        {
            Ok(l) => {
                for s in &l.items {
                    g.learn_secret(s);
                    backups.push(secret_summary(s));
                }
            }
            Err(e) => g.error(&format!("listing backup Secrets in {ns}"), e),
        }
    }
    g.write_yaml("secrets/credentials.yaml", &json!(secrets));
    g.write_yaml("secrets/backups.yaml", &json!(backups));

    // The migrations, and the Events about them.
    let mut event_namespaces = backup_namespaces.clone();
    for m in &migrations {
        let v = tidy(serde_json::to_value(m).unwrap_or_default());
        let ns = m.metadata.namespace.clone().unwrap_or_default();
        let name = m.metadata.name.clone().unwrap_or_default();
        g.write_yaml(&format!("migrations/{ns}/{name}.yaml"), &v);
        event_namespaces.insert(ns);
    }
    let events_res = ar("events.k8s.io", "v1", "Event", "events");
    for ns in &event_namespaces {
        let mut events = g.list(&events_res, Some(ns), "events").await;
        events.sort_by_key(|e| {
            e.pointer("/eventTime")
                .or_else(|| e.pointer("/deprecatedLastTimestamp"))
                .or_else(|| e.pointer("/metadata/creationTimestamp"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        });
        g.write_yaml(
            &format!("events/{ns}.yaml"),
            &json!({"apiVersion": "v1", "kind": "List", "items": events}),
        );
    }

    // What vcfm reads and writes.
    let cfg = |kind: &str, plural: &str| ar("config.openshift.io", "v1", kind, plural);
    for (rel, res, name) in [
        (
            "cluster/infrastructure.yaml",
            cfg("Infrastructure", "infrastructures"),
            "cluster",
        ),
        (
            "cluster/featuregate.yaml",
            cfg("FeatureGate", "featuregates"),
            "cluster",
        ),
        (
            "cluster/clusterversion.yaml",
            cfg("ClusterVersion", "clusterversions"),
            "version",
        ),
    ] {
        if let Some(v) = g.get(&res, None, name).await {
            g.write_yaml(rel, &v);
        }
    }
    g.dump_list(
        "cluster/clusteroperators.yaml",
        &cfg("ClusterOperator", "clusteroperators"),
        None,
    )
    .await;
    let cm = ar("", "v1", "ConfigMap", "configmaps");
    for (ns, name) in [
        ("openshift-config", "cloud-provider-config"),
        ("openshift-config-managed", "kube-cloud-config"),
    ] {
        if let Some(v) = g.get(&cm, Some(ns), name).await {
            g.write_yaml(&format!("cluster/configmaps/{ns}/{name}.yaml"), &v);
        }
    }
    let mapi = vcfm_api::openshift::MACHINE_API_NAMESPACE;
    g.dump_list(
        "machine-api/controlplanemachinesets.yaml",
        &ar(
            "machine.openshift.io",
            "v1",
            "ControlPlaneMachineSet",
            "controlplanemachinesets",
        ),
        Some(mapi),
    )
    .await;
    g.dump_list(
        "machine-api/machinesets.yaml",
        &ar(
            "machine.openshift.io",
            "v1beta1",
            "MachineSet",
            "machinesets",
        ),
        Some(mapi),
    )
    .await;
    g.dump_list(
        "machine-api/machines.yaml",
        &ar("machine.openshift.io", "v1beta1", "Machine", "machines"),
        Some(mapi),
    )
    .await;
    g.dump_list(
        "cluster/machineconfigpools.yaml",
        &ar(
            "machineconfiguration.openshift.io",
            "v1",
            "MachineConfigPool",
            "machineconfigpools",
        ),
        None,
    )
    .await;
    nodes_summary(&mut g).await;

    // The controller: its Deployment, pods and their logs.
    match Api::<Deployment>::namespaced(client.clone(), controller_ns)
        .get("vcfm-controller")
        .await
    {
        Ok(d) => {
            let v = tidy(serde_json::to_value(d).unwrap_or_default());
            g.write_yaml("controller/deployment.yaml", &v);
        }
        Err(e) => g.error(
            &format!("reading Deployment {controller_ns}/vcfm-controller"),
            e,
        ),
    }
    controller_logs(&mut g, controller_ns).await;

    let mut readme = format!(
        "vcfm gather {}\ngathered at {}\ncontroller namespace {controller_ns}\n{} migration(s)\n",
        env!("CARGO_PKG_VERSION"),
        jiff::Timestamp::now(),
        migrations.len()
    );
    readme.push_str("Secret values are not included: secrets/ lists names, keys and sizes only.\n");
    g.write("gather.txt", &readme);
    let errors = g.errors.join("\n");
    g.write("gather-errors.txt", &errors);
    Ok(Summary {
        dir: g.dir,
        files: g.files,
        errors: g.errors,
    })
}

/// One line per node: readiness, roles, provider ID, addresses, kubelet version.
async fn nodes_summary(g: &mut Gatherer) {
    let nodes = match Api::<Node>::all(g.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => return g.error("listing Nodes", e),
    };
    let mut out =
        String::from("NAME\tREADY\tROLES\tPROVIDER-ID\tADDRESSES\tKUBELET\tUNSCHEDULABLE\n");
    for n in &nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let roles: Vec<&str> = n
            .metadata
            .labels
            .iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .collect();
        let status = n.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map_or("Unknown", |c| c.status.as_str());
        let addresses: Vec<String> = status
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .map(|a| format!("{}={}", a.type_, a.address))
                    .collect()
            })
            .unwrap_or_default();
        let kubelet = status
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.clone())
            .unwrap_or_default();
        let spec = n.spec.as_ref();
        let _ = writeln!(
            out,
            "{name}\t{ready}\t{}\t{}\t{}\t{kubelet}\t{}",
            roles.join(","),
            spec.and_then(|s| s.provider_id.clone()).unwrap_or_default(),
            addresses.join(","),
            spec.and_then(|s| s.unschedulable).unwrap_or(false)
        );
    }
    g.write("cluster/nodes.txt", &out);
}

/// Each controller pod's spec and the logs of its containers (current and, after a
/// restart, previous); the vSphere calls of those logs again in `vsphere-calls.log`.
async fn controller_logs(g: &mut Gatherer, ns: &str) {
    let pods_api = Api::<Pod>::namespaced(g.client.clone(), ns);
    let pods = match pods_api
        .list(&ListParams::default().labels(CONTROLLER_SELECTOR))
        .await
    {
        Ok(l) => l.items,
        Err(e) => return g.error(&format!("listing controller pods in {ns}"), e),
    };
    if pods.is_empty() {
        g.error(
            "controller logs",
            format!("no pod with label {CONTROLLER_SELECTOR} in {ns}"),
        );
    }
    let mut calls = String::new();
    for p in &pods {
        let pod = p.metadata.name.clone().unwrap_or_default();
        let v = tidy(serde_json::to_value(p).unwrap_or_default());
        g.write_yaml(&format!("controller/pods/{pod}.yaml"), &v);
        let containers: Vec<String> = p
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
            .collect();
        let restarted = |c: &str| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|s| s.name == c))
                .is_some_and(|s| s.restart_count > 0)
        };
        for c in &containers {
            for previous in [false, true] {
                if previous && !restarted(c) {
                    continue;
                }
                let lp = LogParams {
                    container: Some(c.clone()),
                    previous,
                    ..Default::default()
                };
                match pods_api.logs(&pod, &lp).await {
                    Ok(text) => {
                        let suffix = if previous { ".previous" } else { "" };
                        for line in text.lines().filter(|l| l.contains("vcfm_vsphere")) {
                            calls.push_str(&pod);
                            calls.push(' ');
                            calls.push_str(line);
                            calls.push('\n');
                        }
                        g.write(&format!("controller/logs/{pod}/{c}{suffix}.log"), &text);
                    }
                    Err(e) => g.error(&format!("logs of {ns}/{pod} container {c}"), e),
                }
            }
        }
    }
    g.write("controller/vsphere-calls.log", &calls);
}
