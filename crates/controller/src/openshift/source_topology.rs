//! Region and zone tags on the **source** datacenter and compute cluster.
//!
//! Once the Infrastructure lists more than one failure domain the cluster is
//! zonal: the cloud-controller-manager operator then writes the
//! `openshift-region`/`openshift-zone` labels into the CCM config
//! (openshift/cluster-cloud-controller-manager-operator
//! `pkg/cloud/vsphere/vsphere_config_transformer.go`: labels only when there is
//! more than one failure domain, "so existing single (or non-zonal) installs
//! function"), and the vSphere cloud provider looks those categories up in the
//! ancestry of every node's host (kubernetes/cloud-provider-vsphere
//! `pkg/common/connectionmanager/zones.go`, `LookupZoneByMoref`: an error
//! "vSphere zone category ... does not match any tags" when none is found).
//! The installer's `generated-failure-domain` (region `generated-region`, zone
//! `generated-zone`; both are required by the Infrastructure CRD, so they are
//! always named) is never tagged in vCenter, so the source nodes would fail
//! that lookup as soon as the target failure domains are added.
//!
//! CreateTags therefore tags the source datacenter with the source failure
//! domain's region and its compute cluster with its zone, creating categories
//! and tags only when absent and recording everything it creates or attaches
//! (server = the source) so that rollback undoes exactly that. Preflight
//! refuses, with the `govc` commands to run, when the source user cannot.

use crate::error::PhaseError;
use crate::openshift::tags::{self, Attach, Ledger, REGION_CATEGORY, ZONE_CATEGORY};
use vcfm_api::openshift::{Infrastructure, VSphereFailureDomain};
use vcfm_vsphere::{Category, MoRef};

/// One source failure domain and the objects its tags go on.
pub struct Placement {
    pub fd: VSphereFailureDomain,
    pub dc_path: String,
    pub dc: MoRef,
    pub cluster: MoRef,
}

/// The failure domains of `infra` (Infrastructure `cluster`, from the watch
/// cache) on the `source` vCenter.
pub fn source_domains(
    infra: Option<&Infrastructure>,
    source: &str,
) -> Result<Vec<VSphereFailureDomain>, PhaseError> {
    let live = infra.ok_or_else(|| PhaseError::fatal("Infrastructure cluster not found"))?;
    Ok(live
        .failure_domains()
        .iter()
        .filter(|f| f.server == source)
        .cloned()
        .collect())
}

fn dc_path(fd: &VSphereFailureDomain) -> String {
    format!("/{}", fd.topology.datacenter.trim_matches('/'))
}

async fn find(
    vc: &vcfm_vsphere::Client,
    fds: Vec<VSphereFailureDomain>,
) -> Result<Vec<Placement>, PhaseError> {
    let mut out = vec![];
    for fd in fds {
        let dc_path = dc_path(&fd);
        let dc = vc.find_datacenter(&dc_path).await?;
        let cluster = vc.find_cluster(&fd.topology.compute_cluster).await?;
        out.push(Placement {
            fd,
            dc_path,
            dc,
            cluster,
        });
    }
    Ok(out)
}

async fn other_tag(
    vc: &vcfm_vsphere::Client,
    cat: Option<&Category>,
    obj: &MoRef,
    want: &str,
) -> Result<Option<String>, PhaseError> {
    let Some(cat) = cat else { return Ok(None) };
    let tags = vc.attached_tags_of_category(obj, &cat.id).await?;
    Ok(tags.iter().find(|t| t.name != want).map(|t| t.name.clone()))
}

