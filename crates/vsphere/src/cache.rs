//! Process-wide session cache: one client (one SOAP + one REST session) per (server, user),
//! shared by all phases of all migrations, so phases do not log in on every reconcile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::client::{Client, ClientConfig};
use crate::error::Result;

#[derive(Default)]
struct Entry {
    fingerprint: String,
    client: Option<Client>,
}

/// Hands out cheap clones of one [`Client`] per (server, user).
///
/// A request with a different password or trust settings for the same key (rotated
/// credentials, new CA) replaces the cached client; the old one logs out when dropped.
#[derive(Clone, Default)]
pub struct SessionCache {
    entries: Arc<Mutex<HashMap<(String, String), Entry>>>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("clients", &self.len())
            .finish()
    }
}

fn fingerprint(cfg: &ClientConfig) -> String {
    let mut h = Sha256::new();
    h.update(cfg.credentials.password().as_bytes());
    h.update([0]);
    h.update(cfg.tls.fingerprint().as_bytes());
    hex::encode(h.finalize())
}

impl SessionCache {
    /// The shared client for `config.server` and its user, created on first use.
    pub fn client(&self, config: ClientConfig) -> Result<Client> {
        let key = (
            config.server.to_ascii_lowercase(),
            config.credentials.username().to_string(),
        );
        let fp = fingerprint(&config);
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = entries.entry(key).or_default();
        if let (Some(c), true) = (&entry.client, entry.fingerprint == fp) {
            return Ok(c.clone());
        }
        let client = Client::new(config)?;
        entry.fingerprint = fp;
        entry.client = Some(client.clone());
        Ok(client)
    }

    /// Number of cached clients.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// True when no client is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Logs every cached client out and empties the cache (controller shutdown).
    pub async fn logout_all(&self) {
        let clients: Vec<Client> = {
            let mut entries = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            entries.drain().filter_map(|(_, e)| e.client).collect()
        };
        for c in clients {
            if let Err(e) = c.logout().await {
                tracing::warn!(server = c.server(), error = %e, "logout failed");
            }
        }
    }
}
