//! The migrations this controller wrote whose new version its watch has not
//! delivered yet.
//!
//! Reconciles read the migration from the watch cache instead of GETting it.
//! Right after our own write that cache lags by one event, and a decision
//! taken on it would repeat the step just recorded. Until the watch delivers
//! the version we wrote, reconciles use the object the write returned. Writes
//! carry the resourceVersion they were based on either way, so a version we
//! have not seen (someone else's edit) is a 409 and a fresh read, never a
//! lost update.

use kube::ResourceExt;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use vcfm_api::VmwareCloudFoundationMigration;

type Vcfm = VmwareCloudFoundationMigration;

#[derive(Default)]
pub struct Written(Mutex<HashMap<String, Arc<Vcfm>>>);

fn key(m: &Vcfm) -> String {
    format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any())
}

impl Written {
    /// Remembers what a write returned.
    pub fn record(&self, m: Vcfm) -> Arc<Vcfm> {
        let m = Arc::new(m);
        if let Ok(mut w) = self.0.lock() {
            w.insert(key(&m), m.clone());
        }
        m
    }

    /// Called for each event of the migrations' watch, after the cache applied
    /// it: once the watch delivers the version we wrote, the cache holds it
    /// (and, events being ordered, whatever came before it). A re-list makes
    /// the cache current as of that list.
    pub fn observe(&self, ev: &watcher::Event<Vcfm>) {
        let Ok(mut w) = self.0.lock() else { return };
        match ev {
            watcher::Event::Apply(m) | watcher::Event::Delete(m) => {
                let k = key(m);
                if w.get(&k)
                    .is_some_and(|ours| ours.resource_version() == m.resource_version())
                {
                    w.remove(&k);
                }
            }
            watcher::Event::InitDone => w.clear(),
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }

    /// The newest version we know of `cached`: ours if the cache has not
    /// caught up with our last write of that same object.
    pub fn latest(&self, cached: Arc<Vcfm>) -> Arc<Vcfm> {
        let Ok(mut w) = self.0.lock() else {
            return cached;
        };
        let k = key(&cached);
        match w.get(&k) {
            Some(ours) if ours.uid() == cached.uid() && !caught_up(&cached, ours) => ours.clone(),
            Some(_) => {
                w.remove(&k);
                cached
            }
            None => cached,
        }
    }
}

/// Whether the cache's version is ours or a later one. resourceVersions are
/// opaque to clients, but the API server's (etcd's revision) and kube-sim's
/// are increasing integers: where both parse, a larger one is newer, which
/// covers a watch that never showed our exact version (a re-list, a watch
/// restarted from a later version). Otherwise only the same version counts.
fn caught_up(cached: &Vcfm, ours: &Vcfm) -> bool {
    let (c, o) = (cached.resource_version(), ours.resource_version());
    if c == o {
        return true;
    }
    match (
        c.as_deref().and_then(|v| v.parse::<u64>().ok()),
        o.as_deref().and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(c), Some(o)) => c >= o,
        _ => false,
    }
}

/// Our own last write of cluster objects other than migrations (the backup
/// Secret, Infrastructure `cluster`, the Infrastructure CRD), keyed by
/// `namespace/name`, for reads from watch caches that may not show it yet.
///
/// There is no hook on those watches here, so "caught up" is judged by
/// resourceVersion alone: a cached version numerically at least ours (see
/// [`caught_up`]) wins; so does the cache whenever either version does not
/// parse, which is the behaviour without this overlay (writes carry their
/// resourceVersion, a stale read costs a 409 and a fresh read).
pub struct Overlay<K>(Mutex<HashMap<String, Arc<K>>>);

impl<K> Default for Overlay<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: kube::Resource + Clone> Overlay<K> {
    /// Remembers what a write (or a fresh read) returned for `key`.
    pub fn record(&self, key: &str, o: &K) {
        if let Ok(mut w) = self.0.lock() {
            let mut o = o.clone();
            o.meta_mut().managed_fields = None;
            w.insert(key.to_string(), Arc::new(o));
        }
    }

    /// Forgets `key` (a fresh read found it absent).
    pub fn forget(&self, key: &str) {
        if let Ok(mut w) = self.0.lock() {
            w.remove(key);
        }
    }

