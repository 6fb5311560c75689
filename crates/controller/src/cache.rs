//! Watch caches (kube-runtime reflector stores) of the kinds the phases read
//! while they wait. The same watch that wakes a waiting migration fills its
//! store, so a phase step reads what woke it instead of listing again: the
//! number of API requests no longer grows with how often a phase looks.
//!
//! A store lags the API server by the time an event takes to arrive, so the
//! phases write with the resourceVersion they read (a 409 makes the next step
//! read again) or with idempotent requests (deleting a pod already gone is a
//! 404 they ignore). Until a store has its first full list, reads fall back
//! to the API (see [`ready`]).

use crate::error::PhaseError;
use crate::openshift::pods::PodGroup;
use crate::openshift::{cvo, machines};
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::reflector::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use vcfm_api::openshift::{
    ClusterOperator, ControlPlaneMachineSet, Infrastructure, MACHINE_API_NAMESPACE, Machine,
    MachineSet,
};

/// The stores the controller's watches fill.
#[derive(Clone)]
pub struct Caches {
    /// Machines of openshift-machine-api.
    pub machines: Store<Machine>,
    /// MachineSets of openshift-machine-api.
    pub machine_sets: Store<MachineSet>,
    /// The ControlPlaneMachineSet of openshift-machine-api.
    pub cpms: Store<ControlPlaneMachineSet>,
    pub operators: Store<ClusterOperator>,
    pub nodes: Store<Node>,
    /// Only the cluster-version-operator Deployment.
    pub cvo: Store<Deployment>,
    /// Pods by namespace, each watch scoped to the labels the restarts select
    /// (see [`pod_watch_selector`]).
    pub pods: BTreeMap<&'static str, Store<Pod>>,
    /// Only Infrastructure `cluster`.
    pub infrastructure: Store<Infrastructure>,
    /// The MachineConfigPools.
    pub pools: Store<DynamicObject>,
    /// The Secrets the phases read, each watched by name once first read
    /// (never a namespace's or the cluster's Secrets).
    pub secrets: Arc<crate::named::Named<Secret>>,
    /// The ConfigMaps the phases read (the cloud-provider configuration), likewise.
    pub config_maps: Arc<crate::named::Named<ConfigMap>>,
    /// The pods the restarts deleted that the pod watches may not show as such yet.
    pub deleted_pods: Arc<crate::openshift::pods::DeletedPods>,
    /// The Infrastructure CRD, watched by name once first read.
    pub crds: Arc<crate::named::Named<DynamicObject>>,
    /// Our last write of Infrastructure `cluster`, until [`Self::infrastructure`] shows it.
    pub infrastructure_ours: Arc<crate::written::Overlay<Infrastructure>>,
    /// Set once [`Self::synced`] has waited.
    pub synced: Arc<std::sync::OnceLock<()>>,
}

/// How long the first reconcile waits for the watches' first lists.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Caches {
    /// Waits for every store's first list, once and for at most
    /// [`SYNC_WAIT`]: a reconcile that starts before the watches have
    /// synced would otherwise list what they are about to deliver. A store
    /// that cannot sync (its CRD absent, its watch refused) is read from the
    /// API, as before any sync.
    pub async fn synced(&self) {
        if self.synced.get().is_some() {
            return;
        }
        let all = async {
            let _ = self.machines.wait_until_ready().await;
            let _ = self.machine_sets.wait_until_ready().await;
            let _ = self.cpms.wait_until_ready().await;
            let _ = self.operators.wait_until_ready().await;
            let _ = self.nodes.wait_until_ready().await;
            let _ = self.cvo.wait_until_ready().await;
            let _ = self.infrastructure.wait_until_ready().await;
            let _ = self.pools.wait_until_ready().await;
            for p in self.pods.values() {
                let _ = p.wait_until_ready().await;
            }
        };
        if tokio::time::timeout(SYNC_WAIT, all).await.is_err() {
            tracing::warn!(
                "some watches have not synced within {}s; their kinds are read from the API until they do",
                SYNC_WAIT.as_secs()
            );
        }
        let _ = self.synced.set(());
    }

    /// The named watches of CRDs, ending when `stop` is cancelled.
    pub fn crd_watches(
        client: kube::Client,
        stop: tokio_util::sync::CancellationToken,
        lists: crate::streaming::ListMode,
    ) -> Arc<crate::named::Named<DynamicObject>> {
        Arc::new(crate::named::Named::cluster_dynamic(
            client,
            stop,
            lists,
            kube::core::ApiResource::erase::<
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
            >(&()),
        ))
    }
}

