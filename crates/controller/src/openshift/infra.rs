//! The Infrastructure `cluster` object and the CEL rule on its CRD that
//! forbids adding or removing vCenters unless the `VSphereMultiVCenterDay2`
//! gate is on.
//!
//! Edits are symmetric (add the target now, remove the source in Cleanup) and
//! touch only `vcenters` and `failureDomains`; everything else in the object
//! round-trips through the typed model's `extra` maps untouched.
//!
//! On the gate-off path an edit is: lift the rule (the CVO is at 0, so nothing
//! puts it back), write the Infrastructure, restore the rule from the backup
//! with a fresh read. [`apply_edit`] does the three idempotently, deciding from
//! the live objects alone, so a crash between any two of them is repaired by
//! calling it again.

use crate::backup::{BackupStore, manifest};
use crate::error::{PhaseError, is_not_found};
use crate::openshift::cvo;
use crate::phases::backup::keys;
use crate::undo;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};
use vcfm_api::openshift::{
    CLUSTER, Infrastructure, VSphereFailureDomain, VSpherePlatformSpec, VSphereTopology,
    VSphereVCenter,
};
use vcfm_api::{BackupManifest, FailureDomain};

/// Name of the Infrastructure CRD.
pub const INFRA_CRD: &str = "infrastructures.config.openshift.io";
/// Message of the rule that pins the number of vCenters (Default feature set).
pub const VCENTERS_RULE_MESSAGE: &str = "vcenters cannot be added or removed once set";
/// The rule as OpenShift ships it; used only when no CRD backup exists.
pub const VCENTERS_RULE: &str =
    "size(self) != size(oldSelf) ? size(oldSelf) == 0 && size(self) < 2 : true";

/// Where the rule lives inside each entry of `spec.versions`.
const RULE_POINTER: &str = "/schema/openAPIV3Schema/properties/spec/properties/platformSpec/properties/vsphere/properties/vcenters";

/// Why an Infrastructure edit cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfraEditError {
    #[error(
        "Infrastructure failure domain {name:?} already exists with a different definition (server {existing_server}): rename the target failure domain in spec.failureDomains"
    )]
    FailureDomainConflict {
        name: String,
        existing_server: String,
    },
    #[error("removing vCenter {0} would leave the Infrastructure without any vCenter")]
    LastVcenter(String),
    #[error("the rolled-back Infrastructure does not parse: {0}")]
    Undo(String),
}

/// Datacenter name of a failure domain (the spec may carry a leading `/`).
pub fn datacenter_name(fd: &FailureDomain) -> String {
    fd.topology.datacenter.trim_matches('/').to_string()
}

/// The cluster's VM folder for a failure domain: `topology.folder`, else `/<dc>/vm/<infraID>`.
pub fn folder_path(fd: &FailureDomain, infra_id: &str) -> String {
    match fd.topology.folder.as_deref().map(str::trim) {
        Some(f) if !f.is_empty() => f.trim_end_matches('/').to_string(),
        _ => format!("/{}/vm/{infra_id}", datacenter_name(fd)),
    }
}

/// The Infrastructure entries (vCenters, failure domains) for target failure
/// domains, in spec order, vCenters deduplicated.
pub fn target_entries(
    fds: &[FailureDomain],
    infra_id: &str,
) -> (Vec<VSphereVCenter>, Vec<VSphereFailureDomain>) {
    let mut vcenters: Vec<VSphereVCenter> = vec![];
    let mut domains = vec![];
    for fd in fds {
        let dc = datacenter_name(fd);
        match vcenters.iter_mut().find(|v| v.server == fd.server) {
            Some(v) => {
                if !v.datacenters.contains(&dc) {
                    v.datacenters.push(dc.clone());
                }
            }
            None => vcenters.push(VSphereVCenter {
                server: fd.server.clone(),
                port: Some(443),
                datacenters: vec![dc.clone()],
                extra: Default::default(),
            }),
        }
        domains.push(VSphereFailureDomain {
            name: fd.name.clone(),
            region: fd.region.clone(),
            zone: fd.zone.clone(),
            server: fd.server.clone(),
            topology: VSphereTopology {
                datacenter: dc,
                compute_cluster: fd.topology.compute_cluster.clone(),
                datastore: fd.topology.datastore.clone(),
                networks: fd.topology.networks.clone(),
                resource_pool: fd.topology.resource_pool.clone(),
                folder: Some(folder_path(fd, infra_id)),
                template: Some(fd.topology.template.clone()),
                extra: Default::default(),
            },
            region_affinity: fd.region_affinity.clone(),
            zone_affinity: fd.zone_affinity.clone(),
            extra: Default::default(),
        });
    }
    (vcenters, domains)
}

