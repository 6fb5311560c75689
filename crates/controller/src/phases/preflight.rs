//! Phase 1: check everything that can be checked before anything changes, and
//! record the facts later phases rely on (the source vCenter above all).
//!
//! Every problem found is collected, so the administrator fixes them all in one
//! round; nothing is written anywhere but the migration's status.

use super::{Phase, preflight_consumers};
use crate::context::PhaseCtx;
use crate::error::{PhaseError, is_not_found};
use crate::openshift::{self, creds, health};
use crate::state::Outcome;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;
use vcfm_api::openshift::{
    CLUSTER, ClusterCSIDriver, ClusterVersion, FeatureGate, MULTI_VCENTER_DAY2_GATE, VERSION_NAME,
    VSPHERE_CSI_DRIVER,
};
use vcfm_api::{ClusterFacts, FailureDomain, LogLevel, SourceVCenter};

pub struct Preflight;

/// Oldest target vCenter accepted (7.0 Update 2).
const MIN_TARGET_VERSION: (u32, u32, u32) = (7, 0, 2);

/// Privileges the target user needs, and where: the groups of the OpenShift installer
/// (openshift/installer `pkg/asset/installconfig/vsphere/permissions.go`, with the machine
/// API's `Host.Inventory.EditCluster` on the cluster for VM groups), which the machine API,
/// the CSI driver and the CCM use after the migration with the same credentials, plus what
/// vcfm itself does (tag categories, tags and their attachment, the VM folder).
const ROOT_PRIVILEGES: &[&str] = &[
    "Cns.Searchable",
    "InventoryService.Tagging.AttachTag",
    "InventoryService.Tagging.CreateCategory",
    "InventoryService.Tagging.CreateTag",
    "InventoryService.Tagging.DeleteCategory",
    "InventoryService.Tagging.DeleteTag",
    "InventoryService.Tagging.EditCategory",
    "InventoryService.Tagging.EditTag",
    "Sessions.ValidateSession",
    "StorageProfile.Update",
    "StorageProfile.View",
];
/// The installer's datacenter group; VM configuration and power privileges propagate from
/// here to the VMs the machine API clones.
const DATACENTER_PRIVILEGES: &[&str] = &[
    "Resource.AssignVMToPool",
    "VApp.Import",
    "VirtualMachine.Config.AddExistingDisk",
    "VirtualMachine.Config.AddNewDisk",
    "VirtualMachine.Config.AddRemoveDevice",
    "VirtualMachine.Config.AdvancedConfig",
    "VirtualMachine.Config.Annotation",
    "VirtualMachine.Config.CPUCount",
    "VirtualMachine.Config.DiskExtend",
    "VirtualMachine.Config.DiskLease",
    "VirtualMachine.Config.EditDevice",
    "VirtualMachine.Config.Memory",
    "VirtualMachine.Config.RemoveDisk",
    "VirtualMachine.Config.Rename",
    "VirtualMachine.Config.ResetGuestInfo",
    "VirtualMachine.Config.Resource",
    "VirtualMachine.Config.Settings",
    "VirtualMachine.Config.UpgradeVirtualHardware",
    "VirtualMachine.Interact.GuestControl",
    "VirtualMachine.Interact.PowerOff",
    "VirtualMachine.Interact.PowerOn",
    "VirtualMachine.Interact.Reset",
    "VirtualMachine.Inventory.Create",
    "VirtualMachine.Inventory.CreateFromExisting",
    "VirtualMachine.Inventory.Delete",
    "VirtualMachine.Provisioning.Clone",
    "VirtualMachine.Provisioning.DeployTemplate",
    "VirtualMachine.Provisioning.MarkAsTemplate",
    "Folder.Create",
    "Folder.Delete",
    "InventoryService.Tagging.ObjectAttachable",
];
/// The installer's cluster group with the machine API's `Host.Inventory.EditCluster`, and
/// the zone tag's attachment.
const CLUSTER_PRIVILEGES: &[&str] = &[
    "Resource.AssignVMToPool",
    "VApp.AssignResourcePool",
    "VApp.Import",
    "VirtualMachine.Config.AddNewDisk",
    "Host.Inventory.EditCluster",
    "InventoryService.Tagging.ObjectAttachable",
];
const RESOURCE_POOL_PRIVILEGES: &[&str] = &[
    "Resource.AssignVMToPool",
    "VApp.AssignResourcePool",
    "VApp.Import",
    "VirtualMachine.Config.AddNewDisk",
];
const DATASTORE_PRIVILEGES: &[&str] = &[
    "Datastore.AllocateSpace",
    "Datastore.Browse",
    "Datastore.FileManagement",
    "InventoryService.Tagging.ObjectAttachable",
];
const NETWORK_PRIVILEGES: &[&str] = &["Network.Assign"];
const TEMPLATE_PRIVILEGES: &[&str] = &[
    "VirtualMachine.Provisioning.Clone",
    "VirtualMachine.Inventory.CreateFromExisting",
];

