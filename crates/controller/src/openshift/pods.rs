//! Restarting the pods that read the vSphere configuration, and knowing when
//! their replacements are Ready.
//!
//! Stateless by design: a pod counts as restarted when it was created after
//! `since` (the start of the phase or rollback step that asked for the
//! restart), so calling [`restart_step`] again after a crash deletes nothing
//! twice and simply keeps waiting.
//!
//! A group whose pods are all old is restarted by one DeleteCollection with
//! its label selector, so the requests do not grow with the node count (the
//! CSI node DaemonSet has a pod per node). The pod templates are left alone:
//! the operators that own these workloads roll them on their own inputs and
//! would revert a restart annotation vcfm put there, rolling the pods a
//! second time. library-go `pkg/operator/resource/resourceapply/apps.go`
//! (`ApplyDaemonSetWithForce`, `ApplyDeploymentWithForce`) rewrites the
//! whole spec from the operator's manifest whenever the generation is not
//! the one it wrote; the CSI driver operator rolls its node DaemonSet and
//! controller Deployment through hash annotations of its own config Secret
//! (vmware-vsphere-csi-driver-operator
//! `pkg/operator/vspherecontroller/driver_starter.go`,
//! `WithSecretDaemonSetAnnotationHook`, `WithSecretHashAnnotationHook`), and
//! the cloud-controller-manager operator its Deployment through a hash of the
//! ConfigMaps and Secrets it mounts (cluster-cloud-controller-manager-operator
//! `pkg/controllers/resourceapply/config_hash.go`).

use crate::error::PhaseError;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

/// A set of pods selected by namespace and either a label selector or a name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodGroup {
    pub namespace: &'static str,
    /// Label selector (`key=value`).
    pub selector: Option<&'static str>,
    /// Pod name prefix, for pods without a distinctive label.
    pub name_prefix: Option<&'static str>,
}

impl PodGroup {
    const fn labels(namespace: &'static str, selector: &'static str) -> Self {
        Self {
            namespace,
            selector: Some(selector),
            name_prefix: None,
        }
    }

    pub fn describe(&self) -> String {
        match (self.selector, self.name_prefix) {
            (Some(s), _) => format!("{}/pods -l {s}", self.namespace),
            (None, Some(p)) => format!("{}/{p}*", self.namespace),
            (None, None) => format!("{}/pods", self.namespace),
        }
    }
}

/// The machine-config-operator pods: deleting them forces the ControllerConfig resync.
pub const MCO_PODS: PodGroup = PodGroup {
    namespace: "openshift-machine-config-operator",
    selector: None,
    name_prefix: Some("machine-config-operator-"),
};

/// Every pod group that reads the vSphere configuration (domain reference §2),
/// with both the older and the newer CSI label sets. Kube-controller-manager
/// pods are static mirror pods and are deliberately absent.
pub const VSPHERE_PODS: &[PodGroup] = &[
    PodGroup::labels(
        "openshift-cloud-controller-manager",
        "k8s-app=vsphere-cloud-controller-manager",
    ),
    // The value is the platform name (cluster-cloud-controller-manager-operator
    // `pkg/cloud/vsphere/assets/cloud-controller-manager-deployment.yaml`).
    PodGroup::labels(
        "openshift-cloud-controller-manager",
        "infrastructure.openshift.io/cloud-controller-manager=VSphere",
    ),
    // `manifests/0000_26_cloud-controller-manager-operator_50_deployment.yaml`.
    PodGroup::labels(
        "openshift-cloud-controller-manager-operator",
        "k8s-app=cloud-manager-operator",
    ),
    PodGroup::labels("openshift-machine-api", "api=clusterapi"),
    PodGroup::labels(
        "openshift-cluster-csi-drivers",
        "app=vmware-vsphere-csi-driver-controller",
    ),
    PodGroup::labels(
        "openshift-cluster-csi-drivers",
        "app=vsphere-csi-driver-controller",
    ),
    PodGroup::labels(
        "openshift-cluster-csi-drivers",
        "app=vmware-vsphere-csi-driver-node",
    ),
    PodGroup::labels(
        "openshift-cluster-csi-drivers",
        "app=vsphere-csi-driver-node",
    ),
    PodGroup::labels(
        "openshift-cluster-storage-operator",
        "name=cluster-storage-operator",
    ),
    MCO_PODS,
];

/// Where a restart stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartStatus {
    /// Pods deleted by this step.
    pub deleted: Vec<String>,
    /// Groups that have pods on this cluster.
    pub present: usize,
    /// Groups whose new pods are all Ready.
    pub ready: usize,
    /// One line per group still waiting, naming the pods.
    pub waiting: Vec<String>,
    /// The groups counted in `present`.
    pub seen: Vec<PodGroup>,
    /// The groups counted in `ready`.
    pub finished: Vec<PodGroup>,
}

