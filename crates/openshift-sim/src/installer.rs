//! The objects `openshift-install` writes for a vSphere cluster, per release, as they stand
//! once the cluster is up: [`crate::Scenario::installer`] seeds these instead of the
//! generic shapes of [`crate::seed`].
//!
//! Read from openshift/installer (the stored 4.14–4.17 and 4.18–4.21 revisions of each file;
//! the release branches themselves could not be fetched here, see the README):
//! - `pkg/asset/machines/vsphere/machines.go` (`Machines`, `provider`): one master Machine
//!   per replica, named `<infraID>-master-<n>`, its provider spec naming the failure
//!   domain's workspace (server, datacenter, datastore, folder `/<dc>/vm/<infraID>` when the
//!   failure domain names none, resource pool), network and template (the bare name
//!   `<infraID>-rhcos-<region>-<zone>` of the OVA it uploads when the failure domain names
//!   none); and the ControlPlaneMachineSet: **Active**, the failure domains of the masters
//!   (`generated-failure-domain` for an install-config without any), and a provider spec
//!   whose network, workspace and template are cleared (`len(failureDomains) >= 1`). The
//!   same code in both releases; 4.20 adds `dataDisks`, empty unless configured (omitted).
//! - `pkg/types/vsphere/conversion` and the install-config survey: the single failure
//!   domain `generated-failure-domain` / `generated-region` / `generated-zone`.
//! - `pkg/asset/machines/vsphere/machinesets.go`: one worker MachineSet per zone,
//!   `<infraID>-worker-<n>`, with the same full provider spec as a master's.
//! - `pkg/asset/manifests/vsphere/infrastructure.go` (`GetInfraPlatformSpec`): the failure
//!   domain with the topology of install-config plus the template path
//!   `/<dc>/vm/<template>`; 4.17+ appends the API and ingress VIPs as `/32` machine networks
//!   and, with `VSphereMultiNetworks` (Default since 4.18), copies the machine networks into
//!   `nodeNetworking`.
//! - `pkg/asset/manifests/vsphere/cloudproviderconfig.go`: 4.14–4.17 write the INI of
//!   `CloudProviderConfigIni`; later releases the YAML of `CloudProviderConfigYaml`
//!   (openshift/library-go `pkg/cloudprovider/vsphere/yaml.go` types, `omitempty`, keys
//!   sorted by `sigs.k8s.io/yaml`), with `labels` only for more than one failure domain.
//!
//! Deviation: the template VM is the simulator's (`rhcos-template`) rather than the OVA the
//! installer uploads as `<infraID>-rhcos-<region>-<zone>`; every object names it the way
//! the installer names its own (bare in provider specs, a path in the Infrastructure).

use serde_json::{Value, json};

use crate::scenario::InstallerRelease;
use crate::seed::{INSTALL_FAILURE_DOMAIN, MACHINE_NETWORK, MAPI_CREDS, MAPI_NS, role_labels};
use crate::vcenter::VcenterInfo;

/// Region and zone of [`INSTALL_FAILURE_DOMAIN`].
const REGION: &str = "generated-region";
const ZONE: &str = "generated-zone";
/// The API and ingress VIPs the seeds use (Infrastructure `apiServerInternalIPs`,
/// `ingressIPs`).
const API_VIP: &str = "10.0.0.5";
const INGRESS_VIP: &str = "10.0.0.6";

/// The template's bare name, as a provider spec names it.
fn template_name(vc: &VcenterInfo) -> &str {
    vc.template.rsplit('/').next().unwrap_or(&vc.template)
}

/// A provider spec as `provider()` of `machines.go` encodes it for `role` on the install
/// failure domain (Go's encoding: `metadata` with a null `creationTimestamp`, `snapshot`
/// and `template` always present, empty lists omitted).
pub(crate) fn provider(role: &str, vc: &VcenterInfo) -> Value {
    // pkg/asset/machines/worker.go `defaultVSphereMachinePoolPlatform` (master.go sets
    // the same for masters): 4 CPUs, 4 per socket, 16 GiB, a 120 GiB disk.
    let user_data = if role == "master" {
        "master-user-data"
    } else {
        "worker-user-data"
    };
    json!({
        "apiVersion": "machine.openshift.io/v1beta1", "kind": "VSphereMachineProviderSpec",
        "metadata": {"creationTimestamp": null},
        "userDataSecret": {"name": user_data},
        "credentialsSecret": {"name": MAPI_CREDS},
        "template": template_name(vc),
        "workspace": {"server": vc.server, "datacenter": vc.datacenter,
            "datastore": vc.datastore, "folder": vc.folder, "resourcePool": vc.resource_pool},
        "network": {"devices": [{"networkName": vc.network}]},
        "numCPUs": 4, "numCoresPerSocket": 4, "memoryMiB": 16384, "diskGiB": 120,
        "snapshot": "",
    })
}

