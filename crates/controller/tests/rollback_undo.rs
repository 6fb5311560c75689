//! Rollback undoes vcfm's own changes and nothing else: edits administrators
//! make during a migration (a rotated source password, a label on the
//! Infrastructure, another datacenter on the source's cloud-config entry)
//! survive it, and a value vcfm wrote that someone changed since is left in
//! place and reported as a conflict (step message, Warning Event, phase log).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common_e2e;

use common_e2e::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use openshift_sim::{ConfigFormat, Scenario};
use serde_json::json;
use std::time::Duration;
use vcfm_api::openshift::Infrastructure;
use vcfm_api::{LogLevel, MigrationPhase, PhaseName, PhaseStatus};

const ROTATED: &[u8] = b"rotated-by-the-administrator";
const TARGET_REPLACED: &[u8] = b"replaced-by-someone-else";

fn data(s: &Secret, k: &str) -> Option<Vec<u8>> {
    s.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.clone())
}

async fn others_edits_survive(format: ConfigFormat) {
    let mut env = Env::start(Scenario {
        workers: 1,
        config_format: format,
        ..Scenario::default()
    })
    .await;
    let (src, tgt) = (
        env.sim.source().server.clone(),
        env.sim.target().server.clone(),
    );
    let creds_api = Api::<Secret>::namespaced(env.client.clone(), "kube-system");
    let infra_api = Api::<Infrastructure>::all(env.client.clone());
    let cm_api = Api::<ConfigMap>::namespaced(env.client.clone(), "openshift-config");
    let seeded_creds = creds_api.get("vsphere-creds").await.unwrap();
    let seeded_infra = infra_api.get("cluster").await.unwrap();

    env.spawn_controller();
    let mut spec = env.spec(FD, 1, true);
    spec["approvedPhases"] = json!([
        "Preflight",
        "Backup",
        "DisableCVO",
        "UpdateSecrets",
        "CreateTags",
        "CreateFolder",
        "UpdateInfrastructure",
        "UpdateConfig"
    ]);
    env.create_migration("undo", spec).await;
    env.wait(
        "undo",
        "RestartPods to wait for approval",
        Duration::from_secs(120),
        |m| waiting_for_approval(m) == Some(PhaseName::RestartPods),
    )
    .await;

    // Meanwhile, administrators: rotate the source password, replace the
    // target password vcfm added, label and annotate the Infrastructure,
    // add a datacenter to the source's cloud-config entry.
    let (src_pw, tgt_pw) = (format!("{src}.password"), format!("{tgt}.password"));
    let live = creds_api.get("vsphere-creds").await.unwrap();
    assert!(
        data(&live, &tgt_pw).is_some(),
        "UpdateSecrets added the target"
    );
    let patch = json!({"data": {
        src_pw.clone(): ByteString(ROTATED.to_vec()),
        tgt_pw.clone(): ByteString(TARGET_REPLACED.to_vec()),
    }});
    creds_api
        .patch(
            "vsphere-creds",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let patch = json!({"metadata": {"labels": {"example.com/owner": "platform-team"},
        "annotations": {"example.com/ticket": "OPS-1234"}}});
    infra_api
        .patch("cluster", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let mut cm = cm_api.get("cloud-provider-config").await.unwrap();
    let text = cm.data.as_ref().unwrap()["config"].clone();
    let edited = match format {
        ConfigFormat::Ini => text.replacen("datacenters = \"DC0\"", "datacenters = \"DC0,DC9\"", 1),
        ConfigFormat::Yaml => text.replacen("    - DC0\n", "    - DC0\n    - DC9\n", 1),
    };
    assert_ne!(edited, text, "the seeded config names DC0:\n{text}");
    cm.data.as_mut().unwrap().insert("config".into(), edited);
    cm_api
        .replace("cloud-provider-config", &Default::default(), &cm)
        .await
        .unwrap();

    let m = env.roll_back("undo", Duration::from_secs(120)).await;
    let st = m.status.as_ref().unwrap();
    assert_eq!(
        st.phase,
        Some(MigrationPhase::RollbackCompleted),
        "{}",
        summary(&m)
    );

    // vsphere-creds: the rotation survives, the target username vcfm added
    // is gone, the target password someone replaced is left.
    let creds = creds_api.get("vsphere-creds").await.unwrap();
    assert_eq!(data(&creds, &src_pw).as_deref(), Some(ROTATED));
    assert_eq!(
        data(&creds, &format!("{src}.username")),
        data(&seeded_creds, &format!("{src}.username"))
    );
    assert_eq!(data(&creds, &format!("{tgt}.username")), None);
    assert_eq!(data(&creds, &tgt_pw).as_deref(), Some(TARGET_REPLACED));

    // Infrastructure: the target is gone, the label and annotation stay.
    let infra = infra_api.get("cluster").await.unwrap();
    assert_eq!(infra.spec, seeded_infra.spec, "spec back as seeded");
    assert_eq!(
        infra.metadata.labels.as_ref().unwrap()["example.com/owner"],
        "platform-team"
    );
    assert_eq!(
        infra.metadata.annotations.as_ref().unwrap()["example.com/ticket"],
        "OPS-1234"
    );

    // cloud-provider-config: the target entry is gone, the added DC stays.
    let cm = cm_api.get("cloud-provider-config").await.unwrap();
    let text = &cm.data.as_ref().unwrap()["config"];
    assert!(!text.contains(&tgt), "{text}");
    assert!(text.contains("DC9"), "{text}");

    // The conflict is reported: in the step message, the phase log and a
    // Warning Event, naming the key and never its value.
    let step = st
        .phase_history
        .iter()
        .rev()
        .find(|h| h.phase == PhaseName::UpdateSecrets && h.status == PhaseStatus::RolledBack)
        .unwrap_or_else(|| panic!("UpdateSecrets not rolled back:\n{}", summary(&m)));
    let key = format!("data[{tgt_pw}]");
    assert!(
        step.message.contains("conflict") && step.message.contains(&key),
        "{}",
        step.message
    );
    let secret_text = String::from_utf8_lossy(TARGET_REPLACED);
    assert!(!step.message.contains(&*secret_text), "{}", step.message);
    assert!(
        st.phase_history
            .iter()
            .filter(|h| h.phase == PhaseName::UpdateSecrets)
            .flat_map(|h| &h.logs)
            .any(|l| l.level == LogLevel::Warning && l.message.contains(&key)),
        "no warning in the phase log:\n{}",
        summary(&m)
    );
    for h in &st.phase_history {
        if matches!(
            h.phase,
            PhaseName::UpdateInfrastructure | PhaseName::UpdateConfig
        ) && h.status == PhaseStatus::RolledBack
        {
            assert!(!h.message.contains("conflict"), "{}", h.message);
        }
    }
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    let warning = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("RollbackConflict"))
        .unwrap_or_else(|| panic!("no RollbackConflict Event"));
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.clone().unwrap_or_default();
    assert!(
        note.contains(&key) && !note.contains(&*secret_text),
        "{note}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_keeps_what_others_changed_during_the_migration_yaml() {
    others_edits_survive(ConfigFormat::Yaml).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_keeps_what_others_changed_during_the_migration_ini() {
    others_edits_survive(ConfigFormat::Ini).await;
}
