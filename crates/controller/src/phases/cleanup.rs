//! Phase 14: forget the source vCenter. Removes the vCenter recorded by
//! Preflight (and only it: never inferred from list order) from the
//! Infrastructure, the cloud-provider config and `kube-system/vsphere-creds`,
//! restarts the vSphere pods so they drop it, and writes the replacement
//! installer `metadata.json` into a Secret so that `openshift-install destroy
//! cluster` finds the cluster on the target.
//!
//! Every step checks before it writes, so a retry after a partial failure
//! redoes only what is missing and can never touch a target entry. Once the
//! removals are done, the step that did them records it in status (its
//! progress, [`REMOVED`]); the steps that then wait for the restarted pods and
//! the pools neither redo nor re-read them, and neither does a controller
//! restarted meanwhile. Killed between a removal and that status write, the
//! next step finds no record and checks (and skips) each removal again.

use super::Steps;
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::creds;
use crate::openshift::{cloud_config, fd_refs, infra, machines, mcp, pods};
use crate::state::Outcome;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use vcfm_api::LogLevel;
use vcfm_api::openshift::{ClusterVersion, VERSION_NAME};

pub struct Cleanup;

const RECHECK: Duration = Duration::from_secs(5);

/// Progress of a Cleanup whose removals (Infrastructure, cloud-provider-config,
/// vsphere-creds, installer metadata) are all done: reported by the step that
/// finished them and by every later one, so status records it.
pub const REMOVED: i32 = 70;
/// Progress while the pools roll the configuration without the source.
const POOLS: i32 = 85;

/// Key of the installer metadata in its Secret.
pub const METADATA_KEY: &str = "metadata.json";
/// Label on the metadata Secret naming the migration.
pub const METADATA_LABEL: &str = "migration.openshift.io/installer-metadata-of";

/// Name of the Secret holding the replacement `metadata.json`.
pub fn metadata_secret_name(migration: &str) -> String {
    format!("{migration}-installer-metadata")
}

impl Steps for Cleanup {
    async fn validate(&self, ctx: &PhaseCtx) -> Result<(), PhaseError> {
        source_to_remove(ctx)?;
        ctx.recorded_cluster()?;
        Ok(())
    }

    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }
}

/// The recorded source server, refused when empty or when it is also a target
/// (removing it would remove the target).
fn source_to_remove(ctx: &PhaseCtx) -> Result<String, PhaseError> {
    let source = ctx.recorded_source()?.server.clone();
    if source.trim().is_empty() {
        return Err(PhaseError::fatal(
            "status.sourceVCenter.server is empty: refusing to remove anything",
        ));
    }
    if ctx.migration.target_servers().contains(&source.as_str()) {
        return Err(PhaseError::fatal(format!(
            "the recorded source vCenter {source} is also a target vCenter: refusing to remove it"
        )));
    }
    Ok(source)
}

/// Whether status records this Cleanup run's removals as done (see [`REMOVED`]).
/// A retried Cleanup starts from progress 0, so it checks everything again.
fn removals_recorded(ctx: &PhaseCtx) -> bool {
    ctx.migration
        .status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .is_some_and(|c| {
            c.name == vcfm_api::PhaseName::Cleanup
                && c.status == vcfm_api::PhaseStatus::Running
                && c.progress >= REMOVED
        })
}

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let source = source_to_remove(ctx)?;
    let done = if removals_recorded(ctx) {
        vec![]
    } else {
        match remove_source(ctx, &source).await? {
            Ok(done) => done,
            Err(waiting) => return Ok(waiting),
        }
    };

    // 5. Restart the vSphere pods so that they drop the source vCenter.
    let since = cleanup_start(ctx);
    match restart_pods(ctx).await? {
        // The source vCenter leaves the nodes' cloud config through a pool rollout.
        None => {
            if let Some(wait) = mcp::verdict(
                &ctx.machine_config_pools().await?,
                Some(since),
                POOLS,
                &format!("source vCenter {source} removed; vSphere pods restarted"),
            ) {
                return Ok(wait);
            }
            Ok(Outcome::Completed {
                message: format!(
                    "source vCenter {source} removed from the Infrastructure, cloud-provider-config and vsphere-creds; vSphere pods restarted; installer metadata in Secret {}",
                    metadata_secret_name(ctx.name())
                ),
            })
        }
        Some(waiting) => Ok(Outcome::Running {
            progress: REMOVED,
            message: format!(
                "source vCenter {source} removed{}; waiting for the restarted vSphere pods",
                if done.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", done.join(", "))
                }
            ),
            waiting_for: waiting,
            recheck: RECHECK,
        }),
    }
}

