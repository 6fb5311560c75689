//! Bad input: every mistake ends in a status message that names the problem
//! and the fix, an Event, and no change anywhere: not in the cluster, not in
//! vCenter.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Env, NS, Options, Vcfm};
use vcfm_api::MigrationPhase;

const T: Duration = Duration::from_secs(60);

fn failed_message(m: &Vcfm) -> String {
    m.status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Failed")
                .map(|c| c.message.clone())
        })
        .unwrap_or_default()
}

async fn add_secret(env: &Env, name: &str, data: Value) {
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": NS}, "stringData": data}),
    )
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

async fn target_categories(env: &Env) -> usize {
    env.target
        .client()
        .unwrap()
        .list_categories()
        .await
        .unwrap()
        .len()
}

/// Runs one bad migration to its Preflight failure and checks the contract.
async fn expect_refused(
    env: &Env,
    name: &str,
    tweak: impl FnOnce(&mut Value),
    must_mention: &[&str],
) -> String {
    let before = env.snapshot().await;
    let cats = target_categories(env).await;
    env.create(&env.migration(name, tweak)).await.unwrap();
    let m = env
        .wait_for(name, "Preflight to fail", T, |m| {
            m.status.as_ref().and_then(|s| s.phase) == Some(MigrationPhase::Failed)
        })
        .await;
    let msg = failed_message(&m);
    for s in must_mention {
        assert!(
            msg.contains(s),
            "{name}: the message must mention {s:?}: {msg}"
        );
    }
    let st = m.status.as_ref().unwrap();
    assert!(
        st.rollback.is_none(),
        "{name}: nothing to roll back after Preflight"
    );
    assert!(
        st.source_vcenter.is_none() && st.backup_manifests.is_empty(),
        "{name}: a failed Preflight records nothing"
    );
    // The Event is published right after the status write it describes.
    let start = std::time::Instant::now();
    loop {
        let events = env.events_for(name).await;
        if events
            .iter()
            .any(|l| l.starts_with("PhaseFailed") && must_mention.iter().all(|s| l.contains(s)))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name}: no PhaseFailed Event naming the problem: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        env.snapshot().await,
        before,
        "{name}: Preflight must change nothing in the cluster"
    );
    assert_eq!(
        target_categories(env).await,
        cats,
        "{name}: Preflight must change nothing in vCenter"
    );
    env.api().delete(name, &Default::default()).await.unwrap();
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_problems_are_named_with_the_fix() {
    let mut env = Env::start(Options::default()).await;
    env.start_controller();
    let tgt = env.target.server().to_string();

    expect_refused(
        &env,
        "no-secret",
        |m| m["spec"]["targetVCenterCredentialsSecret"]["name"] = "does-not-exist".into(),
        &["does-not-exist", "not found", ".username"],
    )
    .await;

    add_secret(
        &env,
        "half",
        json!({ format!("{tgt}.username"): "administrator@vsphere.local" }),
    )
    .await;
    expect_refused(
        &env,
        "missing-key",
        |m| m["spec"]["targetVCenterCredentialsSecret"]["name"] = "half".into(),
        &[&format!("{tgt}.password"), "add them"],
    )
    .await;

    add_secret(&env, "wrong", json!({ format!("{tgt}.username"): "administrator@vsphere.local", format!("{tgt}.password"): "not-the-password" })).await;
    expect_refused(
        &env,
        "wrong-password",
        |m| m["spec"]["targetVCenterCredentialsSecret"]["name"] = "wrong".into(),
        &["incorrect user name or password"],
    )
    .await;

    let limited = env.target.limited_credentials().unwrap();
    add_secret(&env, "limited", json!({ format!("{tgt}.username"): limited.username(), format!("{tgt}.password"): "Limited-Passw0rd!" })).await;
    expect_refused(
        &env,
        "no-privilege",
        |m| m["spec"]["targetVCenterCredentialsSecret"]["name"] = "limited".into(),
        &["lacks privileges", "Folder.Create", "grant"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_inventory_and_unreachable_vcenter_are_named() {
    let mut env = Env::start(Options::default()).await;
    env.start_controller();
    let topo = |field: &'static str, value: Value| {
        move |m: &mut Value| m["spec"]["failureDomains"][0]["topology"][field] = value
    };
    expect_refused(
        &env,
        "bad-dc",
        topo("datacenter", "NoSuchDC".into()),
        &["datacenter /NoSuchDC", "not found", "spec.failureDomains"],
    )
    .await;
    expect_refused(
        &env,
        "bad-cluster",
        topo("computeCluster", "/DC0/host/NoSuchCluster".into()),
        &["compute cluster /DC0/host/NoSuchCluster"],
    )
    .await;
    expect_refused(
        &env,
        "bad-ds",
        topo("datastore", "/DC0/datastore/NoSuchDS".into()),
        &["datastore /DC0/datastore/NoSuchDS"],
    )
    .await;
    expect_refused(
        &env,
        "bad-net",
        topo("networks", json!(["NoSuchNet"])),
        &["network NoSuchNet"],
    )
    .await;
    expect_refused(
        &env,
        "bad-template",
        topo("template", "/DC0/vm/no-such-template".into()),
        &["template /DC0/vm/no-such-template"],
    )
    .await;

    // A vCenter nobody listens on (loopback only): fails fast, named, no change.
    let dead = "127.99.99.99";
    add_secret(
        &env,
        "dead-creds",
        json!({ format!("{dead}.username"): "u", format!("{dead}.password"): "p" }),
    )
    .await;
    expect_refused(
        &env,
        "unreachable",
        |m| {
            m["spec"]["targetVCenterCredentialsSecret"]["name"] = "dead-creds".into();
            m["spec"]["failureDomains"][0]["server"] = dead.into();
        },
        &["target vCenter 127.99.99.99", "unreachable"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_is_reported_at_once() {
    let mut env = Env::start(Options::default()).await;
    env.start_controller();
    let msg = expect_refused(
        &env,
        "many",
        |m| {
            m["spec"]["failureDomains"][0]["topology"]["datastore"] = "/DC0/datastore/Nope".into();
            m["spec"]["failureDomains"][0]["topology"]["template"] = "/DC0/vm/nope".into();
        },
        &[
            "(1)",
            "(2)",
            "datastore /DC0/datastore/Nope",
            "template /DC0/vm/nope",
        ],
    )
    .await;
    assert!(
        msg.starts_with("Preflight failed: preflight found 2 problem(s)"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_rejects_malformed_specs_before_the_controller_sees_them() {
    let env = Env::start(Options::default()).await;
    let dup = env.migration("dup", |m| {
        let fd = m["spec"]["failureDomains"][0].clone();
        m["spec"]["failureDomains"].as_array_mut().unwrap().push(fd);
    });
    let err = env.create(&dup).await.unwrap_err().to_string();
    assert!(err.contains("failure domain names must be unique"), "{err}");
    let unknown = env.migration("ref", |m| {
        m["spec"]["machineSetConfig"]["failureDomain"] = "elsewhere".into()
    });
    let err = env.create(&unknown).await.unwrap_err().to_string();
    assert!(
        err.contains("machineSetConfig.failureDomain must name one of spec.failureDomains"),
        "{err}"
    );
    let no_template = env.migration("tpl", |m| {
        m["spec"]["failureDomains"][0]["topology"]
            .as_object_mut()
            .unwrap()
            .remove("template");
    });
    // Through kubectl too: the shipped example is accepted, broken ones are not.
    let raw = serde_json::to_string(&no_template).unwrap();
    let out = std::process::Command::new("kubectl")
        .args(["--kubeconfig"])
        .arg(env.kubeconfig())
        .args(["create", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(raw.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("template"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/examples");
    let out = std::process::Command::new("kubectl")
        .args(["--kubeconfig"])
        .arg(env.kubeconfig())
        .args(["apply", "-f", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the shipped examples must be accepted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad_enum = env.migration("enum", |m| m["spec"]["state"] = "Runing".into());
    let raw = serde_json::to_string(&bad_enum).unwrap();
    let tmp = env.dir.path().join("bad-enum.json");
    std::fs::write(&tmp, raw).unwrap();
    let out = std::process::Command::new("kubectl")
        .args(["--kubeconfig"])
        .arg(env.kubeconfig())
        .args(["create", "-f"])
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.state") && err.contains("Runing"),
        "{err}"
    );
    // Deadlines: a value whose arithmetic would overflow a parser (here
    // 2^64 s / 3600 hours) never reaches the controller; every unit is
    // bounded to 4 digits (all three were accepted before the bound).
    for (name, bad) in [
        ("overflow", "5124095576030432h"),
        ("minutes", "99999m"),
        ("digits", "00001h"),
    ] {
        let m = env.migration(name, |m| {
            m["spec"]["phaseTimeouts"] = serde_json::json!({ "CreateWorkers": bad })
        });
        let err = env.create(&m).await.unwrap_err().to_string();
        assert!(err.contains("phaseTimeouts"), "{bad}: {err}");
    }
    assert_eq!(
        env.api()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1,
        "only the valid example exists"
    );
    let _ = NS;
}
