//! The seeded cluster looks like a freshly installed OpenShift on one vCenter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;
use openshift_sim::{Scenario, SimCluster, Site};
use vcfm_api::openshift::{
    ClusterOperator, ClusterVersion, ControlPlaneMachineSet, FeatureGate, Infrastructure,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_cluster_matches_its_vcenter() {
    let sim = SimCluster::start(Scenario {
        workers: 2,
        infra_machineset: true,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    let infra: Infrastructure = Api::all(c.clone()).get("cluster").await.unwrap();
    assert_eq!(infra.infra_id(), Some(sim.infra_id()));
    assert_eq!(infra.vcenters().len(), 1);
    assert_eq!(infra.vcenters()[0].server, sim.source().server);

    let machines = common::list_machines(&c).await;
    assert_eq!(machines.len(), 3 + 2 + 1, "3 masters, 2 workers, 1 infra");
    assert!(machines.iter().all(|m| m.phase() == "Running"));
    let nodes: Api<Node> = Api::all(c.clone());
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        6
    );

    let vc = sim.vsphere_client(Site::Source).unwrap();
    let mut vms = common::vms_in(&vc, &sim.source().folder).await.unwrap();
    vms.sort();
    let mut names: Vec<String> = machines
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(vms, names, "every Machine has its VM in the source folder");

    let cos: Api<ClusterOperator> = Api::all(c.clone());
    let cos = cos.list(&ListParams::default()).await.unwrap().items;
    assert!(cos.len() >= 30);
    assert!(
        cos.iter().all(|co| co.instability().is_empty()),
        "all operators stable"
    );

    let cv: ClusterVersion = Api::all(c.clone()).get("version").await.unwrap();
    let version = cv.desired_version().unwrap().to_string();
    assert!(!cv.is_progressing());
    let fg: FeatureGate = Api::all(c.clone()).get("cluster").await.unwrap();
    assert_eq!(
        fg.is_enabled(&version, "VSphereMultiVCenterDay2"),
        Some(false)
    );
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(c.clone(), "openshift-config");
    let cfg = cms
        .get("cloud-provider-config")
        .await
        .unwrap()
        .data
        .unwrap()
        .remove("config")
        .unwrap();
    assert!(
        cfg.contains(&format!("vcenter:\n  {}:\n", sim.source().server)),
        "{cfg}"
    );
    let creds: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), "kube-system");
    let creds = creds.get("vsphere-creds").await.unwrap().data.unwrap();
    assert_eq!(
        String::from_utf8(
            creds[&format!("{}.password", sim.source().server)]
                .0
                .clone()
        )
        .unwrap(),
        sim.source().password
    );

    let cpms: Api<ControlPlaneMachineSet> = Api::namespaced(c.clone(), "openshift-machine-api");
    let cpms = cpms.get("cluster").await.unwrap();
    assert_eq!(cpms.spec.state.as_deref(), Some("Inactive"));
    assert_eq!(
        cpms.failure_domain_names(),
        vec!["generated-failure-domain"]
    );

    let pods: Api<Pod> = Api::namespaced(c.clone(), "openshift-cloud-controller-manager");
    let lp = ListParams::default().labels("k8s-app=vsphere-cloud-controller-manager");
    assert_eq!(pods.list(&lp).await.unwrap().items.len(), 2);
    assert!(
        c.request::<serde_json::Value>(
            http::Request::get("/api/v1/persistentvolumes")
                .body(Vec::new())
                .unwrap()
        )
        .await
        .unwrap()["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_blockers_are_seeded_on_request() {
    let sim = SimCluster::start(Scenario {
        workers: 0,
        config_format: openshift_sim::ConfigFormat::Ini,
        csi_volumes: 2,
        autoscaling: true,
        user_machine_health_check: true,
        ..Scenario::default()
    })
    .await
    .expect("start");
    let c = sim.client();
    // An older cluster: INI cloud config and the older CSI label set.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(c.clone(), "openshift-config");
    let cfg = cms
        .get("cloud-provider-config")
        .await
        .unwrap()
        .data
        .unwrap()
        .remove("config")
        .unwrap();
    assert!(cfg.starts_with("[Global]"), "{cfg}");
    assert!(
        cfg.contains(&format!("[VirtualCenter \"{}\"]", sim.source().server)),
        "{cfg}"
    );
    let csi: Api<Pod> = Api::namespaced(c.clone(), "openshift-cluster-csi-drivers");
    let lp = ListParams::default().labels("app=vmware-vsphere-csi-driver-controller");
    assert_eq!(csi.list(&lp).await.unwrap().items.len(), 2);

    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(c.clone());
    let pvs = pvs.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(pvs.len(), 2);
    assert!(
        pvs.iter()
            .all(|p| p.spec.as_ref().unwrap().csi.as_ref().unwrap().driver
                == "csi.vsphere.vmware.com")
    );
    let get = |path: &str| {
        let c = c.clone();
        let path = path.to_string();
        async move {
            c.request::<serde_json::Value>(http::Request::get(path).body(Vec::new()).unwrap())
                .await
                .unwrap()["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        get("/apis/autoscaling.openshift.io/v1/clusterautoscalers").await,
        vec!["default"]
    );
    assert_eq!(get("/apis/autoscaling.openshift.io/v1beta1/namespaces/openshift-machine-api/machineautoscalers").await.len(), 1);
    let mut mhcs = get(
        "/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machinehealthchecks",
    )
    .await;
    mhcs.sort();
    assert_eq!(
        mhcs,
        vec!["machine-api-termination-handler", "worker-health"]
    );
    sim.shutdown().await;
}
