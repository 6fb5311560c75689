//! Phase 5: the topology tags (`openshift-region` on the datacenter,
//! `openshift-zone` on the compute cluster) and the installer-style ownership
//! category and tag on every target vCenter; and the source failure
//! domain's region and zone on the source datacenter and cluster, which the
//! cloud provider needs once the cluster is zonal (`source_topology`).
//!
//! Topology categories are shared per vCenter: an existing one is validated
//! and reused. A datacenter or cluster that already carries a different
//! region or zone is a conflict, reported before anything is created.

use super::{RollbackOutcome, Steps};
use crate::context::PhaseCtx;
use crate::error::PhaseError;
use crate::openshift::infra::datacenter_name;
use crate::openshift::source_topology;
use crate::openshift::tags::{self, Attach, REGION_CATEGORY, ZONE_CATEGORY};
use crate::state::Outcome;
use std::collections::BTreeMap;
use std::time::Duration;
use vcfm_api::{FailureDomain, LogLevel, PhaseName};
use vcfm_vsphere::{Category, MoRef};

pub struct CreateTags;

const PHASE: PhaseName = PhaseName::CreateTags;

/// Failure domains that put two different regions on one datacenter or two
/// zones on one cluster (the categories are single-cardinality).
fn spec_conflicts(fds: &[FailureDomain]) -> Vec<String> {
    let mut out = vec![];
    let mut regions: BTreeMap<(String, String), &FailureDomain> = BTreeMap::new();
    let mut zones: BTreeMap<(String, String), &FailureDomain> = BTreeMap::new();
    for fd in fds {
        let dc = (fd.server.clone(), datacenter_name(fd));
        if let Some(other) = regions.get(&dc)
            && other.region != fd.region
        {
            out.push(format!(
                "failure domains {:?} and {:?} put regions {:?} and {:?} on the same datacenter {} of {}: a datacenter carries one region",
                other.name, fd.name, other.region, fd.region, dc.1, dc.0
            ));
        }
        regions.entry(dc).or_insert(fd);
        let cl = (fd.server.clone(), fd.topology.compute_cluster.clone());
        if let Some(other) = zones.get(&cl)
            && other.zone != fd.zone
        {
            out.push(format!(
                "failure domains {:?} and {:?} put zones {:?} and {:?} on the same compute cluster {} of {}: a cluster carries one zone",
                other.name, fd.name, other.zone, fd.zone, cl.1, cl.0
            ));
        }
        zones.entry(cl).or_insert(fd);
    }
    out
}

/// A different tag of `category` already on `object`.
async fn tagged_otherwise(
    vc: &vcfm_vsphere::Client,
    category: Option<&Category>,
    object: &MoRef,
    want: &str,
) -> Result<Option<String>, PhaseError> {
    let Some(cat) = category else {
        return Ok(None);
    };
    let tags = vc.attached_tags_of_category(object, &cat.id).await?;
    Ok(tags.iter().find(|t| t.name != want).map(|t| t.name.clone()))
}