/// Removes the source vCenter from the Infrastructure, the cloud-provider
/// config and vsphere-creds and writes the installer metadata, each only if
/// still needed: what it changed, or (`Err`) the wait that holds it back.
async fn remove_source(
    ctx: &PhaseCtx,
    source: &str,
) -> Result<Result<Vec<&'static str>, Outcome>, PhaseError> {
    let client = ctx.client();
    let source = source.to_string();
    let mut done = vec![];

    // 1. Infrastructure (source vCenter and its failure domains), once
    //    nothing the machine API's admission policies look at refers to them.
    if let Some(waiting) = source_references(ctx, &source).await? {
        return Ok(Err(Outcome::Running {
            progress: 10,
            message: format!(
                "waiting until no Machine, MachineSet or ControlPlaneMachineSet refers to a failure domain of the source vCenter {source} before removing it (the machine API's admission policies deny it otherwise): {}",
                waiting.join("; ")
            ),
            waiting_for: waiting.into_iter().take(20).collect(),
            recheck: RECHECK,
        }));
    }
    match remove_from_infrastructure(ctx, &source).await {
        Ok(true) => done.push("Infrastructure"),
        Ok(false) => {}
        Err(e) if fd_refs::is_policy_denial(&e) => {
            return Ok(Err(Outcome::Running {
                progress: 10,
                message: format!("removing the source vCenter {source} was denied; retrying: {e}"),
                waiting_for: vec![e.to_string()],
                recheck: RECHECK,
            }));
        }
        Err(e) => return Err(e),
    }

    // 2. cloud-provider-config.
    let first = ctx
        .migration
        .control_plane_failure_domains()
        .first()
        .copied()
        .or_else(|| ctx.migration.spec.failure_domains.first())
        .cloned()
        .ok_or_else(|| PhaseError::fatal("spec.failureDomains is empty"))?;
    let infra_id = ctx.recorded_cluster()?.infra_id.clone();
    let src = source.clone();
    let (loc, cm, text) = ctx.cloud_config().await?;
    let changed = cloud_config::edit(client.clone(), &loc, cm, &text, |text| {
        let mut text = text.to_string();
        let mut changed = false;
        // INI: the [Workspace] must name a vCenter that stays.
        if let Some(t) = cloud_config::set_workspace(&text, &ini_workspace(&first, &infra_id))
            && t != text
        {
            text = t;
            changed = true;
        }
        if let Some(t) = cloud_config::remove_vcenter(&text, &src)? {
            text = t;
            changed = true;
        }
        Ok(changed.then_some(text))
    })
    .await?;
    if changed {
        ctx.log(
            LogLevel::Info,
            "config",
            format!("removed vCenter {source} from openshift-config/cloud-provider-config"),
        );
        done.push("cloud-provider-config");
    }

    // 3. vsphere-creds: drop the source pair (values never read here).
    let live_creds = ctx
        .secret(creds::CREDS_NAMESPACE, creds::CREDS_NAME)
        .await?
        .ok_or_else(|| PhaseError::fatal("reading kube-system/vsphere-creds: it does not exist"))?;
    if remove_creds(client.clone(), &live_creds, &source).await? {
        ctx.log(
            LogLevel::Info,
            "secrets",
            format!(
                "removed keys {}, {} from kube-system/vsphere-creds",
                creds::username_key(&source),
                creds::password_key(&source)
            ),
        );
        done.push("vsphere-creds");
    }

    // 4. The installer metadata for `openshift-install destroy cluster`.
    if write_metadata(ctx).await? {
        ctx.log(
            LogLevel::Info,
            "metadata",
            format!(
                "wrote the replacement installer metadata.json to Secret {}/{} (key {METADATA_KEY})",
                ctx.namespace(),
                metadata_secret_name(ctx.name())
            ),
        );
    }

    Ok(Ok(done))
}

