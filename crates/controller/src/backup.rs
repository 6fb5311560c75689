//! Backups live in a Secret owned by the migration (`<name>-backup`), never in
//! status: the objects include vCenter passwords. Status records where each
//! backup is and its SHA-256, which every restore verifies first.
//!
//! The first backup of a key wins: a phase re-run after a crash must not
//! replace the original with an already-modified object.

use crate::error::{PhaseError, is_not_found};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use vcfm_api::{BackupManifest, VmwareCloudFoundationMigration};

/// Label on the backup Secret, for `kubectl get secrets -l`.
pub const BACKUP_LABEL: &str = "migration.openshift.io/backup-of";

/// Name of a migration's backup Secret.
pub fn secret_name(migration: &str) -> String {
    format!("{migration}-backup")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads and writes one migration's backups.
pub struct BackupStore {
    api: Api<Secret>,
    name: String,
    owner: Option<OwnerReference>,
    migration: String,
}

impl BackupStore {
    pub fn new(client: kube::Client, m: &VmwareCloudFoundationMigration) -> Self {
        let ns = m.namespace().unwrap_or_else(|| "default".into());
        Self {
            api: Api::namespaced(client, &ns),
            name: secret_name(&m.name_any()),
            owner: m.controller_owner_ref(&()),
            migration: m.name_any(),
        }
    }

    async fn get(&self) -> Result<Option<Secret>, PhaseError> {
        match self.api.get(&self.name).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(PhaseError::from(e).context("reading the backup Secret")),
        }
    }

    async fn ensure(&self) -> Result<Secret, PhaseError> {
        if let Some(s) = self.get().await? {
            return Ok(s);
        }
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([(
                    BACKUP_LABEL.to_string(),
                    self.migration.clone(),
                )])),
                owner_references: self.owner.clone().map(|o| vec![o]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        match self.api.create(&PostParams::default(), &s).await {
            Ok(s) => Ok(s),
            Err(kube::Error::Api(e)) if e.code == 409 => self.get().await?.ok_or_else(|| {
                PhaseError::transient("backup Secret vanished right after creation")
            }),
            Err(e) => Err(PhaseError::from(e).context("creating the backup Secret")),
        }
    }

    /// Stores `object` under `key` unless a backup of that key exists, and
    /// returns its manifest either way.
    pub async fn save(
        &self,
        key: &str,
        resource_type: &str,
        name: &str,
        namespace: Option<&str>,
        object: &Value,
        now: Timestamp,
    ) -> Result<BackupManifest, PhaseError> {
        let secret = self.ensure().await?;
        let existing = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone());
        let bytes = match existing {
            Some(b) => b,
            None => {
                let bytes = serde_json::to_vec(object)
                    .map_err(|e| PhaseError::fatal(format!("serialising backup {key}: {e}")))?;
                let mut data = BTreeMap::new();
                data.insert(key.to_string(), ByteString(bytes.clone()));
                let patch = serde_json::json!({ "data": data });
                self.api
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| PhaseError::from(e).context("writing the backup Secret"))?;
                bytes
            }
        };
        Ok(BackupManifest {
            resource_type: resource_type.to_string(),
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            secret_name: self.name.clone(),
            key: key.to_string(),
            sha256: sha256_hex(&bytes),
            backup_time: Time(now),
        })
    }

    /// Loads a backup, refusing it when its checksum does not match status.
    pub async fn load(&self, manifest: &BackupManifest) -> Result<Value, PhaseError> {
        let secret = self.get().await?.ok_or_else(|| {
            PhaseError::fatal(format!(
                "backup Secret {} is missing: cannot restore {}",
                self.name, manifest.key
            ))
        })?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&manifest.key))
            .ok_or_else(|| {
                PhaseError::fatal(format!(
                    "backup Secret {} has no key {}",
                    self.name, manifest.key
                ))
            })?;
        let actual = sha256_hex(&bytes.0);
        if actual != manifest.sha256 {
            return Err(PhaseError::fatal(format!(
                "backup {} in Secret {} fails its checksum (status records {}, found {actual}): refusing to restore a tampered or corrupt backup",
                manifest.key, self.name, manifest.sha256
            )));
        }
        serde_json::from_slice(&bytes.0).map_err(|e| {
            PhaseError::fatal(format!("backup {} is not valid JSON: {e}", manifest.key))
        })
    }
}

/// Finds the manifest of a backup key.
pub fn manifest<'a>(
    backups: &'a [BackupManifest],
    key: &str,
) -> Result<&'a BackupManifest, PhaseError> {
    backups.iter().find(|b| b.key == key).ok_or_else(|| {
        PhaseError::fatal(format!(
            "no backup {key} is recorded in status.backupManifests"
        ))
    })
}

/// Strips what the API server owns from an object before it is backed up.
pub fn clean_for_backup(mut v: Value) -> Value {
    if let Some(md) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            md.remove(k);
        }
    }
    v
}

/// Restores `field` (e.g. `spec` or `data`) of a live object from its backup,
/// writing with the live resourceVersion and retrying on conflict. Idempotent:
/// nothing is written when the live object already matches.
pub async fn restore_field<K>(
    api: &Api<K>,
    name: &str,
    backup: &Value,
    field: &str,
) -> Result<bool, PhaseError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let wanted = backup.get(field).cloned().unwrap_or(Value::Null);
    for _ in 0..5 {
        let live = api
            .get(name)
            .await
            .map_err(|e| PhaseError::from(e).context(&format!("reading {name} to restore it")))?;
        let mut live_v =
            serde_json::to_value(&live).map_err(|e| PhaseError::fatal(e.to_string()))?;
        if live_v.get(field) == Some(&wanted) || (wanted.is_null() && live_v.get(field).is_none()) {
            return Ok(false);
        }
        match live_v.as_object_mut() {
            Some(o) if wanted.is_null() => {
                o.remove(field);
            }
            Some(o) => {
                o.insert(field.to_string(), wanted.clone());
            }
            None => return Err(PhaseError::fatal(format!("{name} is not an object"))),
        }
        let obj: K = serde_json::from_value(live_v)
            .map_err(|e| PhaseError::fatal(format!("restored {name} does not parse: {e}")))?;
        match api.replace(name, &PostParams::default(), &obj).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(PhaseError::from(e).context(&format!("restoring {name}"))),
        }
    }
    Err(PhaseError::transient(format!(
        "restoring {name} kept conflicting with other writers"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_owned_metadata_is_not_backed_up() {
        let v = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "5", "uid": "u", "labels": {"x": "y"}}, "spec": {}});
        let c = clean_for_backup(v);
        assert_eq!(
            c["metadata"],
            serde_json::json!({"name": "a", "labels": {"x": "y"}})
        );
    }

    #[test]
    fn checksum_is_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
