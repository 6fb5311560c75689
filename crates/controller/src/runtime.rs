//! Running the controller: watches, leader election on a Lease, the
//! health/metrics endpoint, and graceful shutdown.

use crate::context::{ControllerConfig, Shared};
use crate::events::Events;
use crate::metrics::Metrics;
use crate::reconciler::{self, Context};
use crate::wake::{self, Watched};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vcfm_api::VmwareCloudFoundationMigration;
use vcfm_api::openshift::{
    CLUSTER, ClusterOperator, ControlPlaneMachineSet, Infrastructure, MACHINE_API_NAMESPACE,
    Machine, MachineSet,
};
use vcfm_vsphere::SessionCache;

/// Lease timings. The defaults are OpenShift's recommended values, long enough
/// to keep leadership through minutes of API unavailability during the
/// control-plane rollout.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElection {
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: "vcfm-controller".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(137),
            renew_deadline: Duration::from_secs(107),
            retry_period: Duration::from_secs(26),
        }
    }
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: ControllerConfig,
    pub leader_election: Option<LeaderElection>,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: Option<SocketAddr>,
}

/// Errors that stop the controller process.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("leader election: {0}")]
    LeaderElection(String),
    #[error("health/metrics server on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    SecureMetrics(#[from] crate::secure_metrics::SecureMetricsError),
}

/// How long in-flight reconciles get to finish once the shutdown begins; with
/// [`CLEANUP_DEADLINE`] twice (logouts, the Lease), within the Deployment's
/// 30 s termination grace period.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// The most the vCenter logouts, and the Lease release, may take at shutdown.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(5);

/// Runs until `shutdown` is cancelled (or leadership is lost).
pub async fn run(
    client: kube::Client,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    run_with_metrics(client, opts, None, shutdown).await
}

