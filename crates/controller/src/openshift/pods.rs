//! Restarting the pods that read the vSphere configuration, and knowing when
//! their replacements are Ready.
//!
//! Stateless by design: a pod counts as restarted when it was created after
//! `since` (the start of the phase or rollback step that asked for the
//! restart), so calling [`restart_step`] again after a crash deletes nothing
//! twice and simply keeps waiting.
//!
//! A group whose pods are all old is restarted by one DeleteCollection with
//! its label selector, shared with the other such groups of its namespace
//! that select on the same label key, so the requests do not grow with the
//! node count (the CSI node DaemonSet has a pod per node). The pod templates are left alone:
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

/// What one step found of a group with pods.
struct Found {
    group: PodGroup,
    /// Created before the restart and not yet going away.
    old: Vec<Pod>,
    /// Created after the restart.
    fresh: usize,
    not_ready: Vec<String>,
}

/// One idempotent step of restarting `groups`: deletes the pods created
/// before `since` that are not already terminating, then reports which groups
/// still lack Ready replacements. Groups without pods are fine.
pub async fn restart_step(
    ctx: &crate::context::PhaseCtx,
    groups: &[PodGroup],
    since: Timestamp,
) -> Result<RestartStatus, PhaseError> {
    let deleted = ctx.caches().map(|c| &*c.deleted_pods);
    let mut st = RestartStatus::default();
    let mut found = vec![];
    // The old pods of the groups before: a pod with the labels of two groups
    // (the cloud controller manager's) is deleted as part of the first.
    let mut claimed = std::collections::HashSet::new();
    for g in groups {
        let pods = ctx.pods_of(g).await?;
        if pods.is_empty() {
            continue;
        }
        st.present += 1;
        st.seen.push(*g);
        let mut f = Found {
            group: *g,
            old: vec![],
            fresh: 0,
            not_ready: vec![],
        };
        for p in pods {
            // Going away (or deleted by an earlier step, which the watch has
            // not shown yet); its replacement is what counts.
            if p.metadata.deletion_timestamp.is_some()
                || deleted.is_some_and(|d| d.contains(&p))
                || p.metadata.uid.as_ref().is_some_and(|u| claimed.contains(u))
            {
                continue;
            }
            if !created_after(&p, since) {
                claimed.extend(p.metadata.uid.clone());
                f.old.push(p);
                continue;
            }
            f.fresh += 1;
            if !is_ready(&p) {
                f.not_ready.push(p.name_any());
            }
        }
        found.push(f);
    }
    delete_old(ctx, &found, &mut st).await?;
    for f in &found {
        if f.fresh == 0 || !f.old.is_empty() || !f.not_ready.is_empty() {
            let mut why = vec![];
            if f.fresh == 0 {
                why.push("no replacement pod yet".to_string());
            }
            if !f.not_ready.is_empty() {
                why.push(format!("not Ready: {}", f.not_ready.join(", ")));
            }
            if !f.old.is_empty() {
                let old: Vec<String> = f.old.iter().map(ResourceExt::name_any).collect();
                why.push(format!("deleting {}", old.join(", ")));
            }
            st.waiting
                .push(format!("{} ({})", f.group.describe(), why.join("; ")));
        } else {
            st.ready += 1;
            st.finished.push(f.group);
        }
    }
    Ok(st)
}

/// Groups of one namespace selecting on one label key, deleted together.
struct Batch {
    namespace: &'static str,
    key: &'static str,
    values: Vec<&'static str>,
    groups: Vec<PodGroup>,
}

/// Deletes the old pods `found`. The groups whose pods are all old go by
/// label selector, one DeleteCollection for all of them that share a
/// namespace and a label key (`app in (a,b)` selects exactly the pods of
/// `app=a` and of `app=b`: k8s.io/apimachinery `pkg/labels/selector.go`,
/// `Requirement.Matches`), so the requests grow neither with the node count
/// nor with the label sets a workload has had. A pod created between the read
/// and the request, for a node just added, is restarted with them: once
/// more, no harm. The others, where some pods are new already (a step killed
/// half-way, a node added meanwhile), lose their old pods by name, never the
/// new ones.
async fn delete_old(
    ctx: &crate::context::PhaseCtx,
    found: &[Found],
    st: &mut RestartStatus,
) -> Result<(), PhaseError> {
    let deleted = ctx.caches().map(|c| &*c.deleted_pods);
    let mut batches: Vec<Batch> = vec![];
    for f in found.iter().filter(|f| !f.old.is_empty()) {
        let g = f.group;
        let by_label = match (g.selector, g.name_prefix) {
            (Some(s), None) if f.fresh == 0 => s.split_once('='),
            _ => None,
        };
        let Some((k, v)) = by_label else {
            let api = Api::<Pod>::namespaced(ctx.client(), g.namespace);
            for p in &f.old {
                let name = p.name_any();
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => st.deleted.push(format!("{}/{name}", g.namespace)),
                    Err(e) if crate::error::is_not_found(&e) => {}
                    Err(e) => {
                        return Err(PhaseError::from(e)
                            .context(&format!("deleting pod {}/{name}", g.namespace)));
                    }
                }
                // Not deleted again by a step that runs before the watch shows it.
                if let Some(d) = deleted {
                    d.insert(p);
                }
            }
            continue;
        };
        match batches
            .iter_mut()
            .find(|b| b.namespace == g.namespace && b.key == k)
        {
            Some(b) => {
                b.values.push(v);
                b.groups.push(g);
            }
            None => batches.push(Batch {
                namespace: g.namespace,
                key: k,
                values: vec![v],
                groups: vec![g],
            }),
        }
    }
    for Batch {
        namespace,
        key,
        values,
        groups,
    } in batches
    {
        let selector = match values.as_slice() {
            [v] => format!("{key}={v}"),
            vs => format!("{key} in ({})", vs.join(",")),
        };
        let api = Api::<Pod>::namespaced(ctx.client(), namespace);
        let lp = ListParams::default().labels(&selector);
        match api.delete_collection(&DeleteParams::default(), &lp).await {
            Ok(gone) => {
                for p in gone.left().map(|l| l.items).unwrap_or_default() {
                    if let Some(d) = deleted {
                        d.insert(&p);
                    }
                    st.deleted.push(format!("{namespace}/{}", p.name_any()));
                }
            }
            Err(e) if crate::error::is_not_found(&e) => {}
            Err(e) => {
                let what: Vec<String> = groups.iter().map(PodGroup::describe).collect();
                return Err(PhaseError::from(e).context(&format!("deleting {}", what.join(", "))));
            }
        }
    }
    Ok(())
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
