//! The simulated OpenShift operators. Each is a tokio task with its own `kube::Client` view
//! of the API (HTTP only, no store access), level-triggered: it reconciles everything it
//! owns whenever a watched kind changes, when one of its own simulated delays ends (a
//! reconcile that waits on one says when it is due, [`waited`]), `Delays::resync` after a
//! failed pass, and at least every [`SAFETY_RESYNC_FACTOR`] × `Delays::resync`, so it
//! survives API outages and missed events like the real operators. A reconcile that reads
//! state no watch reports (vCenter inventory) asks to come back every `Delays::resync`
//! while that state matters ([`due_in`]), as the real operators poll it.

pub(crate) mod cluster_operators;
pub(crate) mod cpms;
pub(crate) mod credentials;
pub(crate) mod cvo;
pub(crate) mod drain;
pub(crate) mod kubelet;
pub(crate) mod machine_zones;
pub(crate) mod machines;
pub(crate) mod mcp;
pub(crate) mod pdb;
pub(crate) mod pods;
pub(crate) mod zone_tags;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::scenario::{Delays, Faults};
use crate::vcenter::Vcenters;

/// What every simulated operator shares.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub client: kube::Client,
    pub delays: Arc<Delays>,
    pub faults: Arc<Faults>,
    pub vc: Vcenters,
    pub infra_id: Arc<str>,
    pub target_server: Arc<str>,
    pub version: Arc<str>,
    /// Next host number in the machine network.
    pub next_ip: Arc<AtomicU32>,
    /// kube-sim's fault handle (the CPMS rollout outage); none on the real tier.
    pub api_faults: Option<kube_sim::Faults>,
    pub outage_fired: Arc<AtomicBool>,
    /// The real machine API and CPMS operators run (real tier): what they own is theirs
    /// to write, not the simulated operators'.
    pub real_operators: bool,
    /// The Infrastructure CRD as seeded (the CVO restores its rule).
    pub infra_crd: Arc<Value>,
    pub cancel: CancellationToken,
    /// Each operator loop sends its name here after its first successful
    /// reconcile, so `SimCluster::start` returns only once every operator has
    /// taken its baseline (a change made right after start is then a change).
    pub synced: tokio::sync::mpsc::UnboundedSender<&'static str>,
    /// Held across a VM group's read-modify-write. The real machine controller
    /// reconciles one Machine at a time (machine-api-operator
    /// `pkg/controller/machine/controller.go` builds it with controller-runtime's
    /// default of one worker), so two clones never edit a group at once there; our
    /// provisioning tasks run side by side and must take turns, or one member is lost.
    pub vm_group_edits: Arc<tokio::sync::Mutex<()>>,
}

impl Ctx {
    /// A fresh address in the machine network (or outside it for the wrong-network fault).
    pub(crate) fn allocate_ip(&self, server: &str) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        if self.faults.target_network_outside_machine_network && server == &*self.target_server {
            format!("172.31.{}.{}", n / 250, n % 250 + 2)
        } else {
            format!("10.0.{}.{}", n / 250, n % 250 + 2)
        }
    }

    /// Sleeps unless cancelled; false when cancelled.
    pub(crate) async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// A stream that yields whenever `api` reports a change (errors included: the watcher
/// re-lists with backoff, and a reconcile is a cheap way to notice recovery).
pub(crate) fn trigger<K>(api: Api<K>) -> BoxStream<'static, ()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(|_| ())
        .boxed()
}

/// With no watch event and nothing due, a loop still reconciles after this many
/// `Delays::resync` periods (5 s at the tests' pace): a safety net only, since the
/// watchers re-list (and so trigger) after every broken watch.
pub(crate) const SAFETY_RESYNC_FACTOR: u32 = 10;

tokio::task_local! {
    /// The earliest time the running reconcile asked to be run again (see [`due_at`]).
    static DUE: Cell<Option<Instant>>;
}

/// Asks the loop whose reconcile is running to run it again at `at` (the earliest request
/// of a pass wins). Outside a loop (a spawned task) it does nothing: such a task writes
/// what it did to the API, and that write triggers the loops watching it.
pub(crate) fn due_at(at: Instant) {
    let _ = DUE.try_with(|d| {
        if d.get().is_none_or(|prev| at < prev) {
            d.set(Some(at));
        }
    });
}

/// [`due_at`] `d` from now.
pub(crate) fn due_in(d: Duration) {
    due_at(Instant::now() + d);
}

/// True once `delay` has passed since `since`; otherwise false, and the running loop comes
/// back when it has passed (a simulated delay then ends on time without polling for it).
pub(crate) fn waited(since: Instant, delay: Duration) -> bool {
    let at = since + delay;
    if Instant::now() >= at {
        return true;
    }
    due_at(at);
    false
}

/// Runs `reconcile` now, after every trigger burst, when it said something is due
/// ([`due_at`]), `resync` after an error and at least every [`SAFETY_RESYNC_FACTOR`] ×
/// `resync`, until cancelled. Errors are logged and retried on the next round.
pub(crate) async fn run_loop<F, Fut>(
    name: &'static str,
    ctx: &Ctx,
    triggers: Vec<BoxStream<'static, ()>>,
    mut reconcile: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut triggers = futures::stream::select_all(triggers);
    let mut synced = false;
    loop {
        if ctx.cancel.is_cancelled() {
            return;
        }
        let (result, due) = DUE
            .scope(Cell::new(None), async {
                let result = reconcile().await;
                (result, DUE.with(Cell::get))
            })
            .await;
        let now = Instant::now();
        let wake = match (&result, due) {
            (Err(_), _) => now + ctx.delays.resync,
            (Ok(()), due) => {
                let safety = now + ctx.delays.resync * SAFETY_RESYNC_FACTOR;
                due.map_or(safety, |at| at.min(safety))
            }
        };
        match result {
            Ok(()) if !synced => {
                synced = true;
                let _ = ctx.synced.send(name);
            }
            Ok(()) => {}
            Err(e) => tracing::debug!(operator = name, error = %e, "reconcile failed; will retry"),
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            Some(()) = triggers.next() => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        // Coalesce a burst of events into one reconcile.
        tokio::time::sleep(Duration::from_millis(10)).await;
        while let Some(Some(())) = triggers.next().now_or_never() {}
    }
}

/// Condition lists equal in what a reader sees (type, status, reason, message).
pub(crate) fn same_conditions(a: &Value, b: &Value) -> bool {
    let key = |v: &Value| -> Vec<(String, String, String, String)> {
        let mut out: Vec<_> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        let s =
                            |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        (s("type"), s("status"), s("reason"), s("message"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    };
    key(a) == key(b)
}

/// `new` conditions, keeping `lastTransitionTime` of those whose status did not change.
pub(crate) fn carry_transition_times(old: &Value, mut new: Value) -> Value {
    if let (Some(old), Some(list)) = (old.as_array(), new.as_array_mut()) {
        for c in list.iter_mut() {
            let t = c.get("type").cloned();
            if let Some(prev) = old.iter().find(|o| o.get("type") == t.as_ref())
                && prev.get("status") == c.get("status")
                && let Some(ts) = prev.get("lastTransitionTime")
            {
                c["lastTransitionTime"] = ts.clone();
            }
        }
    }
    new
}
