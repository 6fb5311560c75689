//! The `VmwareCloudFoundationMigration` custom resource.
//!
//! Everything an administrator may change lives in the spec (including
//! approvals, which earlier designs wrongly kept in status where only the
//! controller can write); everything the controller learns lives in status.
//! No secret material is ever part of either: backups are referenced, not copied.

use crate::phase::{MigrationPhase, PhaseName};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
#[cfg(feature = "schema")]
use kube::KubeSchema;
#[cfg(feature = "schema")]
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API group of the migration resource.
pub const GROUP: &str = "migration.openshift.io";
/// API version of the migration resource.
pub const VERSION: &str = "v1alpha1";
/// Most log entries kept per phase-history entry; older ones are dropped first.
pub const MAX_LOGS_PER_PHASE: usize = 50;
/// Longest message kept in a status field; longer text is truncated.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Moves this OpenShift cluster from its current vCenter to the target vCenter(s)
/// by recreating its machines there, phase by phase.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "schema", derive(KubeSchema))]
#[kube(
    group = "migration.openshift.io",
    version = "v1alpha1",
    kind = "VmwareCloudFoundationMigration",
    plural = "vmwarecloudfoundationmigrations",
    singular = "vmwarecloudfoundationmigration",
    shortname = "vcfm",
    namespaced,
    status = "MigrationStatus",
    derive = "PartialEq",
    doc = "A migration of this OpenShift cluster to another vCenter. Create one per cluster; vcfm walks it through fifteen phases.",
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Current migration phase"}"#,
    printcolumn = r#"{"name": "State", "type": "string", "jsonPath": ".spec.state", "description": "Requested state"}"#,
    printcolumn = r#"{"name": "Approval", "type": "string", "jsonPath": ".spec.approvalMode", "description": "Approval mode"}"#,
    printcolumn = r#"{"name": "Progress", "type": "integer", "jsonPath": ".status.currentPhaseState.progress", "description": "Progress of the current phase in percent"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
// The schema (schemars) is only built for the CRD manifest (`vcfm crd` prints
// the checked-in one): the controller never needs it at run time.
#[cfg_attr(not(feature = "schema"), kube(schema = "disabled"))]
#[cfg_attr(feature = "schema", x_kube(
    validation = Rule::new("self.failureDomains.all(f, self.failureDomains.exists_one(g, g.name == f.name))").message("failure domain names must be unique"),
    validation = Rule::new("!has(self.machineSetConfig.failureDomain) || self.failureDomains.exists(f, f.name == self.machineSetConfig.failureDomain)").message("machineSetConfig.failureDomain must name one of spec.failureDomains").field_path(".machineSetConfig.failureDomain"),
    validation = Rule::new("!has(self.machineSetConfig.machineSets) || self.machineSetConfig.machineSets.all(m, !has(m.failureDomain) || self.failureDomains.exists(f, f.name == m.failureDomain))").message("machineSetConfig.machineSets[].failureDomain must name one of spec.failureDomains").field_path(".machineSetConfig.machineSets"),
    validation = Rule::new("!has(self.controlPlaneMachineSetConfig) || !has(self.controlPlaneMachineSetConfig.failureDomain) || self.failureDomains.exists(f, f.name == self.controlPlaneMachineSetConfig.failureDomain)").message("controlPlaneMachineSetConfig.failureDomain must name one of spec.failureDomains").field_path(".controlPlaneMachineSetConfig.failureDomain")
))]
#[serde(rename_all = "camelCase")]
pub struct MigrationSpec {
    /// What the administrator asks for: Pending (do nothing yet), Running, Paused
    /// (stop at the next safe point) or Rollback (undo completed phases, once).
    #[serde(default)]
    pub state: MigrationState,

    /// Automatic runs phase after phase; Manual waits before each phase until
    /// its name is listed in approvedPhases.
    #[serde(default)]
    pub approval_mode: ApprovalMode,

    /// Phases the administrator has approved (Manual mode). `vcfm approve` appends here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 15)))]
    #[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-list-type" = "set")))]
    pub approved_phases: Vec<PhaseName>,

