//! vSphere calls that only tests and the simulators make: cloning, powering off and
//! destroying VMs (openshift-sim plays the Machine API, which does this in a real
//! cluster), and ending or inspecting sessions (fault injection, redaction tests).
//! vcfm itself never creates or destroys a VM, so these exist only with the `sim`
//! feature and the controller's build cannot call them.

use std::time::Duration;

use crate::MoRef;
use crate::client::Client;
use crate::error::Result;
use crate::tasks::SHORT_TASK;
use crate::xml::{self, Node};

/// Where and how to clone a VM.
#[derive(Debug, Clone)]
pub struct CloneSpec {
    /// Destination folder.
    pub folder: MoRef,
    /// Destination resource pool (required when cloning a template).
    pub pool: Option<MoRef>,
    /// Destination datastore (default: the source's).
    pub datastore: Option<MoRef>,
    /// Power on after cloning.
    pub power_on: bool,
    /// Deadline for the clone task.
    pub timeout: Duration,
}

impl CloneSpec {
    /// Clone into `folder` and `pool`, powered off, with a 30-minute deadline.
    pub fn new(folder: MoRef, pool: Option<MoRef>) -> Self {
        Self {
            folder,
            pool,
            datastore: None,
            power_on: false,
            timeout: Duration::from_secs(1800),
        }
    }
}

impl Client {
    /// Clones `source` (VM or template) as `name`; returns the new VM.
    pub async fn clone_vm(&self, source: &MoRef, name: &str, spec: &CloneSpec) -> Result<MoRef> {
        let mut location = String::new();
        if let Some(ds) = &spec.datastore {
            location.push_str(&xml::moref_el("datastore", ds));
        }
        if let Some(pool) = &spec.pool {
            location.push_str(&xml::moref_el("pool", pool));
        }
        let args = format!(
            "{}{}<spec><location>{location}</location><template>false</template><powerOn>{}</powerOn></spec>",
            xml::moref_el("folder", &spec.folder),
            xml::el("name", name),
            spec.power_on
        );
        let task = self.start_task("CloneVM_Task", source, &args).await?;
        let result = self.wait_for_task(&task, spec.timeout).await?;
        result
            .and_then(|n| n.as_moref())
            .ok_or_else(|| self.protocol("CloneVM_Task", "task result is not a VM reference"))
    }

    /// Powers a VM off; already off is success.
    pub async fn power_off_vm(&self, vm: &MoRef) -> Result<()> {
        let state = self
            .retrieve_properties(
                "VirtualMachine",
                std::slice::from_ref(vm),
                &["runtime.powerState"],
            )
            .await?;
        let state = state
            .first()
            .and_then(|o| o.str("runtime.powerState"))
            .unwrap_or_default()
            .to_string();
        if state == "poweredOff" {
            return Ok(());
        }
        let task = self.start_task("PowerOffVM_Task", vm, "").await?;
        self.wait_for_task(&task, SHORT_TASK).await.map(|_| ())
    }

    /// Powers a VM on; already on is success.
    pub async fn power_on_vm(&self, vm: &MoRef) -> Result<()> {
        let state = self
            .retrieve_properties(
                "VirtualMachine",
                std::slice::from_ref(vm),
                &["runtime.powerState"],
            )
            .await?;
        if state.first().and_then(|o| o.str("runtime.powerState")) == Some("poweredOn") {
            return Ok(());
        }
        let task = self.start_task("PowerOnVM_Task", vm, "").await?;
        self.wait_for_task(&task, SHORT_TASK).await.map(|_| ())
    }

