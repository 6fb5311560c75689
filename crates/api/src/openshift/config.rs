//! `config.openshift.io/v1`: Infrastructure, ClusterVersion, FeatureGate, ClusterOperator.

use super::Extra;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Name of the singleton Infrastructure, ClusterVersion-independent objects.
pub const CLUSTER: &str = "cluster";
/// Name of the singleton ClusterVersion.
pub const VERSION_NAME: &str = "version";
/// The feature gate that lets vCenters be added and removed after install.
pub const MULTI_VCENTER_DAY2_GATE: &str = "VSphereMultiVCenterDay2";

/// Cluster-wide infrastructure configuration (singleton `cluster`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "config.openshift.io",
    version = "v1",
    kind = "Infrastructure",
    plural = "infrastructures",
    status = "InfrastructureStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct InfrastructureSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_spec: Option<PlatformSpec>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlatformSpec {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsphere: Option<VSpherePlatformSpec>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.platformSpec.vsphere`: vCenters and failure domains; node networking
/// and VIPs stay in `extra`, untouched.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VSpherePlatformSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcenters: Option<Vec<VSphereVCenter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domains: Option<Vec<VSphereFailureDomain>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VSphereVCenter {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default)]
    pub datacenters: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VSphereFailureDomain {
    pub name: String,
    pub region: String,
    pub zone: String,
    pub server: String,
    pub topology: VSphereTopology,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_affinity: Option<crate::RegionAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_affinity: Option<crate::ZoneAffinity>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VSphereTopology {
    pub datacenter: String,
    pub compute_cluster: String,
    pub datastore: String,
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InfrastructureStatus {
    /// The infraID: prefix of every cluster resource name and of the ownership tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Infrastructure {
    /// The vSphere platform spec, when the cluster is on vSphere.
    pub fn vsphere(&self) -> Option<&VSpherePlatformSpec> {
        self.spec.platform_spec.as_ref()?.vsphere.as_ref()
    }

    /// The configured vCenters (empty when none are set).
    pub fn vcenters(&self) -> &[VSphereVCenter] {
        self.vsphere()
            .and_then(|v| v.vcenters.as_deref())
            .unwrap_or(&[])
    }

    /// The configured failure domains (empty when none are set).
    pub fn failure_domains(&self) -> &[VSphereFailureDomain] {
        self.vsphere()
            .and_then(|v| v.failure_domains.as_deref())
            .unwrap_or(&[])
    }

    /// The infraID from status.
    pub fn infra_id(&self) -> Option<&str> {
        self.status.as_ref()?.infrastructure_name.as_deref()
    }
}

/// A condition as the config.openshift.io types write it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Finds a condition by type.
pub fn find_condition<'a>(
    conds: &'a [OperatorCondition],
    type_: &str,
) -> Option<&'a OperatorCondition> {
    conds.iter().find(|c| c.type_ == type_)
}

/// The cluster version (singleton `version`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "config.openshift.io",
    version = "v1",
    kind = "ClusterVersion",
    plural = "clusterversions",
    status = "ClusterVersionStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterVersionSpec {
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterVersionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Release>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<OperatorCondition>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ClusterVersion {
    /// The version the cluster is at or moving to.
    pub fn desired_version(&self) -> Option<&str> {
        self.status.as_ref()?.desired.as_ref()?.version.as_deref()
    }

    /// True while an upgrade is in progress (`Progressing=True`).
    pub fn is_progressing(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "Progressing"))
            .is_some_and(|c| c.status == "True")
    }
}

/// Enabled and disabled feature gates (singleton `cluster`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "config.openshift.io",
    version = "v1",
    kind = "FeatureGate",
    plural = "featuregates",
    status = "FeatureGateStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct FeatureGateSpec {
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FeatureGateStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_gates: Vec<FeatureGateDetails>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FeatureGateDetails {
    pub version: String,
    #[serde(default)]
    pub enabled: Vec<FeatureGateAttributes>,
    #[serde(default)]
    pub disabled: Vec<FeatureGateAttributes>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct FeatureGateAttributes {
    pub name: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl FeatureGate {
    /// Whether `gate` is enabled for `version`; `None` when the status has no
    /// entry for that version (the answer is unknown, not "off").
    pub fn is_enabled(&self, version: &str, gate: &str) -> Option<bool> {
        let details = self
            .status
            .as_ref()?
            .feature_gates
            .iter()
            .find(|d| d.version == version)?;
        if details.enabled.iter().any(|g| g.name == gate) {
            Some(true)
        } else if details.disabled.iter().any(|g| g.name == gate) {
            Some(false)
        } else {
            None
        }
    }
}

/// A cluster operator's reported health.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "config.openshift.io",
    version = "v1",
    kind = "ClusterOperator",
    plural = "clusteroperators",
    shortname = "co",
    status = "ClusterOperatorStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOperatorSpec {
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOperatorStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<OperatorCondition>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ClusterOperator {
    /// Stable means Available=True, Progressing=False and Degraded=False, each
    /// explicitly reported; a missing or Unknown condition is not stable.
    /// Returns the reasons it is not, empty when stable.
    pub fn instability(&self) -> Vec<String> {
        let conds = self
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or(&[]);
        [
            ("Available", "True"),
            ("Progressing", "False"),
            ("Degraded", "False"),
        ]
        .into_iter()
        .filter_map(|(t, want)| match find_condition(conds, t) {
            Some(c) if c.status == want => None,
            Some(c) => Some(match c.message.as_deref().filter(|m| !m.is_empty()) {
                Some(m) => format!("{t}={} ({m})", c.status),
                None => format!("{t}={}", c.status),
            }),
            None => Some(format!("{t} not reported")),
        })
        .collect()
    }
}