fn vsphere_mut(infra: &mut Infrastructure) -> &mut VSpherePlatformSpec {
    let ps = infra
        .spec
        .platform_spec
        .get_or_insert_with(Default::default);
    if ps.type_.is_none() {
        ps.type_ = Some("VSphere".into());
    }
    ps.vsphere.get_or_insert_with(Default::default)
}

/// Whether two failure domains describe the same placement (fields the API
/// server may default are ignored).
fn same_domain(a: &VSphereFailureDomain, b: &VSphereFailureDomain) -> bool {
    let (ta, tb) = (&a.topology, &b.topology);
    a.server == b.server
        && a.region == b.region
        && a.zone == b.zone
        && ta.datacenter.trim_matches('/') == tb.datacenter.trim_matches('/')
        && ta.compute_cluster == tb.compute_cluster
        && ta.datastore == tb.datastore
        && ta.networks == tb.networks
        && ta.resource_pool == tb.resource_pool
        && ta.folder == tb.folder
        && ta.template == tb.template
        && a.region_affinity == b.region_affinity
        && a.zone_affinity == b.zone_affinity
}

/// Appends vCenters and failure domains after the existing ones (the source
/// stays first), merging datacenters of a vCenter already listed. Returns
/// whether anything changed.
pub fn add_vcenters(
    infra: &mut Infrastructure,
    vcenters: &[VSphereVCenter],
    domains: &[VSphereFailureDomain],
) -> Result<bool, InfraEditError> {
    let existing_domains = infra.failure_domains().to_vec();
    for d in domains {
        if let Some(e) = existing_domains.iter().find(|e| e.name == d.name)
            && !same_domain(e, d)
        {
            return Err(InfraEditError::FailureDomainConflict {
                name: d.name.clone(),
                existing_server: e.server.clone(),
            });
        }
    }
    let vs = vsphere_mut(infra);
    let mut changed = false;
    let list = vs.vcenters.get_or_insert_with(Vec::new);
    for v in vcenters {
        match list.iter_mut().find(|x| x.server == v.server) {
            Some(x) => {
                for dc in &v.datacenters {
                    if !x.datacenters.contains(dc) {
                        x.datacenters.push(dc.clone());
                        changed = true;
                    }
                }
            }
            None => {
                list.push(v.clone());
                changed = true;
            }
        }
    }
    let fds = vs.failure_domains.get_or_insert_with(Vec::new);
    for d in domains {
        if !fds.iter().any(|x| x.name == d.name) {
            fds.push(d.clone());
            changed = true;
        }
    }
    Ok(changed)
}

/// Removes a vCenter and every failure domain on it. Returns whether anything
/// changed; refuses to remove the last vCenter.
pub fn remove_vcenter(infra: &mut Infrastructure, server: &str) -> Result<bool, InfraEditError> {
    let listed = infra.vcenters().iter().any(|v| v.server == server);
    let has_domains = infra.failure_domains().iter().any(|f| f.server == server);
    if !listed && !has_domains {
        return Ok(false);
    }
    if listed && infra.vcenters().iter().all(|v| v.server == server) {
        return Err(InfraEditError::LastVcenter(server.to_string()));
    }
    let vs = vsphere_mut(infra);
    if let Some(l) = vs.vcenters.as_mut() {
        l.retain(|v| v.server != server);
    }
    if let Some(l) = vs.failure_domains.as_mut() {
        l.retain(|f| f.server != server);
    }
    Ok(true)
}

/// Whether the Infrastructure lists `server`.
pub fn has_vcenter(infra: &Infrastructure, server: &str) -> bool {
    infra.vcenters().iter().any(|v| v.server == server)
}

// ------------------------------------------------------------- the CRD rule

