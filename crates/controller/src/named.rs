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
//! The read that starts a watch waits for its first list, about the round
//! trip a GET would take, but never longer than [`FIRST_LIST_WAIT`] after the
//! watch started ([`Named::read`]): a phase step reads the object from the
//! watch from the first time on instead of with an extra GET. Until a watch
//! has its first list, reads go to the API; writes carry the resourceVersion read, so a store
//! behind the API server costs a 409 and a fresh read, never a lost update.
//! What our own writes return is kept ([`Named::record`]) and read instead of
//! the store until the store has caught up with it, so that no step acts on a
//! store that has not seen the write the step before made.
//!
//! The Infrastructure CRD is watched the same way ([`Named::cluster_dynamic`]):
//! as a `DynamicObject`, so that it round-trips whatever its schema holds.

use crate::streaming::ListMode;
use crate::written::Overlay;
use futures::{FutureExt, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long after a named watch started its reads wait for its first list
/// before they read the API instead: far more than the one round trip the
/// list takes, and bounded, so a watch that cannot list (an outage, RBAC)
/// delays a phase step by this once, never the reconcile loop for longer.
pub const FIRST_LIST_WAIT: Duration = Duration::from_secs(2);

type ApiFor<K> = Box<dyn Fn(&str) -> Api<K> + Send + Sync>;

/// Lazily started watches of named objects of one kind (namespace `""` for
/// a cluster-scoped kind).
pub struct Named<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    api: ApiFor<K>,
    dyntype: K::DynamicType,
    stop: CancellationToken,
    lists: ListMode,
    stores: Mutex<HashMap<(String, String), Store<K>>>,
    /// When a read first waited for each watch's first list (see [`FIRST_LIST_WAIT`]).
    started: Mutex<HashMap<(String, String), Instant>>,
    ours: Overlay<K>,
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
    pub fn new(client: kube::Client, stop: CancellationToken, lists: ListMode) -> Self {
        Self {
            api: Box::new(move |ns| Api::namespaced(client.clone(), ns)),
            dyntype: (),
            stop,
            lists,
            stores: Mutex::new(HashMap::new()),
            started: Mutex::new(HashMap::new()),
            ours: Overlay::default(),
        }
    }
}

impl Named<DynamicObject> {
    /// Named watches of a cluster-scoped kind, read as `DynamicObject`s.
    pub fn cluster_dynamic(
        client: kube::Client,
        stop: CancellationToken,
        lists: ListMode,
        ar: ApiResource,
    ) -> Self {
        let for_api = ar.clone();
        Self {
            api: Box::new(move |_| Api::all_with(client.clone(), &for_api)),
            dyntype: ar,
            stop,
            lists,
            stores: Mutex::new(HashMap::new()),
            started: Mutex::new(HashMap::new()),
            ours: Overlay::default(),
        }
    }
}

impl<K> Named<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    /// `Some(object)` or `Some(None)` (it does not exist) once the watch of
    /// `namespace/name` has its first list; `None` before (the caller reads
    /// the API), starting that watch if it is not running yet. Our own last
    /// write of it, when the store has not caught up with it yet.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Option<K>> {
        let store = self.store(namespace, name)?;
        match store.wait_until_ready().now_or_never() {
            Some(Ok(())) => {
                let mut r = ObjectRef::new_with(name, self.dyntype.clone());
                if !namespace.is_empty() {
                    r = r.within(namespace);
                }
                let cached = store.get(&r).map(|o| K::clone(&o));
                Some(self.ours.latest(&key(namespace, name), cached))
            }
            _ => None,
        }
    }

    /// As [`Self::cached`], but a watch started less than
    /// [`FIRST_LIST_WAIT`] ago (by this read or an earlier one) is first
    /// given the rest of that time to receive its first list.
    pub async fn read(&self, namespace: &str, name: &str) -> Option<Option<K>> {
        let store = self.store(namespace, name)?;
        let started = *self
            .started
            .lock()
            .ok()?
            .entry((namespace.to_string(), name.to_string()))
            .or_insert_with(Instant::now);
        let left = FIRST_LIST_WAIT.saturating_sub(started.elapsed());
        if !left.is_zero() {
            // A timeout or a watch that ended: the caller reads the API.
            let _ = tokio::time::timeout(left, store.wait_until_ready()).await;
        }
        self.cached(namespace, name)
    }

    /// Keeps what a write of `namespace/name` returned (or a fresh read
    /// found: `None` when absent), read instead of the store until the store
    /// shows that version or a later one.
    pub fn record(&self, namespace: &str, name: &str, o: Option<&K>) {
        match o {
            Some(o) => self.ours.record(&key(namespace, name), o),
            None => self.ours.forget(&key(namespace, name)),
        }
    }

    /// The objects watched so far, by `namespace/name` (for tests and metrics).
    pub fn watched(&self) -> Vec<String> {
        let Ok(s) = self.stores.lock() else {
            return vec![];
        };
        let mut v: Vec<String> = s.keys().map(|(ns, n)| key(ns, n)).collect();
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
        let writer = reflector::store::Writer::new(self.dyntype.clone());
        let reader = writer.as_reader();
        let api = (self.api)(namespace);
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let events = crate::streaming::watch(api, cfg, self.lists.clone())
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

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}
