//! Injected faults behave like their real counterparts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{eventually, list_machines, machinesets, vms_in};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use openshift_sim::{Scenario, SimCluster, Site, WrongCredentials};
use vcfm_api::openshift::{ClusterOperator, ControlPlaneMachineSet, Infrastructure, Machine};

const DEADLINE: Duration = Duration::from_secs(30);

fn in_set(all: Vec<Machine>, set: &str) -> Vec<Machine> {
    all.into_iter()
        .filter(|m| {
            m.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("machine.openshift.io/cluster-api-machineset"))
                .map(String::as_str)
                == Some(set)
        })
        .collect()
}

async fn prepare_target(sim: &SimCluster) {
    sim.vsphere_client(Site::Target)
        .unwrap()
        .ensure_folder(&sim.target().folder)
        .await
        .unwrap();
    common::add_target_credentials(sim).await;
    common::wait_target_credentials_propagated(sim).await;
}

async fn scale(c: &kube::Client, set: &str, replicas: i32) {
    machinesets(c)
        .patch(
            set,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_rollout_survives_an_api_outage() {
    let mut scenario = Scenario {
        workers: 0,
        multi_vcenter_day2_gate: true,
        ..Scenario::default()
    };
    scenario.faults.api_outage_during_cpms_rollout = Some(Duration::from_secs(2));
    let sim = SimCluster::start(scenario).await.expect("start");
    let c = sim.client();
    prepare_target(&sim).await;
    let infra_api: Api<Infrastructure> = Api::all(c.clone());
    let mut v = serde_json::to_value(infra_api.get("cluster").await.unwrap()).unwrap();
    let t = sim.target();
    let vs = &mut v["spec"]["platformSpec"]["vsphere"];
    vs["vcenters"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"server": t.server, "port": 443, "datacenters": [t.datacenter]}));
    vs["failureDomains"]
        .as_array_mut()
        .unwrap()
        .push(openshift_sim::failure_domain_json("target", "r", "z", t));
    infra_api
        .replace(
            "cluster",
            &PostParams::default(),
            &serde_json::from_value(v).unwrap(),
        )
        .await
        .unwrap();
    // kube-rs retries 503s by default; this observer wants to see them.
    let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    cfg.default_retry = false;
    let observer = kube::Client::try_from(cfg).unwrap();
    let cpms: Api<ControlPlaneMachineSet> = Api::namespaced(observer, "openshift-machine-api");
    let patch = serde_json::json!({"spec": {"state": "Active", "template": {"machines_v1beta1_machine_openshift_io": {
        "failureDomains": {"platform": "VSphere", "vsphere": [{"name": "target"}]}}}}});
    cpms.patch("cluster", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let start = Instant::now();
    let mut unavailable = 0;
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "rollout did not finish after the outage"
        );
        match cpms.get("cluster").await {
            Ok(cp) if cp.rollout_complete() => {
                let masters: Vec<Machine> = list_machines(&c)
                    .await
                    .into_iter()
                    .filter(|m| m.metadata.name.as_ref().unwrap().contains("-master-"))
                    .collect();
                if masters.len() == 3
                    && masters
                        .iter()
                        .all(|m| m.server().as_deref() == Some(t.server.as_str()))
                {
                    break;
                }
            }
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 503 => unavailable += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        unavailable >= 5,
        "the API was unavailable for a while during the rollout ({unavailable} x 503)"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_failure_slowness_and_wrong_network_on_the_target() {
    let mut scenario = Scenario {
        workers: 0,
        ..Scenario::default()
    };
    scenario.faults.fail_provision_matching = Some("-broken-".into());
    scenario.faults.slow_provision_target = Some(Duration::from_millis(1500));
    scenario.faults.target_network_outside_machine_network = true;
    let sim = SimCluster::start(scenario).await.expect("start");
    let c = sim.client();
    prepare_target(&sim).await;
    let good = format!("{}-worker-target", sim.infra_id());
    let bad = format!("{}-broken-target", sim.infra_id());
    let created = Instant::now();
    for (set, n) in [(&good, 1), (&bad, 1)] {
        let ms = common::target_machineset(&sim, set, n).await;
        machinesets(&c)
            .create(&PostParams::default(), &ms)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let early = in_set(list_machines(&c).await, &good);
    assert_eq!(early.len(), 1);
    assert!(
        early[0].spec.spec.provider_id.is_none() && early[0].phase() == "Provisioning",
        "slow clone still running"
    );

    let failed = eventually("broken machine Failed", DEADLINE, || async {
        let m = in_set(list_machines(&c).await, &bad).pop().ok_or("none")?;
        if m.phase() == "Failed" {
            Ok(m)
        } else {
            Err(m.phase().to_string())
        }
    })
    .await;
    let st = failed.status.unwrap();
    assert_eq!(st.error_reason.as_deref(), Some("CreateError"));
    assert!(
        st.error_message
            .unwrap()
            .contains("reconciler failed to Create machine: task")
    );

    let m = eventually("good machine Running", DEADLINE, || async {
        let m = in_set(list_machines(&c).await, &good).pop().ok_or("none")?;
        if m.phase() == "Running" {
            Ok(m)
        } else {
            Err(m.phase().to_string())
        }
    })
    .await;
    assert!(
        created.elapsed() >= Duration::from_millis(1500),
        "slowness applied"
    );
    let nodes: Api<Node> = Api::all(c.clone());
    let node = nodes.get(m.metadata.name.as_ref().unwrap()).await.unwrap();
    let ip = node
        .status
        .unwrap()
        .addresses
        .unwrap()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .unwrap()
        .address;
    assert!(
        ip.starts_with("172.31."),
        "target node outside the 10.0.0.0/16 machine network: {ip}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_vcenter_loses_inventory_deletions_still_complete() {
    let sim = SimCluster::start(Scenario {
        workers: 2,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    let set = format!("{}-worker-0", sim.infra_id());
    sim.restart_vcsim(Site::Source).await.unwrap();
    let vc = sim.vsphere_client(Site::Source).unwrap();
    assert!(
        vc.find_folder(&sim.source().folder).await.is_err(),
        "the restart dropped the folder"
    );
    scale(&c, &set, 0).await;
    eventually("workers gone", DEADLINE, || async {
        let n = in_set(list_machines(&c).await, &set).len();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} left"))
        }
    })
    .await;
    scale(&c, &set, 1).await;
    let m = eventually(
        "new worker Failed on the missing folder",
        DEADLINE,
        || async {
            let m = in_set(list_machines(&c).await, &set).pop().ok_or("none")?;
            if m.phase() == "Failed" {
                Ok(m)
            } else {
                Err(m.phase().to_string())
            }
        },
    )
    .await;
    assert!(
        m.status
            .unwrap()
            .error_message
            .unwrap()
            .ends_with("folder not found, specify valid value")
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_degraded_operator() {
    let mut scenario = Scenario {
        workers: 0,
        ..Scenario::default()
    };
    scenario.faults.wrong_credentials = Some(WrongCredentials::Source);
    scenario.faults.degraded_operator = Some("network".into());
    let sim = SimCluster::start(scenario).await.expect("start");
    let c = sim.client();
    let set = format!("{}-worker-0", sim.infra_id());
    scale(&c, &set, 1).await;
    let m = eventually("login failure reported", DEADLINE, || async {
        let m = in_set(list_machines(&c).await, &set).pop().ok_or("none")?;
        let msg = m
            .status
            .as_ref()
            .and_then(|s| s.extra.get("providerStatus"))
            .map(|p| p.to_string())
            .unwrap_or_default();
        if msg.contains("incorrect user name or password") {
            Ok(m)
        } else {
            Err(format!("{} {msg}", m.phase()))
        }
    })
    .await;
    assert_eq!(
        m.phase(),
        "Provisioning",
        "a login failure is retried, not terminal"
    );
    assert!(
        vms_in(
            &sim.vsphere_client(Site::Source).unwrap(),
            &sim.source().folder
        )
        .await
        .unwrap()
        .len()
            == 3
    );
    let cos: Api<ClusterOperator> = Api::all(c.clone());
    let net = cos.get("network").await.unwrap();
    assert!(
        !net.instability().is_empty() && net.instability()[0].starts_with("Degraded=True"),
        "{:?}",
        net.instability()
    );
    sim.shutdown().await;

    let mut scenario = Scenario {
        workers: 0,
        ..Scenario::default()
    };
    scenario.faults.wrong_credentials = Some(WrongCredentials::Target);
    let sim = SimCluster::start(scenario).await.expect("start");
    let t = sim.target();
    let client = vcfm_vsphere::Client::new(
        vcfm_vsphere::ClientConfig::new(
            &t.server,
            vcfm_vsphere::Credentials::new(&t.username, &t.password),
        )
        .with_tls(vcfm_vsphere::TlsOptions::with_ca_pem(
            std::fs::read(&t.ca_pem_path).unwrap(),
        )),
    )
    .unwrap();
    let err = client
        .login()
        .await
        .expect_err("the advertised target password is wrong");
    assert!(
        matches!(err, vcfm_vsphere::Error::InvalidLogin { .. }),
        "{err}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_vcsim_restart_drops_the_inventory_and_the_vcenter_comes_back() {
    let mut scenario = Scenario {
        workers: 0,
        ..Scenario::default()
    };
    scenario.faults.vcsim_restart = Some(openshift_sim::VcsimRestart {
        site: Site::Target,
        after: Duration::from_millis(1500),
    });
    let sim = SimCluster::start(scenario).await.expect("start");
    let vc = sim.vsphere_client(Site::Target).unwrap();
    vc.ensure_folder(&sim.target().folder).await.unwrap();
    eventually("the restart dropped the folder", DEADLINE, || async {
        match vc.find_folder(&sim.target().folder).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Same server, same CA, fresh inventory: the template is back and sessions re-login.
    vc.find_vm(&sim.target().template).await.unwrap();
    sim.shutdown().await;
}