/// The `x-kubernetes-validations` of `vcenters` per CRD version (Null when absent).
pub fn vcenters_rules(crd: &Value) -> Vec<(String, Value)> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    (
                        v.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        v.pointer(&format!("{RULE_POINTER}/x-kubernetes-validations"))
                            .cloned()
                            .unwrap_or(Value::Null),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The smallest `maxItems` of `spec.platformSpec.vsphere.vcenters` over the CRD's served
/// versions (`None` when no version caps it). OpenShift 4.13–4.17 ship `maxItems: 1`
/// (openshift/api `release-4.16` `config/v1/types_infrastructure.go`), so a second vCenter
/// is refused by the schema itself; 4.18 raised it to 3.
pub fn vcenters_max_items(crd: &Value) -> Option<u64> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)?
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .filter_map(|v| v.pointer(&format!("{RULE_POINTER}/maxItems")))
        .filter_map(Value::as_u64)
        .min()
}

/// Reads and writes the Infrastructure CRD: reads from its named watch
/// ([`crate::named`]) when the controller runs with one, else, and after a
/// conflict, from the API. Writes carry the resourceVersion read; what a
/// write returns is read next until the watch shows it, so that restoring the
/// rule right after lifting it sees the lift.
#[derive(Clone)]
pub struct Crd {
    client: kube::Client,
    named: Option<std::sync::Arc<crate::named::Named<DynamicObject>>>,
}

impl Crd {
    /// Every read from the API.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            named: None,
        }
    }

    /// Reads from the phase step's watch caches.
    pub fn of(ctx: &crate::context::PhaseCtx) -> Self {
        Self {
            client: ctx.client(),
            named: ctx.caches().map(|c| c.crds.clone()),
        }
    }

    /// The CRD as JSON, `None` when absent.
    pub async fn read(&self, fresh: bool) -> Result<Option<Value>, PhaseError> {
        let obj = match (fresh, &self.named) {
            (false, Some(n)) => match n.read("", INFRA_CRD).await {
                Some(o) => o,
                None => self.get().await?,
            },
            _ => self.get().await?,
        };
        obj.map(|o| serde_json::to_value(&o).map_err(|e| PhaseError::fatal(e.to_string())))
            .transpose()
    }

    async fn get(&self) -> Result<Option<DynamicObject>, PhaseError> {
        let got = crd_api(self.client.clone())
            .get_opt(INFRA_CRD)
            .await
            .map_err(|e| PhaseError::from(e).context("reading the Infrastructure CRD"))?;
        if let Some(n) = &self.named {
            n.record("", INFRA_CRD, got.as_ref());
        }
        Ok(got)
    }

    async fn read_existing(&self) -> Result<Value, PhaseError> {
        self.read(false)
            .await?
            .ok_or_else(|| PhaseError::fatal("reading the Infrastructure CRD: it does not exist"))
    }

    /// Replaces the CRD with `v`, which carries the resourceVersion it was read at.
    async fn write(&self, v: Value, what: &str) -> Result<(), PhaseError> {
        let obj: DynamicObject =
            serde_json::from_value(v).map_err(|e| PhaseError::fatal(e.to_string()))?;
        match crd_api(self.client.clone())
            .replace(INFRA_CRD, &PostParams::default(), &obj)
            .await
        {
            Ok(o) => {
                if let Some(n) = &self.named {
                    n.record("", INFRA_CRD, Some(&o));
                }
                Ok(())
            }
            // Someone wrote in between: the next step works on a fresh read.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.get().await?;
                Err(PhaseError::transient(format!(
                    "{what}: the Infrastructure CRD changed meanwhile; retrying with a fresh read"
                )))
            }
            Err(e) => Err(PhaseError::from(e).context(what)),
        }
    }
}

/// Whether any version of the CRD carries the vcenters-count rule.
pub fn has_vcenters_rule(crd: &Value) -> bool {
    vcenters_rules(crd).iter().any(|(_, rules)| {
        rules.as_array().is_some_and(|a| {
            a.iter()
                .any(|r| r.get("message").and_then(Value::as_str) == Some(VCENTERS_RULE_MESSAGE))
        })
    })
}

/// Removes the vcenters-count rule from every version. Returns whether it was there.
pub fn lift_rule(crd: &mut Value) -> bool {
    let mut changed = false;
    let Some(versions) = crd
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    for v in versions {
        let Some(node) = v.pointer_mut(RULE_POINTER).and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(rules) = node
            .get_mut("x-kubernetes-validations")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        let before = rules.len();
        rules.retain(|r| r.get("message").and_then(Value::as_str) != Some(VCENTERS_RULE_MESSAGE));
        if rules.len() != before {
            changed = true;
            if rules.is_empty() {
                node.remove("x-kubernetes-validations");
            }
        }
    }
    changed
}

