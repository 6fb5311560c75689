//! `operator.openshift.io/v1`: ClusterCSIDriver.

use super::Extra;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Name of the vSphere CSI driver and of its ClusterCSIDriver object.
pub const VSPHERE_CSI_DRIVER: &str = "csi.vsphere.vmware.com";

/// Operator configuration of a CSI driver (cluster-scoped, named after the driver).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "operator.openshift.io",
    version = "v1",
    kind = "ClusterCSIDriver",
    plural = "clustercsidrivers",
    status = "ClusterCSIDriverStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCSIDriverSpec {
    /// Managed, Unmanaged or Removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_state: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ClusterCSIDriverStatus {
    #[serde(flatten)]
    pub extra: Extra,
}