    /// Secret holding `<server>.username` and `<server>.password` for every target vCenter.
    #[serde(rename = "targetVCenterCredentialsSecret")]
    pub target_vcenter_credentials_secret: SecretReference,

    /// Target failure domains, in OpenShift's vSphere failure-domain shape.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 32)))]
    pub failure_domains: Vec<FailureDomain>,

    /// How the new worker machines are created on the target.
    pub machine_set_config: MachineSetConfig,

    /// Where the control plane goes; all target failure domains when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_machine_set_config: Option<ControlPlaneMachineSetConfig>,

    /// Roll back automatically when a phase before the point of no return fails.
    #[serde(default = "default_true")]
    pub rollback_on_failure: bool,

    /// Per-phase deadlines overriding the defaults, as durations like `45m` or `1h30m`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "schema", x_kube(
        validation = Rule::new("self.all(k, k in ['Preflight','Backup','DisableCVO','UpdateSecrets','CreateTags','CreateFolder','UpdateInfrastructure','UpdateConfig','RestartPods','MonitorHealth','CreateWorkers','RecreateCPMS','ScaleOldMachines','Cleanup','Verify'])").message("phaseTimeouts keys must be phase names"),
        validation = Rule::new("self.all(k, self[k].matches('^([0-9]{1,4}h)?([0-9]{1,4}m)?([0-9]{1,4}s)?$') && self[k] != '')").message("phaseTimeouts values must be durations such as 45m or 1h30m")
    ))]
    // Bounded value length also keeps the CEL rule within the real apiserver's cost budget
    // (it refused the CRD with unbounded strings; kube-sim did not estimate costs).
    #[cfg_attr(feature = "schema", schemars(extend("maxProperties" = 15)))]
    #[cfg_attr(feature = "schema", schemars(extend("additionalProperties" = {"type": "string", "maxLength": MAX_DURATION_LEN})))]
    pub phase_timeouts: BTreeMap<String, String>,

    /// Set to a new value to run the failed phase again once its cause is
    /// fixed (`vcfm retry` writes the current time). Nothing else retries a
    /// failure: approving a phase or editing the spec leaves it Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 64)))]
    pub retry_token: Option<String>,

    /// Deadline of each rollback step (undoing one phase), as a duration
    /// like `15m`; the undone phase's own deadline when omitted. A step past
    /// it is not abandoned: the migration shows `Stalled` and keeps trying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_DURATION_LEN), regex(pattern = r"^([0-9]{1,4}h)?([0-9]{1,4}m)?([0-9]{1,4}s)?$")))]
    pub rollback_step_timeout: Option<String>,
}

/// Longest `phaseTimeouts` value the API accepts. With at most 4 digits per
/// unit (9999h59m59s is over a year), no value can overflow a parser.
pub const MAX_DURATION_LEN: usize = 15;

fn default_true() -> bool {
    true
}

/// The administrator's request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum MigrationState {
    #[default]
    Pending,
    Running,
    Paused,
    Rollback,
}

/// Whether phases need an explicit approval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum ApprovalMode {
    #[default]
    Automatic,
    Manual,
}

/// A Secret by name; the namespace defaults to the migration's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub struct SecretReference {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 63)))]
    pub namespace: Option<String>,
}

