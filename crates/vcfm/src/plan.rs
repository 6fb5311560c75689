//! `vcfm plan NAME`: the preflight checks and what the migration would
//! change, computed with the controller's own edit functions, read-only.
//!
//! Only GET/LIST requests reach the API server, and only reads (plus a login)
//! reach the vCenters; `tests/plan.rs` asserts both.

use anyhow::Context as _;
use kube::api::Api;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use vcfm_api::openshift::{CLUSTER, ControlPlaneMachineSet, Infrastructure};
use vcfm_api::{FailureDomain, VmwareCloudFoundationMigration};
use vcfm_controller::context::{PhaseCtx, Shared};
use vcfm_controller::openshift::{cloud_config, creds, infra, machines, tags};

/// TLS settings for the vCenters, as the controller takes them.
#[derive(Debug, Clone, Default)]
pub struct VcenterTls {
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
}

/// The plan text, and whether preflight passed.
pub async fn plan(
    client: kube::Client,
    ns: &str,
    name: &str,
    tls: VcenterTls,
) -> anyhow::Result<(String, bool)> {
    let m = Api::<VmwareCloudFoundationMigration>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("reading migration {ns}/{name}"))?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        config: vcfm_controller::ControllerConfig {
            vcenter_ca_pem: tls.ca_pem,
            vcenter_insecure: tls.insecure,
            ..Default::default()
        },
        sessions: Default::default(),
        metrics: Default::default(),
    });
    let ctx = PhaseCtx::new(shared.clone(), Arc::new(m.clone()), jiff::Timestamp::now());
    let mut o = String::new();
    writeln!(
        o,
        "Plan for migration {ns}/{name} (nothing has been changed)\n"
    )?;

    // 1. Preflight, the same checks phase 1 runs; its typed report (not the
    // log lines it would emit) says what to fix first. It writes nothing.
    let report = vcfm_controller::phases::run_preflight(&ctx).await;
    let passed = match &report {
        Ok(r) if r.problems.is_empty() => {
            writeln!(o, "Preflight: all checks passed.")?;
            true
        }
        Ok(r) => {
            writeln!(
                o,
                "Preflight: {} problem(s) to fix first:",
                r.problems.len()
            )?;
            for p in &r.problems {
                writeln!(o, "  - {p}")?;
            }
            false
        }
        Err(e) => {
            writeln!(o, "Preflight could not run: {e}")?;
            false
        }
    };
    let report = report.ok();
    if let Some(r) = &report
        && !r.warnings.is_empty()
    {
        writeln!(o, "Confirm before starting (vcfm cannot check these):")?;
        for x in &r.warnings {
            writeln!(o, "  - {x}")?;
        }
    }

    let infra = Api::<Infrastructure>::all(client.clone())
        .get(CLUSTER)
        .await
        .context("reading Infrastructure cluster")?;
    let infra_id = infra.infra_id().unwrap_or_default().to_string();
    let targets = m.target_servers();
    let source = report
        .as_ref()
        .and_then(|r| r.source.as_ref())
        .map(|s| s.server.clone())
        .or_else(|| {
            infra
                .vcenters()
                .iter()
                .map(|v| v.server.clone())
                .find(|s| !targets.contains(&s.as_str()))
        })
        .unwrap_or_default();
    let fds = &m.spec.failure_domains;

    // 2. Infrastructure (UpdateInfrastructure; Cleanup later drops the source).
    writeln!(
        o,
        "\nInfrastructure cluster, spec.platformSpec.vsphere (UpdateInfrastructure):"
    )?;
    let mut after = infra.clone();
    let (vcenters, domains) = infra::target_entries(fds, &infra_id);
    match infra::add_vcenters(&mut after, &vcenters, &domains) {
        Ok(_) => {
            let a = yaml(&infra.vsphere())?;
            let b = yaml(&after.vsphere())?;
            o.push_str(&diff(&a, &b));
        }
        Err(e) => writeln!(o, "  cannot be edited: {e}")?,
    }
    let gate = report
        .as_ref()
        .and_then(|r| r.cluster.as_ref())
        .map(|c| c.multi_vcenter_day2);
    match gate {
        Some(true) => writeln!(
            o,
            "  The VSphereMultiVCenterDay2 gate is on: the CRD rule allows the new vCenter and the cluster-version operator keeps running (DisableCVO is skipped)."
        )?,
        Some(false) => writeln!(
            o,
            "  Without the VSphereMultiVCenterDay2 gate: the cluster-version operator is scaled to 0 (DisableCVO), the CRD rule \"{}\" is lifted for the edit and restored, and the operator is scaled back to 1 at the end.",
            infra::VCENTERS_RULE_MESSAGE
        )?,
        None => {}
    }

    // 3. The cloud provider configuration (UpdateConfig).
    let loc = cloud_config::location(client.clone())
        .await
        .unwrap_or_else(|_| cloud_config::Location::of(None));
    writeln!(
        o,
        "\nConfigMap {}/{} key {} (UpdateConfig):",
        cloud_config::NAMESPACE,
        loc.name,
        loc.key
    )?;
    match cloud_config::read(client.clone()).await {
        Ok((_, text)) => {
            let mut cur = text.clone();
            let mut err = None;
            for e in config_entries(fds) {
                match cloud_config::add_vcenter(&cur, &e) {
                    Ok(Some(next)) => cur = next,
                    Ok(None) => {}
                    Err(x) => err = Some(x),
                }
            }
            match err {
                Some(e) => writeln!(o, "  cannot be edited: {e}")?,
                None => o.push_str(&diff(&text, &cur)),
            }
        }
        Err(e) => writeln!(o, "  cannot be read: {e}")?,
    }

    // 4. Credentials (UpdateSecrets): key names only, never values.
    writeln!(
        o,
        "\nSecret {}/{} (UpdateSecrets), keys added:",
        creds::CREDS_NAMESPACE,
        creds::CREDS_NAME
    )?;
    let existing: BTreeSet<String> = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        client.clone(),
        creds::CREDS_NAMESPACE,
    )
    .get(creds::CREDS_NAME)
    .await
    .ok()
    .and_then(|s| s.data)
    .map(|d| d.into_keys().collect())
    .unwrap_or_default();
    for server in &targets {
        for k in [creds::username_key(server), creds::password_key(server)] {
            if existing.contains(&k) {
                writeln!(o, "  = {k} (already there, kept)")?;
            } else {
                writeln!(o, "  + {k}")?;
            }
        }
    }

    // 5. Tags and folders on the target vCenters (CreateTags, CreateFolder).
    writeln!(o, "\nTarget vCenter objects (CreateTags, CreateFolder):")?;
    for server in &targets {
        let mine: Vec<&FailureDomain> = fds.iter().filter(|f| f.server == *server).collect();
        vsphere_plan(&ctx, server, &mine, &infra_id, &mut o).await?;
    }

    // 6. Machines (CreateWorkers, RecreateCPMS, ScaleOldMachines).
    writeln!(
        o,
        "\nMachineSets created in openshift-machine-api (CreateWorkers):"
    )?;
    let sets = machines::list_machinesets(client.clone()).await?;
    match machines::pick_worker_template(&sets, &source) {
        None => writeln!(
            o,
            "  none: no worker MachineSet on the source vCenter {source:?} to copy"
        )?,
        Some(tpl) => {
            let chosen: Vec<&FailureDomain> = match &m.spec.machine_set_config.failure_domain {
                Some(n) => fds.iter().filter(|f| &f.name == n).collect(),
                None => fds.iter().collect(),
            };
            for fd in chosen {
                let ms_name = machines::worker_machineset_name(&infra_id, &fd.name);
                let exists = sets
                    .iter()
                    .any(|s| s.metadata.name.as_deref() == Some(&ms_name));
                let ps = tpl
                    .provider_spec()
                    .ok()
                    .flatten()
                    .map(|p| machines::provider_spec_for(&p, fd, &infra_id));
                let ws = ps
                    .as_ref()
                    .and_then(|p| p.workspace.clone())
                    .unwrap_or_default();
                writeln!(
                    o,
                    "  {} {ms_name}: {} replica(s), copied from {}\n      server {}, datacenter {}, datastore {}, folder {}, resourcePool {}\n      template {}, networks {}",
                    if exists { "=" } else { "+" },
                    m.spec.machine_set_config.replicas,
                    tpl.metadata.name.as_deref().unwrap_or(""),
                    ws.server.unwrap_or_default(),
                    ws.datacenter.unwrap_or_default(),
                    ws.datastore.unwrap_or_default(),
                    ws.folder.unwrap_or_default(),
                    ws.resource_pool.unwrap_or_default(),
                    fd.topology.template,
                    fd.topology.networks.join(", ")
                )?;
            }
        }
    }
    let cp_names: Vec<&str> = match m
        .spec
        .control_plane_machine_set_config
        .as_ref()
        .and_then(|c| c.failure_domain.as_deref())
    {
        Some(n) => vec![n],
        None => fds.iter().map(|f| f.name.as_str()).collect(),
    };
    writeln!(
        o,
        "\nControlPlaneMachineSet cluster (RecreateCPMS, the point of no return):"
    )?;
    match Api::<ControlPlaneMachineSet>::namespaced(
        client.clone(),
        vcfm_api::openshift::MACHINE_API_NAMESPACE,
    )
    .get(CLUSTER)
    .await
    {
        Ok(cpms) => {
            let v = serde_json::to_value(&cpms)?;
            match machines::cpms_patch(&v, &cp_names) {
                Some(p) => {
                    let before = yaml(&v.get("spec").map(|s| {
                        serde_json::json!({
                            "state": s.get("state"),
                            "strategy": s.get("strategy"),
                            "failureDomains": s.pointer("/template/machines_v1beta1_machine_openshift_io/failureDomains"),
                        })
                    }))?;
                    let after = yaml(&serde_json::json!({
                        "state": p.pointer("/spec/state"),
                        "strategy": p.pointer("/spec/strategy"),
                        "failureDomains": p.pointer("/spec/template/machines_v1beta1_machine_openshift_io/failureDomains"),
                    }))?;
                    o.push_str(&diff(&before, &after));
                    writeln!(
                        o,
                        "  The control plane is then replaced one master at a time on the target."
                    )?;
                }
                None => writeln!(o, "  already points at {}", cp_names.join(", "))?,
            }
        }
        Err(e) => writeln!(o, "  cannot be read: {e}")?,
    }
    writeln!(o, "\nRemoved at the end (ScaleOldMachines, Cleanup):")?;
    for ms in machines::source_machinesets(&sets, &source) {
        writeln!(
            o,
            "  - MachineSet {} ({} replica(s)) scaled to 0, then deleted",
            ms.metadata.name.as_deref().unwrap_or(""),
            ms.spec.replicas.unwrap_or(0)
        )?;
    }
    if !source.is_empty() {
        writeln!(
            o,
            "  - source vCenter {source} from the Infrastructure, {}/{} and {}/{} (keys {}, {})",
            cloud_config::NAMESPACE,
            loc.name,
            creds::CREDS_NAMESPACE,
            creds::CREDS_NAME,
            creds::username_key(&source),
            creds::password_key(&source)
        )?;
    }
    shared.sessions.logout_all().await;
    Ok((o, passed))
}

