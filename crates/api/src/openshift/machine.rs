//! `machine.openshift.io`: MachineSet, Machine, ControlPlaneMachineSet and the
//! vSphere provider spec they carry.

use super::Extra;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Namespace of every Machine API object.
pub const MACHINE_API_NAMESPACE: &str = "openshift-machine-api";
/// Label on Machines and MachineSet templates naming the cluster's infraID.
pub const LABEL_CLUSTER: &str = "machine.openshift.io/cluster-api-cluster";
/// Label naming the machine role (`master`, `worker`, `infra`).
pub const LABEL_ROLE: &str = "machine.openshift.io/cluster-api-machine-role";
/// Label naming the machine type (`master`, `worker`, `infra`).
pub const LABEL_TYPE: &str = "machine.openshift.io/cluster-api-machine-type";
/// Label tying Machines to their MachineSet.
pub const LABEL_MACHINESET: &str = "machine.openshift.io/cluster-api-machineset";
/// Name of the singleton ControlPlaneMachineSet.
pub const CPMS_NAME: &str = "cluster";

/// Common label-selector shape (`matchLabels` is all vcfm reasons about).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Metadata of a machine template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `providerSpec`, whose `value` is the platform-specific machine description.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ProviderSpec {
    /// The value as a vSphere provider spec.
    pub fn vsphere(&self) -> Result<Option<VSphereMachineProviderSpec>, serde_json::Error> {
        self.value.clone().map(serde_json::from_value).transpose()
    }

    /// Replaces the value with a vSphere provider spec.
    pub fn set_vsphere(
        &mut self,
        spec: &VSphereMachineProviderSpec,
    ) -> Result<(), serde_json::Error> {
        self.value = Some(serde_json::to_value(spec)?);
        Ok(())
    }
}

/// Spec of a Machine, also the spec of machine templates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_spec: Option<ProviderSpec>,
    #[serde(
        rename = "providerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A single machine.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "machine.openshift.io",
    version = "v1beta1",
    kind = "Machine",
    plural = "machines",
    namespaced,
    status = "MachineStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
pub struct MachineSpecRoot {
    #[serde(flatten)]
    pub spec: MachineSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// Provisioning, Provisioned, Running, Deleting or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ref: Option<NodeReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MachineAddress>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NodeReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MachineAddress {
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Machine {
    /// The vCenter this machine's VM lives in, from its provider spec.
    pub fn server(&self) -> Option<String> {
        let ps = self.spec.spec.provider_spec.as_ref()?.vsphere().ok()??;
        ps.workspace?.server
    }

    /// `status.phase`, empty when unset.
    pub fn phase(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("")
    }
}

/// Template of the machines a MachineSet creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<MachineSpec>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A set of identical worker machines.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "machine.openshift.io",
    version = "v1beta1",
    kind = "MachineSet",
    plural = "machinesets",
    namespaced,
    status = "MachineSetStatus",
    schema = "disabled",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.labelSelector"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MachineSetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<MachineTemplate>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineSetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl MachineSet {
    /// Template labels (role, type, cluster).
    pub fn template_labels(&self) -> Option<&BTreeMap<String, String>> {
        Some(&self.spec.template.as_ref()?.metadata.as_ref()?.labels)
    }

    /// The machine role its template declares (`worker`, `infra`, ...).
    pub fn role(&self) -> Option<&str> {
        self.template_labels()?.get(LABEL_ROLE).map(String::as_str)
    }

    /// The vSphere provider spec of its template.
    pub fn provider_spec(&self) -> Result<Option<VSphereMachineProviderSpec>, serde_json::Error> {
        match self
            .spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.provider_spec.as_ref())
        {
            Some(ps) => ps.vsphere(),
            None => Ok(None),
        }
    }

    /// The vCenter its machines are created in.
    pub fn server(&self) -> Option<String> {
        self.provider_spec().ok()??.workspace?.server
    }
}

/// Manages the control-plane machines (singleton `cluster`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "machine.openshift.io",
    version = "v1",
    kind = "ControlPlaneMachineSet",
    plural = "controlplanemachinesets",
    namespaced,
    status = "ControlPlaneMachineSetStatus",
    schema = "disabled",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.labelSelector"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneMachineSetSpec {
    /// Active or Inactive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<CpmsStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<CpmsTemplate>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CpmsStrategy {
    /// RollingUpdate or OnDelete.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpmsTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    #[serde(
        rename = "machines_v1beta1_machine_openshift_io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub machines_v1beta1: Option<CpmsMachineTemplate>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpmsMachineTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domains: Option<CpmsFailureDomains>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<MachineSpec>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CpmsFailureDomains {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsphere: Option<Vec<NamedFailureDomain>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NamedFailureDomain {
    pub name: String,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneMachineSetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<super::OperatorCondition>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ControlPlaneMachineSet {
    /// Failure-domain names the template asks for.
    pub fn failure_domain_names(&self) -> Vec<&str> {
        self.spec
            .template
            .as_ref()
            .and_then(|t| t.machines_v1beta1.as_ref())
            .and_then(|m| m.failure_domains.as_ref())
            .and_then(|f| f.vsphere.as_ref())
            .map(|v| v.iter().map(|d| d.name.as_str()).collect())
            .unwrap_or_default()
    }

    /// Whether every master runs the current template: counters are only
    /// believed once the operator has observed this generation.
    pub fn rollout_complete(&self) -> bool {
        let Some(st) = self.status.as_ref() else {
            return false;
        };
        let generation = self.metadata.generation;
        let desired = self.spec.replicas.unwrap_or(3);
        st.observed_generation.is_some() && st.observed_generation == generation && {
            let r = st.replicas.unwrap_or(0);
            r > 0 && r == desired && st.updated_replicas == Some(r) && st.ready_replicas == Some(r)
        }
    }
}

/// `providerSpec.value` for vSphere (`VSphereMachineProviderSpec`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VSphereMachineProviderSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    #[serde(rename = "numCPUs", default, skip_serializing_if = "Option::is_none")]
    pub num_cpus: Option<i32>,
    #[serde(rename = "memoryMiB", default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    #[serde(rename = "diskGiB", default, skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<LocalSecretReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_secret: Option<LocalSecretReference>,
    #[serde(rename = "tagIDs", default, skip_serializing_if = "Option::is_none")]
    pub tag_ids: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where a machine's VM is placed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_pool: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NetworkSpec {
    #[serde(default)]
    pub devices: Vec<NetworkDevice>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct LocalSecretReference {
    pub name: String,
    #[serde(flatten)]
    pub extra: Extra,
}