/// A target failure domain, as OpenShift's Infrastructure describes one.
///
/// The affinity rules are those of `VSpherePlatformFailureDomainSpec` in openshift/api
/// `config/v1/types_infrastructure.go` (feature gate `VSphereHostVMGroupZonal`), so that
/// UpdateInfrastructure writes nothing the Infrastructure CRD would refuse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(KubeSchema))]
#[cfg_attr(feature = "schema", x_kube(
    validation = Rule::new("has(self.zoneAffinity) && self.zoneAffinity.type == 'HostGroup' ?  has(self.regionAffinity) && self.regionAffinity.type == 'ComputeCluster' : true").message("when zoneAffinity type is HostGroup, regionAffinity type must be ComputeCluster"),
    validation = Rule::new("has(self.zoneAffinity) && self.zoneAffinity.type == 'ComputeCluster' ?  has(self.regionAffinity) && self.regionAffinity.type == 'Datacenter' : true").message("when zoneAffinity type is ComputeCluster, regionAffinity type must be Datacenter")
))]
#[serde(rename_all = "camelCase")]
pub struct FailureDomain {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 256)))]
    pub name: String,
    /// Value of the `openshift-region` tag on the target datacenter.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 80)))]
    pub region: String,
    /// Value of the `openshift-zone` tag on the target compute cluster.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 80)))]
    pub zone: String,
    /// Target vCenter host name as it will appear in the Infrastructure and in
    /// Secret keys, so only letters, digits, `-` and `.`.
    #[cfg_attr(
        feature = "schema",
        schemars(
            length(min = 1, max = 255),
            regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$")
        )
    )]
    pub server: String,
    pub topology: Topology,
    /// What the region is in vCenter: the datacenter (the default) or the compute cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_affinity: Option<RegionAffinity>,
    /// What the zone is in vCenter: the compute cluster (the default) or a host group of
    /// it, with the VM group that new machines join and the VM-host rule binding the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_affinity: Option<ZoneAffinity>,
}

/// `regionAffinity` of an Infrastructure failure domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub struct RegionAffinity {
    #[serde(rename = "type")]
    pub type_: RegionAffinityType,
}

/// The vCenter object that is a failure domain's region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum RegionAffinityType {
    ComputeCluster,
    Datacenter,
}

/// `zoneAffinity` of an Infrastructure failure domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(KubeSchema))]
#[cfg_attr(feature = "schema", x_kube(
    validation = Rule::new("has(self.type) && self.type == 'HostGroup' ?  has(self.hostGroup) : !has(self.hostGroup)").message("hostGroup is required when type is HostGroup, and forbidden otherwise")
))]
#[serde(rename_all = "camelCase")]
pub struct ZoneAffinity {
    #[serde(rename = "type")]
    pub type_: ZoneAffinityType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_group: Option<HostGroupAffinity>,
}

/// The vCenter object that is a failure domain's zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum ZoneAffinityType {
    HostGroup,
    ComputeCluster,
}

/// A vm-host zone: DRS groups and rule of the failure domain's compute cluster, which
/// must already exist there (Preflight checks; nothing creates them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct HostGroupAffinity {
    /// VM group (`ClusterVmGroup`) the machine controller adds each new VM to.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 80)))]
    pub vm_group: String,
    /// Host group (`ClusterHostGroup`) of the hosts forming the zone.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 80)))]
    pub host_group: String,
    /// VM-host affinity rule (`ClusterVmHostRuleInfo`) tying the VM group to the host group.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 80)))]
    pub vm_host_rule: String,
}

impl FailureDomain {
    /// The VM group new machines of this failure domain join, when its zone is a host group.
    pub fn vm_group(&self) -> Option<&str> {
        self.zone_affinity
            .as_ref()
            .filter(|z| z.type_ == ZoneAffinityType::HostGroup)?
            .host_group
            .as_ref()
            .map(|h| h.vm_group.as_str())
    }

    /// Whether the failure domain uses the fields of the `VSphereHostVMGroupZonal` gate.
    pub fn uses_affinity(&self) -> bool {
        self.region_affinity.is_some() || self.zone_affinity.is_some()
    }
}

/// Inventory paths of the target placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 80)))]
    pub datacenter: String,
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 2048), regex(pattern = r"^/.*?/host/.*?"))
    )]
    pub compute_cluster: String,
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 2048), regex(pattern = r"^/.*?/datastore/.*?"))
    )]
    pub datastore: String,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 10)))]
    #[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-list-type" = "atomic")))]
    pub networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 2048), regex(pattern = r"^/.*?/host/.*?/Resources.*"))
    )]
    pub resource_pool: Option<String>,
    /// VM folder for the cluster; `/<datacenter>/vm/<infraID>` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 2048), regex(pattern = r"^/.*?/vm/.*?"))
    )]
    pub folder: Option<String>,
    /// RHCOS template on the target; required because the source template path
    /// means nothing on another vCenter.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 2048), regex(pattern = r"^/.*?/vm/.*?"))
    )]
    pub template: String,
}

