//! Object storage: one global resourceVersion counter (like etcd's revision), the
//! objects of every resource type, and a bounded history of change events from which
//! watches resume; a watch from before the history start gets `410 Expired`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
pub(crate) struct Change {
    pub rv: u64,
    pub res: String,
    pub ns: String,
    #[allow(dead_code)]
    pub name: String,
    pub ty: EventType,
    pub obj: Arc<Value>,
    pub old: Option<Arc<Value>>,
    /// The event serialised once for all watchers of the storage version.
    pub encoded: OnceLock<Bytes>,
}

pub(crate) type ObjMap = BTreeMap<(String, String), Arc<Value>>;

/// All objects plus the change history.
pub(crate) struct Store {
    pub rv: u64,
    objects: HashMap<String, ObjMap>,
    log: VecDeque<Arc<Change>>,
    /// Events with rv > floor are all in `log`.
    pub floor: u64,
    cap: usize,
    tx: broadcast::Sender<Arc<Change>>,
}

impl Store {
    pub fn new(history: usize, tx: broadcast::Sender<Arc<Change>>) -> Self {
        Store {
            rv: 1,
            objects: HashMap::new(),
            log: VecDeque::new(),
            floor: 1,
            cap: history.max(16),
            tx,
        }
    }

    /// The objects (shared, copy-on-write) without history or subscribers.
    pub fn scratch_copy(&self) -> Store {
        Store {
            rv: self.rv,
            objects: self.objects.clone(),
            log: VecDeque::new(),
            floor: self.rv,
            cap: self.cap,
            tx: broadcast::channel(1).0,
        }
    }

    pub fn get(&self, res: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(res)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn map(&self, res: &str) -> Option<&ObjMap> {
        self.objects.get(res)
    }

    pub fn all_maps(&self) -> impl Iterator<Item = (&String, &ObjMap)> {
        self.objects.iter()
    }

    /// Allocate the next resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Store `obj` (whose metadata.resourceVersion is already `rv`) and publish the change.
    pub fn put(
        &mut self,
        res: &str,
        ns: &str,
        name: &str,
        rv: u64,
        obj: Value,
        ty: EventType,
    ) -> Arc<Value> {
        let obj = Arc::new(obj);
        let old = self
            .objects
            .entry(res.to_string())
            .or_default()
            .insert((ns.to_string(), name.to_string()), obj.clone());
        self.publish(Change {
            rv,
            res: res.into(),
            ns: ns.into(),
            name: name.into(),
            ty,
            obj: obj.clone(),
            old,
            encoded: OnceLock::new(),
        });
        obj
    }

    /// Remove an object; `final_obj` is its last state with the deletion rv.
    pub fn remove(&mut self, res: &str, ns: &str, name: &str, rv: u64, final_obj: Value) {
        let old = self
            .objects
            .get_mut(res)
            .and_then(|m| m.remove(&(ns.to_string(), name.to_string())));
        self.publish(Change {
            rv,
            res: res.into(),
            ns: ns.into(),
            name: name.into(),
            ty: EventType::Deleted,
            obj: Arc::new(final_obj),
            old,
            encoded: OnceLock::new(),
        });
    }

    /// Drop a whole resource type's objects (CRD deleted), returning them.
    pub fn take_all(&mut self, res: &str) -> Vec<Arc<Value>> {
        self.objects
            .remove(res)
            .map(|m| m.into_values().collect())
            .unwrap_or_default()
    }

    fn publish(&mut self, c: Change) {
        let c = Arc::new(c);
        self.log.push_back(c.clone());
        while self.log.len() > self.cap {
            if let Some(old) = self.log.pop_front() {
                self.floor = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(c);
    }

    /// Events after `rv` for replaying a watch, or `None` if history no longer reaches back.
    pub fn since(&self, rv: u64, res: &str) -> Option<Vec<Arc<Change>>> {
        if rv < self.floor {
            return None;
        }
        let start = self.log.partition_point(|c| c.rv <= rv);
        Some(
            self.log
                .iter()
                .skip(start)
                .filter(|c| c.res == res)
                .cloned()
                .collect(),
        )
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }
}