/// What still refers to the source failure domains (`None`: nothing, or they
/// are gone already). Empty source MachineSets left behind are deleted here:
/// the MachineSet policy counts them even at 0 replicas.
async fn source_references(
    ctx: &PhaseCtx,
    source: &str,
) -> Result<Option<Vec<String>>, PhaseError> {
    let client = ctx.client();
    let Some(live) = ctx.infrastructure().await? else {
        return Ok(None);
    };
    if !live.failure_domains().iter().any(|f| f.server == source) {
        return Ok(None);
    }
    let sets = ctx.machine_sets().await?;
    let all = ctx.machines().await?;
    let mut waiting = vec![];
    for ms in machines::source_machinesets(&sets, source) {
        let name = ms.metadata.name.as_deref().unwrap_or("");
        if ms.metadata.deletion_timestamp.is_some() {
            waiting.push(format!("source MachineSet {name} being deleted"));
        } else if ms.spec.replicas.unwrap_or(1) == 0 && machines::machines_of(ms, &all).is_empty() {
            if machines::delete_empty_machineset(client.clone(), ms).await? {
                ctx.log(
                    LogLevel::Info,
                    "machines",
                    format!("deleted empty source MachineSet {name}"),
                );
            }
            waiting.push(format!("source MachineSet {name} to be deleted"));
        }
    }
    let kept: Vec<_> = live
        .failure_domains()
        .iter()
        .filter(|f| f.server != source)
        .cloned()
        .collect();
    waiting.extend(fd_refs::blockers(
        &kept,
        &ctx.machines().await?,
        &ctx.machine_sets().await?,
        &ctx.control_plane_machine_sets().await?,
    ));
    Ok((!waiting.is_empty()).then_some(waiting))
}

/// Removes the source vCenter and its failure domains from the Infrastructure
/// (lifting and restoring the CRD rule on the gate-off path); true when it changed.
async fn remove_from_infrastructure(ctx: &PhaseCtx, source: &str) -> Result<bool, PhaseError> {
    let r = infra::apply_edit(super::infra_edit(ctx).await?, |i| {
        infra::remove_vcenter(i, source)
    })
    .await?;
    if r.changed {
        ctx.log(
            LogLevel::Info,
            "infrastructure",
            format!("removed vCenter {source} and its failure domains from Infrastructure cluster"),
        );
    }
    if r.rule_restored {
        ctx.log(
            LogLevel::Info,
            "infrastructure",
            "restored the Infrastructure CRD vcenters rule",
        );
    }
    Ok(r.changed)
}

/// Restarts the vSphere pods once (pods created before this phase started
/// are the old ones); `None` when every group runs Ready new pods.
async fn restart_pods(ctx: &PhaseCtx) -> Result<Option<Vec<String>>, PhaseError> {
    let since = cleanup_start(ctx);
    let st = pods::restart_step(ctx, pods::VSPHERE_PODS, since).await?;
    if !st.deleted.is_empty() {
        ctx.log(
            LogLevel::Info,
            "pods",
            format!(
                "deleted {} vSphere pod(s) so they reload the configuration",
                st.deleted.len()
            ),
        );
    }
    Ok((!st.done()).then_some(st.waiting))
}