/// Puts back the vcenters-count rule vcfm lifted, in every version whose
/// original carries it and whose live schema lacks it, at its original
/// position. Other rules on `vcenters` (someone else's) are left as they are.
/// Returns whether anything changed.
pub fn restore_rules(live: &mut Value, original: &Value) -> bool {
    let wanted = vcenters_rules(original);
    let mut changed = false;
    let Some(versions) = live
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let is_ours =
        |r: &Value| r.get("message").and_then(Value::as_str) == Some(VCENTERS_RULE_MESSAGE);
    for v in versions {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let Some((_, want)) = wanted.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        let Some((index, rule)) = want
            .as_array()
            .and_then(|a| a.iter().enumerate().find(|(_, r)| is_ours(r)))
        else {
            continue;
        };
        let Some(node) = v.pointer_mut(RULE_POINTER).and_then(Value::as_object_mut) else {
            continue;
        };
        let rules = node
            .entry("x-kubernetes-validations")
            .or_insert_with(|| json!([]));
        let Some(rules) = rules.as_array_mut() else {
            continue;
        };
        if !rules.iter().any(is_ours) {
            rules.insert(index.min(rules.len()), rule.clone());
            changed = true;
        }
    }
    changed
}

fn crd_api(client: kube::Client) -> Api<DynamicObject> {
    // Dynamic, so the CRD round-trips byte-for-byte whatever its schema holds.
    Api::all_with(client, &ApiResource::erase::<CustomResourceDefinition>(&()))
}

/// The migration's backups as an Infrastructure edit reads and adds to them.
pub struct Backups<'a> {
    /// The migration's backup Secret.
    pub store: BackupStore,
    /// `status.backupManifests` as read.
    pub recorded: &'a [BackupManifest],
    /// When a change record is taken.
    pub now: jiff::Timestamp,
    /// Keeps a new manifest (persisted with the step's outcome).
    pub add: Box<dyn Fn(BackupManifest) + Send + Sync + 'a>,
}

/// Everything an Infrastructure edit reads, handed over by the phase.
pub struct Edit<'a> {
    pub client: kube::Client,
    /// The Infrastructure CRD, lifted and restored on the gate-off path.
    pub crd: Crd,
    /// Where our write of the Infrastructure is kept until its watch shows it.
    pub ours: Option<std::sync::Arc<crate::written::Overlay<Infrastructure>>>,
    /// Infrastructure `cluster` as read from the watch cache: the write
    /// carries its resourceVersion, so a cache behind the API server is a
    /// 409 and a fresh read next step.
    pub live: Option<Infrastructure>,
    /// `VSphereMultiVCenterDay2` is enabled (as Preflight recorded): no CRD rule to lift.
    pub gate: bool,
    /// The cluster-version-operator, read on the gate-off path (where it must be at 0).
    pub cvo: Option<cvo::CvoState>,
    pub backups: Backups<'a>,
}

/// The CRD as it was before the migration: the Backup phase's copy, or, when
/// there is none, the live CRD with OpenShift's rule put back.
pub async fn original_crd(crd: &Crd, backups: &Backups<'_>) -> Result<Value, PhaseError> {
    if let Ok(m) = manifest(backups.recorded, keys::INFRASTRUCTURE_CRD) {
        return backups.store.load(m).await;
    }
    let mut live = crd.read_existing().await?;
    if !has_vcenters_rule(&live)
        && let Some(versions) = live
            .pointer_mut("/spec/versions")
            .and_then(Value::as_array_mut)
    {
        for v in versions {
            if let Some(node) = v.pointer_mut(RULE_POINTER).and_then(Value::as_object_mut) {
                let rules = node
                    .entry("x-kubernetes-validations")
                    .or_insert_with(|| json!([]));
                if let Some(a) = rules.as_array_mut() {
                    a.push(json!({"message": VCENTERS_RULE_MESSAGE, "rule": VCENTERS_RULE}));
                }
            }
        }
    }
    Ok(live)
}