/// What the watches of the controller keep of an object: everything but
/// `metadata.managedFields`, which no phase reads and which is often the
/// largest part of an object.
pub fn trim<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// The cached objects once the store has its first full list; `None` before
/// (or if its watch ended), so that the caller reads the API instead.
pub fn ready<K>(store: &Store<K>) -> Option<Vec<Arc<K>>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    match store.wait_until_ready().now_or_never() {
        Some(Ok(())) => Some(store.state()),
        _ => None,
    }
}

/// Owned copies of a store's objects, sorted by name as a LIST returns them.
pub fn objects<K>(store: &Store<K>) -> Option<Vec<K>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut v: Vec<K> = ready(store)?.iter().map(|o| K::clone(o)).collect();
    v.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    Some(v)
}

/// The label selector of the pod watch of `namespace`: the restart groups of
/// that namespace (`pods::VSPHERE_PODS`) as one set-based selector when they
/// all select on one label key (`app in (a,b)`), otherwise none (the whole,
/// small, operator namespace).
pub fn pod_watch_selector(groups: &[crate::openshift::pods::PodGroup]) -> Option<String> {
    let mut key: Option<&str> = None;
    let mut values = vec![];
    for g in groups {
        let (k, v) = g.selector?.split_once('=')?;
        if key.is_some_and(|key| key != k) {
            return None;
        }
        key = Some(k);
        values.push(v);
    }
    match (key, values.as_slice()) {
        (Some(k), [v]) => Some(format!("{k}={v}")),
        (Some(k), vs) => Some(format!("{k} in ({})", vs.join(","))),
        (None, _) => None,
    }
}

/// The namespaces the restarts wait on, each with its restart groups.
pub fn pod_namespaces() -> BTreeMap<&'static str, Vec<crate::openshift::pods::PodGroup>> {
    let mut out: BTreeMap<&'static str, Vec<_>> = BTreeMap::new();
    for g in crate::openshift::pods::VSPHERE_PODS {
        out.entry(g.namespace).or_default().push(*g);
    }
    out
}

/// Whether `labels` satisfy an equality selector `key=value`.
pub fn matches_label(labels: Option<&BTreeMap<String, String>>, selector: &str) -> bool {
    match selector.split_once('=') {
        Some((k, v)) => labels.and_then(|l| l.get(k)).is_some_and(|x| x == v),
        None => false,
    }
}

