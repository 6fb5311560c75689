//! DRS groups and VM-host rules of a compute cluster (`configurationEx.group` and
//! `configurationEx.rule`): what a failure domain's `zoneAffinity.hostGroup` names, and
//! what the OpenShift machine controller edits when it adds a clone to its VM group
//! (machine-api-operator `pkg/controller/vsphere/reconciler.go`, `modifyVMGroup`).

use crate::MoRef;
use crate::client::Client;
use crate::error::Result;

/// The DRS configuration of one compute cluster, as far as zonal placement needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrsGroups {
    /// VM groups (`ClusterVmGroup`) by name, with their member VMs.
    pub vm_groups: Vec<(String, Vec<MoRef>)>,
    /// Host groups (`ClusterHostGroup`) by name, with their member hosts.
    pub host_groups: Vec<(String, Vec<MoRef>)>,
    /// VM-host rules (`ClusterVmHostRuleInfo`).
    pub vm_host_rules: Vec<VmHostRule>,
}

/// One VM-host rule of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmHostRule {
    /// Rule name.
    pub name: String,
    /// The VM group it places.
    pub vm_group: String,
    /// The host group the VMs should (or must) run on; empty for an anti-affinity rule.
    pub affine_host_group: String,
    /// Whether the rule is enabled.
    pub enabled: bool,
}

impl DrsGroups {
    /// Members of a VM group, when the cluster has it.
    pub fn vm_group(&self, name: &str) -> Option<&[MoRef]> {
        self.vm_groups
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.as_slice())
    }

    /// Whether the cluster has a host group of this name.
    pub fn has_host_group(&self, name: &str) -> bool {
        self.host_groups.iter().any(|(n, _)| n == name)
    }

    /// The VM-host rule of this name.
    pub fn rule(&self, name: &str) -> Option<&VmHostRule> {
        self.vm_host_rules.iter().find(|r| r.name == name)
    }
}

impl Client {
    /// The DRS groups and VM-host rules of a compute cluster.
    pub async fn drs_groups(&self, cluster: &MoRef) -> Result<DrsGroups> {
        let o = self
            .retrieve_properties(
                "ClusterComputeResource",
                std::slice::from_ref(cluster),
                &["configurationEx"],
            )
            .await?;
        let Some(cfg) = o.first().and_then(|o| o.props.get("configurationEx")) else {
            return Ok(DrsGroups::default());
        };
        let mut out = DrsGroups::default();
        for g in cfg.children_named("group") {
            let name = g.child_text("name").unwrap_or_default().to_string();
            match g.xsi_type.as_deref() {
                Some("ClusterVmGroup") => {
                    let vms = g
                        .children_named("vm")
                        .filter_map(|v| v.as_moref())
                        .collect();
                    out.vm_groups.push((name, vms));
                }
                Some("ClusterHostGroup") => {
                    let hosts = g
                        .children_named("host")
                        .filter_map(|v| v.as_moref())
                        .collect();
                    out.host_groups.push((name, hosts));
                }
                _ => {}
            }
        }
        for r in cfg.children_named("rule") {
            if r.xsi_type.as_deref() != Some("ClusterVmHostRuleInfo") {
                continue;
            }
            out.vm_host_rules.push(VmHostRule {
                name: r.child_text("name").unwrap_or_default().to_string(),
                vm_group: r.child_text("vmGroupName").unwrap_or_default().to_string(),
                affine_host_group: r
                    .child_text("affineHostGroupName")
                    .unwrap_or_default()
                    .to_string(),
                enabled: r
                    .child("enabled")
                    .and_then(|e| e.as_bool())
                    .unwrap_or(false),
            });
        }
        Ok(out)
    }
}