/// Lifts the rule on the live CRD. Returns whether it had to.
pub async fn lift_vcenters_rule(crd: &Crd) -> Result<bool, PhaseError> {
    let mut v = crd.read_existing().await?;
    if !lift_rule(&mut v) {
        return Ok(false);
    }
    crd.write(v, "lifting the Infrastructure CRD vcenters rule")
        .await?;
    Ok(true)
}

/// Puts the rules of `original` back on the live CRD (as its watch shows it
/// after our lift, see [`Crd`]). Returns whether it had to.
pub async fn restore_vcenters_rule(crd: &Crd, original: &Value) -> Result<bool, PhaseError> {
    let mut v = crd.read_existing().await?;
    if !restore_rules(&mut v, original) {
        return Ok(false);
    }
    crd.write(v, "restoring the Infrastructure CRD vcenters rule")
        .await?;
    Ok(true)
}

/// What [`apply_edit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditResult {
    /// The Infrastructure was written.
    pub changed: bool,
    /// The CRD rule was put back (after this edit, or left lifted by a crash).
    pub rule_restored: bool,
}

/// Applies `edit` to the Infrastructure, lifting and restoring the CRD rule
/// on gate-off clusters. Idempotent; safe to call again after a crash at any
/// point. Requires the CVO at 0 on the gate-off path.
pub async fn apply_edit(
    inputs: Edit<'_>,
    edit: impl FnOnce(&mut Infrastructure) -> Result<bool, InfraEditError>,
) -> Result<EditResult, PhaseError> {
    edit_infrastructure(inputs, false, edit).await
}

/// [`apply_edit`], recording in the backup Secret what the edit writes
/// before writing it, so that rollback undoes exactly that.
pub async fn apply_recorded_edit(
    inputs: Edit<'_>,
    edit: impl FnOnce(&mut Infrastructure) -> Result<bool, InfraEditError>,
) -> Result<EditResult, PhaseError> {
    edit_infrastructure(inputs, true, edit).await
}

async fn edit_infrastructure(
    inputs: Edit<'_>,
    record: bool,
    edit: impl FnOnce(&mut Infrastructure) -> Result<bool, InfraEditError>,
) -> Result<EditResult, PhaseError> {
    let Edit {
        client,
        crd,
        ours,
        live,
        gate,
        cvo,
        backups,
    } = inputs;
    let api = Api::<Infrastructure>::all(client.clone());
    let live =
        live.ok_or_else(|| PhaseError::fatal("reading Infrastructure cluster: it does not exist"))?;
    let mut edited = live.clone();
    let changed = edit(&mut edited).map_err(|e| PhaseError::fatal(e.to_string()))?;
    if record {
        let changes = if changed {
            let json = |i: &Infrastructure| {
                serde_json::to_value(i).map_err(|e| PhaseError::fatal(e.to_string()))
            };
            undo::diff(undo::infrastructure_units, &json(&live)?, &json(&edited)?)
        } else {
            undo::ChangeRecord::default()
        };
        if let Some(m) = backups
            .store
            .save_changes(
                keys::INFRASTRUCTURE_CHANGES,
                "config.openshift.io/v1/Infrastructure changes",
                CLUSTER,
                None,
                &changes,
                backups.now,
            )
            .await?
        {
            (backups.add)(m);
        }
    }
    let original = if gate {
        None
    } else {
        Some(original_crd(&crd, &backups).await?)
    };
    if changed {
        if original.is_some() {
            let st = cvo.ok_or_else(|| {
                PhaseError::fatal(
                    "editing the Infrastructure: the cluster-version-operator was not read",
                )
            })?;
            if st.desired != 0 || st.running != 0 {
                return Err(PhaseError::fatal(format!(
                    "the cluster-version-operator runs ({} desired, {} running) and would revert the Infrastructure CRD: it must stay scaled to 0 (phase DisableCVO) while vCenters are added or removed",
                    st.desired, st.running
                )));
            }
            lift_vcenters_rule(&crd).await?;
        }
        // The resourceVersion of the read guards against lost updates.
        match api.replace(CLUSTER, &PostParams::default(), &edited).await {
            Ok(i) => {
                if let Some(o) = &ours {
                    o.record(CLUSTER, &i);
                }
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // The next step reads the version that won, not the stale copy.
                if let (Some(o), Some(i)) = (&ours, get(client.clone()).await?) {
                    o.record(CLUSTER, &i);
                }
                return Err(PhaseError::transient(
                    "Infrastructure cluster changed meanwhile; retrying with a fresh read",
                ));
            }
            // A real apiserver swaps a CRD's validators asynchronously after the CRD is
            // updated (apiextensions-apiserver `crdHandler` rebuilds the storage from
            // its informer), so the write right after lifting the rule may still meet
            // it. The rule stays lifted; the next attempt writes again.
            Err(kube::Error::Api(s)) if original.is_some() && rejected_by_vcenters_rule(&s) => {
                return Err(PhaseError::transient(
                    "the API server does not serve the lifted Infrastructure CRD vcenters rule yet; retrying",
                ));
            }
            Err(e) => return Err(PhaseError::from(e).context("writing Infrastructure cluster")),
        }
    }
    let rule_restored = match &original {
        Some(o) => restore_vcenters_rule(&crd, o).await?,
        None => false,
    };
    Ok(EditResult {
        changed,
        rule_restored,
    })
}

