//! Fault injection and request accounting. Rules match on verb / resource / name /
//! namespace and fire for a number of occurrences or until a deadline, so tests can
//! reproduce the failures a controller meets against a real, busy API server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a matching fault does to the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum FaultAction {
    /// Respond with this HTTP status and a matching `Status` (500, 503, 429, 504, ...).
    Error {
        /// HTTP code.
        code: u16,
    },
    /// Respond `409 Conflict` as if the object had been modified concurrently.
    Conflict,
    /// Close the connection without a response.
    Drop,
    /// Delay the request, then serve it normally.
    Delay {
        /// Milliseconds to wait.
        millis: u64,
    },
    /// Leave requests alone; every open watch the rule matches (verb `watch`) delivers
    /// nothing while the rule lasts, then everything it held, in order. The real server
    /// serves watches from its watch cache, fed by its own watch of etcd and handed to
    /// each watcher through a queue in resourceVersion order (k8s.io/apiserver
    /// `pkg/storage/cacher/cacher.go` `dispatchEvents`, `cache_watcher.go`): a watcher
    /// may see a change well after the write that made it returned, never out of order.
    /// Held only by a rule with a duration ([`FaultRule::for_duration`]).
    HoldEvents,
}

/// A fault rule. Empty match fields match anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultRule {
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...).
    pub verb: Option<String>,
    /// Resource, optionally with subresource (`pods`, `deployments/scale`).
    pub resource: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// The effect.
    pub action: Option<FaultAction>,
    /// Fire this many times, then expire (unlimited if `None`).
    pub count: Option<u64>,
    /// Expire after this many milliseconds (never if `None`).
    pub duration_ms: Option<u64>,
}

impl FaultRule {
    /// A rule with `action` that matches every request.
    pub fn new(action: FaultAction) -> Self {
        FaultRule {
            action: Some(action),
            ..Default::default()
        }
    }
    /// Only for this verb.
    pub fn verb(mut self, v: &str) -> Self {
        self.verb = Some(v.into());
        self
    }
    /// Only for this resource (`pods` or `deployments/scale`).
    pub fn resource(mut self, r: &str) -> Self {
        self.resource = Some(r.into());
        self
    }
    /// Only for this object name.
    pub fn name(mut self, n: &str) -> Self {
        self.name = Some(n.into());
        self
    }
    /// Only in this namespace.
    pub fn namespace(mut self, n: &str) -> Self {
        self.namespace = Some(n.into());
        self
    }
    /// Fire `n` times.
    pub fn times(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }
    /// Fire for this long.
    pub fn for_duration(mut self, d: Duration) -> Self {
        self.duration_ms = Some(d.as_millis() as u64);
        self
    }

    fn matches(&self, t: &Target) -> bool {
        let m = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w == have || w == "*")
        };
        m(&self.verb, &t.verb)
            && m(&self.resource, &t.resource)
            && m(&self.name, &t.name)
            && m(&self.namespace, &t.namespace)
    }
}

struct Active {
    rule: FaultRule,
    remaining: Option<u64>,
    until: Option<Instant>,
}

/// The request facts faults match against.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    pub verb: String,
    pub resource: String,
    pub name: String,
    pub namespace: String,
}

#[derive(Default)]
struct FaultState {
    rules: Vec<Active>,
    outage_until: Option<Instant>,
}

/// Handle to the server's fault rules; cheap to clone.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<FaultState>>);

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Faults")
    }
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a rule.
    pub fn inject(&self, rule: FaultRule) {
        let until = rule
            .duration_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let remaining = rule.count;
        self.lock().rules.push(Active {
            rule,
            remaining,
            until,
        });
    }

    /// Every request fails with 503 for `d` (the server is "down").
    pub fn outage(&self, d: Duration) {
        self.lock().outage_until = Some(Instant::now() + d);
    }

    /// Remove all rules and end any outage.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.rules.clear();
        s.outage_until = None;
    }

    /// Rules still armed.
    pub fn active(&self) -> Vec<FaultRule> {
        let now = Instant::now();
        let mut s = self.lock();
        s.rules
            .retain(|a| a.until.is_none_or(|u| u > now) && a.remaining != Some(0));
        s.rules.iter().map(|a| a.rule.clone()).collect()
    }

    /// Until when the events of an open watch of `t` are held (a
    /// [`FaultAction::HoldEvents`] rule with a duration matches it).
    pub(crate) fn held_until(&self, t: &Target) -> Option<Instant> {
        let now = Instant::now();
        self.lock()
            .rules
            .iter()
            .filter(|a| a.rule.action == Some(FaultAction::HoldEvents) && a.rule.matches(t))
            .filter_map(|a| a.until)
            .filter(|u| *u > now)
            .max()
    }

    pub(crate) fn in_outage(&self) -> bool {
        self.lock().outage_until.is_some_and(|u| u > Instant::now())
    }

    /// The actions of all rules matching `t`, consuming one occurrence of each.
    pub(crate) fn take(&self, t: &Target) -> Vec<FaultAction> {
        let now = Instant::now();
        let mut s = self.lock();
        s.rules
            .retain(|a| a.until.is_none_or(|u| u > now) && a.remaining != Some(0));
        let mut out = Vec::new();
        for a in s.rules.iter_mut() {
            if a.rule.action == Some(FaultAction::HoldEvents) {
                continue;
            }
            if a.rule.matches(t) {
                if let Some(n) = a.remaining.as_mut() {
                    *n -= 1;
                }
                if let Some(act) = &a.rule.action {
                    out.push(act.clone());
                }
            }
        }
        out
    }
}

/// One accounting bucket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatKey {
    /// Authenticated user name (`anonymous` if none).
    pub user: String,
    /// Kubernetes verb, or the HTTP method for non-resource paths.
    pub verb: String,
    /// `group/resource[/subresource]`, or the path for non-resource requests.
    pub resource: String,
}

/// Request counters; cheap to clone.
#[derive(Clone, Default)]
pub struct Stats(Arc<Mutex<BTreeMap<StatKey, u64>>>);

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stats")
    }
}

impl Stats {
    pub(crate) fn record(&self, key: StatKey) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(0) += 1;
    }
    /// All counters.
    pub fn snapshot(&self) -> Vec<(StatKey, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
    /// Total requests counted.
    pub fn total(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
    /// Requests by `user`.
    pub fn total_for_user(&self, user: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| k.user == user)
            .map(|(_, v)| v)
            .sum()
    }
    /// Requests matching `verb` (and resource, if given).
    pub fn count(&self, verb: &str, resource: Option<&str>) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| k.verb == verb && resource.is_none_or(|r| k.resource == r))
            .map(|(_, v)| v)
            .sum()
    }
    /// Zero all counters.
    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
    /// JSON form served at `/_sim/stats`.
    pub fn to_json(&self) -> serde_json::Value {
        let items: Vec<serde_json::Value> = self
            .snapshot()
            .into_iter()
            .map(|(k, v)| serde_json::json!({"user": k.user, "verb": k.verb, "resource": k.resource, "count": v}))
            .collect();
        serde_json::json!({"total": self.total(), "requests": items})
    }
}
