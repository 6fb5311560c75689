//! Preflight checks derived from what the real consumers of the configuration do: the
//! vSphere CSI driver operator, the Infrastructure schema of the release, the
//! cloud-credential operator. Each check only reads and adds problems; Preflight
//! (`preflight.rs`) calls them.

use crate::context::PhaseCtx;
use crate::error::{PhaseError, is_not_found};
use crate::openshift::infra;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;

/// The oldest OpenShift release whose Infrastructure schema takes more than one vCenter.
pub const MIN_MULTI_VCENTER_RELEASE: &str = "4.18";

/// PersistentVolumes of the in-tree vSphere plugin (`spec.vsphereVolume`), made by clusters
/// that began at 4.12 or earlier. They keep attaching only through CSI migration, and the
/// vSphere CSI driver operator turns CSI migration off as soon as the Infrastructure lists
/// more than one vCenter (openshift/vmware-vsphere-csi-driver-operator
/// `pkg/operator/driverfeaturescontroller.go`: `isCSIMigrationSupported` false →
/// `csi-migration: "false"`). Removing the CSI driver does not help them either.
pub fn check_in_tree_volumes(pvs: &[PersistentVolume], problems: &mut Vec<String>) {
    let names: Vec<String> = pvs
        .iter()
        .filter(|pv| pv.spec.as_ref().is_some_and(|s| s.vsphere_volume.is_some()))
        .filter_map(|pv| pv.metadata.name.clone())
        .collect();
    if names.is_empty() {
        return;
    }
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    problems.push(format!(
        "{} PersistentVolume(s) use the in-tree vSphere volume plugin (spec.vsphereVolume: {}{}): with a second vCenter configured the vSphere CSI driver operator turns CSI migration off and these volumes stop attaching, and their disks live on source datastores; migrate or back up that data and delete the volumes before the migration",
        names.len(),
        shown.join(", "),
        if names.len() > 5 { ", …" } else { "" }
    ));
}

/// The Infrastructure schema of OpenShift 4.13–4.17 caps `spec.platformSpec.vsphere.vcenters`
/// at one entry (openshift/api `release-4.16`, `config/v1/types_infrastructure.go`,
/// `+kubebuilder:validation:MaxItems=1`): the API server refuses a second vCenter whatever
/// the feature gates, and lifting a schema bound of a CVO-managed CRD is not a safe route.
/// vcfm needs the source and every target listed at once.
pub async fn check_vcenters_schema(
    ctx: &PhaseCtx,
    version: Option<&str>,
    problems: &mut Vec<String>,
) -> Result<(), PhaseError> {
    let Some(crd) = infra::Crd::of(ctx).read(false).await? else {
        return Ok(());
    };
    let Some(max) = infra::vcenters_max_items(&crd) else {
        return Ok(());
    };
    let needed = 1 + ctx.migration.target_servers().len() as u64;
    if max >= needed {
        return Ok(());
    }
    let release = version.map_or_else(String::new, |v| format!(" (OpenShift {v})"));
    if max < 2 {
        problems.push(format!(
            "the cluster's Infrastructure CRD{release} allows only {max} vCenter in spec.platformSpec.vsphere.vcenters, as OpenShift 4.13–4.17 do: a second vCenter cannot be added; upgrade the cluster to OpenShift {MIN_MULTI_VCENTER_RELEASE} or later, then start the migration"
        ));
    } else {
        problems.push(format!(
            "the cluster's Infrastructure CRD{release} allows at most {max} vCenters in spec.platformSpec.vsphere.vcenters, but the source and the target(s) of this migration make {needed}: name fewer target vCenters in spec.failureDomains"
        ));
    }
    Ok(())
}

