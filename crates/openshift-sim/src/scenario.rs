//! What to simulate: cluster size, feature set, config format, time scale and faults.

use std::time::Duration;

/// Format of `openshift-config/cloud-provider-config` (`config` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfigFormat {
    /// Newer clusters (4.13+): YAML with `global`, `vcenter`, `labels`.
    #[default]
    Yaml,
    /// Older clusters: INI with `[Global]`, `[Workspace]`, `[VirtualCenter "..."]`, `[Labels]`.
    Ini,
}

/// The `openshift-install` release whose objects a seeded cluster carries
/// ([`Scenario::installer`]; read from openshift/installer, see `installer.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallerRelease {
    /// 4.16: an Active ControlPlaneMachineSet on `generated-failure-domain`, the INI cloud
    /// config, an Infrastructure whose schema takes one vCenter (CRD set `4.16`).
    V4_16,
    /// 4.20: the same CPMS, the YAML cloud config, the VIPs among the machine networks and
    /// `nodeNetworking` filled in (CRD set `default`, see [`InstallerRelease::crd_set`]).
    V4_20,
}

impl InstallerRelease {
    /// The release ClusterVersion and FeatureGate report.
    pub fn version(self) -> &'static str {
        match self {
            InstallerRelease::V4_16 => "4.16.8",
            InstallerRelease::V4_20 => "4.20.8",
        }
    }

    /// The CRD set under `../shared/openshift-crds/` to serve (`None`: the one the feature
    /// gate picks). There is no 4.20 set: 4.20 runs on `default` (openshift/api main, March
    /// 2026), whose Infrastructure has the vCenter rules of 4.18 and later (up to three
    /// vCenters, none added or removed without the day-2 gate) that a migration meets.
    pub fn crd_set(self) -> Option<&'static str> {
        match self {
            InstallerRelease::V4_16 => Some("4.16"),
            InstallerRelease::V4_20 => None,
        }
    }

    /// The cloud-provider config format the installer writes.
    pub fn config_format(self) -> ConfigFormat {
        match self {
            InstallerRelease::V4_16 => ConfigFormat::Ini,
            InstallerRelease::V4_20 => ConfigFormat::Yaml,
        }
    }
}

/// Which of the two simulated vCenters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The vCenter the cluster was installed on.
    Source,
    /// The vCenter the cluster is migrated to.
    Target,
}

/// How long the simulated operators take for each step; every wait in the simulation is one
/// of these, so a whole migration is as fast or as watchable as the caller wants.
#[derive(Debug, Clone)]
pub struct Delays {
    /// Machine: from creation to the clone call (scheduling, provider spec validation).
    pub provision: Duration,
    /// Machine: from VM creation to its Node turning Ready (boot, ignition, CSR approval).
    pub node_ready: Duration,
    /// Machine: from deletion request to VM destruction (drain).
    pub machine_delete: Duration,
    /// cloud-credential operator: from a `kube-system/vsphere-creds` change to the copies.
    pub credentials_sync: Duration,
    /// Replacement pod: from creation to Ready.
    pub pod_ready: Duration,
    /// Deleted pod: how long it lingers Terminating.
    pub pod_terminate: Duration,
    /// ClusterOperators: from a configuration change to going Progressing (informers,
    /// resyncs, a static-pod operator starting a new revision).
    pub operator_notice: Duration,
    /// ClusterOperators: how long they stay Progressing after a configuration change.
    pub operator_progressing: Duration,
    /// CPMS operator: from a spec change to `status.observedGeneration` catching up.
    pub cpms_observe: Duration,
    /// CPMS operator: from deletion to the Inactive CPMS coming back.
    pub cpms_recreate: Duration,
    /// CVO Deployment: from a scale to the replicas being available.
    pub deployment_ready: Duration,
    /// CVO: from a lifted Infrastructure CRD rule to its restoration (while running).
    pub cvo_restore: Duration,
    /// Level-triggered resync period of every operator (watch events trigger earlier).
    pub resync: Duration,
    /// MachineConfigPool rollout: one node's update, cordon to uncordon (the second half
    /// of it NotReady, rebooting).
    pub mcp_node_update: Duration,
}

impl Delays {
    /// As fast as possible while keeping every intermediate state observable (tests).
    pub fn instant() -> Self {
        let ms = Duration::from_millis;
        Self {
            provision: ms(50),
            node_ready: ms(150),
            machine_delete: ms(50),
            credentials_sync: ms(50),
            pod_ready: ms(200),
            pod_terminate: ms(200),
            operator_notice: ms(0),
            operator_progressing: ms(300),
            cpms_observe: ms(200),
            cpms_recreate: ms(200),
            deployment_ready: ms(200),
            cvo_restore: ms(300),
            resync: ms(500),
            mcp_node_update: ms(200),
        }
    }