/// Reads of the watched kinds: from the stores when the controller runs with
/// them and they are synced, else from the API (`vcfm plan`, start-up).
impl crate::context::PhaseCtx {
    fn cached<K>(&self, pick: impl Fn(&Caches) -> &Store<K>) -> Option<Vec<K>>
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        objects(pick(self.caches()?))
    }

    /// The Machines of openshift-machine-api.
    pub async fn machines(&self) -> Result<Vec<Machine>, PhaseError> {
        match self.cached(|c| &c.machines) {
            Some(v) => Ok(v),
            None => machines::list_machines(self.client()).await,
        }
    }

    /// The MachineSets of openshift-machine-api.
    pub async fn machine_sets(&self) -> Result<Vec<MachineSet>, PhaseError> {
        match self.cached(|c| &c.machine_sets) {
            Some(v) => Ok(v),
            None => machines::list_machinesets(self.client()).await,
        }
    }

    /// The ControlPlaneMachineSets of openshift-machine-api (none where the CRD is absent).
    pub async fn control_plane_machine_sets(
        &self,
    ) -> Result<Vec<ControlPlaneMachineSet>, PhaseError> {
        match self.cached(|c| &c.cpms) {
            Some(v) => Ok(v),
            None => {
                crate::openshift::list_optional(Api::<ControlPlaneMachineSet>::namespaced(
                    self.client(),
                    MACHINE_API_NAMESPACE,
                ))
                .await
            }
        }
    }

    /// Every Node, by name.
    pub async fn nodes_by_name(&self) -> Result<BTreeMap<String, Node>, PhaseError> {
        match self.cached(|c| &c.nodes) {
            Some(v) => Ok(v
                .into_iter()
                .filter_map(|n| Some((n.metadata.name.clone()?, n)))
                .collect()),
            None => machines::nodes_by_name(self.client()).await,
        }
    }

    /// Every ClusterOperator.
    pub async fn cluster_operators(&self) -> Result<Vec<ClusterOperator>, PhaseError> {
        match self.cached(|c| &c.operators) {
            Some(v) => Ok(v),
            None => Ok(Api::<ClusterOperator>::all(self.client())
                .list(&ListParams::default())
                .await
                .map_err(|e| PhaseError::from(e).context("listing ClusterOperators"))?
                .items),
        }
    }

    /// The cluster-version-operator Deployment.
    pub async fn cvo_deployment(&self) -> Result<Deployment, PhaseError> {
        self.cvo_deployment_opt().await?.ok_or_else(|| {
            PhaseError::transient(format!(
                "deployment {}/{} not found",
                cvo::NAMESPACE,
                cvo::NAME
            ))
        })
    }

    /// The cluster-version-operator Deployment, `None` where it does not exist.
    pub async fn cvo_deployment_opt(&self) -> Result<Option<Deployment>, PhaseError> {
        if let Some(v) = self.cached(|c| &c.cvo) {
            return Ok(v.into_iter().next());
        }
        Api::<Deployment>::namespaced(self.client(), cvo::NAMESPACE)
            .get_opt(cvo::NAME)
            .await
            .map_err(|e| {
                PhaseError::from(e).context("reading the cluster-version-operator Deployment")
            })
    }

    /// Infrastructure `cluster`, `None` where it does not exist; our own last
    /// write of it while the store has not caught up with that.
    pub async fn infrastructure(&self) -> Result<Option<Infrastructure>, PhaseError> {
        match (self.caches(), self.cached(|c| &c.infrastructure)) {
            (Some(c), Some(v)) => Ok(c
                .infrastructure_ours
                .latest(vcfm_api::openshift::CLUSTER, v.into_iter().next())),
            _ => crate::openshift::infra::get(self.client()).await,
        }
    }

    /// Keeps what our write of Infrastructure `cluster` returned, for
    /// [`Self::infrastructure`] until its store shows it.
    pub fn wrote_infrastructure(&self, i: &Infrastructure) {
        if let Some(c) = self.caches() {
            c.infrastructure_ours
                .record(vcfm_api::openshift::CLUSTER, i);
        }
    }

    /// Every MachineConfigPool as JSON, sorted by name (none where the CRD is absent).
    pub async fn machine_config_pools(&self) -> Result<Vec<serde_json::Value>, PhaseError> {
        match self.cached(|c| &c.pools) {
            Some(v) => Ok(v
                .into_iter()
                .filter_map(|p| serde_json::to_value(p).ok())
                .collect()),
            None => crate::openshift::mcp::list(self.client()).await,
        }
    }

    /// The Secret `namespace/name`, `None` where it does not exist: from its
    /// named watch once that has synced (see [`crate::named`]).
    pub async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, PhaseError> {
        let named = self.caches().map(|c| &*c.secrets);
        read_named(named, self.client(), namespace, name).await
    }

    /// Keeps what our write of the Secret `namespace/name` returned, for
    /// [`Self::secret`] until its watch shows it.
    pub fn wrote_secret(&self, namespace: &str, name: &str, s: &Secret) {
        if let Some(c) = self.caches() {
            c.secrets.record(namespace, name, Some(s));
        }
    }

    /// The ConfigMap `namespace/name`, `None` where it does not exist (as [`Self::secret`]).
    pub async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, PhaseError> {
        let named = self.caches().map(|c| &*c.config_maps);
        read_named(named, self.client(), namespace, name).await
    }

    /// The cloud provider configuration: where it is (Infrastructure
    /// `spec.cloudConfig`), its ConfigMap and its text.
    pub async fn cloud_config(
        &self,
    ) -> Result<(crate::openshift::cloud_config::Location, ConfigMap, String), PhaseError> {
        use crate::openshift::cloud_config::{Location, NAMESPACE, text_of};
        let loc = Location::of(self.infrastructure().await?.as_ref());
        let cm = self.config_map(NAMESPACE, &loc.name).await?.ok_or_else(|| {
            PhaseError::fatal(format!(
                "reading {NAMESPACE}/{}: it does not exist (Infrastructure spec.cloudConfig names it)",
                loc.name
            ))
        })?;
        let text = text_of(&cm, &loc)?;
        Ok((loc, cm, text))
    }

    /// The pods of a restart group, from the namespace's pod watch when there is one.
    pub async fn pods_of(&self, g: &PodGroup) -> Result<Vec<Pod>, PhaseError> {
        let cached = self
            .caches()
            .and_then(|c| c.pods.get(g.namespace))
            .and_then(objects);
        let items = match cached {
            Some(v) => v
                .into_iter()
                .filter(|p| {
                    g.selector
                        .is_none_or(|s| matches_label(p.metadata.labels.as_ref(), s))
                })
                .collect(),
            None => {
                let api = Api::<Pod>::namespaced(self.client(), g.namespace);
                let lp = match g.selector {
                    Some(s) => ListParams::default().labels(s),
                    None => ListParams::default(),
                };
                match api.list(&lp).await {
                    Ok(l) => l.items,
                    // A namespace this cluster does not have means the group is absent.
                    Err(e) if crate::error::is_not_found(&e) => vec![],
                    Err(e) => {
                        return Err(
                            PhaseError::from(e).context(&format!("listing {}", g.describe()))
                        );
                    }
                }
            }
        };
        Ok(items
            .into_iter()
            .filter(|p| {
                g.name_prefix
                    .is_none_or(|pre| p.metadata.name.as_deref().unwrap_or("").starts_with(pre))
            })
            .collect())
    }
}