/// The ControlPlaneMachineSet `machines.go` writes: Active on the masters' failure domain,
/// the provider spec's network, workspace and template cleared. `strategy` is the CRD's
/// default the API server fills in; `status` and the finalizer are the operator's.
pub(crate) fn cpms(infra_id: &str, replicas: u32, master_provider: &Value) -> Value {
    let labels = role_labels(infra_id, "master");
    let mut provider = master_provider.clone();
    provider["network"] = json!({"devices": null});
    provider["workspace"] = json!({});
    provider["template"] = json!("");
    json!({"apiVersion": "machine.openshift.io/v1", "kind": "ControlPlaneMachineSet",
    "metadata": {"name": "cluster", "namespace": MAPI_NS,
        "labels": {vcfm_api::openshift::LABEL_CLUSTER: infra_id},
        "finalizers": [crate::seed::CPMS_FINALIZER]},
    "spec": {
        "replicas": replicas, "state": "Active", "strategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": labels},
        "template": {"machineType": "machines_v1beta1_machine_openshift_io",
            "machines_v1beta1_machine_openshift_io": {
                "failureDomains": {"platform": "VSphere",
                    "vsphere": [{"name": INSTALL_FAILURE_DOMAIN}]},
                "metadata": {"labels": labels},
                "spec": {"lifecycleHooks": {}, "metadata": {},
                    "providerSpec": {"value": provider}}}}},
    "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas,
        "updatedReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "AllReplicasAvailable", "message": "",
                "lastTransitionTime": crate::kapi::now()},
            {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "",
                "lastTransitionTime": crate::kapi::now()},
            {"type": "Progressing", "status": "False", "reason": "AllReplicasUpdated", "message": "",
                "lastTransitionTime": crate::kapi::now()},
        ]}})
}

/// `spec.platformSpec.vsphere` as `GetInfraPlatformSpec` writes it for `release`.
pub(crate) fn platform_spec(release: InstallerRelease, vc: &VcenterInfo) -> Value {
    // install-config's failure domain as the installer's survey writes it: no folder (the
    // machines get `/<dc>/vm/<infraID>`), the compute cluster's root pool.
    let fd = json!({"name": INSTALL_FAILURE_DOMAIN, "region": REGION, "zone": ZONE,
        "server": vc.server,
        "topology": {"datacenter": vc.datacenter, "computeCluster": vc.compute_cluster,
            "networks": [vc.network], "datastore": vc.datastore,
            "resourcePool": vc.resource_pool,
            "template": format!("/{}/vm/{}", vc.datacenter, template_name(vc))}});
    let (machine_networks, node_networking) = match release {
        InstallerRelease::V4_16 => (
            json!([MACHINE_NETWORK]),
            json!({"external": {}, "internal": {}}),
        ),
        InstallerRelease::V4_20 => (
            json!([
                MACHINE_NETWORK,
                format!("{API_VIP}/32"),
                format!("{INGRESS_VIP}/32")
            ]),
            json!({"external": {"networkSubnetCidr": [MACHINE_NETWORK]},
                "internal": {"networkSubnetCidr": [MACHINE_NETWORK]}}),
        ),
    };
    json!({
        "vcenters": [{"server": vc.server, "port": 443, "datacenters": [vc.datacenter]}],
        "failureDomains": [fd],
        "apiServerInternalIPs": [API_VIP],
        "ingressIPs": [INGRESS_VIP],
        "machineNetworks": machine_networks,
        "nodeNetworking": node_networking,
    })
}