    /// A pace a person can follow (`vcfm demo`): a migration takes a few minutes.
    pub fn demo() -> Self {
        let s = Duration::from_secs;
        Self {
            provision: s(3),
            node_ready: s(8),
            machine_delete: s(3),
            credentials_sync: s(2),
            pod_ready: s(5),
            pod_terminate: s(4),
            operator_notice: s(3),
            operator_progressing: s(10),
            cpms_observe: s(2),
            cpms_recreate: s(5),
            deployment_ready: s(3),
            cvo_restore: s(5),
            resync: s(2),
            mcp_node_update: s(3),
        }
    }
}

impl Default for Delays {
    fn default() -> Self {
        Self::instant()
    }
}

/// Which credentials are seeded wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongCredentials {
    /// `kube-system/vsphere-creds` holds a wrong password for the source vCenter.
    Source,
    /// [`crate::VcenterInfo::password`] of the target is wrong (what a user would put in the
    /// migration's target Secret by mistake).
    Target,
}

/// Restart one vCenter simulator at a point in time (all its state is lost, as in a real
/// vCenter restart that drops sessions; VMs it held are gone too, a harsher case).
#[derive(Debug, Clone, Copy)]
pub struct VcsimRestart {
    /// Which vCenter.
    pub site: Site,
    /// Time after [`crate::SimCluster::start`] returns.
    pub after: Duration,
}

/// Faults to inject, per scenario. `Default` is a healthy cluster.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// When the CPMS operator deletes the first outdated master, the API server becomes
    /// unavailable (every request 503) for this long, as during a real etcd member swap.
    pub api_outage_during_cpms_rollout: Option<Duration>,
    /// Machines whose name contains this string fail to provision (the clone task fails).
    pub fail_provision_matching: Option<String>,
    /// Extra time every clone on the target vCenter takes.
    pub slow_provision_target: Option<Duration>,
    /// This ClusterOperator stays `Degraded=True` whatever happens.
    pub degraded_operator: Option<String>,
    /// Restart a vcsim once, at a given time.
    pub vcsim_restart: Option<VcsimRestart>,
    /// Wrong credentials.
    pub wrong_credentials: Option<WrongCredentials>,
    /// The cloud-credential operator is broken: `kube-system/vsphere-creds` changes never
    /// reach the component secrets.
    pub credentials_not_propagated: bool,
    /// Nodes created on the target get an InternalIP outside the machine network (the VMs
    /// were attached to the wrong port group).
    pub target_network_outside_machine_network: bool,
    /// The cluster's source vCenter user (`kube-system/vsphere-creds`) may not create or
    /// attach tags: [`SOURCE_LIMITED_USER`], whose role lacks the tagging privileges.
    pub source_user_cannot_tag: bool,
}

/// The source vCenter user of [`Faults::source_user_cannot_tag`].
pub const SOURCE_LIMITED_USER: &str = "ocp-no-tagging@vsphere.local";
/// Privileges that user's role lacks.
pub const SOURCE_LIMITED_MISSING: &[&str] = &[
    "InventoryService.Tagging.CreateCategory",
    "InventoryService.Tagging.CreateTag",
    "InventoryService.Tagging.AttachTag",
    "InventoryService.Tagging.ObjectAttachable",
];

/// Which API server and which operators the cluster runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tier {
    /// kube-sim in-process, every operator simulated: fast, with API fault injection.
    #[default]
    Sim,
    /// The real etcd, kube-apiserver and kube-controller-manager (`make real-parts`),
    /// with the simulated operators.
    Real,
}

impl Tier {
    /// From `$VCFM_TIER` (`sim` or `real`), `Sim` when unset.
    pub fn from_env() -> Self {
        match std::env::var("VCFM_TIER").as_deref() {
            Ok("real") => Tier::Real,
            _ => Tier::Sim,
        }
    }
}