/// What preflight concluded; also what `vcfm plan` prints.
#[derive(Debug, Default, Clone)]
pub struct PreflightReport {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    pub source: Option<SourceVCenter>,
    pub cluster: Option<ClusterFacts>,
}

/// Prerequisites that cannot be verified from inside the cluster.
fn standing_warnings(targets: &[&str]) -> Vec<String> {
    vec![
        "Confirm the target port groups carry the cluster's machine network and the API and Ingress VIPs (keepalived moves them between nodes): vcfm cannot check layer-2 reachability.".into(),
        "Confirm DHCP (or your static IP reservations) serve the new machines on the target network.".into(),
        "Confirm DNS for api, api-int and *.apps keeps resolving to the VIPs.".into(),
        format!(
            "Confirm the nodes can reach the target vCenter(s) {} and their ESXi hosts on TCP 443.",
            targets.join(", ")
        ),
    ]
}

impl Phase for Preflight {
    fn execute<'a>(&'a self, ctx: &'a PhaseCtx) -> BoxFuture<'a, Result<Outcome, PhaseError>> {
        Box::pin(async move {
            let report = run(ctx).await?;
            for w in &report.warnings {
                ctx.log(LogLevel::Warning, "preflight", w.clone());
            }
            let (source, cluster, warnings) = (
                report.source.clone(),
                report.cluster.clone(),
                report.warnings.clone(),
            );
            ctx.record(|u| {
                u.warnings = Some(warnings);
                if report.problems.is_empty() {
                    u.source_vcenter = source;
                    u.cluster = cluster;
                }
            });
            if report.problems.is_empty() {
                return Ok(Outcome::Completed {
                    message: "all checks passed".into(),
                });
            }
            for p in &report.problems {
                ctx.log(LogLevel::Error, "preflight", p.clone());
            }
            let list: Vec<String> = report
                .problems
                .iter()
                .enumerate()
                .map(|(i, p)| format!("({}) {p}", i + 1))
                .collect();
            Ok(Outcome::Failed {
                message: format!(
                    "preflight found {} problem(s): {}",
                    report.problems.len(),
                    list.join(" ")
                ),
            })
        })
    }
}

