//! Preflight checks for target failure domains with `regionAffinity` / `zoneAffinity`
//! (vm-host zones). Each check only reads and adds problems; Preflight (`preflight.rs`)
//! calls them, so a refusal changes nothing.

use crate::context::PhaseCtx;
use crate::error::PhaseError;
use vcfm_api::FailureDomain;
use vcfm_api::openshift::FeatureGate;

/// The feature gate behind the affinity fields and `workspace.vmGroup`.
pub const HOST_VM_GROUP_ZONAL_GATE: &str = "VSphereHostVMGroupZonal";

/// Refuses affinity unless the cluster's FeatureGate enables `VSphereHostVMGroupZonal`
/// for the running version. Without it the machine API refuses `workspace.vmGroup`
/// (machine-api-operator `pkg/webhooks/machine_webhook.go`: "feature gate
/// VSphereHostVMGroupZonal must be enabled to use vmGroup") and its vSphere controller
/// fails every create (`pkg/controller/vsphere/reconciler.go` `create`), so the new
/// workers would never come up. `feature_gate` is FeatureGate `cluster` as
/// Preflight read it in the same step (`None` where it does not exist).
pub fn check_gate(
    ctx: &PhaseCtx,
    version: Option<&str>,
    feature_gate: Option<&FeatureGate>,
    problems: &mut Vec<String>,
) {
    let names: Vec<&str> = ctx
        .migration
        .spec
        .failure_domains
        .iter()
        .filter(|f| f.uses_affinity())
        .map(|f| f.name.as_str())
        .collect();
    if names.is_empty() {
        return;
    }
    // Without a version the ClusterVersion check already reports a problem.
    let Some(version) = version else {
        return;
    };
    let enabled = feature_gate.and_then(|fg| fg.is_enabled(version, HOST_VM_GROUP_ZONAL_GATE));
    if enabled != Some(true) {
        let state = match enabled {
            Some(_) => "disabled",
            None => "not listed",
        };
        problems.push(format!(
            "spec.failureDomains {} set regionAffinity/zoneAffinity, but the FeatureGate 'cluster' has {HOST_VM_GROUP_ZONAL_GATE} {state} for version {version}: the machine API refuses workspace.vmGroup without it. Remove regionAffinity and zoneAffinity from those failure domains, or enable the gate first (a TechPreviewNoUpgrade or CustomNoUpgrade feature set, which cannot be undone)",
            names.join(", ")
        ));
    }
}

/// For a host-group zone, checks in the failure domain's compute cluster that the named
/// VM group, host group and VM-host rule exist and that the rule ties that VM group to
/// that host group. The machine controller only edits the VM group (`modifyVMGroup` in
/// machine-api-operator `pkg/controller/vsphere/reconciler.go`: an edit of a group the
/// cluster lacks fails, and the machine never powers on); nothing creates these objects
/// after installation.
pub async fn check_drs(
    vc: &vcfm_vsphere::Client,
    server: &str,
    fd: &FailureDomain,
    cluster: &vcfm_vsphere::MoRef,
    problems: &mut Vec<String>,
) -> Result<(), PhaseError> {
    let Some(hg) = fd
        .zone_affinity
        .as_ref()
        .and_then(|z| z.host_group.as_ref())
    else {
        return Ok(());
    };
    let drs = vc.drs_groups(cluster).await?;
    let cc = &fd.topology.compute_cluster;
    let mut missing = vec![];
    if drs.vm_group(&hg.vm_group).is_none() {
        missing.push(format!("VM group {:?}", hg.vm_group));
    }
    if !drs.has_host_group(&hg.host_group) {
        missing.push(format!("host group {:?}", hg.host_group));
    }
    match drs.rule(&hg.vm_host_rule) {
        None => missing.push(format!("VM-host rule {:?}", hg.vm_host_rule)),
        Some(r) if r.vm_group != hg.vm_group || r.affine_host_group != hg.host_group => {
            problems.push(format!(
                "target vCenter {server}: VM-host rule {:?} of compute cluster {cc} ties VM group {:?} to host group {:?}, but failure domain {} names VM group {:?} and host group {:?}: fix zoneAffinity.hostGroup or the rule",
                r.name, r.vm_group, r.affine_host_group, fd.name, hg.vm_group, hg.host_group
            ));
        }
        Some(_) => {}
    }
    if !missing.is_empty() {
        problems.push(format!(
            "target vCenter {server}: compute cluster {cc} has no {} (failure domain {} zoneAffinity.hostGroup): create them in the cluster's configuration (VM/Host Groups and VM/Host Rules) or fix the names",
            missing.join(", "),
            fd.name
        ));
    }
    Ok(())
}