/// A 422 whose cause is the `vcenters` field (the field the CRD rule guards).
fn rejected_by_vcenters_rule(s: &kube::core::Status) -> bool {
    s.code == 422
        && s.details.as_ref().is_some_and(|d| {
            d.causes
                .iter()
                .any(|c| c.field == "spec.platformSpec.vsphere.vcenters")
        })
}

/// Undoes vcfm's recorded changes to the Infrastructure (see
/// [`crate::undo`]), lifting and restoring the CRD rule on gate-off clusters.
/// Backups from before change records take the target vCenters and failure
/// domains of the spec as vcfm's.
pub async fn undo_changes(
    inputs: Edit<'_>,
    spec_domains: &[FailureDomain],
) -> Result<(EditResult, undo::Plan), PhaseError> {
    let b = &inputs.backups;
    let original = b
        .store
        .load(manifest(b.recorded, keys::INFRASTRUCTURE)?)
        .await?;
    let recorded = b
        .store
        .load_changes(b.recorded, keys::INFRASTRUCTURE_CHANGES)
        .await?;
    let vs = || {
        vec![
            undo::field("spec"),
            undo::field("platformSpec"),
            undo::field("vsphere"),
        ]
    };
    let mut targets: Vec<undo::Path> = vec![];
    for fd in spec_domains {
        let mut p = vs();
        p.extend([undo::field("vcenters"), undo::entry("server", &fd.server)]);
        targets.push(p);
        let mut p = vs();
        p.extend([undo::field("failureDomains"), undo::entry("name", &fd.name)]);
        targets.push(p);
    }
    let mut plan = undo::Plan::default();
    let res = apply_edit(inputs, |infra| {
        let mut v =
            serde_json::to_value(&*infra).map_err(|e| InfraEditError::Undo(e.to_string()))?;
        let record = recorded.unwrap_or_else(|| undo::ChangeRecord::assumed(&v, targets));
        plan = undo::Plan::new(&original, &record, &v);
        if !plan.apply(&mut v) {
            return Ok(false);
        }
        *infra = serde_json::from_value(v).map_err(|e| InfraEditError::Undo(e.to_string()))?;
        Ok(true)
    })
    .await?;
    Ok((res, plan))
}

/// The Infrastructure spec as Backup took it: what a rollback returns to.
pub async fn backed_up_spec(
    backups: &Backups<'_>,
) -> Result<vcfm_api::openshift::InfrastructureSpec, PhaseError> {
    let m = manifest(backups.recorded, keys::INFRASTRUCTURE)?;
    let v = backups.store.load(m).await?;
    serde_json::from_value(v.get("spec").cloned().unwrap_or(Value::Null)).map_err(|e| {
        PhaseError::fatal(format!("backed-up Infrastructure spec does not parse: {e}"))
    })
}