/// [`run`], with `/metrics` served over TLS to authorized callers only
/// ([`crate::secure_metrics`]) instead of in plain HTTP next to the probes.
pub async fn run_with_metrics(
    client: kube::Client,
    opts: RunOptions,
    secure_metrics: Option<crate::secure_metrics::SecureMetrics>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = opts.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Http { addr, source })?;
        tokio::spawn(serve_http(
            listener,
            secure_metrics.is_none().then(|| metrics.clone()),
            ready.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(sm) = &secure_metrics {
        let server = crate::secure_metrics::bind(sm).await?;
        tokio::spawn(server.serve(client.clone(), metrics.clone(), shutdown.clone()));
    }

    let stop = shutdown.child_token();
    let lease_task = match &opts.leader_election {
        Some(le) => {
            acquire(&client, le, &shutdown).await?;
            if shutdown.is_cancelled() {
                return Ok(());
            }
            Some(tokio::spawn(renew(
                client.clone(),
                le.clone(),
                stop.clone(),
            )))
        }
        None => None,
    };

    let shared = Arc::new(Shared {
        client: client.clone(),
        config: opts.config.clone(),
        sessions: SessionCache::default(),
        metrics,
    });
    let (reader, writer) = reflector::store();
    // One store per watched kind, filled by the watch that also wakes the
    // migrations: the phases read these instead of listing (see `cache`).
    let (machines, machines_w) = reflector::store();
    let (machine_sets, machine_sets_w) = reflector::store();
    let (cpms, cpms_w) = reflector::store();
    let (operators, operators_w) = reflector::store();
    let (nodes, nodes_w) = reflector::store();
    let (cvo, cvo_w) = reflector::store();
    let pod_namespaces = crate::cache::pod_namespaces();
    let mut pods = std::collections::BTreeMap::new();
    let mut pod_writers = vec![];
    for (ns, groups) in &pod_namespaces {
        let (r, w) = reflector::store();
        pods.insert(*ns, r);
        pod_writers.push((*ns, crate::cache::pod_watch_selector(groups), w));
    }
    let (infrastructure, infrastructure_w) = reflector::store();
    // The named watches the phases start end with the controller.
    let named_stop = stop.child_token();
    let lists = crate::streaming::ListMode::default();
    let pools_w =
        reflector::store::Writer::<DynamicObject>::new(crate::openshift::mcp::api_resource());
    let pools = pools_w.as_reader();
    let caches = crate::cache::Caches {
        machines,
        machine_sets,
        cpms,
        operators,
        nodes,
        cvo,
        pods,
        infrastructure,
        pools,
        secrets: Arc::new(crate::named::Named::new(
            client.clone(),
            named_stop.clone(),
            lists.clone(),
        )),
        config_maps: Arc::new(crate::named::Named::new(
            client.clone(),
            named_stop.clone(),
            lists.clone(),
        )),
        deleted_pods: Default::default(),
        crds: crate::cache::Caches::crd_watches(client.clone(), named_stop.clone(), lists.clone()),
        infrastructure_ours: Default::default(),
        synced: Default::default(),
    };
    let ctx = Arc::new(Context {
        shared: shared.clone(),
        events: Events::new(client.clone(), &opts.config.manager),
        backoff: Default::default(),
        migrations: reader.clone(),
        caches,
        written: Default::default(),
    });
    ready.store(true, Ordering::SeqCst);
    tracing::info!("controller started");

    let migrations = Api::<VmwareCloudFoundationMigration>::all(client.clone());
    let written = ctx.clone();
    let main = crate::streaming::watch(migrations, watcher::Config::default(), lists.clone())
        .default_backoff()
        .modify(crate::cache::trim)
        .reflect(writer)
        // Forgets our own writes once the cache holds them (see `reconciler::Written`).
        .map(move |ev| {
            if let Ok(ev) = &ev {
                written.written.observe(ev);
            }
            ev
        })
        .applied_objects()
        // Our own status writes must not re-trigger reconciles (requeues pace the
        // work); spec edits (approve, pause, rollback) bump the generation and do.
        .predicate_filter(predicates::generation, Default::default());
    let wc = watcher::Config::default;
    let mut controller = Controller::for_stream(main, reader.clone())
        .watches_stream(
            cached(
                Api::<Machine>::namespaced(client.clone(), MACHINE_API_NAMESPACE),
                wc(),
                &lists,
                machines_w,
            ),
            waiting_mapper(&reader, Watched::Machines),
        )
        .watches_stream(
            cached(
                Api::<MachineSet>::namespaced(client.clone(), MACHINE_API_NAMESPACE),
                wc(),
                &lists,
                machine_sets_w,
            ),
            waiting_mapper(&reader, Watched::MachineSets),
        )
        .watches_stream(
            cached(
                Api::<ControlPlaneMachineSet>::namespaced(client.clone(), MACHINE_API_NAMESPACE),
                wc(),
                &lists,
                cpms_w,
            ),
            waiting_mapper(&reader, Watched::ControlPlaneMachineSets),
        )
        .watches_stream(
            cached(
                Api::<ClusterOperator>::all(client.clone()),
                wc(),
                &lists,
                operators_w,
            ),
            waiting_mapper(&reader, Watched::ClusterOperators),
        )
        .watches_stream(
            cached(Api::<Node>::all(client.clone()), wc(), &lists, nodes_w),
            waiting_mapper(&reader, Watched::Nodes),
        )
        .watches_stream(
            cached(
                Api::<Deployment>::namespaced(client.clone(), crate::openshift::cvo::NAMESPACE),
                wc().fields(&format!("metadata.name={}", crate::openshift::cvo::NAME)),
                &lists,
                cvo_w,
            ),
            waiting_mapper(&reader, Watched::ClusterVersionOperator),
        )
        .watches_stream(
            cached(
                Api::<Infrastructure>::all(client.clone()),
                wc().fields(&format!("metadata.name={CLUSTER}")),
                &lists,
                infrastructure_w,
            ),
            // Read by the phases, waited on by none: no reconcile to wake.
            |_: Infrastructure| None::<ObjectRef<VmwareCloudFoundationMigration>>,
        )
        .watches_stream_with(
            crate::streaming::watch(
                Api::<DynamicObject>::all_with(
                    client.clone(),
                    &crate::openshift::mcp::api_resource(),
                ),
                wc(),
                lists.clone(),
            )
            .default_backoff()
            .modify(crate::cache::trim)
            .reflect(pools_w)
            .touched_objects(),
            waiting_mapper(&reader, Watched::MachineConfigPools),
            crate::openshift::mcp::api_resource(),
        );
    // Pods only in the namespaces the restarts wait on, and there only those
    // the restarts select where a label selector can say so.
    for (ns, selector, w) in pod_writers {
        let cfg = match &selector {
            Some(s) => wc().labels(s),
            None => wc(),
        };
        controller = controller.watches_stream(
            cached(Api::<Pod>::namespaced(client.clone(), ns), cfg, &lists, w),
            waiting_mapper(&reader, Watched::Pods),
        );
    }
    let stop_for_controller = stop.clone();
    let running = controller
        .graceful_shutdown_on(async move { stop_for_controller.cancelled().await })
        .run(reconciler::reconcile, reconciler::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile loop");
            }
        });
    // kube-runtime's graceful shutdown lets in-flight reconciles finish, but
    // its applier first waits for the migrations' store to fill: with the API
    // server unreachable, that never happens and SIGTERM would go unheeded
    // until the kubelet kills the pod. Past the grace, the reconciles are
    // dropped: every step resumes from the migration's status.
    tokio::select! {
        () = running => {}
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(
                grace_seconds = SHUTDOWN_GRACE.as_secs(),
                "the controller did not wind down within its grace after the shutdown began; stopping anyway"
            );
        }
    }
    named_stop.cancel();
    ready.store(false, Ordering::SeqCst);
    if tokio::time::timeout(CLEANUP_DEADLINE, shared.sessions.logout_all())
        .await
        .is_err()
    {
        tracing::warn!("vCenter logouts did not finish in time; the sessions expire on their own");
    }
    if let Some(t) = lease_task {
        t.abort();
        if !shutdown.is_cancelled() {
            return Err(RunError::LeaderElection(
                "lost the lease; exiting so that another replica takes over".into(),
            ));
        }
        if let Some(le) = &opts.leader_election
            && tokio::time::timeout(CLEANUP_DEADLINE, release(&client, le))
                .await
                .is_err()
        {
            tracing::warn!("could not release the Lease in time; it expires on its own");
        }
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// A watch that fills `store` and yields the objects it touched (deleted ones too).
fn cached<K>(
    api: Api<K>,
    cfg: watcher::Config,
    lists: &crate::streaming::ListMode,
    store: reflector::store::Writer<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    crate::streaming::watch(api, cfg, lists.clone())
        .default_backoff()
        .modify(crate::cache::trim)
        .reflect(store)
        .touched_objects()
}

/// A change to a watched object wakes only the migrations that wait on its
/// kind: running a phase that does, or undoing one (see [`crate::wake`]).
fn waiting_mapper<K>(
    reader: &Store<VmwareCloudFoundationMigration>,
    kind: Watched,
) -> impl Fn(K) -> Vec<ObjectRef<VmwareCloudFoundationMigration>> + Send + Sync + 'static {
    wake_where(reader, move |m| wake::wakes(m, kind))
}

