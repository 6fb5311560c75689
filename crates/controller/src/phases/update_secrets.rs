//! Phase 4: add the target vCenter credentials to `kube-system/vsphere-creds`,
//! from where the cloud-credential operator hands them to the components.
//! An existing pair is never overwritten.

use super::{Phase, RollbackOutcome};
use crate::backup::{BackupStore, manifest, undo_object};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::creds;
use crate::phases::backup::keys;
use crate::state::Outcome;
use crate::undo;
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::collections::BTreeMap;
use vcfm_api::LogLevel;

pub struct UpdateSecrets;

impl Phase for UpdateSecrets {
    fn execute<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<Outcome, PhaseError>> {
        Box::pin(async move {
            let target = ctx.target_secret().await?;
            let api = Api::<Secret>::namespaced(ctx.client(), creds::CREDS_NAMESPACE);
            let live = ctx
                .secret(creds::CREDS_NAMESPACE, creds::CREDS_NAME)
                .await?
                .ok_or_else(|| {
                    PhaseError::fatal("Secret kube-system/vsphere-creds does not exist")
                })?;
            let live_data = live.data.clone().unwrap_or_default();
            let mut add: BTreeMap<String, ByteString> = BTreeMap::new();
            for server in ctx.migration.target_servers() {
                let (uk, pk) = (creds::username_key(server), creds::password_key(server));
                if live_data.contains_key(&uk) && live_data.contains_key(&pk) {
                    ctx.log(LogLevel::Info, "secrets", format!("kube-system/vsphere-creds already holds credentials for {server}; kept as they are"));
                    continue;
                }
                // Validates presence without exposing values.
                creds::credentials_for(&target, server).map_err(PhaseError::Fatal)?;
                for k in [&uk, &pk] {
                    if let Some(v) = target.data.as_ref().and_then(|d| d.get(k)) {
                        add.insert(k.clone(), v.clone());
                    }
                }
                ctx.log(
                    LogLevel::Info,
                    "secrets",
                    format!("adding keys {uk}, {pk} to kube-system/vsphere-creds"),
                );
            }
            // What vcfm is about to write, recorded first so that rollback
            // removes exactly these keys (and reports them if someone else
            // changes them meanwhile).
            let mut written = live_data.clone();
            written.extend(add.clone());
            let record = undo::diff(
                undo::secret_units,
                &json!({ "data": live_data }),
                &json!({ "data": written }),
            );
            if let Some(m) = BackupStore::of(ctx)
                .save_changes(
                    keys::VSPHERE_CREDS_CHANGES,
                    "v1/Secret changes",
                    creds::CREDS_NAME,
                    Some(creds::CREDS_NAMESPACE),
                    &record,
                    ctx.now,
                )
                .await?
            {
                ctx.record(|u| u.backups.push(m));
            }
            if !add.is_empty() {
                // Guarded by the resourceVersion read: a pair someone added
                // since (the read is from a watch) is never overwritten; a
                // 409 makes the next step read again.
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": live.metadata.resource_version},
                    "data": add,
                });
                match api
                    .patch(
                        creds::CREDS_NAME,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(s) => ctx.wrote_secret(creds::CREDS_NAMESPACE, creds::CREDS_NAME, &s),
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        return Err(PhaseError::transient(
                            "kube-system/vsphere-creds changed meanwhile; retrying with a fresh read",
                        ));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(Outcome::Completed {
                message: format!(
                    "kube-system/vsphere-creds holds credentials for {}",
                    ctx.migration.target_servers().join(", ")
                ),
            })
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a PhaseCtx,
    ) -> BoxFuture<'a, Result<RollbackOutcome, PhaseError>> {
        Box::pin(async move {
            let store = BackupStore::of(ctx);
            let original = store
                .load(manifest(ctx.backups(), keys::VSPHERE_CREDS)?)
                .await?;
            let recorded = store
                .load_changes(ctx.backups(), keys::VSPHERE_CREDS_CHANGES)
                .await?;
            // Backups from before change records: the target keys the
            // original lacked are taken as vcfm's.
            let targets: Vec<undo::Path> = ctx
                .migration
                .target_servers()
                .into_iter()
                .flat_map(|s| [creds::username_key(s), creds::password_key(s)])
                .filter(|k| original.get("data").and_then(|d| d.get(k)).is_none())
                .map(|k| vec![undo::field("data"), undo::field(&k)])
                .collect();
            let api = Api::<Secret>::namespaced(ctx.client(), creds::CREDS_NAMESPACE);
            let live = ctx
                .secret(creds::CREDS_NAMESPACE, creds::CREDS_NAME)
                .await?
                .ok_or_else(|| {
                    PhaseError::fatal("reading vsphere-creds to roll it back: it does not exist")
                })?;
            let (plan, written) = undo_object(&api, creds::CREDS_NAME, &live, &original, |live| {
                recorded.unwrap_or_else(|| undo::ChangeRecord::assumed(live, targets))
            })
            .await?;
            if let Some(s) = &written {
                ctx.wrote_secret(creds::CREDS_NAMESPACE, creds::CREDS_NAME, s);
            }
            Ok(super::undo_outcome(ctx, "kube-system/vsphere-creds", &plan))
        })
    }
}