/// `namespace/name` from its named watch once synced, else from the API
/// (`None` where it does not exist).
async fn read_named<K>(
    named: Option<&crate::named::Named<K>>,
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, PhaseError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    if let Some(n) = named
        && let Some(v) = n.read(namespace, name).await
    {
        return Ok(v);
    }
    match Api::<K>::namespaced(client, namespace).get(name).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if crate::error::is_not_found(&e) => Ok(None),
        Err(e) => {
            Err(PhaseError::from(e)
                .context(&format!("reading {} {namespace}/{name}", K::kind(&()))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_watches_select_only_the_restarted_pods_where_one_label_key_suffices() {
        let ns = pod_namespaces();
        let sel = |n: &str| pod_watch_selector(&ns[n]);
        assert_eq!(
            sel("openshift-cluster-csi-drivers").as_deref(),
            Some(
                "app in (vmware-vsphere-csi-driver-controller,vsphere-csi-driver-controller,vmware-vsphere-csi-driver-node,vsphere-csi-driver-node)"
            )
        );
        assert_eq!(
            sel("openshift-machine-api").as_deref(),
            Some("api=clusterapi")
        );
        // Two label keys: the namespace, unfiltered.
        assert_eq!(sel("openshift-cloud-controller-manager"), None);
        // A name prefix, no label: likewise.
        assert_eq!(sel("openshift-machine-config-operator"), None);
        let mut l = BTreeMap::new();
        l.insert("app".to_string(), "x".to_string());
        assert!(matches_label(Some(&l), "app=x"));
        assert!(!matches_label(Some(&l), "app=y"));
        assert!(!matches_label(None, "app=x"));
    }
}