/// The component Secrets the cloud-credential operator fills from `kube-system/vsphere-creds`
/// on vSphere: the CredentialsRequests of the machine API
/// (machine-api-operator `install/0000_30_machine-api-operator_00_credentials-request.yaml`),
/// the cloud controller manager (cluster-cloud-controller-manager-operator
/// `manifests/0000_26_cloud-controller-manager-operator_17_credentialsrequest-vsphere.yaml`),
/// the CSI driver and the problem detector (cluster-storage-operator
/// `manifests/03_credentials_request_vsphere_csi.yaml`, `03_credentials_request_vsphere_detector.yaml`).
pub const VSPHERE_COMPONENT_SECRETS: &[(&str, &str)] = &[
    ("openshift-machine-api", "vsphere-cloud-credentials"),
    (
        "openshift-cloud-controller-manager",
        "vsphere-cloud-credentials",
    ),
    (
        "openshift-cluster-csi-drivers",
        "vmware-vsphere-cloud-credentials",
    ),
    (
        "openshift-cluster-storage-operator",
        "vsphere-cloud-credentials",
    ),
];

/// In Manual mode the cloud-credential operator copies nothing (openshift/api
/// `operator/v1/types_cloudcredential.go` `CloudCredentialsModeManual`; cloud-credential-operator
/// skips every CredentialsRequest): the target credentials vcfm adds to
/// `kube-system/vsphere-creds` would never reach the machine API, the CCM or the CSI driver,
/// and machines on the target would fail after the point of no return. vcfm does not write
/// component Secrets itself, so it refuses and names every Secret the administrator manages
/// and the keys each needs.
pub async fn check_credentials_mode(
    ctx: &PhaseCtx,
    problems: &mut Vec<String>,
) -> Result<(), PhaseError> {
    let ar = ApiResource {
        group: "operator.openshift.io".into(),
        version: "v1".into(),
        api_version: "operator.openshift.io/v1".into(),
        kind: "CloudCredential".into(),
        plural: "cloudcredentials".into(),
    };
    // An absent CRD (no cloud-credential operator) or object means the default mode.
    let cc = match Api::<DynamicObject>::all_with(ctx.client(), &ar)
        .get_opt("cluster")
        .await
    {
        Ok(cc) => cc,
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(e.into()),
    };
    let manual = cc.is_some_and(|c| {
        c.data
            .pointer("/spec/credentialsMode")
            .and_then(|v| v.as_str())
            == Some("Manual")
    });
    if !manual {
        return Ok(());
    }
    let secrets: Vec<String> = VSPHERE_COMPONENT_SECRETS
        .iter()
        .map(|(ns, n)| format!("{ns}/{n}"))
        .collect();
    let targets = ctx.migration.target_servers();
    problems.push(format!(
        "the cloud-credential operator runs in Manual mode (CloudCredential cluster spec.credentialsMode: Manual): it copies nothing from kube-system/vsphere-creds and vcfm does not write component Secrets, so the target vCenter would never reach the machine API, the cloud controller manager or the CSI driver; the Secrets {} would each need the keys {}. vcfm refuses Manual mode: set spec.credentialsMode back to the default (\"\") for the migration, with kube-system/vsphere-creds holding the vCenter credentials",
        secrets.join(", "),
        targets
            .iter()
            .flat_map(|t| [format!("{t}.username"), format!("{t}.password")])
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// Hardware version below which the machine controller refuses to clone a template.
pub const MIN_TEMPLATE_HARDWARE_VERSION: u32 = 15;

/// What the machine controller does with the template (machine-api-operator
/// `pkg/controller/vsphere/reconciler.go` `clone`): it finds it by name alone
/// (`session.FindVM` → `Finder.VirtualMachine`, which searches the workspace datacenter and
/// fails with "multiple templates found" on a duplicate name; the CPMS generator keeps only
/// the template's last path element), and it refuses virtual hardware below 15 ("Hardware
/// lower than 15 is not supported"). Either would fail masters after the point of no return.
pub async fn check_template(
    vc: &vcfm_vsphere::Client,
    server: &str,
    dc_path: &str,
    template: &str,
    found: &vcfm_vsphere::MoRef,
    problems: &mut Vec<String>,
) -> Result<(), PhaseError> {
    let name = template
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(template);
    let vm_root = vc.find_folder(&format!("{dc_path}/vm")).await?;
    let same_name = vc
        .list_vms(&vm_root, true)
        .await?
        .into_iter()
        .filter(|v| v.name == name)
        .count();
    if same_name > 1 {
        problems.push(format!(
            "target vCenter {server}: {same_name} VMs or templates in datacenter {dc_path} are named {name:?}: the machine controller finds the template by its name alone and fails with \"multiple templates found\"; give the RHCOS template a name no other VM in the datacenter has (content-library deployments often leave copies)"
        ));
    }
    match vc.hardware_version(found).await? {
        Some(v) if v < MIN_TEMPLATE_HARDWARE_VERSION => problems.push(format!(
            "target vCenter {server}: template {template} has virtual hardware version {v} (vmx-{v:02}): the machine controller refuses templates below {MIN_TEMPLATE_HARDWARE_VERSION}; upgrade the template's compatibility (convert it to a VM, upgrade its hardware, convert it back) or import a current RHCOS OVA"
        )),
        _ => {}
    }
    Ok(())
}

/// Networks as the machine controller resolves them (machine-api-operator
/// `pkg/controller/vsphere/reconciler.go` `getNetworkDevices`): `networkName` is compared
/// with the names of the networks attached to the compute cluster that owns the resource
/// pool, so a path or a port group of another cluster fails every clone with "unable to get
/// network". Returns the networks found, for the privilege check.
pub async fn check_networks(
    vc: &vcfm_vsphere::Client,
    server: &str,
    t: &vcfm_api::Topology,
    cluster: &vcfm_vsphere::MoRef,
    problems: &mut Vec<String>,
) -> Result<Vec<vcfm_vsphere::MoRef>, PhaseError> {
    let attached = vc.cluster_networks(cluster).await?;
    let mut found = Vec::new();
    for n in &t.networks {
        if n.contains('/') {
            let plain = n.trim_end_matches('/').rsplit('/').next().unwrap_or(n);
            problems.push(format!(
                "target vCenter {server}: network {n} must be a plain port group name (e.g. {plain:?}): the machine controller compares it with the names of compute cluster {}'s networks",
                t.compute_cluster
            ));
            continue;
        }
        match attached.iter().find(|(_, name)| name == n) {
            Some((m, _)) => found.push(m.clone()),
            None => problems.push(format!(
                "target vCenter {server}: network {n} not found among the networks attached to compute cluster {} ({}): the machine controller looks networks up there; fix the name in spec.failureDomains or attach the port group to the cluster's hosts",
                t.compute_cluster,
                attached
                    .iter()
                    .map(|(_, name)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    Ok(found)
}

/// The machine controller takes the resource pool's owner as the compute cluster (networks,
/// VM groups: machine-api-operator `pkg/controller/vsphere/reconciler.go`), and the CPMS
/// and the Infrastructure pair the pool with the failure domain's cluster: a pool of
/// another cluster places VMs where neither networks nor zone tags match.
pub async fn check_pool_in_cluster(
    vc: &vcfm_vsphere::Client,
    server: &str,
    t: &vcfm_api::Topology,
    pool: &vcfm_vsphere::MoRef,
    cluster: &vcfm_vsphere::MoRef,
    problems: &mut Vec<String>,
) -> Result<(), PhaseError> {
    let owner = vc.resource_pool_owner(pool).await?;
    if owner.as_ref() != Some(cluster) {
        problems.push(format!(
            "target vCenter {server}: resource pool {} does not belong to compute cluster {}: name a pool under {}/Resources in spec.failureDomains",
            t.resource_pool.as_deref().unwrap_or_default(),
            t.compute_cluster,
            t.compute_cluster
        ));
    }
    Ok(())
}

/// The cloud provider configuration is where `Infrastructure.spec.cloudConfig` says (the
/// machine-config operator and the CCM operator read it there), and vcfm can read it.
pub async fn check_cloud_config(
    ctx: &PhaseCtx,
    problems: &mut Vec<String>,
) -> Result<(), PhaseError> {
    let loc = crate::openshift::cloud_config::Location::of(ctx.infrastructure().await?.as_ref());
    match ctx.cloud_config().await {
        Ok(_) => Ok(()),
        Err(PhaseError::Fatal(m)) => {
            problems.push(format!(
                "the cloud provider configuration {} that Infrastructure spec.cloudConfig names cannot be read ({m}): fix spec.cloudConfig, or let vcfm's Role in openshift-config (deploy/rbac.yaml) get and update that ConfigMap",
                loc.describe()
            ));
            Ok(())
        }
        Err(e) => Err(e),
    }
}
