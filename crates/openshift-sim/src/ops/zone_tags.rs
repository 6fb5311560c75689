//! What the cluster reports once it is zonal and a failure domain's compute
//! cluster carries no region/zone tags.
//!
//! Upstream, with more than one failure domain in the Infrastructure:
//! - the CCM operator writes the `openshift-region`/`openshift-zone` labels
//!   into the CCM config (openshift/cluster-cloud-controller-manager-operator
//!   `pkg/cloud/vsphere/vsphere_config_transformer.go`), and the vSphere cloud
//!   provider then fails every zone lookup for a node whose host has no such
//!   tag in its ancestry (kubernetes/cloud-provider-vsphere
//!   `pkg/common/connectionmanager/zones.go`, `LookupZoneByMoref`: "vSphere
//!   zone category ... does not match any tags");
//! - the storage operator's vsphere-problem-detector checks every failure
//!   domain's compute cluster and its ancestors for both tags
//!   (openshift/vsphere-problem-detector `pkg/check/zones.go`,
//!   `CheckZoneTags`: "tag associated with tag category openshift-zone not
//!   attached to this resource or ancestor").
//!
//! The simulator surfaces this as the `storage` ClusterOperator Degraded
//! naming each untagged failure domain, which is what an administrator (and
//! MonitorHealth) sees. Like `CheckZoneTags`, the compute cluster and its
//! datacenter are searched (folders above them are not tagged by anyone here).

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use vcfm_api::openshift::Infrastructure;

use super::Ctx;
use crate::kapi::call;

const REGION: &str = "openshift-region";
const ZONE: &str = "openshift-zone";

/// One message per failure domain whose compute cluster (or datacenter) lacks
/// a region or zone tag; empty while the cluster has fewer than two failure
/// domains (the labels are not configured then).
pub(crate) async fn untagged_domains(ctx: &Ctx, infra: &Infrastructure) -> Vec<String> {
    let fds = infra.failure_domains();
    if fds.len() < 2 {
        return vec![];
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), "kube-system");
    let Ok(Some(creds)) = call(secrets.get_opt("vsphere-creds")).await else {
        return vec![];
    };
    let data = creds.data.unwrap_or_default();
    let mut out = vec![];
    for fd in fds {
        let field = |s: &str| {
            data.get(&format!("{}.{s}", fd.server))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        };
        let (Some(user), Some(password)) = (field("username"), field("password")) else {
            continue;
        };
        let Ok(vc) = ctx.vc.client(&fd.server, &user, &password) else {
            continue;
        };
        let dc = format!("/{}", fd.topology.datacenter.trim_matches('/'));
        let (Ok(dc_ref), Ok(cl_ref)) = (
            vc.find_datacenter(&dc).await,
            vc.find_cluster(&fd.topology.compute_cluster).await,
        ) else {
            continue;
        };
        let mut found = (false, false);
        for obj in [&cl_ref, &dc_ref] {
            for (cat, slot) in [(REGION, 0), (ZONE, 1)] {
                let Ok(Some(c)) = vc.find_category(cat).await else {
                    continue;
                };
                if let Ok(t) = vc.attached_tags_of_category(obj, &c.id).await
                    && !t.is_empty()
                {
                    if slot == 0 {
                        found.0 = true;
                    } else {
                        found.1 = true;
                    }
                }
            }
        }
        for (ok, cat) in [(found.0, REGION), (found.1, ZONE)] {
            if !ok {
                out.push(format!(
                    "failure domain {}: ClusterComputeResource {}: tag associated with tag category {cat} not attached to this resource or ancestor",
                    fd.name, fd.topology.compute_cluster
                ));
            }
        }
    }
    out
}