    /// The newest version known of `key`: ours when the cache (`cached`, `None`
    /// when it holds no such object) has not caught up with it.
    pub fn latest(&self, key: &str, cached: Option<K>) -> Option<K> {
        let Ok(mut w) = self.0.lock() else {
            return cached;
        };
        let Some(ours) = w.get(key).cloned() else {
            return cached;
        };
        match cached {
            // Not in the cache yet: ours was created (or re-read) after the cache's view.
            None => Some(K::clone(&ours)),
            Some(c) => {
                if c.meta().uid == ours.meta().uid && newer(&*ours, &c) {
                    Some(K::clone(&ours))
                } else {
                    w.remove(key);
                    Some(c)
                }
            }
        }
    }
}

/// Whether `ours` is strictly newer than `cached` by integer resourceVersions
/// (false when either does not parse).
fn newer<K: kube::Resource>(ours: &K, cached: &K) -> bool {
    let n = |o: &K| {
        o.meta()
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    matches!((n(ours), n(cached)), (Some(o), Some(c)) if o > c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rv: &str, uid: &str) -> Vcfm {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "migration.openshift.io/v1alpha1",
            "kind": "VmwareCloudFoundationMigration",
            "metadata": {"name": "m", "namespace": "ns", "resourceVersion": rv, "uid": uid},
            "spec": {"targetVCenterCredentialsSecret": {"name": "t"},
                "failureDomains": [], "machineSetConfig": {"replicas": 1}},
        }))
        .unwrap()
    }

    #[test]
    fn our_write_wins_until_the_watch_delivers_it() {
        let w = Written::default();
        let cached = Arc::new(m("5", "u"));
        assert_eq!(
            w.latest(cached.clone()).resource_version().as_deref(),
            Some("5")
        );
        w.record(m("6", "u"));
        // The cache still shows 5: the reconcile works on our 6.
        assert_eq!(
            w.latest(cached.clone()).resource_version().as_deref(),
            Some("6")
        );
        // Another object of the same name (deleted and recreated) is not ours.
        assert_eq!(
            w.latest(Arc::new(m("9", "other")))
                .resource_version()
                .as_deref(),
            Some("9")
        );
        // (which also forgets ours: that object is gone)
        w.record(m("6", "u"));
        // Someone else's edit before ours arrives: still ours (the write of it
        // will 409 if the server has moved on).
        w.observe(&watcher::Event::Apply(m("5", "u")));
        assert_eq!(
            w.latest(cached.clone()).resource_version().as_deref(),
            Some("6")
        );
        // The watch delivers 6: from now on the cache is at least as new.
        w.observe(&watcher::Event::Apply(m("6", "u")));
        let newer = Arc::new(m("7", "u"));
        assert_eq!(w.latest(newer).resource_version().as_deref(), Some("7"));
        // A later version in the cache (its watch skipped ours): the cache's.
        w.record(m("8", "u"));
        assert_eq!(
            w.latest(Arc::new(m("9", "u")))
                .resource_version()
                .as_deref(),
            Some("9")
        );
        // A re-list also makes the cache current.
        w.record(m("8", "u"));
        w.observe(&watcher::Event::InitDone);
        assert_eq!(w.latest(cached).resource_version().as_deref(), Some("5"));
    }

    #[test]
    fn the_overlay_holds_our_write_until_the_cache_is_as_new() {
        let o: Overlay<Vcfm> = Overlay::default();
        let rv = |m: Option<Vcfm>| m.and_then(|m| m.resource_version());
        assert_eq!(rv(o.latest("k", Some(m("5", "u")))).as_deref(), Some("5"));
        o.record("k", &m("6", "u"));
        assert_eq!(rv(o.latest("k", None)).as_deref(), Some("6"));
        assert_eq!(rv(o.latest("k", Some(m("5", "u")))).as_deref(), Some("6"));
        // Recreated under another uid: the cache's.
        assert_eq!(rv(o.latest("k", Some(m("4", "x")))).as_deref(), Some("4"));
        o.record("k", &m("6", "u"));
        assert_eq!(rv(o.latest("k", Some(m("7", "u")))).as_deref(), Some("7"));
        // Forgotten once the cache caught up.
        assert_eq!(rv(o.latest("k", Some(m("5", "u")))).as_deref(), Some("5"));
        // Unparseable versions: the cache's.
        o.record("k", &m("b", "u"));
        assert_eq!(rv(o.latest("k", Some(m("a", "u")))).as_deref(), Some("a"));
    }
}