impl RestartStatus {
    /// Every group that had pods runs Ready pods created after the restart.
    pub fn done(&self) -> bool {
        self.waiting.is_empty()
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Created no earlier than `since`, at the API server's second precision.
/// Replacements of the pods this step deletes often appear in the very second
/// the step began; counting them as old deleted them again and again. The
/// cost is that a pod some other actor created in that same second, before
/// the configuration change, is not restarted: a one-second window.
pub fn created_after(p: &Pod, since: Timestamp) -> bool {
    p.metadata
        .creation_timestamp
        .as_ref()
        .is_some_and(|t| t.0.as_second() >= since.as_second())
}

/// One idempotent step of restarting `groups`: deletes the pods created
/// before `since` that are not already terminating, then reports which groups
/// still lack Ready replacements. Groups without pods are fine.
pub async fn restart_step(
    ctx: &crate::context::PhaseCtx,
    groups: &[PodGroup],
    since: Timestamp,
) -> Result<RestartStatus, PhaseError> {
    let client = ctx.client();
    let deleted = ctx.caches().map(|c| &*c.deleted_pods);
    let mut st = RestartStatus::default();
    for g in groups {
        let pods = ctx.pods_of(g).await?;
        if pods.is_empty() {
            continue;
        }
        st.present += 1;
        st.seen.push(*g);
        let api = Api::<Pod>::namespaced(client.clone(), g.namespace);
        let mut not_ready = vec![];
        let mut old = vec![];
        let mut fresh = 0;
        for p in &pods {
            // Going away (or deleted by an earlier step, which the watch has
            // not shown yet); its replacement is what counts.
            if p.metadata.deletion_timestamp.is_some() || deleted.is_some_and(|d| d.contains(p)) {
                continue;
            }
            if !created_after(p, since) {
                old.push(p.name_any());
                continue;
            }
            fresh += 1;
            if !is_ready(p) {
                not_ready.push(p.name_any());
            }
        }
        match g.selector {
            // Every pod of the group is old: all of them in one request. (A
            // pod created between the read and this request, for a node just
            // added, is restarted with them: once more, no harm.)
            Some(selector) if !old.is_empty() && fresh == 0 => {
                let lp = ListParams::default().labels(selector);
                match api.delete_collection(&DeleteParams::default(), &lp).await {
                    Ok(gone) => {
                        for p in gone.left().map(|l| l.items).unwrap_or_default() {
                            if let Some(d) = deleted {
                                d.insert(&p);
                            }
                            st.deleted.push(format!("{}/{}", g.namespace, p.name_any()));
                        }
                    }
                    Err(e) if crate::error::is_not_found(&e) => {}
                    Err(e) => {
                        return Err(
                            PhaseError::from(e).context(&format!("deleting {}", g.describe()))
                        );
                    }
                }
            }
            // Some pods are new already (a step killed half-way, a node
            // added meanwhile): the old ones by name, never the new ones.
            _ => {
                for name in &old {
                    match api.delete(name, &DeleteParams::default()).await {
                        Ok(_) => st.deleted.push(format!("{}/{name}", g.namespace)),
                        Err(e) if crate::error::is_not_found(&e) => {}
                        Err(e) => {
                            return Err(PhaseError::from(e)
                                .context(&format!("deleting pod {}/{name}", g.namespace)));
                        }
                    }
                }
            }
        }
        if fresh == 0 || !old.is_empty() || !not_ready.is_empty() {
            let mut why = vec![];
            if fresh == 0 {
                why.push("no replacement pod yet".to_string());
            }
            if !not_ready.is_empty() {
                why.push(format!("not Ready: {}", not_ready.join(", ")));
            }
            if !old.is_empty() {
                why.push(format!("deleting {}", old.join(", ")));
            }
            st.waiting
                .push(format!("{} ({})", g.describe(), why.join("; ")));
        } else {
            st.ready += 1;
            st.finished.push(*g);
        }
    }
    Ok(st)
}

/// The pods this controller deleted, by uid, so that a watch that has not
/// shown a deletion yet does not get the pod deleted again (a
/// DeleteCollection would take its new replacements with it). Kept in memory
/// only: a restarted controller's watches start from a fresh list.
#[derive(Debug, Default)]
pub struct DeletedPods(std::sync::Mutex<std::collections::HashSet<String>>);

impl DeletedPods {
    fn insert(&self, p: &Pod) {
        if let (Some(uid), Ok(mut s)) = (p.metadata.uid.clone(), self.0.lock()) {
            s.insert(uid);
        }
    }

    fn contains(&self, p: &Pod) -> bool {
        p.metadata
            .uid
            .as_ref()
            .is_some_and(|u| self.0.lock().is_ok_and(|s| s.contains(u)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod_at(secs: i64) -> Pod {
        let mut p = Pod::default();
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(secs).unwrap()));
        p
    }

    #[test]
    fn pods_of_the_same_second_count_as_old() {
        let since = Timestamp::from_second(1_000).unwrap() + jiff::SignedDuration::from_millis(900);
        assert!(!created_after(&pod_at(999), since));
        assert!(created_after(&pod_at(1_000), since));
        assert!(created_after(&pod_at(1_001), since));
        assert!(!created_after(&Pod::default(), since));
    }

    #[test]
    fn every_documented_label_set_is_covered() {
        let d: Vec<String> = VSPHERE_PODS.iter().map(PodGroup::describe).collect();
        for s in [
            "k8s-app=vsphere-cloud-controller-manager",
            "infrastructure.openshift.io/cloud-controller-manager=VSphere",
            "k8s-app=cloud-manager-operator",
            "api=clusterapi",
            "app=vmware-vsphere-csi-driver-controller",
            "app=vsphere-csi-driver-controller",
            "app=vmware-vsphere-csi-driver-node",
            "app=vsphere-csi-driver-node",
            "name=cluster-storage-operator",
        ] {
            assert!(d.iter().any(|x| x.ends_with(s)), "{s}");
        }
        assert!(
            d.contains(&"openshift-machine-config-operator/machine-config-operator-*".to_string())
        );
    }
}