/// One cloud-config entry per target vCenter with its datacenters.
fn config_entries(fds: &[FailureDomain]) -> Vec<cloud_config::VcenterEntry> {
    let mut out: Vec<cloud_config::VcenterEntry> = vec![];
    for fd in fds {
        let dc = infra::datacenter_name(fd);
        match out.iter_mut().find(|e| e.server == fd.server) {
            Some(e) if !e.datacenters.contains(&dc) => e.datacenters.push(dc),
            Some(_) => {}
            None => out.push(cloud_config::VcenterEntry::new(fd.server.clone(), vec![dc])),
        }
    }
    out
}

/// What CreateTags and CreateFolder would make on one target vCenter, checked
/// against what already exists there (reads only).
async fn vsphere_plan(
    ctx: &PhaseCtx,
    server: &str,
    fds: &[&FailureDomain],
    infra_id: &str,
    o: &mut String,
) -> anyhow::Result<()> {
    writeln!(o, "  {server}:")?;
    let vc = match ctx.target_vcenter(server).await {
        Ok(vc) => vc,
        Err(e) => {
            writeln!(o, "    cannot check (listing what would be made): {e}")?;
            for fd in fds {
                writeln!(
                    o,
                    "    + tag {}:{} on datacenter {}, tag {}:{} on {}, folder {}",
                    tags::REGION_CATEGORY,
                    fd.region,
                    fd.topology.datacenter,
                    tags::ZONE_CATEGORY,
                    fd.zone,
                    fd.topology.compute_cluster,
                    infra::folder_path(fd, infra_id)
                )?;
            }
            return Ok(());
        }
    };
    let ownership = tags::ownership_category(infra_id);
    for fd in fds {
        let dc = format!("datacenter /{}", infra::datacenter_name(fd));
        let cl = format!("compute cluster {}", fd.topology.compute_cluster);
        for (cat, tag, on) in [
            (tags::REGION_CATEGORY.to_string(), fd.region.clone(), dc),
            (tags::ZONE_CATEGORY.to_string(), fd.zone.clone(), cl),
            (
                ownership.clone(),
                infra_id.to_string(),
                format!("folder {}", infra::folder_path(fd, infra_id)),
            ),
        ] {
            let category = vc.find_category(&cat).await?;
            let (cmark, tmark) = match &category {
                None => ("+", "+"),
                Some(c) => match vc.find_tag(&c.id, &tag).await? {
                    Some(_) => ("=", "="),
                    None => ("=", "+"),
                },
            };
            writeln!(
                o,
                "    {cmark} category {cat}   {tmark} tag {tag}   attached to {on}"
            )?;
        }
        let folder = infra::folder_path(fd, infra_id);
        let mark = match vc.find_folder(&folder).await {
            Ok(_) => "=",
            Err(e) if e.is_not_found() => "+",
            Err(e) => return Err(e.into()),
        };
        writeln!(
            o,
            "    {mark} VM folder {folder} (tagged {ownership}:{infra_id})"
        )?;
    }
    writeln!(o, "    (+ will be created, = exists and is reused)")?;
    Ok(())
}

fn yaml<T: serde::Serialize>(v: &T) -> anyhow::Result<String> {
    let v = serde_json::to_value(v)?;
    Ok(serde_saphyr::to_string(&v)?)
}

/// A minimal line diff (longest common subsequence): `-` removed, `+` added,
/// two spaces for context.
pub fn diff(a: &str, b: &str) -> String {
    let (x, y): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let (n, m) = (x.len(), y.len());
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if x[i] == y[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && x[i] == y[j] {
            out.push_str(&format!("      {}\n", x[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || l[i + 1][j] >= l[i][j + 1]) {
            out.push_str(&format!("    - {}\n", x[i]));
            i += 1;
        } else {
            out.push_str(&format!("    + {}\n", y[j]));
            j += 1;
        }
    }
    if x == y {
        out.push_str("    (no change)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diff_marks_added_and_removed_lines() {
        let d = diff("a\nb\nc\n", "a\nc\nd\n");
        assert_eq!(d, "      a\n    - b\n      c\n    + d\n");
        assert!(diff("x\n", "x\n").contains("(no change)"));
    }
}