/// Runs every check. Transient errors (API unavailable) abort the run so it is
/// retried; everything else becomes a problem in the report.
pub async fn run(ctx: &PhaseCtx) -> Result<PreflightReport, PhaseError> {
    let mut r = PreflightReport::default();
    let spec = &ctx.migration.spec;
    let client = ctx.client();
    let targets = ctx.migration.target_servers();

    check_spec(spec, &mut r.problems);

    // Target credentials.
    let target_secret = match ctx.target_secret().await {
        Ok(s) => Some(s),
        Err(PhaseError::Fatal(m)) => {
            r.problems.push(m);
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(s) = &target_secret {
        for server in &targets {
            let missing = creds::missing_keys(s, server);
            if !missing.is_empty() {
                r.problems.push(format!(
                    "target credentials Secret {}/{} lacks key(s) {} for target vCenter {server}: add them",
                    s.metadata.namespace.as_deref().unwrap_or(""),
                    s.metadata.name.as_deref().unwrap_or(""),
                    missing.join(", ")
                ));
            }
        }
    }

    // Infrastructure: the source vCenter, the infraID.
    let infra = ctx.infrastructure().await?;
    if infra.is_none() {
        r.problems
            .push("Infrastructure 'cluster' not found: is this an OpenShift cluster?".into());
    }
    let mut source_server = None;
    if let Some(infra) = &infra {
        let vcenters = infra.vcenters();
        let already: Vec<&str> = vcenters
            .iter()
            .map(|v| v.server.as_str())
            .filter(|s| targets.contains(s))
            .collect();
        if !already.is_empty() {
            r.problems.push(format!(
                "target vCenter(s) {} already appear in Infrastructure spec.platformSpec.vsphere.vcenters: the target must be a vCenter the cluster does not use yet",
                already.join(", ")
            ));
        }
        let sources: Vec<_> = vcenters
            .iter()
            .filter(|v| !targets.contains(&v.server.as_str()))
            .collect();
        match sources.as_slice() {
            [] => r.problems.push(
                "Infrastructure lists no source vCenter in spec.platformSpec.vsphere.vcenters (clusters installed before 4.13 must first be migrated to the failure-domain configuration)".into(),
            ),
            [one] => {
                if one.datacenters.len() != 1 {
                    r.problems.push(format!(
                        "source vCenter {} lists {} datacenters ({}); vcfm supports exactly one source datacenter",
                        one.server,
                        one.datacenters.len(),
                        one.datacenters.join(", ")
                    ));
                } else {
                    let fds = infra.failure_domains().iter().filter(|f| f.server == one.server).map(|f| f.name.clone()).collect();
                    r.source = Some(SourceVCenter { server: one.server.clone(), datacenter: one.datacenters[0].clone(), failure_domains: fds });
                    source_server = Some(one.server.clone());
                }
            }
            many => r.problems.push(format!(
                "Infrastructure lists {} source vCenters ({}); vcfm moves a cluster off exactly one",
                many.len(),
                many.iter().map(|v| v.server.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
        if infra.infra_id().is_none_or(str::is_empty) {
            r.problems
                .push("Infrastructure status.infrastructureName (the infraID) is empty".into());
        }
    }

    // Source credentials.
    let creds_secret = ctx
        .secret(creds::CREDS_NAMESPACE, creds::CREDS_NAME)
        .await?;
    if creds_secret.is_none() {
        r.problems.push("Secret kube-system/vsphere-creds not found: the cluster's own vCenter credentials are missing".into());
    }
    if let (Some(s), Some(server)) = (&creds_secret, &source_server)
        && let m = creds::missing_keys(s, server)
        && !m.is_empty()
    {
        r.problems.push(format!(
            "kube-system/vsphere-creds lacks key(s) {} for the source vCenter",
            m.join(", ")
        ));
    }

    // Version, upgrade, feature gate.
    let mut version = None;
    match Api::<ClusterVersion>::all(client.clone())
        .get(VERSION_NAME)
        .await
    {
        Ok(cv) => {
            if cv.is_progressing() {
                r.problems.push("ClusterVersion reports Progressing=True: an upgrade is running; start the migration after it completes".into());
            }
            version = cv.desired_version().map(str::to_string);
            if version.is_none() {
                r.problems
                    .push("ClusterVersion status.desired.version is empty".into());
            }
        }
        Err(e) if is_not_found(&e) => r.problems.push("ClusterVersion 'version' not found".into()),
        Err(e) => return Err(e.into()),
    }
    let mut gate = false;
    // Read once: the affinity check below looks at another gate of the same object.
    let mut feature_gate = None;
    if let Some(v) = &version {
        match Api::<FeatureGate>::all(client.clone()).get(CLUSTER).await {
            Ok(fg) => {
                match fg.is_enabled(v, MULTI_VCENTER_DAY2_GATE) {
                    Some(on) => gate = on,
                    None => ctx.log(LogLevel::Info, "preflight", format!("FeatureGate has no {MULTI_VCENTER_DAY2_GATE} entry for {v}: treating it as off (the CRD rule will be lifted while the CVO is down)")),
                }
                feature_gate = Some(fg);
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let (Some(infra), Some(version)) = (&infra, &version)
        && let Some(id) = infra.infra_id()
    {
        r.cluster = Some(ClusterFacts {
            infra_id: id.to_string(),
            version: version.clone(),
            multi_vcenter_day2: gate,
        });
    }

    // Health.
    for u in health::unstable_operators(&ctx.cluster_operators().await?, &[]) {
        r.problems.push(format!("{u}: wait until every cluster operator is Available and neither Progressing nor Degraded"));
    }
    for n in health::unready_nodes(ctx.nodes_by_name().await?.values()) {
        r.problems.push(format!(
            "{n}: every node must be Ready before machines are replaced"
        ));
    }

    // One list serves both volume checks: on a large cluster it is the biggest read of Preflight.
    let pvs = Api::<PersistentVolume>::all(ctx.client())
        .list(&ListParams::default())
        .await?
        .items;
    check_blockers(ctx, &pvs, &mut r.problems).await?;
    super::unfinished::check_unfinished_migration(ctx, &mut r.problems).await?;
    preflight_consumers::check_in_tree_volumes(&pvs, &mut r.problems);
    preflight_consumers::check_vcenters_schema(ctx, version.as_deref(), &mut r.problems).await?;
    preflight_consumers::check_credentials_mode(ctx, &mut r.problems).await?;
    super::preflight_affinity::check_gate(
        ctx,
        version.as_deref(),
        feature_gate.as_ref(),
        &mut r.problems,
    );
    if let (Some(server), Some(id)) = (&source_server, infra.as_ref().and_then(|i| i.infra_id())) {
        let sets = ctx.machine_sets().await?;
        r.problems.extend(openshift::machineset_plan::check(
            &ctx.migration,
            &sets,
            server,
            id,
        ));
    }
    preflight_consumers::check_cloud_config(ctx, &mut r.problems).await?;

    // vCenters.
    if let (Some(server), Some(s)) = (&source_server, &creds_secret)
        && creds::missing_keys(s, server).is_empty()
    {
        match ctx.source_vcenter(server).await {
            Ok(vc) => {
                if let Err(e) = vc.login().await {
                    transient_or(
                        &mut r.problems,
                        e.into(),
                        &format!("source vCenter {server}"),
                    )?;
                } else if let Err(e) = async {
                    use crate::openshift::source_topology;
                    let infra = ctx.infrastructure().await?;
                    let fds = source_topology::source_domains(infra.as_ref(), server)?;
                    source_topology::preflight(&vc, server, fds, &mut r.problems).await
                }
                .await
                {
                    transient_or(&mut r.problems, e, &format!("source vCenter {server}"))?;
                }
            }
            Err(e) => transient_or(&mut r.problems, e, &format!("source vCenter {server}"))?,
        }
    }
    if let Some(s) = &target_secret {
        for server in &targets {
            if !creds::missing_keys(s, server).is_empty() {
                continue;
            }
            let fds: Vec<&FailureDomain> = spec
                .failure_domains
                .iter()
                .filter(|f| f.server == *server)
                .collect();
            if let Err(e) = check_target(ctx, server, &fds, &mut r.problems).await {
                transient_or(&mut r.problems, e, &format!("target vCenter {server}"))?;
            }
        }
    }

    r.warnings = standing_warnings(&targets);
    if let Some(server) = &source_server
        && let Some(w) = crate::openshift::fd_refs::orphan_warning(
            &ctx.machines().await?,
            &ctx.machine_sets().await?,
            server,
        )
    {
        r.warnings.push(w);
    }
    Ok(r)
}

/// Transient errors abort (retry later); fatal ones become a problem.
fn transient_or(problems: &mut Vec<String>, e: PhaseError, what: &str) -> Result<(), PhaseError> {
    match e {
        PhaseError::Fatal(m) => {
            problems.push(format!("{what}: {m}"));
            Ok(())
        }
        PhaseError::Transient(m) => {
            problems.push(format!("{what} is unreachable or failing: {m}: check the server name, the network path from the cluster and the CA bundle"));
            Ok(())
        }
    }
}

fn check_spec(spec: &vcfm_api::MigrationSpec, problems: &mut Vec<String>) {
    if spec.failure_domains.is_empty() {
        problems
            .push("spec.failureDomains is empty: name at least one target failure domain".into());
    }
    let mut seen = BTreeSet::new();
    for fd in &spec.failure_domains {
        if !seen.insert(fd.name.as_str()) {
            problems.push(format!("failure domain name {:?} is used twice in spec.failureDomains: names must be unique", fd.name));
        }
        if fd.topology.template.trim().is_empty() {
            problems.push(format!("failure domain {:?} has no topology.template: name the RHCOS template on the target", fd.name));
        }
        if fd.server.contains(':') || fd.server.contains('/') {
            problems.push(format!("failure domain {:?} server {:?} must be a plain host name (it becomes a Secret key prefix)", fd.name, fd.server));
        }
    }
    let names: Vec<&str> = spec
        .failure_domains
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    if let Some(n) = &spec.machine_set_config.failure_domain
        && !names.contains(&n.as_str())
    {
        problems.push(format!(
            "machineSetConfig.failureDomain {n:?} names no entry of spec.failureDomains"
        ));
    }
    if let Some(n) = spec
        .control_plane_machine_set_config
        .as_ref()
        .and_then(|c| c.failure_domain.as_ref())
        && !names.contains(&n.as_str())
    {
        problems.push(format!(
            "controlPlaneMachineSetConfig.failureDomain {n:?} names no entry of spec.failureDomains"
        ));
    }
}

/// CSI volumes, health checks and autoscalers that would interfere.
async fn check_blockers(
    ctx: &PhaseCtx,
    pvs: &[PersistentVolume],
    problems: &mut Vec<String>,
) -> Result<(), PhaseError> {
    let client = ctx.client();
    let vsphere_pvs: Vec<String> = pvs
        .iter()
        .filter(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .is_some_and(|c| c.driver == VSPHERE_CSI_DRIVER)
        })
        .filter_map(|pv| pv.metadata.name.clone())
        .collect();
    if !vsphere_pvs.is_empty() {
        let removed = match Api::<ClusterCSIDriver>::all(client.clone())
            .get(VSPHERE_CSI_DRIVER)
            .await
        {
            Ok(d) => d.spec.management_state.as_deref() == Some("Removed"),
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(e.into()),
        };
        if !removed {
            let shown: Vec<&str> = vsphere_pvs.iter().take(5).map(String::as_str).collect();
            problems.push(format!(
                "{} PersistentVolume(s) use the vSphere CSI driver ({}{}): their disks live on source datastores and do not follow a VM recreation; migrate or back up that data and delete the volumes, or set ClusterCSIDriver {VSPHERE_CSI_DRIVER} managementState to Removed",
                vsphere_pvs.len(),
                shown.join(", "),
                if vsphere_pvs.len() > 5 { ", …" } else { "" }
            ));
        }
    }
    let mhcs = openshift::list_dynamic(
        client.clone(),
        "machine.openshift.io",
        "v1beta1",
        "MachineHealthCheck",
        "machinehealthchecks",
    )
    .await?;
    let blocking: Vec<String> = mhcs
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o.metadata.namespace.as_deref().unwrap_or(""),
                o.metadata.name.as_deref().unwrap_or("")
            )
        })
        .filter(|n| n != "openshift-machine-api/machine-api-termination-handler")
        .collect();
    if !blocking.is_empty() {
        problems.push(format!(
            "MachineHealthCheck(s) {} would remediate machines during the controlled rollout: delete them (recreate them afterwards)",
            blocking.join(", ")
        ));
    }
    let cas = openshift::list_dynamic(
        client.clone(),
        "autoscaling.openshift.io",
        "v1",
        "ClusterAutoscaler",
        "clusterautoscalers",
    )
    .await?;
    if !cas.is_empty() {
        problems.push("a ClusterAutoscaler exists: delete it for the duration of the migration so it does not fight the machine rollout".into());
    }
    let mas = openshift::list_dynamic(
        client,
        "autoscaling.openshift.io",
        "v1beta1",
        "MachineAutoscaler",
        "machineautoscalers",
    )
    .await?;
    if !mas.is_empty() {
        let names: Vec<String> = mas.iter().filter_map(|o| o.metadata.name.clone()).collect();
        problems.push(format!(
            "MachineAutoscaler(s) {} exist: delete them for the duration of the migration",
            names.join(", ")
        ));
    }
    Ok(())
}

/// Logs in to one target vCenter and checks version, topology and privileges.
async fn check_target(
    ctx: &PhaseCtx,
    server: &str,
    fds: &[&FailureDomain],
    problems: &mut Vec<String>,
) -> Result<(), PhaseError> {
    let vc = ctx.target_vcenter(server).await?;
    vc.login().await?;
    let about = vc.about().await?;
    if let Some(v) = about.version_tuple()
        && v < MIN_TARGET_VERSION
    {
        problems.push(format!(
            "target vCenter {server} runs version {} (API {}); OpenShift needs vCenter 7.0 Update 2 or later",
            about.version, about.api_version
        ));
    }
    let mut check = |what: String,
                     res: Result<vcfm_vsphere::MoRef, vcfm_vsphere::Error>|
     -> Result<Option<vcfm_vsphere::MoRef>, PhaseError> {
        match res {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.is_not_found() => {
                problems.push(format!(
                    "target vCenter {server}: {what} not found: fix the path in spec.failureDomains"
                ));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    };
    let mut entities: Vec<(vcfm_vsphere::MoRef, &[&str])> = vec![];
    // What the real consumers would trip over (networks, pool, template).
    let mut found: Vec<String> = vec![];
    for fd in fds {
        let t = &fd.topology;
        let dc_path = format!("/{}", t.datacenter.trim_start_matches('/'));
        let dc = check(
            format!("datacenter {dc_path} (failure domain {})", fd.name),
            vc.find_datacenter(&dc_path).await,
        )?;
        if let Some(dc) = dc {
            entities.push((dc, DATACENTER_PRIVILEGES));
        }
        let cluster = check(
            format!("compute cluster {}", t.compute_cluster),
            vc.find_cluster(&t.compute_cluster).await,
        )?;
        if let Some(c) = &cluster {
            entities.push((c.clone(), CLUSTER_PRIVILEGES));
            super::preflight_affinity::check_drs(&vc, server, fd, c, &mut found).await?;
        }
        if let Some(d) = check(
            format!("datastore {}", t.datastore),
            vc.find_datastore(&t.datastore).await,
        )? {
            entities.push((d, DATASTORE_PRIVILEGES));
        }
        match &cluster {
            Some(c) => {
                for n in preflight_consumers::check_networks(&vc, server, t, c, &mut found).await? {
                    entities.push((n, NETWORK_PRIVILEGES));
                }
            }
            None => {
                for n in &t.networks {
                    if let Some(n) =
                        check(format!("network {n}"), vc.find_network(&dc_path, n).await)?
                    {
                        entities.push((n, NETWORK_PRIVILEGES));
                    }
                }
            }
        }
        if let Some(rp) = &t.resource_pool
            && let Some(pool) = check(
                format!("resource pool {rp}"),
                vc.find_resource_pool(rp).await,
            )?
        {
            if let Some(c) = &cluster {
                preflight_consumers::check_pool_in_cluster(&vc, server, t, &pool, c, &mut found)
                    .await?;
            }
            entities.push((pool, RESOURCE_POOL_PRIVILEGES));
        }
        if let Some(tpl) = check(
            format!("template {}", t.template),
            vc.find_vm(&t.template).await,
        )? {
            preflight_consumers::check_template(
                &vc,
                server,
                &dc_path,
                &t.template,
                &tpl,
                &mut found,
            )
            .await?;
            entities.push((tpl, TEMPLATE_PRIVILEGES));
        }
        check(
            format!("VM folder {dc_path}/vm"),
            vc.find_folder(&format!("{dc_path}/vm")).await,
        )?;
    }
    problems.append(&mut found);
    let root = vc.service_content().await?.root_folder.clone();
    entities.push((root, ROOT_PRIVILEGES));
    let user = vc.username().to_string();
    // Only privileges this vCenter defines, as the installer checks them.
    let defined = vc.defined_privileges().await?;
    for (entity, privs) in &entities {
        let privs: Vec<&str> = privs
            .iter()
            .copied()
            .filter(|p| defined.is_empty() || defined.contains(*p))
            .collect();
        let report = vc
            .check_user_privileges(&user, std::slice::from_ref(entity), &privs)
            .await?;
        if !report.is_complete() {
            problems.push(format!(
                "target vCenter {server}: user {user} lacks privileges {}: grant them to the user's role on that object (or on a parent, propagating)",
                report.describe()
            ));
        }
    }
    Ok(())
}