/// The cached migrations `wake` selects, for a watch's mapper.
fn wake_where<K>(
    reader: &Store<VmwareCloudFoundationMigration>,
    wake: impl Fn(&VmwareCloudFoundationMigration) -> bool + Send + Sync + 'static,
) -> impl Fn(K) -> Vec<ObjectRef<VmwareCloudFoundationMigration>> + Send + Sync + 'static {
    let reader = reader.clone();
    move |_| {
        reader
            .state()
            .iter()
            .filter(|m| wake(m))
            .map(|m| ObjectRef::from(m.as_ref()))
            .collect()
    }
}

/// Probes, and `/metrics` in plain HTTP unless it is served securely elsewhere.
async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Option<Arc<Metrics>>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let mut app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    if let Some(metrics) = metrics {
        app = app.route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        );
    }
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "health/metrics server stopped");
    }
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// What this process last saw of the lease record, and when by its own
/// monotonic clock. Expiry is judged from that local observation, never by
/// comparing the holder's `renewTime` with the local wall clock, so clock skew
/// between replicas neither steals a live lease nor keeps a dead one: the
/// holder's claim lapses `leaseDurationSeconds` after the record was last seen
/// to change (client-go `tools/leaderelection/leaderelection.go`:
/// `tryAcquireOrRenew` notes a changed record with `setObservedRecord`, and
/// `isLeaseValid` adds the record's lease duration to that observed time).
#[derive(Debug, Default)]
struct LeaseObserver {
    seen: Option<(LeaseSpec, tokio::time::Instant)>,
}

impl LeaseObserver {
    /// Notes `spec` as read at `now`; returns whether its holder's claim has
    /// lapsed (a record not seen before counts as just renewed).
    fn expired(&mut self, spec: &LeaseSpec, now: tokio::time::Instant) -> bool {
        match &self.seen {
            Some((record, at)) if record == spec => {
                let dur = u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0);
                now.saturating_duration_since(*at) > Duration::from_secs(dur)
            }
            _ => {
                self.seen = Some((spec.clone(), now));
                false
            }
        }
    }
}

