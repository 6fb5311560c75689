//! Backups live in a Secret (`<name>-backup`), never in status: the objects
//! include vCenter passwords. The Secret is deliberately not owned by the
//! migration: garbage collection would otherwise delete the only backup with
//! a migration that was force-deleted half-way. It is found by its labels. Status records where each
//! backup is and its HMAC-SHA256, which every restore verifies first.
//!
//! The HMAC key is random and kept only in the backup Secret (key
//! [`DIGEST_KEY`]). A plain SHA-256 of predictable content (a known Secret
//! layout around a password) would let anyone who can read the migration's
//! status test password guesses offline; an HMAC under a key they cannot read
//! tells them nothing. HMAC is written out over `sha2` (RFC 2104, checked
//! against the RFC 4231 vectors) rather than pulling in a crate for 15 lines.
//!
//! The first backup of a key wins: a phase re-run after a crash must not
//! replace the original with an already-modified object.

use crate::error::{PhaseError, is_not_found};
use crate::undo::{ChangeRecord, Plan};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use vcfm_api::{BackupManifest, VmwareCloudFoundationMigration};

/// Label on the backup Secret, for `kubectl get secrets -l`.
pub const BACKUP_LABEL: &str = "migration.openshift.io/backup-of";

/// Annotation on the backup Secret: the uid of the migration that wrote it.
pub const MIGRATION_UID_ANNOTATION: &str = "migration.openshift.io/migration-uid";

/// Annotation on the backup Secret: how its migration ended when it was
/// deleted ([`OUTCOME_COMPLETED`], [`OUTCOME_ROLLED_BACK`], or another value
/// meaning the cluster may still hold its changes).
pub const OUTCOME_ANNOTATION: &str = "migration.openshift.io/migration-outcome";
pub const OUTCOME_COMPLETED: &str = "Completed";
pub const OUTCOME_ROLLED_BACK: &str = "RolledBack";
pub const OUTCOME_ROLLBACK_INCOMPLETE: &str = "RollbackIncomplete";
pub const OUTCOME_FORCE_DELETED: &str = "ForceDeleted";

/// Records on the backup Secret how its migration ended, before the
/// migration goes; a missing Secret (nothing was backed up) is fine.
pub async fn mark_outcome(
    client: kube::Client,
    m: &VmwareCloudFoundationMigration,
    outcome: &str,
) -> Result<(), PhaseError> {
    let ns = m.namespace().unwrap_or_else(|| "default".into());
    let patch = serde_json::json!({"metadata": {"annotations": {OUTCOME_ANNOTATION: outcome}}});
    match Api::<Secret>::namespaced(client, &ns)
        .patch(
            &secret_name(&m.name_any()),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(PhaseError::from(e).context("recording the outcome on the backup Secret")),
    }
}

/// Name of a migration's backup Secret.
pub fn secret_name(migration: &str) -> String {
    format!("{migration}-backup")
}

/// Secret key holding the hex HMAC key; no backup key can take this name
/// (backup keys are `<object>.json`).
pub const DIGEST_KEY: &str = "digest-key";

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Hex HMAC-SHA256, as recorded in `status.backupManifests[].hmacSha256`.
pub fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    hex::encode(hmac_sha256(key, msg))
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guessed digest is right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The decoded HMAC key of a backup Secret, if it has a valid one.
pub fn digest_key(secret: &Secret) -> Option<Vec<u8>> {
    let hexed = secret.data.as_ref()?.get(DIGEST_KEY)?;
    hex::decode(&hexed.0).ok().filter(|k| k.len() == 32)
}

fn new_digest_key() -> Result<String, PhaseError> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k)
        .map_err(|e| PhaseError::fatal(format!("no OS randomness for the backup key: {e}")))?;
    Ok(hex::encode(k))
}

/// One object to back up (see [`BackupStore::save_all`]).
pub struct Entry<'a> {
    pub key: &'a str,
    pub resource_type: &'a str,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub object: Value,
}