/// New worker machines on the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct MachineSetConfig {
    /// Machines per target failure domain of each recreated worker MachineSet.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub replicas: i32,
    /// Put the workers only in this failure domain; one MachineSet per target
    /// failure domain when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 256)))]
    pub failure_domain: Option<String>,
    /// Every source MachineSet (worker, infra or any other role) is recreated on
    /// the target with its role labels, node labels, taints and sizing: in each
    /// worker failure domain, worker sets with `replicas` machines and other roles
    /// with the source set's replica count. An entry here, by source name,
    /// changes that or excludes the set (its machines are then only removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 32)))]
    #[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])))]
    pub machine_sets: Vec<MachineSetMapping>,
}

/// How one source MachineSet is recreated on the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(KubeSchema))]
#[cfg_attr(feature = "schema", x_kube(
    validation = Rule::new("!has(self.exclude) || !self.exclude || (!has(self.replicas) && !has(self.failureDomain))").message("an excluded MachineSet takes no replicas or failureDomain")
))]
#[serde(rename_all = "camelCase")]
pub struct MachineSetMapping {
    /// Name of the source MachineSet in openshift-machine-api.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub name: String,
    /// Do not recreate this set on the target: ScaleOldMachines still removes
    /// its machines with the rest of the source.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude: bool,
    /// Machines per target failure domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 1000)))]
    pub replicas: Option<i32>,
    /// Recreate the set only in this failure domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 256)))]
    pub failure_domain: Option<String>,
}

/// The control plane on the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneMachineSetConfig {
    /// Put every master in this failure domain; spread over all target
    /// failure domains when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 256)))]
    pub failure_domain: Option<String>,
}

/// What the controller has observed and done. Written only through the status subresource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MigrationPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phase_history: Vec<PhaseHistoryEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_phase_state: Option<PhaseState>,
    /// Where each backed-up object is kept; the data itself is in a Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_manifests: Vec<BackupManifest>,
    /// The vCenter being left, recorded by Preflight so that later phases never
    /// infer it from list order.
    #[serde(
        rename = "sourceVCenter",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_vcenter: Option<SourceVCenter>,
    /// What Preflight established about the cluster, so later phases decide on
    /// recorded facts instead of re-deriving them mid-migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterFacts>,
    /// Objects this migration created in vCenter, so rollback removes only those.
    #[serde(
        rename = "createdVSphereObjects",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub created_vsphere_objects: Vec<CreatedVSphereObject>,
    /// Prerequisites vcfm cannot check from inside the cluster, for the administrator to confirm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `spec.retryToken` when the last phase failed or was retried: a spec
    /// value different from this one is a request to retry the failed phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_retry_token: Option<String>,
    /// Progress of a rollback; present once one has started, so it runs at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// Outcome of one phase attempt (or of its rollback).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum PhaseStatus {
    Pending,
    WaitingForApproval,
    Running,
    Completed,
    Failed,
    Skipped,
    RolledBack,
    RollbackFailed,
}

/// One entry of `status.phaseHistory`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PhaseHistoryEntry {
    pub phase: PhaseName,
    pub status: PhaseStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 50)))]
    pub logs: Vec<LogEntry>,
}

/// Severity of a phase log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