/// Blocks (asynchronously) until this process holds the lease.
async fn acquire(
    client: &kube::Client,
    le: &LeaderElection,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let api = Api::<Lease>::namespaced(client.clone(), &le.namespace);
    let mut observer = LeaseObserver::default();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match try_acquire(&api, le, &mut observer).await {
            Ok(true) => {
                tracing::info!(identity = %le.identity, "became leader");
                return Ok(());
            }
            Ok(false) => tracing::info!("another replica holds the lease; standing by"),
            Err(e) => tracing::warn!(error = %e, "lease acquisition failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(le.retry_period) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

async fn try_acquire(
    api: &Api<Lease>,
    le: &LeaderElection,
    observer: &mut LeaseObserver,
) -> Result<bool, kube::Error> {
    let secs = i32::try_from(le.lease_duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&le.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(le.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(le.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let mine = spec.holder_identity.as_deref() == Some(le.identity.as_str());
            if !mine
                && !observer.expired(&spec, tokio::time::Instant::now())
                && spec
                    .holder_identity
                    .as_deref()
                    .is_some_and(|h| !h.is_empty())
            {
                return Ok(false);
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(le.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: if mine {
                    spec.acquire_time
                } else {
                    Some(now_micro())
                },
                renew_time: Some(now_micro()),
                lease_transitions: Some(transitions),
                ..Default::default()
            });
            match api.replace(&le.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Renews the lease every retry period; cancels `stop` when it could not be
/// renewed within the renew deadline (leadership is then considered lost).
async fn renew(client: kube::Client, le: LeaderElection, stop: CancellationToken) {
    let api = Api::<Lease>::namespaced(client, &le.namespace);
    let mut last_ok = tokio::time::Instant::now();
    let mut observer = LeaseObserver::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(le.retry_period) => {}
            _ = stop.cancelled() => return,
        }
        let attempt =
            tokio::time::timeout(le.retry_period, try_acquire(&api, &le, &mut observer)).await;
        match attempt {
            Ok(Ok(true)) => last_ok = tokio::time::Instant::now(),
            Ok(Ok(false)) => {
                tracing::error!("the lease was taken by another replica");
                stop.cancel();
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lease renewal failed; keeping leadership until the renew deadline")
            }
            Err(_) => tracing::warn!("lease renewal timed out"),
        }
        if last_ok.elapsed() > le.renew_deadline {
            tracing::error!("could not renew the lease within the renew deadline");
            stop.cancel();
            return;
        }
    }
}

/// Gives the lease up on a clean shutdown so a successor starts at once.
async fn release(client: &kube::Client, le: &LeaderElection) {
    let api = Api::<Lease>::namespaced(client.clone(), &le.namespace);
    if let Ok(Some(mut lease)) = api.get_opt(&le.name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(le.identity.as_str())
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        let _ = api.replace(&le.name, &PostParams::default(), &lease).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, renew: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(137),
            renew_time: Some(MicroTime(renew.parse().unwrap())),
            ..Default::default()
        }
    }

    /// A holder whose clock runs an hour behind keeps its lease as long as it
    /// renews; a holder whose clock runs ahead loses it once it stops.
    #[test]
    fn lease_expiry_is_judged_by_the_local_observation_not_the_holders_clock() {
        let t0 = tokio::time::Instant::now();
        let s = Duration::from_secs;
        let mut o = LeaseObserver::default();
        // Renewed (by a clock an hour behind ours) every 26 s: never expired,
        // though renewTime is always an hour old by our clock.
        let behind = [
            "2020-01-01T09:00:00Z",
            "2020-01-01T09:00:26Z",
            "2020-01-01T09:00:52Z",
        ];
        for (i, r) in behind.iter().enumerate() {
            let at = t0 + s(26 * i as u64);
            assert!(!o.expired(&record("a", r), at), "renewal {i}");
            assert!(!o.expired(&record("a", r), at + s(20)));
        }
        // The holder stops (its clock an hour ahead: renewTime in our future).
        let mut o = LeaseObserver::default();
        let ahead = record("b", "2999-01-01T11:00:00Z");
        assert!(!o.expired(&ahead, t0));
        assert!(!o.expired(&ahead, t0 + s(137)));
        assert!(o.expired(&ahead, t0 + s(138)));
        // Any change to the record (a renewal, a new holder) restarts the wait.
        assert!(!o.expired(&record("c", "2999-01-01T11:00:00Z"), t0 + s(200)));
        assert!(!o.expired(&record("c", "2999-01-01T11:00:00Z"), t0 + s(300)));
        assert!(o.expired(&record("c", "2999-01-01T11:00:00Z"), t0 + s(338)));
    }
}