/// Reads and writes one migration's backups.
///
/// The Secret is read from its named watch ([`crate::named`]) when the
/// controller runs with one, and from the API otherwise or after a conflict.
/// Every write carries the resourceVersion it was computed on, so a copy
/// behind the API server costs a 409 and a fresh read, never a backup
/// replaced or a change record lost; what a write returns is kept for the
/// next read until the watch shows it.
pub struct BackupStore {
    api: Api<Secret>,
    namespace: String,
    name: String,
    uid: Option<String>,
    migration: String,
    named: Option<std::sync::Arc<crate::named::Named<Secret>>>,
}

impl BackupStore {
    /// Without a watch cache: every read goes to the API.
    pub fn new(client: kube::Client, m: &VmwareCloudFoundationMigration) -> Self {
        let ns = m.namespace().unwrap_or_else(|| "default".into());
        Self {
            api: Api::namespaced(client, &ns),
            namespace: ns,
            name: secret_name(&m.name_any()),
            uid: m.uid(),
            migration: m.name_any(),
            named: None,
        }
    }

    /// The store of a phase step's migration, reading from the step's watch caches.
    pub fn of(ctx: &crate::context::PhaseCtx) -> Self {
        let mut s = Self::new(ctx.client(), &ctx.migration);
        s.named = ctx.caches().map(|c| c.secrets.clone());
        s
    }

    /// Starts the Secret's watch ahead of the first backup, so that Backup
    /// reads it from there instead of from the API.
    pub fn start_watch(&self) {
        if let Some(n) = &self.named {
            let _ = n.cached(&self.namespace, &self.name);
        }
    }

    /// The Secret from the watch (or our last write), or from the API when
    /// `fresh`, there is no watch, or it has not synced.
    async fn read(&self, fresh: bool) -> Result<Option<Secret>, PhaseError> {
        if !fresh
            && let Some(n) = &self.named
            && let Some(v) = n.read(&self.namespace, &self.name).await
        {
            return Ok(v);
        }
        let got = match self.api.get(&self.name).await {
            Ok(s) => Some(s),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(PhaseError::from(e).context("reading the backup Secret")),
        };
        self.remember(got.as_ref());
        Ok(got)
    }

    /// Keeps the newest version we know (a write's result, a fresh read) for the next read.
    fn remember(&self, s: Option<&Secret>) {
        if let Some(n) = &self.named {
            n.record(&self.namespace, &self.name, s);
        }
    }