/// When this Cleanup began: pods created before are old, pool rollouts before are not ours.
fn cleanup_start(ctx: &PhaseCtx) -> jiff::Timestamp {
    ctx.migration
        .status
        .as_ref()
        .and_then(|s| s.current_phase_state.as_ref())
        .filter(|c| c.name == vcfm_api::PhaseName::Cleanup)
        .and_then(|c| c.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(ctx.now)
}

/// The INI `[Workspace]` for the first target failure domain.
fn ini_workspace(fd: &vcfm_api::FailureDomain, infra_id: &str) -> cloud_config::Workspace {
    let t = &fd.topology;
    cloud_config::Workspace {
        server: fd.server.clone(),
        datacenter: t.datacenter.trim_matches('/').to_string(),
        default_datastore: t
            .datastore
            .rsplit('/')
            .next()
            .unwrap_or(&t.datastore)
            .to_string(),
        folder: crate::openshift::machines::folder_for(fd, infra_id),
        resourcepool_path: t.resource_pool.clone(),
    }
}

/// Removes `<source>.username` / `<source>.password` from `live` (the
/// Secret as read; its resourceVersion guards the write); true when it
/// changed anything.
async fn remove_creds(
    client: kube::Client,
    live: &Secret,
    source: &str,
) -> Result<bool, PhaseError> {
    let api = Api::<Secret>::namespaced(client, creds::CREDS_NAMESPACE);
    let keys = [creds::username_key(source), creds::password_key(source)];
    let data = live.data.clone().unwrap_or_default();
    let present: Vec<&String> = keys.iter().filter(|k| data.contains_key(*k)).collect();
    if present.is_empty() {
        return Ok(false);
    }
    let remaining = creds::servers(live)
        .into_iter()
        .filter(|s| s != source)
        .count();
    if remaining == 0 {
        return Err(PhaseError::fatal(format!(
            "kube-system/vsphere-creds holds no credentials besides the source {source}: refusing to leave the cluster without vCenter credentials"
        )));
    }
    let nulls: BTreeMap<&String, Value> = present.into_iter().map(|k| (k, Value::Null)).collect();
    let patch =
        json!({ "metadata": { "resourceVersion": live.metadata.resource_version }, "data": nulls });
    api.patch(
        creds::CREDS_NAME,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| PhaseError::from(e).context("updating kube-system/vsphere-creds"))?;
    Ok(true)
}

/// The cluster name from the API URL (`https://api.<name>.<domain>:6443`),
/// else the infraID without its random suffix.
pub fn cluster_name(api_url: Option<&str>, infra_id: &str) -> String {
    if let Some(host) = api_url
        .and_then(|u| u.split("://").nth(1))
        .and_then(|rest| rest.split([':', '/']).next())
        && let Some(rest) = host.strip_prefix("api.")
        && let Some(name) = rest.split('.').next()
        && !name.is_empty()
    {
        return name.to_string();
    }
    match infra_id.rsplit_once('-') {
        Some((name, suffix)) if suffix.len() == 5 && !name.is_empty() => name.to_string(),
        _ => infra_id.to_string(),
    }
}

/// A target vCenter and the credentials `openshift-install destroy` logs in with.
/// No `Debug`: it holds a password.
#[derive(Clone, PartialEq, Eq)]
pub struct MetadataVCenter {
    pub server: String,
    pub username: String,
    pub password: String,
}

/// The installer's `metadata.json` for vSphere (installer `pkg/types`
/// `ClusterMetadata` + `vsphere.Metadata`): the first vCenter at the top level
/// as older installers read it, all of them in `vcenters` as newer ones do.
/// The destroyer logs in with these credentials, so the format carries the
/// password; the document therefore only ever goes into a Secret.
pub fn installer_metadata(
    cluster_name: &str,
    cluster_id: &str,
    infra_id: &str,
    vcenters: &[MetadataVCenter],
) -> Value {
    let first = vcenters.first();
    let list: Vec<Value> = vcenters
        .iter()
        .map(|v| json!({ "vCenter": v.server, "username": v.username, "password": v.password }))
        .collect();
    json!({
        "clusterName": cluster_name,
        "clusterID": cluster_id,
        "infraID": infra_id,
        "vsphere": {
            "vCenter": first.map(|v| v.server.as_str()).unwrap_or(""),
            "username": first.map(|v| v.username.as_str()).unwrap_or(""),
            "password": first.map(|v| v.password.as_str()).unwrap_or(""),
            "terraform_platform": "vsphere",
            "vcenters": list,
        }
    })
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

/// Writes (or refreshes) the metadata Secret; true when it changed.
async fn write_metadata(ctx: &PhaseCtx) -> Result<bool, PhaseError> {
    let client = ctx.client();
    let infra_id = ctx.recorded_cluster()?.infra_id.clone();
    let infra = ctx
        .infrastructure()
        .await?
        .ok_or_else(|| PhaseError::fatal("Infrastructure cluster does not exist"))?;
    let infra_v = serde_json::to_value(&infra).map_err(|e| PhaseError::fatal(e.to_string()))?;
    let api_url = infra_v
        .pointer("/status/apiServerURL")
        .and_then(Value::as_str);
    let cv = Api::<ClusterVersion>::all(client.clone())
        .get(VERSION_NAME)
        .await
        .map_err(|e| PhaseError::from(e).context("reading ClusterVersion"))?;
    let cluster_id = cv
        .spec
        .extra
        .get("clusterID")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let target_secret = ctx.target_secret().await?;
    let mut vcenters = vec![];
    for server in ctx.migration.target_servers() {
        // Validates both keys (message names keys, never values).
        let c = creds::credentials_for(&target_secret, server).map_err(PhaseError::Fatal)?;
        let password = secret_value(&target_secret, &creds::password_key(server))
            .map(|p| p.trim_end_matches(['\r', '\n']).to_string())
            .unwrap_or_default();
        vcenters.push(MetadataVCenter {
            server: server.to_string(),
            username: c.username().to_string(),
            password,
        });
    }
    let doc = installer_metadata(
        &cluster_name(api_url, &infra_id),
        &cluster_id,
        &infra_id,
        &vcenters,
    );
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| PhaseError::fatal(e.to_string()))?;
    let name = metadata_secret_name(ctx.name());
    let api = Api::<Secret>::namespaced(client, ctx.namespace());
    // Created first: it exists only when a Cleanup run that wrote it did not
    // get to record that (a crash, a retry), so the GET is only made then.
    // Not owned by the migration: it must outlive it (cluster destroy needs it).
    let s = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(
                METADATA_LABEL.to_string(),
                crate::openshift::machines::created_by_value(ctx.name()),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            METADATA_KEY.to_string(),
            ByteString(bytes.clone()),
        )])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &s).await {
        Ok(_) => return Ok(true),
        // AlreadyExists: compared below.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            return Err(PhaseError::from(e).context("creating the installer metadata Secret"));
        }
    }
    let current = api
        .get_opt(&name)
        .await
        .map_err(|e| PhaseError::from(e).context("reading the installer metadata Secret"))?
        .ok_or_else(|| {
            PhaseError::transient(format!(
                "the installer metadata Secret {name} was deleted while it was written; writing it again"
            ))
        })?;
    let same = current
        .data
        .as_ref()
        .and_then(|d| d.get(METADATA_KEY))
        .is_some_and(|b| b.0 == bytes);
    if same {
        return Ok(false);
    }
    let patch = json!({ "data": { METADATA_KEY: ByteString(bytes) } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| PhaseError::from(e).context("updating the installer metadata Secret"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_name_from_api_url_or_infra_id() {
        assert_eq!(
            cluster_name(
                Some("https://api.mycluster.example.com:6443"),
                "mycluster-x7k2p"
            ),
            "mycluster"
        );
        assert_eq!(cluster_name(None, "mycluster-x7k2p"), "mycluster");
        assert_eq!(
            cluster_name(Some("https://10.0.0.5:6443"), "ocp-abcde"),
            "ocp"
        );
        assert_eq!(cluster_name(None, "weird"), "weird");
    }

    #[test]
    fn metadata_has_the_installer_shape_and_only_targets() {
        let v = installer_metadata(
            "ocp",
            "0f0e-uuid",
            "ocp-abcde",
            &[MetadataVCenter {
                server: "vc-target".into(),
                username: "admin@vsphere.local".into(),
                password: "p".into(),
            }],
        );
        assert_eq!(v["clusterName"], "ocp");
        assert_eq!(v["clusterID"], "0f0e-uuid");
        assert_eq!(v["infraID"], "ocp-abcde");
        assert_eq!(v["vsphere"]["vCenter"], "vc-target");
        assert_eq!(v["vsphere"]["username"], "admin@vsphere.local");
        assert_eq!(v["vsphere"]["vcenters"][0]["vCenter"], "vc-target");
        assert_eq!(v["vsphere"]["vcenters"].as_array().map(Vec::len), Some(1));
    }
}
