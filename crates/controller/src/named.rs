//! Watch caches of single named objects (a Secret, a ConfigMap), each watch
//! pinned to its one object by the field selector `metadata.name=<name>` in
//! its namespace and started the first time the object is read.
//!
//! The phases read the same few Secrets and ConfigMaps on every step: the
//! target credentials the migration names, `kube-system/vsphere-creds`, the
//! cloud-provider configuration. Which ones is known only from the migrations
//! and the Infrastructure, so the watches start on demand instead of at
//! start-up. Only the objects asked for are ever held in memory: never a
//! namespace's or the cluster's Secrets (RBAC grants list and watch on
//! those names only, as a list or watch pinned to one name is authorized
//! like a get of it: kube-apiserver `request.RequestInfoFactory` takes the
//! name from the `metadata.name` field selector).
//!
//! Until a watch has its first list, reads go to the API (see
//! [`Named::cached`]); writes carry the resourceVersion read, so a store
//! behind the API server costs a 409 and a fresh read, never a lost update.

use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Lazily started watches of named objects of one namespaced kind.
pub struct Named<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    client: kube::Client,
    stop: CancellationToken,
    stores: Mutex<HashMap<(String, String), Store<K>>>,
}

impl<K> Named<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// Watches started later end when `stop` is cancelled.
    pub fn new(client: kube::Client, stop: CancellationToken) -> Self {
        Self {
            client,
            stop,
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(object)` or `Some(None)` (it does not exist) once the watch of
    /// `namespace/name` has its first list; `None` before (the caller reads
    /// the API), starting that watch if it is not running yet.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Option<K>> {
        let store = self.store(namespace, name)?;
        match store.wait_until_ready().now_or_never() {
            Some(Ok(())) => Some(
                store
                    .get(&ObjectRef::new(name).within(namespace))
                    .map(|o| K::clone(&o)),
            ),
            _ => None,
        }
    }

    /// The objects watched so far, by `namespace/name` (for tests and metrics).
    pub fn watched(&self) -> Vec<String> {
        let Ok(s) = self.stores.lock() else {
            return vec![];
        };
        let mut v: Vec<String> = s.keys().map(|(ns, n)| format!("{ns}/{n}")).collect();
        v.sort();
        v
    }

    fn store(&self, namespace: &str, name: &str) -> Option<Store<K>> {
        let mut stores = self.stores.lock().ok()?;
        let key = (namespace.to_string(), name.to_string());
        if let Some(s) = stores.get(&key) {
            return Some(s.clone());
        }
        // Outside a runtime (unit tests, `vcfm plan`) there is nothing to run a watch on.
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let (reader, writer) = reflector::store();
        let api = Api::<K>::namespaced(self.client.clone(), namespace);
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let events = watcher(api, cfg)
            .default_backoff()
            .modify(|o: &mut K| o.managed_fields_mut().clear())
            .reflect(writer);
        let stop = self.stop.clone();
        rt.spawn(async move {
            let drain = events.for_each(|_| async {});
            tokio::select! {
                _ = drain => {}
                _ = stop.cancelled() => {}
            }
        });
        stores.insert(key, reader.clone());
        Some(reader)
    }
}