    /// A merge patch carrying `rv` as precondition; `Ok(None)` on a conflict
    /// (or the Secret gone), when the caller reads afresh and tries again.
    async fn patch_at(
        &self,
        rv: Option<String>,
        data: serde_json::Map<String, Value>,
        what: &str,
    ) -> Result<Option<Secret>, PhaseError> {
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": rv},
            "data": data,
        });
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(s) => {
                self.remember(Some(&s));
                Ok(Some(s))
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(None),
            Err(e) => Err(PhaseError::from(e).context(what)),
        }
    }

    /// The backup Secret and its HMAC key, creating either when missing.
    async fn ensure(&self, mut fresh: bool) -> Result<(Secret, Vec<u8>), PhaseError> {
        for _ in 0..5 {
            let s = self.ensure_secret(fresh).await?;
            if let Some(k) = digest_key(&s) {
                return Ok((s, k));
            }
            if s.data.as_ref().is_some_and(|d| !d.is_empty()) {
                // Backups without a key cannot be verified; adding one now
                // would vouch for content nobody checked.
                return Err(PhaseError::fatal(format!(
                    "backup Secret {} holds backups but no {DIGEST_KEY}: it was not written by this vcfm; move it away and run Backup again",
                    self.name
                )));
            }
            // Guarded by resourceVersion: if another writer added a key
            // first, that one is kept and we read it on the next pass.
            let mut data = serde_json::Map::new();
            data.insert(
                DIGEST_KEY.into(),
                serde_json::to_value(ByteString(new_digest_key()?.into_bytes()))
                    .map_err(|e| PhaseError::fatal(e.to_string()))?,
            );
            let rv = s.metadata.resource_version.clone();
            match self
                .patch_at(rv, data, "adding the key to the backup Secret")
                .await?
            {
                Some(s) => {
                    if let Some(k) = digest_key(&s) {
                        return Ok((s, k));
                    }
                }
                None => fresh = true,
            }
        }
        Err(PhaseError::transient(
            "the backup Secret kept changing while its key was being added",
        ))
    }

    async fn ensure_secret(&self, fresh: bool) -> Result<Secret, PhaseError> {
        if let Some(s) = self.read(fresh).await? {
            return Ok(s);
        }
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([(
                    BACKUP_LABEL.to_string(),
                    self.migration.clone(),
                )])),
                annotations: self
                    .uid
                    .clone()
                    .map(|u| BTreeMap::from([(MIGRATION_UID_ANNOTATION.to_string(), u)])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                DIGEST_KEY.to_string(),
                ByteString(new_digest_key()?.into_bytes()),
            )])),
            ..Default::default()
        };
        match self.api.create(&PostParams::default(), &s).await {
            Ok(s) => {
                self.remember(Some(&s));
                Ok(s)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => self.read(true).await?.ok_or_else(|| {
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
        let e = Entry {
            key,
            resource_type,
            name,
            namespace,
            object: object.clone(),
        };
        let mut v = self.save_all(vec![e], now).await?;
        v.pop()
            .ok_or_else(|| PhaseError::fatal(format!("no manifest for backup {key}")))
    }

    /// Stores each entry whose key holds no backup yet, all in one write
    /// (so a crash leaves either all of them or none), and returns every
    /// entry's manifest, in order. The first backup of a key wins: an entry
    /// whose key exists keeps what is there.
    pub async fn save_all(
        &self,
        entries: Vec<Entry<'_>>,
        now: Timestamp,
    ) -> Result<Vec<BackupManifest>, PhaseError> {
        let mut fresh = false;
        for _ in 0..5 {
            let (secret, digest_key) = self.ensure(fresh).await?;
            let data = secret.data.clone().unwrap_or_default();
            let mut add = serde_json::Map::new();
            let mut out = vec![];
            for e in &entries {
                let bytes = match data.get(e.key) {
                    Some(b) => b.0.clone(),
                    None => {
                        let bytes = serde_json::to_vec(&e.object).map_err(|err| {
                            PhaseError::fatal(format!("serialising backup {}: {err}", e.key))
                        })?;
                        add.insert(
                            e.key.to_string(),
                            serde_json::to_value(ByteString(bytes.clone()))
                                .map_err(|err| PhaseError::fatal(err.to_string()))?,
                        );
                        bytes
                    }
                };
                out.push(BackupManifest {
                    resource_type: e.resource_type.to_string(),
                    name: e.name.to_string(),
                    namespace: e.namespace.map(str::to_string),
                    secret_name: self.name.clone(),
                    key: e.key.to_string(),
                    hmac_sha256: hmac_hex(&digest_key, &bytes),
                    backup_time: Time(now),
                });
            }
            if add.is_empty() {
                return Ok(out);
            }
            // Guarded by resourceVersion: a copy behind the API server must
            // not replace a backup another step already took.
            let rv = secret.metadata.resource_version.clone();
            match self.patch_at(rv, add, "writing the backup Secret").await? {
                Some(_) => return Ok(out),
                None => fresh = true,
            }
        }
        Err(PhaseError::transient(
            "the backup Secret kept changing while backups were written",
        ))
    }

    /// Loads a backup, refusing it when its HMAC does not match status.
    pub async fn load(&self, manifest: &BackupManifest) -> Result<Value, PhaseError> {
        // A cached copy that holds what status vouches for is those very
        // bytes; anything else is judged on a fresh read.
        let secret = match self.read(false).await? {
            Some(s) if holds(&s, manifest) => Some(s),
            _ if self.named.is_some() => self.read(true).await?,
            other => other,
        };
        let secret = secret.ok_or_else(|| {
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
        let key = digest_key(&secret).ok_or_else(|| {
            PhaseError::fatal(format!(
                "backup Secret {} has no valid {DIGEST_KEY}: cannot verify {}, refusing to restore it",
                self.name, manifest.key
            ))
        })?;
        if !verify(&key, &bytes.0, &manifest.hmac_sha256) {
            return Err(PhaseError::fatal(format!(
                "backup {} in Secret {} does not match the HMAC recorded in status: refusing to restore a tampered or corrupt backup",
                manifest.key, self.name
            )));
        }
        serde_json::from_slice(&bytes.0).map_err(|e| {
            PhaseError::fatal(format!("backup {} is not valid JSON: {e}", manifest.key))
        })
    }
}

impl BackupStore {
    /// Merges `record` into the change record kept under `key` (what vcfm
    /// wrote to one object, see [`crate::undo`]) and returns its manifest;
    /// `None` when there is no record and nothing to add. Called before the
    /// write it describes, and again on every run of the phase so that the
    /// manifest reaches status even after a crash.
    pub async fn save_changes(
        &self,
        key: &str,
        resource_type: &str,
        name: &str,
        namespace: Option<&str>,
        record: &ChangeRecord,
        now: Timestamp,
    ) -> Result<Option<BackupManifest>, PhaseError> {
        let mut fresh = false;
        for _ in 0..5 {
            let (secret, digest_key) = self.ensure(fresh).await?;
            let existing = secret.data.as_ref().and_then(|d| d.get(key));
            if existing.is_none() && record.changes.is_empty() {
                return Ok(None);
            }
            let mut merged: ChangeRecord = match existing {
                Some(b) => serde_json::from_slice(&b.0).map_err(|e| invalid_record(key, &e))?,
                None => ChangeRecord::default(),
            };
            let grew = merged.merge(record) || existing.is_none();
            let bytes = serde_json::to_vec(&merged)
                .map_err(|e| PhaseError::fatal(format!("serialising {key}: {e}")))?;
            if grew {
                // Guarded by resourceVersion: two writers never lose each other's changes.
                let mut data = serde_json::Map::new();
                data.insert(
                    key.to_string(),
                    serde_json::to_value(ByteString(bytes.clone()))
                        .map_err(|e| PhaseError::fatal(e.to_string()))?,
                );
                let rv = secret.metadata.resource_version.clone();
                if self
                    .patch_at(rv, data, "writing a change record")
                    .await?
                    .is_none()
                {
                    fresh = true;
                    continue;
                }
            }
            return Ok(Some(BackupManifest {
                resource_type: resource_type.to_string(),
                name: name.to_string(),
                namespace: namespace.map(str::to_string),
                secret_name: self.name.clone(),
                key: key.to_string(),
                hmac_sha256: hmac_hex(&digest_key, &bytes),
                backup_time: Time(now),
            }));
        }
        Err(PhaseError::transient(
            "the backup Secret kept changing while a change record was written",
        ))
    }

    /// The change record under `key`, verified against status; `None` when
    /// status records none (a backup from before change records existed).
    pub async fn load_changes(
        &self,
        backups: &[BackupManifest],
        key: &str,
    ) -> Result<Option<ChangeRecord>, PhaseError> {
        let Ok(m) = manifest(backups, key) else {
            return Ok(None);
        };
        let v = self.load(m).await?;
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| invalid_record(key, &e))
    }
}

/// A change record that does not parse. serde's message may quote the value
/// it met (a credential, in `vsphere-creds.changes.json`), so only its
/// category and position are reported.
fn invalid_record(key: &str, e: &serde_json::Error) -> PhaseError {
    PhaseError::fatal(format!(
        "change record {key} in the backup Secret is not a valid record ({:?} error at line {}, column {}): rollback cannot tell what vcfm wrote; restore by hand",
        e.classify(),
        e.line(),
        e.column()
    ))
}

/// Whether `bytes` carry the recorded hex HMAC under `key`.
pub fn verify(key: &[u8], bytes: &[u8], recorded_hex: &str) -> bool {
    hex::decode(recorded_hex).is_ok_and(|r| same(&r, &hmac_sha256(key, bytes)))
}

/// Whether `secret` (a backup Secret) holds under `m.key` exactly what `m`
/// vouches for: its HMAC matches. A copy from a watch cache that passes holds
/// the very bytes status records, so it needs no fresh read.
pub fn holds(secret: &Secret, m: &BackupManifest) -> bool {
    let Some(key) = digest_key(secret) else {
        return false;
    };
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(&m.key))
        .is_some_and(|b| verify(&key, &b.0, &m.hmac_sha256))
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

/// Undoes vcfm's recorded changes on `live` (see [`crate::undo`]), as read
/// (from a watch cache, say): `record` gives them for its value. Writes with
/// the resourceVersion of `live` (a conflict is transient: the step reads
/// again) and only when something is to be restored. Returns the plan
/// carried out and what the write returned.
pub async fn undo_object<K>(
    api: &Api<K>,
    name: &str,
    live: &K,
    original: &Value,
    record: impl FnOnce(&Value) -> ChangeRecord,
) -> Result<(Plan, Option<K>), PhaseError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut v = serde_json::to_value(live).map_err(|e| PhaseError::fatal(e.to_string()))?;
    let plan = Plan::new(original, &record(&v), &v);
    let mut written = None;
    if plan.apply(&mut v) {
        let obj: K = serde_json::from_value(v)
            .map_err(|e| PhaseError::fatal(format!("rolled-back {name} does not parse: {e}")))?;
        written = Some(
            api.replace(name, &PostParams::default(), &obj)
                .await
                .map_err(|e| PhaseError::from(e).context(&format!("rolling back {name}")))?,
        );
    }
    Ok((plan, written))
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

    /// RFC 4231 test cases 1, 2, 6 (a key longer than the block) and 7.
    #[test]
    fn hmac_matches_the_rfc_4231_vectors() {
        let long_key = [0xaa; 131];
        let cases: [(&[u8], &[u8], &str); 4] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &long_key,
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, msg, want) in cases {
            assert_eq!(hmac_hex(key, msg), want);
        }
    }

    #[test]
    fn a_changed_byte_or_another_key_fails_verification() {
        let key = [7u8; 32];
        let data = br#"{"data":{"vc.password":"c2VjcmV0"}}"#;
        let digest = hmac_hex(&key, data);
        assert!(verify(&key, data, &digest));
        let mut tampered = data.to_vec();
        tampered[20] ^= 1;
        assert!(!verify(&key, &tampered, &digest));
        assert!(!verify(&[8u8; 32], data, &digest));
        assert!(!verify(&key, data, "not hex"));
        assert!(!verify(&key, data, &digest[..62]));
        // Not the plain SHA-256 a status reader could recompute from a guess.
        assert_ne!(digest, hex::encode(Sha256::digest(data)));
    }

    /// serde quotes the value it met; a record holding credentials must not
    /// put one into a status message.
    #[test]
    fn an_invalid_change_record_is_reported_without_its_content() {
        let bytes = br#"{"changes": "c2VjcmV0LXBhc3N3b3Jk"}"#;
        let e = serde_json::from_slice::<ChangeRecord>(bytes).unwrap_err();
        assert!(e.to_string().contains("c2VjcmV0"), "serde quotes it: {e}");
        let msg = invalid_record("vsphere-creds.changes.json", &e).to_string();
        assert!(!msg.contains("c2VjcmV0"), "{msg}");
        assert!(msg.contains("vsphere-creds.changes.json"), "{msg}");
    }

    #[test]
    fn only_a_32_byte_hex_key_is_a_digest_key() {
        let with = |v: &str| Secret {
            data: Some(BTreeMap::from([(
                DIGEST_KEY.to_string(),
                ByteString(v.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        assert_eq!(digest_key(&with(&"ab".repeat(32))), Some(vec![0xab; 32]));
        assert_eq!(digest_key(&with("abcd")), None);
        assert_eq!(digest_key(&with(&"zz".repeat(32))), None);
        assert_eq!(digest_key(&Secret::default()), None);
    }
}