/// The `config` key of `openshift-config/cloud-provider-config` as `release` writes it for
/// one vCenter and one failure domain.
pub(crate) fn cloud_config(release: InstallerRelease, infra_id: &str, vc: &VcenterInfo) -> String {
    let (server, dc) = (&vc.server, &vc.datacenter);
    match release {
        // CloudProviderConfigIni: the port line is followed by an empty line, the folder
        // defaults to the cluster's, no [Labels] for a single failure domain.
        InstallerRelease::V4_16 => format!(
            "[Global]\nsecret-name = \"vsphere-creds\"\nsecret-namespace = \"kube-system\"\ninsecure-flag = \"1\"\n\n[VirtualCenter \"{server}\"]\nport = \"443\"\n\ndatacenters = \"{dc}\"\n\n[Workspace]\nserver = \"{server}\"\ndatacenter = \"{dc}\"\ndefault-datastore = \"{ds}\"\nfolder = \"/{dc}/vm/{infra_id}\"\nresourcepool-path = \"{pool}\"\n\n",
            ds = vc.datastore,
            pool = vc.resource_pool,
        ),
        // CloudProviderConfigYaml: `global` with the secret and insecureFlag, one `vcenter`
        // entry, no `labels` for a single failure domain.
        InstallerRelease::V4_20 => format!(
            "global:\n  insecureFlag: true\n  secretName: vsphere-creds\n  secretNamespace: kube-system\nvcenter:\n  {server}:\n    datacenters:\n    - {dc}\n    port: 443\n    server: {server}\n"
        ),
    }
}

/// Gates the 4.20 Default feature set enables that the 4.16 list [`crate::seed`] writes
/// keeps disabled: `VSphereMultiNetworks` (openshift/api `features/features.go`, Default
/// since 4.18; the installer fills `nodeNetworking` because of it).
pub(crate) fn default_gates_420(fg: &mut Value) {
    const GATES: &[&str] = &["VSphereMultiNetworks"];
    if let Some(details) = fg
        .pointer_mut("/status/featureGates/0")
        .and_then(Value::as_object_mut)
    {
        if let Some(d) = details.get_mut("disabled").and_then(Value::as_array_mut) {
            d.retain(|g| !GATES.iter().any(|n| g["name"] == *n));
        }
        if let Some(e) = details.get_mut("enabled").and_then(Value::as_array_mut) {
            for n in GATES {
                if !e.iter().any(|g| g["name"] == *n) {
                    e.push(json!({"name": n}));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc() -> VcenterInfo {
        VcenterInfo {
            server: "127.0.0.9".into(),
            username: "u".into(),
            password: "p".into(),
            ca_pem_path: "/dev/null".into(),
            datacenter: "DC0".into(),
            compute_cluster: "/DC0/host/DC0_C0".into(),
            datastore: "/DC0/datastore/LocalDS_0".into(),
            network: "VM Network".into(),
            resource_pool: "/DC0/host/DC0_C0/Resources".into(),
            template: "/DC0/vm/rhcos-template".into(),
            folder: "/DC0/vm/ocp-abcde".into(),
        }
    }

    /// What the CPMS operator injects from the failure domain into the cleared template
    /// (cluster-control-plane-machine-set-operator `providerconfig/vsphere.go`,
    /// `InjectFailureDomain`) is what the installer wrote into each master: no rollout
    /// right after installation.
    #[test]
    fn cpms_template_plus_failure_domain_is_the_masters_provider_spec() {
        let vc = vc();
        let master = provider("master", &vc);
        let cpms = cpms("ocp-abcde", 3, &master);
        let template = &cpms["spec"]["template"]["machines_v1beta1_machine_openshift_io"];
        assert_eq!(
            template["failureDomains"]["vsphere"][0]["name"],
            INSTALL_FAILURE_DOMAIN
        );
        let value = &template["spec"]["providerSpec"]["value"];
        assert_eq!(value["workspace"], json!({}));
        assert_eq!(value["template"], "");
        assert_eq!(value["network"], json!({"devices": null}));
        let spec = platform_spec(InstallerRelease::V4_20, &vc);
        let fd: vcfm_api::openshift::VSphereFailureDomain =
            serde_json::from_value(spec["failureDomains"][0].clone()).unwrap();
        assert_eq!(
            crate::ops::cpms::inject(value.clone(), &fd, "ocp-abcde"),
            master
        );
    }
}