/// What the source still lacks, read-only.
pub struct Needs {
    pub placements: Vec<Placement>,
    /// Category names to create.
    pub categories: Vec<&'static str>,
    /// `(category, tag)` to create.
    pub tags: Vec<(&'static str, String)>,
    /// `(category, tag, object path, object)` to attach.
    pub attachments: Vec<(&'static str, String, String, MoRef)>,
    /// Objects that already carry a different region or zone.
    pub conflicts: Vec<String>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty() && self.tags.is_empty() && self.attachments.is_empty()
    }

    /// The `govc` commands an administrator runs to do it by hand.
    pub fn govc_commands(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .categories
            .iter()
            .map(|c| {
                format!("govc tags.category.create -t Datacenter -t ClusterComputeResource {c}")
            })
            .collect();
        out.extend(
            self.tags
                .iter()
                .map(|(c, t)| format!("govc tags.create -c {c} {t}")),
        );
        out.extend(
            self.attachments
                .iter()
                .map(|(c, t, path, _)| format!("govc tags.attach -c {c} {t} '{path}'")),
        );
        out
    }
}

/// Reads what tagging the source needs (nothing is changed).
pub async fn needs(
    vc: &vcfm_vsphere::Client,
    fds: Vec<VSphereFailureDomain>,
) -> Result<Needs, PhaseError> {
    let server = vc.server().to_string();
    let placements = find(vc, fds).await?;
    let region_cat = vc.find_category(REGION_CATEGORY).await?;
    let zone_cat = vc.find_category(ZONE_CATEGORY).await?;
    let mut n = Needs {
        placements: vec![],
        categories: vec![],
        tags: vec![],
        attachments: vec![],
        conflicts: vec![],
    };
    for (name, cat) in [(REGION_CATEGORY, &region_cat), (ZONE_CATEGORY, &zone_cat)] {
        match cat {
            None => n.categories.push(name),
            Some(c) => {
                if let Err(e) =
                    tags::check_compatible(&server, c, &tags::topology_spec(name, String::new()))
                {
                    n.conflicts.push(format!("source vCenter: {e}"));
                }
            }
        }
    }
    for p in &placements {
        let cluster_path = p.fd.topology.compute_cluster.clone();
        for (cat_name, cat, want, obj, path, what) in [
            (
                REGION_CATEGORY,
                &region_cat,
                &p.fd.region,
                &p.dc,
                &p.dc_path,
                "datacenter",
            ),
            (
                ZONE_CATEGORY,
                &zone_cat,
                &p.fd.zone,
                &p.cluster,
                &cluster_path,
                "compute cluster",
            ),
        ] {
            if let Some(other) = other_tag(vc, cat.as_ref(), obj, want).await? {
                n.conflicts.push(format!(
                    "source {what} {path} on {server} carries {cat_name} tag {other:?} but the Infrastructure's source failure domain {:?} says {want:?}: make them agree (retag the object or rename the failure domain's {}) before migrating",
                    p.fd.name,
                    if cat_name == REGION_CATEGORY { "region" } else { "zone" }
                ));
                continue;
            }
            let tag = match cat {
                Some(c) => vc.find_tag(&c.id, want).await?,
                None => None,
            };
            let attached = match &tag {
                Some(t) => vc.list_attached_tags(obj).await?.contains(&t.id),
                None => false,
            };
            if tag.is_none() && !n.tags.iter().any(|(c, t)| *c == cat_name && t == want) {
                n.tags.push((cat_name, want.clone()));
            }
            if !attached {
                n.attachments
                    .push((cat_name, want.clone(), path.clone(), obj.clone()));
            }
        }
    }
    n.placements = placements;
    Ok(n)
}

/// Privileges the source user needs to do what `needs` lists.
pub async fn missing_privileges(
    vc: &vcfm_vsphere::Client,
    n: &Needs,
) -> Result<Vec<String>, PhaseError> {
    let user = vc.username().to_string();
    let mut out = vec![];
    let root = vc.service_content().await?.root_folder.clone();
    let mut root_privs = vec![];
    if !n.categories.is_empty() {
        root_privs.push("InventoryService.Tagging.CreateCategory");
    }
    if !n.tags.is_empty() {
        root_privs.push("InventoryService.Tagging.CreateTag");
    }
    let mut checks: Vec<(MoRef, Vec<&str>)> = vec![];
    if !root_privs.is_empty() {
        checks.push((root, root_privs));
    }
    for (_, _, _, obj) in &n.attachments {
        checks.push((
            obj.clone(),
            vec![
                "InventoryService.Tagging.AttachTag",
                "InventoryService.Tagging.ObjectAttachable",
            ],
        ));
    }
    for (obj, privs) in checks {
        let r = vc
            .check_user_privileges(&user, std::slice::from_ref(&obj), &privs)
            .await?;
        if !r.is_complete() {
            out.push(r.describe());
        }
    }
    Ok(out)
}

/// Preflight: the source can be tagged by vcfm, is tagged already, or the
/// administrator is told exactly what to run. `fds` are the failure domains
/// of the `source` vCenter ([`source_domains`]), `vc` a client for it.
pub async fn preflight(
    vc: &vcfm_vsphere::Client,
    source: &str,
    fds: Vec<VSphereFailureDomain>,
    problems: &mut Vec<String>,
) -> Result<(), PhaseError> {
    if fds.is_empty() {
        return Ok(());
    }
    let n = needs(vc, fds).await?;
    problems.extend(n.conflicts.iter().cloned());
    if n.is_empty() || !n.conflicts.is_empty() {
        return Ok(());
    }
    let missing = missing_privileges(vc, &n).await?;
    if !missing.is_empty() {
        problems.push(format!(
            "source vCenter {source}: with the target failure domains added the cluster becomes zonal and the vSphere cloud provider needs region/zone tags on the source datacenter and compute cluster, which carry none; user {} may not create or attach them (lacks {}): grant those privileges, or run as a vCenter administrator: {}",
            vc.username(),
            missing.join("; "),
            n.govc_commands().join(" && ")
        ));
    }
    Ok(())
}

/// Creates what is missing and attaches, recording in `ledger` and telling
/// `log` of each attachment as it is made; returns how many were made now and
/// those whose intent was only recorded (made on the next step).
pub async fn apply(
    ledger: &Ledger<'_>,
    vc: &vcfm_vsphere::Client,
    n: &Needs,
    log: &(dyn Fn(String) + Send + Sync),
) -> Result<(usize, Vec<String>), PhaseError> {
    if n.placements.is_empty() {
        return Ok((0, vec![]));
    }
    let server = vc.server().to_string();
    let desc = ledger.marker();
    let region_cat = tags::ensure_category(
        ledger,
        vc,
        &tags::topology_spec(REGION_CATEGORY, desc.clone()),
    )
    .await?;
    let zone_cat =
        tags::ensure_category(ledger, vc, &tags::topology_spec(ZONE_CATEGORY, desc)).await?;
    let mut attached = 0;
    let mut pending = vec![];
    for p in &n.placements {
        let region = tags::ensure_tag(ledger, vc, &region_cat, &p.fd.region).await?;
        let zone = tags::ensure_tag(ledger, vc, &zone_cat, &p.fd.zone).await?;
        for (tag, obj, name) in [
            (&region, &p.dc, p.dc_path.clone()),
            (&zone, &p.cluster, p.fd.topology.compute_cluster.clone()),
        ] {
            match tags::attach(ledger, vc, tag, obj, &name).await? {
                Attach::Recorded => pending.push(format!("{} on {name} (source)", tag.name)),
                Attach::Attached => {
                    attached += 1;
                    log(format!(
                        "attached tag {} to {name} on the source vCenter {server}",
                        tag.name
                    ));
                }
                Attach::Present => {}
            }
        }
    }
    Ok((attached, pending))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fd(name: &str, server: &str) -> serde_json::Value {
        json!({"name": name, "region": "r", "zone": "z", "server": server,
            "topology": {"datacenter": "DC", "computeCluster": "/DC/host/C",
                "datastore": "/DC/datastore/D", "networks": ["n"]}})
    }

    #[test]
    fn the_source_domains_are_the_infrastructures_on_the_source_server() {
        let infra: Infrastructure = serde_json::from_value(json!({
            "apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
            "metadata": {"name": "cluster"},
            "spec": {"platformSpec": {"type": "VSphere", "vsphere": {
                "failureDomains": [fd("generated-failure-domain", "src"), fd("t", "tgt")]}}}}))
        .unwrap();
        let names =
            |v: Vec<VSphereFailureDomain>| v.into_iter().map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(
            names(source_domains(Some(&infra), "src").unwrap()),
            ["generated-failure-domain"]
        );
        assert!(
            source_domains(Some(&infra), "elsewhere")
                .unwrap()
                .is_empty()
        );
        let missing = source_domains(None, "src").unwrap_err();
        assert!(matches!(missing, PhaseError::Fatal(_)), "{missing}");
    }

    #[test]
    fn the_govc_commands_do_what_needs_lists() {
        let n = Needs {
            placements: vec![],
            categories: vec![REGION_CATEGORY],
            tags: vec![(REGION_CATEGORY, "r".into())],
            attachments: vec![(
                REGION_CATEGORY,
                "r".into(),
                "/DC".into(),
                vcfm_vsphere::MoRef::new("Datacenter", "datacenter-1"),
            )],
            conflicts: vec![],
        };
        assert!(!n.is_empty());
        assert_eq!(
            n.govc_commands(),
            [
                "govc tags.category.create -t Datacenter -t ClusterComputeResource openshift-region",
                "govc tags.create -c openshift-region r",
                "govc tags.attach -c openshift-region r '/DC'",
            ]
        );
    }
}