/// A line of a phase's log, kept in status for `vcfm status` and `oc describe`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub timestamp: Time,
    pub level: LogLevel,
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// The phase being worked on now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PhaseState {
    pub name: PhaseName,
    pub status: PhaseStatus,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    pub progress: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// What the phase is waiting for, one item per object or condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    #[serde(default)]
    pub requires_approval: bool,
    #[serde(default)]
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// Seconds this phase spent paused in earlier pauses; its deadline counts
    /// only the time since `startTime` minus this and any current pause.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0)))]
    pub paused_seconds: i64,
    /// When the controller saw the current pause begin; cleared on resume,
    /// in the same write that adds the pause to `pausedSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_since: Option<Time>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Where one backed-up object is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct BackupManifest {
    /// `<group>/<version>/<Kind>`, e.g. `config.openshift.io/v1/Infrastructure`.
    pub resource_type: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Secret (in the migration's namespace) holding the serialized object.
    pub secret_name: String,
    pub key: String,
    /// Hex HMAC-SHA256 of the stored bytes, keyed by a random key kept only
    /// in the backup Secret, so status reveals nothing about the (predictable)
    /// content; verified before any restore.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = "^[0-9a-f]{64}$")))]
    pub hmac_sha256: String,
    pub backup_time: Time,
}

/// The source vCenter as Preflight found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SourceVCenter {
    pub server: String,
    pub datacenter: String,
    /// The Infrastructure's failure domains on the source server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_domains: Vec<String>,
}

/// Cluster facts recorded by Preflight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClusterFacts {
    /// `Infrastructure.status.infrastructureName`.
    pub infra_id: String,
    /// `ClusterVersion.status.desired.version`.
    pub version: String,
    /// Whether the `VSphereMultiVCenterDay2` gate is on: when it is, vCenters may
    /// be added without lifting the Infrastructure CRD rule, and the CVO stays up.
    #[serde(rename = "multiVCenterDay2")]
    pub multi_vcenter_day2: bool,
}

/// A vCenter object created by this migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedVSphereObject {
    pub phase: PhaseName,
    pub server: String,
    /// TagCategory, Tag, TagAttachment or Folder.
    pub kind: String,
    /// Tag/category id, folder managed-object id, or `<tag>@<object>` for an attachment.
    pub id: String,
    /// Human-readable name or inventory path.
    pub name: String,
}

/// Who asked for a rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum RollbackTrigger {
    /// `spec.state: Rollback`.
    Requested,
    /// A phase failed and `rollbackOnFailure` was set.
    PhaseFailure,
    /// The migration was deleted after it had changed the cluster.
    Deletion,
}

/// Progress of the one rollback a migration may run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    pub trigger: RollbackTrigger,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub start_time: Time,
    /// Phases rolled back so far, in the order they were undone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_back_phases: Vec<PhaseName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The step being undone now and when it began: its deadline counts from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<RollbackStep>,
}

/// One rollback step in progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RollbackStep {
    pub phase: PhaseName,
    pub start_time: Time,
}

impl VmwareCloudFoundationMigration {
    /// Namespace of the target credentials Secret (the migration's own unless set).
    pub fn target_secret_namespace(&self) -> Option<&str> {
        self.spec
            .target_vcenter_credentials_secret
            .namespace
            .as_deref()
            .or(self.metadata.namespace.as_deref())
    }

    /// The target failure domains that receive workers.
    pub fn worker_failure_domains(&self) -> Vec<&FailureDomain> {
        select_domains(
            &self.spec.failure_domains,
            self.spec.machine_set_config.failure_domain.as_deref(),
        )
    }

    /// The target failure domains that receive the control plane.
    pub fn control_plane_failure_domains(&self) -> Vec<&FailureDomain> {
        let only = self
            .spec
            .control_plane_machine_set_config
            .as_ref()
            .and_then(|c| c.failure_domain.as_deref());
        select_domains(&self.spec.failure_domains, only)
    }

    /// Distinct target vCenter servers, in failure-domain order.
    pub fn target_servers(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for fd in &self.spec.failure_domains {
            if !out.contains(&fd.server.as_str()) {
                out.push(&fd.server);
            }
        }
        out
    }
}

fn select_domains<'a>(all: &'a [FailureDomain], only: Option<&str>) -> Vec<&'a FailureDomain> {
    all.iter()
        .filter(|fd| only.is_none_or(|n| n == fd.name))
        .collect()
}