    /// `ReconfigureComputeResource_Task` on a compute cluster with a `ClusterConfigSpecEx`
    /// body (`groupSpec` / `rulesSpec` elements), modifying only what it names.
    async fn reconfigure_cluster(&self, cluster: &MoRef, spec: &str) -> Result<()> {
        let args =
            format!(r#"<spec xsi:type="ClusterConfigSpecEx">{spec}</spec><modify>true</modify>"#);
        let task = self
            .start_task("ReconfigureComputeResource_Task", cluster, &args)
            .await?;
        self.wait_for_task(&task, SHORT_TASK).await.map(|_| ())
    }

    /// Creates a vm-host zone in a cluster, as an administrator prepares one for a
    /// `zoneAffinity` failure domain: an empty VM group, a host group of `hosts`, and a
    /// mandatory VM-host affinity rule between them (groups first: a rule names them).
    pub async fn create_drs_zone(
        &self,
        cluster: &MoRef,
        vm_group: &str,
        host_group: &str,
        hosts: &[MoRef],
        rule: &str,
    ) -> Result<()> {
        let host_refs: String = hosts.iter().map(|h| xml::moref_el("host", h)).collect();
        let groups = format!(
            r#"<groupSpec><operation>add</operation><info xsi:type="ClusterVmGroup">{}</info></groupSpec><groupSpec><operation>add</operation><info xsi:type="ClusterHostGroup">{}{host_refs}</info></groupSpec>"#,
            xml::el("name", vm_group),
            xml::el("name", host_group),
        );
        self.reconfigure_cluster(cluster, &groups).await?;
        let rules = format!(
            r#"<rulesSpec><operation>add</operation><info xsi:type="ClusterVmHostRuleInfo"><enabled>true</enabled>{}<mandatory>true</mandatory>{}{}</info></rulesSpec>"#,
            xml::el("name", rule),
            xml::el("vmGroupName", vm_group),
            xml::el("affineHostGroupName", host_group),
        );
        self.reconfigure_cluster(cluster, &rules).await
    }

    /// Replaces the members of an existing VM group (`edit`), as the machine controller
    /// does after each clone and deletion (machine-api-operator
    /// `pkg/controller/vsphere/reconciler.go` `modifyVMGroup`): vCenter refuses the edit
    /// of a group the cluster does not have.
    pub async fn set_vm_group_members(
        &self,
        cluster: &MoRef,
        group: &str,
        vms: &[MoRef],
    ) -> Result<()> {
        let vm_refs: String = vms.iter().map(|v| xml::moref_el("vm", v)).collect();
        let spec = format!(
            r#"<groupSpec><operation>edit</operation><info xsi:type="ClusterVmGroup">{}{vm_refs}</info></groupSpec>"#,
            xml::el("name", group),
        );
        self.reconfigure_cluster(cluster, &spec).await
    }

    /// The hosts of a compute cluster (its `host` property).
    pub async fn cluster_hosts(&self, cluster: &MoRef) -> Result<Vec<MoRef>> {
        let o = self
            .retrieve_properties(
                "ClusterComputeResource",
                std::slice::from_ref(cluster),
                &["host"],
            )
            .await?;
        Ok(o.first().map(|o| o.morefs("host")).unwrap_or_default())
    }

    /// Powers a VM off if needed and destroys it (disks included).
    pub async fn destroy_vm(&self, vm: &MoRef) -> Result<()> {
        self.power_off_vm(vm).await?;
        let task = self.start_task("Destroy_Task", vm, "").await?;
        self.wait_for_task(&task, SHORT_TASK).await.map(|_| ())
    }

    /// Destroys a VM without powering it off first: fails on a powered-on VM, as vCenter does.
    pub async fn destroy_vm_no_power_off(&self, vm: &MoRef) -> Result<()> {
        let task = self.start_task("Destroy_Task", vm, "").await?;
        self.wait_for_task(&task, SHORT_TASK).await.map(|_| ())
    }

    /// `SessionManager.TerminateSession`: ends other sessions by key (administration and
    /// fault injection; a session cannot terminate itself).
    pub async fn terminate_sessions(&self, keys: &[String]) -> Result<()> {
        let sm = self.service_content().await?.session_manager.clone();
        for k in keys {
            self.add_secret(k);
        }
        let args: String = keys.iter().map(|k| xml::el("sessionId", k)).collect();
        self.soap("TerminateSession", &sm, &args, false)
            .await
            .map(|_| ())
    }

    /// `SessionManager.SessionIsActive`: whether session `key` of `user` is still valid.
    pub async fn session_is_active(&self, key: &str, user: &str) -> Result<bool> {
        let sm = self.service_content().await?.session_manager.clone();
        self.add_secret(key);
        let args = format!("{}{}", xml::el("sessionID", key), xml::el("userName", user));
        let res = self.soap("SessionIsActive", &sm, &args, true).await?;
        Ok(res
            .child("returnval")
            .and_then(Node::as_bool)
            .unwrap_or(false))
    }

    /// The key of this client's current SOAP session (`SessionManager.currentSession.key`).
    /// Treated as a secret: it is redacted from all logs.
    pub async fn current_session_key(&self) -> Result<String> {
        let sm = self.service_content().await?.session_manager.clone();
        let r = self
            .retrieve_properties(
                "SessionManager",
                std::slice::from_ref(&sm),
                &["currentSession"],
            )
            .await?;
        r.first()
            .and_then(|o| o.props.get("currentSession"))
            .and_then(|n| n.child_text("key"))
            .map(str::to_string)
            .ok_or_else(|| self.protocol("RetrievePropertiesEx", "no currentSession"))
    }
}