async fn execute(ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
    let infra_id = ctx.recorded_cluster()?.infra_id.clone();
    let fds = &ctx.migration.spec.failure_domains;
    let conflicts = spec_conflicts(fds);
    if !conflicts.is_empty() {
        return Ok(Outcome::Failed {
            message: conflicts.join("; "),
        });
    }
    // Pass 1, read-only on every target: conflicts and incompatible
    // categories are reported before anything is created anywhere.
    let mut conflicts = vec![];
    let mut plan = vec![];
    for server in ctx.migration.target_servers() {
        let vc = ctx.target_vcenter(server).await?;
        let region_cat = vc.find_category(REGION_CATEGORY).await?;
        let zone_cat = vc.find_category(ZONE_CATEGORY).await?;
        let owner_cat = vc
            .find_category(&tags::ownership_category(&infra_id))
            .await?;
        for (cat, spec) in [
            (
                &region_cat,
                tags::topology_spec(REGION_CATEGORY, String::new()),
            ),
            (&zone_cat, tags::topology_spec(ZONE_CATEGORY, String::new())),
            (&owner_cat, tags::ownership_spec(&infra_id, String::new())),
        ] {
            if let Some(c) = cat
                && let Err(e) = tags::check_compatible(server, c, &spec)
            {
                conflicts.push(e.to_string());
            }
        }
        let mut placements = vec![];
        for fd in fds.iter().filter(|f| f.server == server) {
            let dc_path = format!("/{}", datacenter_name(fd));
            let dc = vc.find_datacenter(&dc_path).await?;
            let cluster = vc.find_cluster(&fd.topology.compute_cluster).await?;
            if let Some(other) = tagged_otherwise(&vc, region_cat.as_ref(), &dc, &fd.region).await?
            {
                conflicts.push(format!(
                    "datacenter {dc_path} on {server} already carries region tag {other:?}, failure domain {:?} wants {:?}: use region {other:?} or retag the datacenter",
                    fd.name, fd.region
                ));
            }
            if let Some(other) =
                tagged_otherwise(&vc, zone_cat.as_ref(), &cluster, &fd.zone).await?
            {
                conflicts.push(format!(
                    "compute cluster {} on {server} already carries zone tag {other:?}, failure domain {:?} wants {:?}: use zone {other:?} or retag the cluster",
                    fd.topology.compute_cluster, fd.name, fd.zone
                ));
            }
            placements.push((fd, dc, dc_path, cluster));
        }
        plan.push((server, vc, placements));
    }
    // The source datacenter and cluster need their failure domain's tags too
    // once the cluster is zonal (see `source_topology`).
    let source = ctx.recorded_source()?.server.clone();
    let source_vc = ctx.source_vcenter(&source).await?;
    let source_fds =
        source_topology::source_domains(ctx.infrastructure().await?.as_ref(), &source)?;
    let source_needs = source_topology::needs(&source_vc, source_fds).await?;
    if !source_needs.conflicts.is_empty() {
        return Ok(Outcome::Failed {
            message: format!(
                "the source vCenter cannot take the topology tags: {}",
                source_needs.conflicts.join("; ")
            ),
        });
    }
    if !conflicts.is_empty() {
        return Ok(Outcome::Failed {
            message: format!(
                "the target vCenter cannot take the topology tags: {}",
                conflicts.join("; ")
            ),
        });
    }
    // Pass 2: create what is missing and attach.
    let mut pending = vec![];
    let mut attached = 0;
    let ledger = super::ledger(ctx, PHASE);
    for (server, vc, placements) in plan {
        let desc = ledger.marker();
        let region_cat = tags::ensure_category(
            &ledger,
            &vc,
            &tags::topology_spec(REGION_CATEGORY, desc.clone()),
        )
        .await?;
        let zone_cat =
            tags::ensure_category(&ledger, &vc, &tags::topology_spec(ZONE_CATEGORY, desc)).await?;
        tags::ensure_ownership(&ledger, &vc, &infra_id).await?;
        for (fd, dc, dc_path, cluster) in placements {
            let region = tags::ensure_tag(&ledger, &vc, &region_cat, &fd.region).await?;
            let zone = tags::ensure_tag(&ledger, &vc, &zone_cat, &fd.zone).await?;
            for (tag, obj, name) in [
                (&region, &dc, dc_path.clone()),
                (&zone, &cluster, fd.topology.compute_cluster.clone()),
            ] {
                match tags::attach(&ledger, &vc, tag, obj, &name).await? {
                    Attach::Recorded => pending.push(format!("{} on {name}", tag.name)),
                    Attach::Attached => {
                        attached += 1;
                        ctx.log(
                            LogLevel::Info,
                            "tags",
                            format!("attached tag {} to {name} on {server}", tag.name),
                        );
                    }
                    Attach::Present => {}
                }
            }
        }
    }
    let (source_attached, source_pending) =
        source_topology::apply(&ledger, &source_vc, &source_needs, &|line| {
            ctx.log(LogLevel::Info, "tags", line)
        })
        .await?;
    attached += source_attached;
    pending.extend(source_pending);
    if !pending.is_empty() {
        // The intent is persisted with this outcome; the next step attaches.
        return Ok(Outcome::Running {
            progress: 50,
            message: format!(
                "recorded {} tag attachment(s) before making them",
                pending.len()
            ),
            waiting_for: pending,
            recheck: Duration::from_millis(100),
        });
    }
    let n = fds.len();
    Ok(Outcome::Completed {
        message: format!(
            "topology tags for {n} failure domain(s) and ownership tag {infra_id} in place on {}, region/zone tags for {} source failure domain(s) on {} ({attached} attachment(s) made now)",
            ctx.migration.target_servers().join(", "),
            source_needs.placements.len(),
            source_vc.server()
        ),
    })
}

impl Steps for CreateTags {
    async fn execute(&self, ctx: &PhaseCtx) -> Result<Outcome, PhaseError> {
        execute(ctx).await
    }

    async fn rollback(&self, ctx: &PhaseCtx) -> Result<RollbackOutcome, PhaseError> {
        super::undo_created_objects(
            ctx,
            PHASE,
            "tags",
            "no tags or categories created by this migration remain",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcfm_api::Topology;

    fn fd(name: &str, dc: &str, cluster: &str, region: &str, zone: &str) -> FailureDomain {
        FailureDomain {
            name: name.into(),
            region: region.into(),
            zone: zone.into(),
            server: "vc".into(),
            topology: Topology {
                datacenter: dc.into(),
                compute_cluster: cluster.into(),
                datastore: "/DC/datastore/ds".into(),
                networks: vec!["n".into()],
                resource_pool: None,
                folder: None,
                template: "/DC/vm/t".into(),
            },
            region_affinity: None,
            zone_affinity: None,
        }
    }

    #[test]
    fn one_region_per_datacenter_and_one_zone_per_cluster() {
        let ok = [
            fd("a", "DC", "/DC/host/C1", "r", "z1"),
            fd("b", "/DC", "/DC/host/C2", "r", "z2"),
        ];
        assert!(spec_conflicts(&ok).is_empty());
        let bad = [
            fd("a", "DC", "/DC/host/C1", "r1", "z1"),
            fd("b", "DC", "/DC/host/C1", "r2", "z2"),
        ];
        let c = spec_conflicts(&bad);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].contains("\"r1\" and \"r2\""));
    }
}