/// Reads Infrastructure `cluster`, `None` when absent.
pub async fn get(client: kube::Client) -> Result<Option<Infrastructure>, PhaseError> {
    match Api::<Infrastructure>::all(client).get(CLUSTER).await {
        Ok(i) => Ok(Some(i)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcfm_api::Topology;

    fn infra() -> Infrastructure {
        serde_json::from_value(json!({
            "apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
            "metadata": {"name": "cluster", "resourceVersion": "7"},
            "spec": {"cloudConfig": {"key": "config", "name": "cloud-provider-config"},
                "platformSpec": {"type": "VSphere", "vsphere": {
                    "apiServerInternalIPs": ["10.0.0.5"], "ingressIPs": ["10.0.0.6"],
                    "machineNetworks": ["10.0.0.0/16"],
                    "nodeNetworking": {"external": {}, "internal": {"networkSubnetCidr": ["10.0.0.0/16"]}},
                    "vcenters": [{"server": "src.example.com", "port": 443, "datacenters": ["DC0"]}],
                    "failureDomains": [{"name": "generated-failure-domain", "region": "generated-region",
                        "zone": "generated-zone", "server": "src.example.com",
                        "topology": {"datacenter": "DC0", "computeCluster": "/DC0/host/C0",
                            "datastore": "/DC0/datastore/ds0", "networks": ["VM Network"],
                            "resourcePool": "/DC0/host/C0/Resources", "folder": "/DC0/vm/ocp-abcde",
                            "template": "/DC0/vm/rhcos"}}]}}},
            "status": {"infrastructureName": "ocp-abcde", "platform": "VSphere"}
        }))
        .unwrap()
    }

    fn fd(name: &str, server: &str, dc: &str, folder: Option<&str>) -> FailureDomain {
        FailureDomain {
            name: name.into(),
            region: "r1".into(),
            zone: format!("z-{name}"),
            server: server.into(),
            topology: Topology {
                datacenter: dc.into(),
                compute_cluster: format!("/{dc}/host/C1"),
                datastore: format!("/{dc}/datastore/ds1"),
                networks: vec!["VM Network".into()],
                resource_pool: None,
                folder: folder.map(str::to_string),
                template: format!("/{dc}/vm/rhcos"),
            },
            region_affinity: None,
            zone_affinity: None,
        }
    }

    #[test]
    fn targets_are_appended_after_the_source_and_the_rest_is_untouched() {
        let before = infra();
        let mut i = before.clone();
        let fds = [
            fd("a", "tgt.example.com", "DC1", None),
            fd("b", "tgt.example.com", "/DC2", Some("/DC2/vm/x/y/")),
        ];
        let (vcs, doms) = target_entries(&fds, "ocp-abcde");
        assert_eq!(vcs.len(), 1);
        assert_eq!(vcs[0].datacenters, ["DC1", "DC2"]);
        assert_eq!(
            doms[0].topology.folder.as_deref(),
            Some("/DC1/vm/ocp-abcde")
        );
        assert_eq!(doms[1].topology.folder.as_deref(), Some("/DC2/vm/x/y"));
        assert_eq!(doms[1].topology.datacenter, "DC2");
        assert!(add_vcenters(&mut i, &vcs, &doms).unwrap());
        let servers: Vec<&str> = i.vcenters().iter().map(|v| v.server.as_str()).collect();
        assert_eq!(servers, ["src.example.com", "tgt.example.com"]);
        let names: Vec<&str> = i
            .failure_domains()
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["generated-failure-domain", "a", "b"]);
        // Idempotent.
        assert!(!add_vcenters(&mut i, &vcs, &doms).unwrap());
        // Everything else is as it was.
        let (a, b) = (
            serde_json::to_value(&i).unwrap(),
            serde_json::to_value(&before).unwrap(),
        );
        for k in [
            "apiServerInternalIPs",
            "ingressIPs",
            "machineNetworks",
            "nodeNetworking",
        ] {
            assert_eq!(
                a["spec"]["platformSpec"]["vsphere"][k],
                b["spec"]["platformSpec"]["vsphere"][k]
            );
        }
        assert_eq!(a["spec"]["cloudConfig"], b["spec"]["cloudConfig"]);
        assert_eq!(a["metadata"], b["metadata"]);
        assert_eq!(a["status"], b["status"]);
        // Symmetric: removing the target gives back the original.
        assert!(remove_vcenter(&mut i, "tgt.example.com").unwrap());
        assert_eq!(i, before);
        assert!(!remove_vcenter(&mut i, "tgt.example.com").unwrap());
    }

    #[test]
    fn affinity_is_written_into_the_infrastructure_failure_domain() {
        let mut f = fd("a", "tgt", "DC1", None);
        f.region_affinity = Some(vcfm_api::RegionAffinity {
            type_: vcfm_api::RegionAffinityType::ComputeCluster,
        });
        f.zone_affinity = Some(vcfm_api::ZoneAffinity {
            type_: vcfm_api::ZoneAffinityType::HostGroup,
            host_group: Some(vcfm_api::HostGroupAffinity {
                vm_group: "vms".into(),
                host_group: "hosts".into(),
                vm_host_rule: "rule".into(),
            }),
        });
        let (_, doms) = target_entries(std::slice::from_ref(&f), "id");
        let v = serde_json::to_value(&doms[0]).expect("serialises");
        assert_eq!(v["regionAffinity"], json!({"type": "ComputeCluster"}));
        assert_eq!(
            v["zoneAffinity"],
            json!({"type": "HostGroup", "hostGroup": {"vmGroup": "vms", "hostGroup": "hosts", "vmHostRule": "rule"}})
        );
        // A changed affinity is a different definition, not the same domain.
        let (_, plain) = target_entries(&[fd("a", "tgt", "DC1", None)], "id");
        assert!(!same_domain(&doms[0], &plain[0]));
    }

    #[test]
    fn removing_the_source_keeps_the_target_and_never_empties() {
        let mut i = infra();
        let (vcs, doms) = target_entries(&[fd("a", "tgt", "DC1", None)], "id");
        add_vcenters(&mut i, &vcs, &doms).unwrap();
        assert!(remove_vcenter(&mut i, "src.example.com").unwrap());
        assert_eq!(i.vcenters().len(), 1);
        assert_eq!(i.failure_domains().len(), 1);
        assert_eq!(i.failure_domains()[0].server, "tgt");
        assert_eq!(
            remove_vcenter(&mut i, "tgt"),
            Err(InfraEditError::LastVcenter("tgt".into()))
        );
    }

    #[test]
    fn a_conflicting_failure_domain_name_is_refused() {
        let mut i = infra();
        let mut f = fd("generated-failure-domain", "tgt", "DC1", None);
        f.region = "other".into();
        let (vcs, doms) = target_entries(&[f], "id");
        assert!(matches!(
            add_vcenters(&mut i, &vcs, &doms),
            Err(InfraEditError::FailureDomainConflict { .. })
        ));
        assert_eq!(i, infra(), "nothing changed on refusal");
    }

    #[test]
    fn the_crd_rule_is_lifted_and_restored_exactly() {
        let original = json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"properties": {"spec": {"properties": {"platformSpec": {"properties": {"vsphere": {"properties": {"vcenters": {
            "type": "array", "maxItems": 3,
            "x-kubernetes-validations": [{"message": VCENTERS_RULE_MESSAGE, "rule": VCENTERS_RULE}]}}}}}}}}}}}]}});
        assert!(has_vcenters_rule(&original));
        let mut live = original.clone();
        assert!(lift_rule(&mut live));
        assert!(!has_vcenters_rule(&live));
        assert!(!lift_rule(&mut live));
        assert_eq!(
            live.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/platformSpec/properties/vsphere/properties/vcenters"),
            Some(&json!({"type": "array", "maxItems": 3}))
        );
        assert!(restore_rules(&mut live, &original));
        assert_eq!(live, original);
        assert!(!restore_rules(&mut live, &original));
    }

    /// Only the rule vcfm lifted comes back: a rule someone else added to
    /// `vcenters` meanwhile stays, in place.
    #[test]
    fn restoring_the_crd_rule_keeps_other_rules() {
        let node = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/platformSpec/properties/vsphere/properties/vcenters";
        let theirs = json!({"message": "at most 3", "rule": "size(self) <= 3"});
        let ours = json!({"message": VCENTERS_RULE_MESSAGE, "rule": VCENTERS_RULE});
        let original = json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"properties": {"spec": {"properties": {"platformSpec": {"properties": {"vsphere": {"properties": {"vcenters": {
            "type": "array", "x-kubernetes-validations": [ours.clone()]}}}}}}}}}}}]}});
        let mut live = original.clone();
        assert!(lift_rule(&mut live));
        live.pointer_mut(node).unwrap()["x-kubernetes-validations"] = json!([theirs.clone()]);
        assert!(restore_rules(&mut live, &original));
        assert_eq!(
            live.pointer(node).unwrap()["x-kubernetes-validations"],
            json!([ours, theirs])
        );
        assert!(!restore_rules(&mut live, &original));
    }
}