/// Everything that varies between simulated clusters.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Cluster name; the infraID is `<name>-<5 random chars>`.
    pub cluster_name: String,
    /// Control-plane machines (3 in every supported topology).
    pub masters: u32,
    /// Workers in the worker MachineSet.
    pub workers: u32,
    /// Also seed an `infra` MachineSet (1 replica, node label and `NoSchedule` taint
    /// `node-role.kubernetes.io/infra`) with the default router moved onto it: two router
    /// pods pinned to infra nodes and the ingress operator's PodDisruptionBudget, as a
    /// cluster with infra nodes runs them.
    pub infra_machineset: bool,
    /// Run with the `VSphereMultiVCenterDay2` feature gate (CustomNoUpgrade) and its CRDs.
    pub multi_vcenter_day2_gate: bool,
    /// Format of the cloud-provider config.
    pub config_format: ConfigFormat,
    /// OpenShift version reported by ClusterVersion and FeatureGate.
    pub version: String,
    /// Time scale.
    pub delays: Delays,
    /// Faults.
    pub faults: Faults,
    /// Where to write the admin kubeconfig (default: a temp file owned by the simulation).
    pub kubeconfig_path: Option<std::path::PathBuf>,
    /// vSphere CSI PersistentVolumes to seed (preflight must block on them).
    pub csi_volumes: u32,
    /// PersistentVolumes of the in-tree vSphere plugin (`spec.vsphereVolume`) to seed, as
    /// clusters that began at 4.12 or earlier carry them (preflight must block on them).
    pub in_tree_volumes: u32,
    /// The set of OpenShift CRDs under `../shared/openshift-crds/` to serve instead of the
    /// one the feature gate picks, e.g. `4.16` (whose Infrastructure takes one vCenter).
    pub crd_set: Option<String>,
    /// The cloud-credential operator's `spec.credentialsMode` (`None`: the default mode,
    /// passthrough on vSphere; `Manual`: it copies nothing).
    pub credentials_mode: Option<String>,
    /// The key of `openshift-config/cloud-provider-config` holding the configuration, named
    /// in `Infrastructure.spec.cloudConfig.key` (`None`: the installer's `config`).
    pub cloud_config_key: Option<String>,
    /// `workspace.vmGroup` of the worker MachineSet (a VM group of the source cluster).
    pub worker_vm_group: Option<String>,
    /// Seed the ControlPlaneMachineSet as the installer wrote it before 4.16: Active, its
    /// template's provider spec still naming the source (workspace server, datacenter,
    /// datastore, folder and pool, network names, template path) next to its failure
    /// domains, which the CPMS webhook now refuses on any update that keeps them.
    pub pre_416_cpms: bool,
    /// Seed the objects this installer release writes (ControlPlaneMachineSet, Machines,
    /// MachineSets, Infrastructure, cloud config, CSI driver pod labels) instead of the
    /// generic shapes; `None` keeps them (a CPMS in the shape the operator's generator
    /// writes, Inactive). Set with [`Scenario::installed_by`].
    pub installer: Option<InstallerRelease>,
    /// Enable the `VSphereHostVMGroupZonal` feature gate (through CustomNoUpgrade), which
    /// vm-host zones (`zoneAffinity`, `workspace.vmGroup`) need on a real cluster.
    pub host_vm_group_zonal_gate: bool,
    /// The target vCenter simulator's settings (templates, users, hardware versions).
    pub target_vcsim: Option<vcfm_vsphere::sim::VcsimOptions>,
    /// Seed a ClusterAutoscaler and a MachineAutoscaler for the worker MachineSet.
    pub autoscaling: bool,
    /// Seed a user MachineHealthCheck on the workers (besides the platform's own).
    pub user_machine_health_check: bool,
    /// Enforce RBAC in kube-sim for every non-admin token (the simulated operators are
    /// admin), so a controller can run as a service account bound only by its manifests.
    pub rbac: bool,
    /// The API server (and, later, operators) the cluster runs on. On [`Tier::Real`] RBAC
    /// is always enforced and kube-sim's fault injection is unavailable.
    pub tier: Tier,
    /// On [`Tier::Real`]: run the real machine API (machine, MachineSet and nodelink
    /// controllers with their webhooks) and the real CPMS operator instead of simulating
    /// them; openshift-sim then plays only the kubelets of their machines.
    pub real_operators: bool,
    /// The API server's `WatchList` feature gate (streaming lists: a watch that brings
    /// its initial state). On, as Kubernetes 1.34 and later (OpenShift 4.21) and 1.32
    /// (4.19) run; off, as 1.29-1.31 and 1.33 (4.16-4.18, 4.20) run by default
    /// (k8s.io/apiserver `pkg/features/kube_features.go`), a watch asking for it is refused.
    pub watch_list: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            cluster_name: "ocp".into(),
            masters: 3,
            workers: 2,
            infra_machineset: false,
            multi_vcenter_day2_gate: false,
            config_format: ConfigFormat::Yaml,
            version: "4.16.8".into(),
            delays: Delays::instant(),
            faults: Faults::default(),
            kubeconfig_path: None,
            csi_volumes: 0,
            in_tree_volumes: 0,
            crd_set: None,
            credentials_mode: None,
            cloud_config_key: None,
            worker_vm_group: None,
            host_vm_group_zonal_gate: false,
            pre_416_cpms: false,
            installer: None,
            target_vcsim: None,
            autoscaling: false,
            user_machine_health_check: false,
            rbac: false,
            tier: Tier::from_env(),
            real_operators: Tier::from_env() == Tier::Real
                && std::env::var("VCFM_REAL_OPERATORS").as_deref() != Ok("0"),
            watch_list: true,
        }
    }
}

impl Scenario {
    /// A cluster as `release`'s installer leaves it: its objects, version, CRD set and
    /// cloud-config format; everything else as [`Scenario::default`].
    pub fn installed_by(release: InstallerRelease) -> Self {
        Self {
            installer: Some(release),
            version: release.version().into(),
            crd_set: release.crd_set().map(Into::into),
            config_format: release.config_format(),
            ..Self::default()
        }
    }
}
