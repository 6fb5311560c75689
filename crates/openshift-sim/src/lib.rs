//! openshift-sim: a simulated OpenShift-on-vSphere cluster for vcfm's tests, benchmarks and
//! demo. It seeds a freshly installed cluster into [kube-sim](kube_sim) (OpenShift's real
//! CRDs, Infrastructure, ClusterVersion, FeatureGate, ClusterOperators, credentials,
//! cloud-provider config, CVO, CPMS, Machines, Nodes, pods) whose VMs exist in a source
//! vcsim, and plays the operators a migration relies on against the source and target
//! vcsims, through the HTTP API only, so the controller is judged against OpenShift's
//! behaviour rather than its own expectations.
//!
//! What the operators do (each a tokio task, watch-triggered and level-triggered, all
//! waits from [`Delays`]):
//! - **cloud-credential operator**: copies `kube-system/vsphere-creds` verbatim into
//!   `openshift-machine-api/vsphere-cloud-credentials` and the CCM and CSI copies.
//! - **Machine API**: MachineSets create `<set>-<5 hex>` Machines and delete the surplus
//!   (annotated `delete-machine` first, then not-Running, then newest; `deletePolicy:
//!   Oldest` flips the last rule). Machines clone the provider spec's template into its
//!   workspace on the vCenter `workspace.server` names, logging in with
//!   `<server>.username/.password` from the credentials secret, tag the VM with
//!   `openshift-<infraID>/<infraID>` when that tag exists, then get `vsphere://<uuid>`, a
//!   Node (Ready after `node_ready`) and phase Running. Missing keys, template, folder,
//!   pool or datastore make the Machine `Failed` with machine-api's texts; login, network
//!   and vCenter errors are retried (`providerStatus.conditions[MachineCreation]`).
//!   Deletion (finalizer `machine.openshift.io`) destroys the VM and the Node.
//! - **CPMS operator**: Inactive does nothing; Active rolls masters one at a time toward the
//!   template with failure domains resolved through the Infrastructure, with truthful
//!   counters at the generation it observed; unknown names set `Degraded=True`; a deleted
//!   CPMS comes back Inactive.
//! - **pods**: deleted pods linger Terminating, replacements get new names and turn Ready
//!   later; DaemonSet and mirror pods follow the Nodes.
//! - **cluster operators**: Progressing after Infrastructure / cloud-provider-config
//!   changes and during master replacement; `machine-config` Degraded while more than one
//!   vCenter is configured.
//! - **CVO**: its Deployment status follows scaling; while available it restores the
//!   Infrastructure CRD's vCenter rule as seeded.
//!
//! Deviations from OpenShift, on purpose or by necessity: Machines are not failed when their VM disappears (a vcsim restart
//! loses its inventory, a real vCenter restart does not); a missing credentials *Secret*
//! (as opposed to missing keys) is retried, as machine-api does.
//!
//! ```no_run
//! # async fn f() -> Result<(), openshift_sim::Error> {
//! use openshift_sim::{Scenario, SimCluster};
//! let sim = SimCluster::start(Scenario { workers: 2, ..Scenario::default() }).await?;
//! let client = sim.client();            // admin kube::Client
//! let target = sim.target().clone();    // server, credentials, CA, inventory paths
//! # let _ = (client, target);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod installer;
mod kapi;
pub mod mapi_vaps;
mod ops;
mod scenario;
mod seed;
mod vcenter;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube_sim::KubeSim;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vcfm_vsphere::sim::{Vcsim, VcsimOptions};
use vcfm_vsphere::{CategorySpec, CloneSpec, MoRef};

pub use ops::cvo::vcenter_rules;
pub use scenario::{
    ConfigFormat, Delays, Faults, InstallerRelease, SOURCE_LIMITED_MISSING, SOURCE_LIMITED_USER,
    Scenario, Site, Tier, VcsimRestart, WrongCredentials,
};
pub use seed::failure_domain as failure_domain_json;
pub use vcenter::VcenterInfo;

use seed::{MACHINE_FINALIZER, MAPI_NS};

/// Errors starting the simulation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shared test data (OpenShift CRDs) is not where it should be.
    #[error(
        "OpenShift CRDs not found at {0}: set VCFM_SHARED_DIR to the directory that holds openshift-crds/"
    )]
    SharedDirMissing(PathBuf),
    /// kube-sim failed to start or rejected a manifest.
    #[error("kube-sim: {0}")]
    KubeSim(#[from] kube_sim::SimError),
    /// The scenario asks for something its tier cannot play.
    #[error("scenario not playable: {0}")]
    Unsupported(&'static str),
    /// The real control plane failed to start or rejected a manifest.
    #[error("real tier: {0}")]
    Real(#[from] real_tier::Error),
    /// A vcsim failed to start or restart.
    #[error("vcsim: {0}")]
    Vcsim(#[from] vcfm_vsphere::sim::SimError),
    /// A vSphere call made while seeding failed.
    #[error("vSphere: {0}")]
    VSphere(#[from] vcfm_vsphere::Error),
    /// A Kubernetes API call made while seeding failed.
    #[error("seeding {what}: {message}")]
    Seed {
        /// The object or step.
        what: String,
        /// The error.
        message: String,
    },
}

fn seed_io(what: &str, e: std::io::Error) -> Error {
    Error::Seed {
        what: what.into(),
        message: e.to_string(),
    }
}

fn seed_err(what: impl Into<String>) -> impl FnOnce(kapi::CallError) -> Error {
    let what = what.into();
    move |e| Error::Seed {
        what,
        message: e.to_string(),
    }
}

/// `<workspace>/../shared`, or `$VCFM_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("VCFM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

/// The directory of OpenShift CRDs for a feature set (`default` or `multi-vcenter-day2`).
pub fn crd_dir(multi_vcenter_day2_gate: bool) -> Result<PathBuf, Error> {
    crd_dir_in(&shared_dir(), multi_vcenter_day2_gate)
}

fn crd_dir_in(shared: &Path, multi_vcenter_day2_gate: bool) -> Result<PathBuf, Error> {
    let set = if multi_vcenter_day2_gate {
        "multi-vcenter-day2"
    } else {
        "default"
    };
    crd_set_dir(shared, set)
}

/// The directory of one named CRD set (`default`, `multi-vcenter-day2`, `4.16`, ...).
fn crd_set_dir(shared: &Path, set: &str) -> Result<PathBuf, Error> {
    let dir = shared.join("openshift-crds").join(set);
    if dir
        .join("0000_10_config-operator_01_infrastructures.crd.yaml")
        .is_file()
    {
        Ok(dir)
    } else {
        Err(Error::SharedDirMissing(dir))
    }
}

/// The API server a cluster runs on.
enum ApiServer {
    Sim(KubeSim),
    Real(Box<real_tier::ControlPlane>),
}

impl ApiServer {
    async fn start(scenario: &Scenario) -> Result<Self, Error> {
        match scenario.tier {
            Tier::Sim => {
                let mut builder = KubeSim::builder()
                    .rbac(scenario.rbac)
                    .watch_list(scenario.watch_list);
                if let Some(p) = &scenario.kubeconfig_path {
                    builder = builder.kubeconfig_path(p.clone());
                }
                Ok(ApiServer::Sim(builder.start().await?))
            }
            Tier::Real => {
                let cp = real_tier::ControlPlane::start(real_tier::ControlPlaneOptions {
                    watch_list: scenario.watch_list,
                    ..Default::default()
                })
                .await?;
                if let Some(p) = &scenario.kubeconfig_path {
                    std::fs::copy(cp.kubeconfig_path(), p).map_err(|e| Error::Seed {
                        what: format!("kubeconfig {}", p.display()),
                        message: e.to_string(),
                    })?;
                }
                Ok(ApiServer::Real(Box::new(cp)))
            }
        }
    }

    /// Applies every manifest of `yaml` exactly as written (CRDs as OpenShift ships them).
    async fn apply_yaml(&self, client: &kube::Client, yaml: &str) -> Result<(), Error> {
        match self {
            ApiServer::Sim(k) => {
                k.apply_yaml(yaml)?;
            }
            ApiServer::Real(_) => {
                real_tier::apply_yaml(client, yaml).await?;
            }
        }
        Ok(())
    }

    async fn apply_dir(&self, client: &kube::Client, dir: &Path) -> Result<(), Error> {
        if !dir.is_dir() {
            return Err(Error::SharedDirMissing(dir.to_path_buf()));
        }
        match self {
            ApiServer::Sim(k) => {
                k.apply_yaml_dir(dir)?;
            }
            ApiServer::Real(_) => {
                real_tier::apply_dir(client, dir).await?;
            }
        }
        Ok(())
    }

    async fn admin_client(&self) -> Result<kube::Client, Error> {
        Ok(match self {
            ApiServer::Sim(k) => k.client().await?,
            ApiServer::Real(cp) => cp.client().await?,
        })
    }

    fn kubeconfig_path(&self) -> &Path {
        match self {
            ApiServer::Sim(k) => k.kubeconfig_path(),
            ApiServer::Real(cp) => cp.kubeconfig_path(),
        }
    }

    async fn shutdown(self) {
        match self {
            ApiServer::Sim(k) => k.shutdown().await,
            ApiServer::Real(cp) => (*cp).shutdown().await,
        }
    }
}

/// Waits until the real CPMS operator has taken the seeded ControlPlaneMachineSet: its
/// generator deletes an Inactive CPMS that differs from what it would generate and creates
/// its own (cluster-control-plane-machine-set-operator
/// `pkg/controllers/controlplanemachinesetgenerator/controller.go`), as it long has on any
/// cluster an administrator migrates. Settled: observed at its generation, same object for
/// two seconds.
async fn settle_cpms(client: &kube::Client) -> Result<(), Error> {
    let api = kapi::dyn_api(
        client,
        "machine.openshift.io/v1",
        "ControlPlaneMachineSet",
        Some(MAPI_NS),
    );
    let timeout = Duration::from_secs(90);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stable_since: Option<(String, tokio::time::Instant)> = None;
    let mut last = String::from("no CPMS");
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(cpms)) = api.get_opt("cluster").await {
            let v = serde_json::to_value(&cpms).unwrap_or_default();
            let observed = v
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64);
            let key = format!(
                "{}/{}",
                cpms.metadata.uid.clone().unwrap_or_default(),
                cpms.metadata.generation.unwrap_or_default()
            );
            if observed == cpms.metadata.generation {
                match &stable_since {
                    Some((k, t)) if *k == key && t.elapsed() >= Duration::from_secs(2) => {
                        return Ok(());
                    }
                    Some((k, _)) if *k == key => {}
                    _ => stable_since = Some((key.clone(), tokio::time::Instant::now())),
                }
            } else {
                stable_since = None;
            }
            last = format!("{key} observed {observed:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(Error::Seed {
        what: "ControlPlaneMachineSet taken by the real CPMS operator".into(),
        message: format!("not settled after {timeout:?}: {last}"),
    })
}

/// How long each step of [`SimCluster::start`] took (logged when the cluster is ready:
/// start-up is most of a short real-tier test).
struct StartSteps {
    start: std::time::Instant,
    last: std::time::Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl StartSteps {
    fn new() -> Self {
        let now = std::time::Instant::now();
        Self {
            start: now,
            last: now,
            steps: Vec::new(),
        }
    }

    fn mark(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for StartSteps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1?} in all:", self.start.elapsed())?;
        for (step, d) in &self.steps {
            write!(f, " {step} {d:.1?};")?;
        }
        Ok(())
    }
}

/// A fault the scenario asks for that its tier cannot inject: kube-sim's API faults do not
/// exist on the real apiserver, and machine faults are the simulated machine controller's,
/// which the real tier does not run. Refused, so that a test never passes without its fault.
fn unplayable_fault(s: &Scenario) -> Option<&'static str> {
    if s.tier != Tier::Real {
        return None;
    }
    let f = &s.faults;
    if f.api_outage_during_cpms_rollout.is_some() {
        return Some("an API outage (kube-sim fault injection) on the real tier");
    }
    if s.real_operators && f.fail_provision_matching.is_some() {
        return Some(
            "a provisioning failure of the simulated machine controller with the real machine API",
        );
    }
    if s.real_operators && f.slow_provision_target.is_some() {
        return Some("slow clones of the simulated machine controller with the real machine API");
    }
    None
}

/// CRDs OpenShift's API repository does not ship (cluster-autoscaler-operator's).
const EXTRA_CRDS: &[&str] = &[
    include_str!("../crds/clusterautoscalers.yaml"),
    include_str!("../crds/machineautoscalers.yaml"),
    include_str!("../crds/cloudcredentials.yaml"),
    include_str!("../crds/machineconfigpools.yaml"),
];

/// A running simulated cluster: kube-sim, two vcsims and the operators. Dropping it stops
/// everything (use [`SimCluster::shutdown`] to wait for it).
pub struct SimCluster {
    api: Option<ApiServer>,
    /// The real machine API and CPMS operators (real tier with `real_operators`).
    operators: Option<real_tier::Operators>,
    _files: tempfile::TempDir,
    client: kube::Client,
    infra_id: String,
    scenario: Scenario,
    source: VcenterInfo,
    target: VcenterInfo,
    sims: HashMap<&'static str, Arc<Mutex<Vcsim>>>,
    crd_dir: PathBuf,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    vc: vcenter::Vcenters,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("infra_id", &self.infra_id)
            .field("source", &self.source.server)
            .field("target", &self.target.server)
            .finish()
    }
}

fn site_key(site: Site) -> &'static str {
    match site {
        Site::Source => "source",
        Site::Target => "target",
    }
}

impl SimCluster {
    /// Starts both vcsims and kube-sim, installs the CRDs of the scenario's feature set,
    /// seeds the cluster (VMs included) and starts the operators.
    pub async fn start(scenario: Scenario) -> Result<Self, Error> {
        if let Some(fault) = unplayable_fault(&scenario) {
            return Err(Error::Unsupported(fault));
        }
        let crd_dir = match &scenario.crd_set {
            Some(set) => crd_set_dir(&shared_dir(), set)?,
            None => crd_dir(scenario.multi_vcenter_day2_gate)?,
        };
        const LIMITED_PASSWORD: &str = "no-tagging-pw";
        let limited = scenario.faults.source_user_cannot_tag.then(|| {
            vcfm_vsphere::Credentials::new(scenario::SOURCE_LIMITED_USER, LIMITED_PASSWORD)
        });
        let src_opts = VcsimOptions {
            limited_user: limited.clone(),
            limited_missing: scenario::SOURCE_LIMITED_MISSING
                .iter()
                .map(|p| p.to_string())
                .collect(),
            ..VcsimOptions::default()
        };
        let mut steps = StartSteps::new();
        // The API server boots (seconds on the real tier) while the vcsims start.
        let (src, tgt, api) = tokio::join!(
            Vcsim::start_async(src_opts),
            Vcsim::start_async(scenario.target_vcsim.clone().unwrap_or_default()),
            ApiServer::start(&scenario)
        );
        let (src, tgt, api) = (src?, tgt?, api?);
        let client = api.admin_client().await?;
        steps.mark("vcsims and API server");
        let vcfm_crd = vcfm_api::crd_yaml().map_err(|e| Error::Seed {
            what: "the vcfm CRD".into(),
            message: e.to_string(),
        })?;
        let real_operators = scenario.real_operators && scenario.tier == Tier::Real;
        // The installer's cluster DNS config (manifests/cluster-dns-02-config.yml): on
        // vSphere only the base domain, no zones. The Machine webhook reads it.
        let dns = json!({"apiVersion": "config.openshift.io/v1", "kind": "DNS",
            "metadata": {"name": "cluster"},
            "spec": {"baseDomain": format!("{}.vcfm.example", scenario.cluster_name)}});
        if let ApiServer::Real(_) = &api {
            // Every CRD in one set: the real apiserver then makes the harness wait once for
            // them all to be established and to take creates (see `real_tier::apply_yaml`).
            if !crd_dir.is_dir() {
                return Err(Error::SharedDirMissing(crd_dir.clone()));
            }
            let mut all = real_tier::read_manifests(&crd_dir)?;
            for crd in EXTRA_CRDS.iter().chain([&vcfm_crd.as_str()]) {
                all.push_str(crd);
                all.push_str("\n---\n");
            }
            if real_operators {
                all.push_str(&real_tier::read_manifests(&real_tier::crd_dir())?);
                all.push_str(&dns.to_string());
            }
            real_tier::apply_yaml(&client, &all).await?;
        } else {
            api.apply_dir(&client, &crd_dir).await?;
            for crd in EXTRA_CRDS {
                api.apply_yaml(&client, crd).await?;
            }
            api.apply_yaml(&client, &vcfm_crd).await?;
        }
        steps.mark("CRDs");

        let infra_id = format!("{}-{}", scenario.cluster_name, kapi::suffix(5));
        let source = VcenterInfo::from_sim(&src, &infra_id);
        let mut target = VcenterInfo::from_sim(&tgt, &infra_id);
        let mut creds_password = source.password.clone();
        match scenario.faults.wrong_credentials {
            Some(WrongCredentials::Source) => creds_password = format!("not-{creds_password}"),
            Some(WrongCredentials::Target) => target.password = format!("not-{}", target.password),
            None => {}
        }
        let trust = HashMap::from([
            (
                source.server.clone(),
                src.ca_pem().map_err(vcfm_vsphere::sim::SimError::Io)?,
            ),
            (
                target.server.clone(),
                tgt.ca_pem().map_err(vcfm_vsphere::sim::SimError::Io)?,
            ),
        ]);
        let vc = vcenter::Vcenters::new(trust);

        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let infra_crd = kapi::call(crds.get(ops::cvo::INFRA_CRD))
            .await
            .map_err(seed_err("the Infrastructure CRD"))?;
        let infra_crd = serde_json::to_value(&infra_crd).map_err(|e| Error::Seed {
            what: "the Infrastructure CRD".into(),
            message: e.to_string(),
        })?;

        let cancel = CancellationToken::new();
        let (synced_tx, mut synced_rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = ops::Ctx {
            client: client.clone(),
            delays: Arc::new(scenario.delays.clone()),
            faults: Arc::new(scenario.faults.clone()),
            vc: vc.clone(),
            infra_id: infra_id.clone().into(),
            target_server: target.server.clone().into(),
            version: scenario.version.clone().into(),
            next_ip: Arc::new(AtomicU32::new(10)),
            api_faults: match &api {
                ApiServer::Sim(k) => Some(k.faults()),
                ApiServer::Real(_) => None,
            },
            outage_fired: Arc::new(AtomicBool::new(false)),
            real_operators,
            infra_crd: Arc::new(infra_crd),
            cancel: cancel.clone(),
            synced: synced_tx,
            vm_group_edits: Arc::default(),
        };

        let mut creds_source = source.clone();
        if let Some(l) = &limited {
            creds_source.username = l.username().to_string();
            creds_password = LIMITED_PASSWORD.to_string();
        }
        let mut base = seed::base_objects(&scenario, &infra_id, &creds_source, &creds_password);
        if real_operators {
            let path = real_tier::feature_gate_payload();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| seed_io(&path.display().to_string(), e))?;
            let payload: Value = serde_json::from_str(&text).map_err(|e| Error::Seed {
                what: path.display().to_string(),
                message: e.to_string(),
            })?;
            let mut fg = seed::payload_feature_gate(
                &payload,
                &scenario.version,
                scenario.multi_vcenter_day2_gate,
            );
            if scenario.host_vm_group_zonal_gate {
                seed::enable_custom_gate(&mut fg, "VSphereHostVMGroupZonal");
            }
            for obj in base.iter_mut().filter(|o| o["kind"] == "FeatureGate") {
                *obj = fg.clone();
            }
        }
        for obj in base {
            let what = format!(
                "{} {}",
                obj["kind"].as_str().unwrap_or_default(),
                obj["metadata"]["name"].as_str().unwrap_or_default()
            );
            kapi::create(&client, &obj).await.map_err(seed_err(what))?;
        }
        steps.mark("base objects");
        let nodes = seed_machines(&ctx, &scenario, &source).await?;
        steps.mark("machines and VMs");
        for obj in seed::blockers(&scenario, &infra_id) {
            let what = obj["kind"].as_str().unwrap_or_default().to_string();
            kapi::create(&client, &obj).await.map_err(seed_err(what))?;
        }
        if scenario.multi_vcenter_day2_gate {
            // What the machine-api operator applies with the gate on.
            mapi_vaps::install(&client)
                .await
                .map_err(|message| Error::Seed {
                    what: "ValidatingAdmissionPolicy".into(),
                    message,
                })?;
        }
        let mut groups = seed::pod_groups();
        if scenario.infra_machineset {
            groups.push(seed::router_group());
            kapi::create(&client, &seed::router_pdb())
                .await
                .map_err(seed_err("router PodDisruptionBudget"))?;
        }
        for g in &groups {
            let placement: Vec<&String> = match (g.kind, &g.node_role) {
                // Pinned pods go to the nodes of their role (the seeded names say it).
                (seed::PodKind::Deployment(n), Some(role)) => nodes
                    .iter()
                    .filter(|node| node.contains(&format!("-{role}-")))
                    .cycle()
                    .take(n)
                    .collect(),
                (seed::PodKind::Deployment(n), None) => {
                    nodes.iter().take(1).cycle().take(n).collect()
                }
                (seed::PodKind::DaemonSet, _) => nodes.iter().collect(),
                (seed::PodKind::Mirror, _) => {
                    nodes.iter().filter(|n| n.contains("-master-")).collect()
                }
            };
            for node in placement {
                let ip = ctx.allocate_ip("");
                let obj = seed::pod(g, &g.new_pod_name(node), node, &ip, true);
                kapi::create(&client, &obj)
                    .await
                    .map_err(seed_err(g.id()))?;
            }
        }

        ops::mcp::seed(&client)
            .await
            .map_err(seed_err("MachineConfigPools"))?;
        steps.mark("pods and pools");
        let mut sims = HashMap::new();
        sims.insert("source", Arc::new(Mutex::new(src)));
        sims.insert("target", Arc::new(Mutex::new(tgt)));
        let mut tasks = vec![
            tokio::spawn(ops::credentials::run(ctx.clone())),
            tokio::spawn(ops::pdb::run(ctx.clone(), groups.clone())),
            tokio::spawn(ops::pods::run(ctx.clone(), groups)),
            tokio::spawn(ops::cluster_operators::run(ctx.clone())),
            tokio::spawn(ops::cvo::run(ctx.clone())),
            tokio::spawn(ops::mcp::run(ctx.clone())),
        ];
        if real_operators {
            tasks.push(tokio::spawn(ops::kubelet::run(ctx.clone())));
        } else {
            tasks.push(tokio::spawn(ops::machines::run_machine_controller(
                ctx.clone(),
            )));
            tasks.push(tokio::spawn(ops::machines::run_machineset_controller(
                ctx.clone(),
            )));
            tasks.push(tokio::spawn(ops::cpms::run(ctx.clone())));
            tasks.push(tokio::spawn(ops::machine_zones::run(ctx.clone())));
        }
        let operators = tasks.len();
        let synced = tokio::time::timeout(Duration::from_secs(30), async {
            for _ in 0..operators {
                if synced_rx.recv().await.is_none() {
                    break;
                }
            }
        })
        .await;
        if synced.is_err() {
            tracing::warn!("not every simulated operator finished its first pass within 30 s");
        }
        steps.mark("simulated operators synced");
        let files = tempfile::Builder::new()
            .prefix("openshift-sim-")
            .tempdir()
            .map_err(|e| seed_io("temp dir", e))?;
        let operators = match &api {
            ApiServer::Real(cp) if real_operators => {
                let bundle = files.path().join("vcenter-ca.pem");
                let mut pem =
                    std::fs::read(&source.ca_pem_path).map_err(|e| seed_io("source CA", e))?;
                pem.extend(
                    std::fs::read(&target.ca_pem_path).map_err(|e| seed_io("target CA", e))?,
                );
                std::fs::write(&bundle, pem).map_err(|e| seed_io("CA bundle", e))?;
                let opts = real_tier::OperatorOptions {
                    release_version: scenario.version.clone(),
                    vcenter_ca_bundle: bundle,
                    cpms: true,
                    machine_api_feature_gates: machine_api_gates(&client).await?,
                };
                let ops = real_tier::Operators::start(cp, opts).await?;
                steps.mark("real operators");
                settle_cpms(&client).await?;
                steps.mark("CPMS settled");
                Some(ops)
            }
            _ => None,
        };
        if let Some(r) = scenario.faults.vcsim_restart
            && let Some(sim) = sims.get(site_key(r.site)).cloned()
        {
            let cancel = cancel.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(r.after) => {
                        tracing::info!(site = ?r.site, "fault: restarting vcsim");
                        let res = tokio::task::spawn_blocking(move || {
                            sim.lock().map_err(|e| e.to_string())?.restart().map_err(|e| e.to_string())
                        })
                        .await;
                        if let Ok(Err(e)) | Err(e) = res.map_err(|e| e.to_string()) {
                            tracing::warn!(error = %e, "vcsim restart failed");
                        }
                    }
                }
            }));
        }
        tracing::info!(%infra_id, source = %source.server, target = %target.server,
            steps = %steps, "simulated cluster ready");
        Ok(Self {
            api: Some(api),
            operators,
            _files: files,
            client,
            infra_id,
            scenario,
            source,
            target,
            sims,
            crd_dir,
            cancel,
            tasks,
            vc,
        })
    }

    /// Admin client of the simulated API server.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        self.api_server().kubeconfig_path()
    }

    fn api_server(&self) -> &ApiServer {
        self.api
            .as_ref()
            .unwrap_or_else(|| unreachable!("the API server is only taken by shutdown"))
    }

    /// The tier the cluster runs on.
    pub fn tier(&self) -> Tier {
        match self.api_server() {
            ApiServer::Sim(_) => Tier::Sim,
            ApiServer::Real(_) => Tier::Real,
        }
    }

    /// kube-sim (fault injection, request statistics, extra tokens): sim tier only.
    ///
    /// # Panics
    /// On [`Tier::Real`]: a test that injects API faults belongs to the sim tier.
    pub fn kube(&self) -> &KubeSim {
        match self.api_server() {
            ApiServer::Sim(k) => k,
            ApiServer::Real(_) => panic!(
                "kube-sim fault injection and statistics exist on the sim tier only (VCFM_TIER=real)"
            ),
        }
    }

    /// The real control plane (audit log, component logs): real tier only.
    pub fn real(&self) -> Option<&real_tier::ControlPlane> {
        match self.api_server() {
            ApiServer::Sim(_) => None,
            ApiServer::Real(cp) => Some(cp),
        }
    }

    /// The real operators' logs (real tier with real operators), for failure messages.
    pub fn operator_logs(&self, lines: usize) -> Option<String> {
        self.operators.as_ref().map(|o| o.logs(lines))
    }

    /// A client and kubeconfig text for `user`, as the API server authenticates it: a
    /// bearer token on kube-sim (in `groups`), a client certificate (first group) on the
    /// real apiserver.
    pub async fn kubeconfig_for_user(&self, user: &str, groups: &[&str]) -> Result<String, Error> {
        match self.api_server() {
            ApiServer::Sim(k) => {
                let token = format!("user-{}", kapi::suffix(24));
                k.add_token(
                    &token,
                    kube_sim::UserInfo {
                        name: user.into(),
                        groups: groups.iter().map(|g| g.to_string()).collect(),
                    },
                );
                Ok(k.kubeconfig_for_token(&token))
            }
            ApiServer::Real(cp) => Ok(cp.kubeconfig_for(
                user,
                groups
                    .iter()
                    .copied()
                    .find(|g| *g != "system:authenticated"),
            )?),
        }
    }

    /// A client for [`SimCluster::kubeconfig_for_user`].
    pub async fn client_for_user(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<kube::Client, Error> {
        let text = self.kubeconfig_for_user(user, groups).await?;
        Ok(real_tier::ControlPlane::client_from_kubeconfig(&text).await?)
    }

    /// A kubeconfig with a token for service account `ns/name`, as a pod gets it (on the
    /// real apiserver through TokenRequest; the account is created when missing).
    pub async fn service_account_kubeconfig(&self, ns: &str, name: &str) -> Result<String, Error> {
        match self.api_server() {
            ApiServer::Sim(k) => {
                Ok(k.kubeconfig_for_token(&k.mint_service_account_token(ns, name)))
            }
            ApiServer::Real(cp) => {
                let token = cp.service_account_token(ns, name).await?;
                Ok(cp.kubeconfig_for_token(&token))
            }
        }
    }

    /// A bearer token for service account `ns/name` on either tier (TokenRequest on the
    /// real apiserver; the account is created when missing).
    pub async fn service_account_token(&self, ns: &str, name: &str) -> Result<String, Error> {
        match self.api_server() {
            ApiServer::Sim(k) => Ok(k.mint_service_account_token(ns, name)),
            ApiServer::Real(cp) => Ok(cp.service_account_token(ns, name).await?),
        }
    }

    /// The cluster's infraID (`<cluster_name>-xxxxx`).
    pub fn infra_id(&self) -> &str {
        &self.infra_id
    }

    /// The scenario the cluster runs.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The directory of OpenShift CRDs that was installed.
    pub fn crd_dir(&self) -> &Path {
        &self.crd_dir
    }

    /// The source vCenter (the one in the Infrastructure).
    pub fn source(&self) -> &VcenterInfo {
        &self.source
    }

    /// The target vCenter (empty but for the template; a migration creates the folder).
    pub fn target(&self) -> &VcenterInfo {
        &self.target
    }

    /// [`SimCluster::source`] or [`SimCluster::target`].
    pub fn vcenter(&self, site: Site) -> &VcenterInfo {
        match site {
            Site::Source => &self.source,
            Site::Target => &self.target,
        }
    }

    /// A new administrator vSphere client for a site (own sessions, real credentials), to
    /// inspect what the simulation and the controller did.
    pub fn vsphere_client(&self, site: Site) -> Result<vcfm_vsphere::Client, Error> {
        let sim = self.sims.get(site_key(site)).ok_or_else(|| Error::Seed {
            what: "vcsim".into(),
            message: "unknown site".into(),
        })?;
        let sim = sim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(sim.client()?)
    }

    /// Restarts a vcsim now: sessions, tags, folders and clones are lost, as after a real
    /// vCenter restart onto an empty inventory.
    pub async fn restart_vcsim(&self, site: Site) -> Result<(), Error> {
        let sim = self
            .sims
            .get(site_key(site))
            .cloned()
            .ok_or_else(|| Error::Seed {
                what: "vcsim".into(),
                message: "unknown site".into(),
            })?;
        tokio::task::spawn_blocking(move || {
            sim.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .restart()
        })
        .await
        .map_err(|e| vcfm_vsphere::sim::SimError::Io(std::io::Error::other(e.to_string())))??;
        Ok(())
    }

    /// Fails the next `count` calls of SOAP method `method` on a site's vCenter with
    /// `SystemError` (see [`vcfm_vsphere::sim::Vcsim::inject_system_errors`]).
    pub fn inject_vcenter_system_errors(
        &self,
        site: Site,
        method: &str,
        count: u32,
    ) -> Result<(), Error> {
        let sim = self.sims.get(site_key(site)).ok_or_else(|| Error::Seed {
            what: "vcsim".into(),
            message: "unknown site".into(),
        })?;
        sim.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .inject_system_errors(method, count)?;
        Ok(())
    }

    /// The last lines a site's vcsim wrote to stderr (what it injected, among others).
    pub fn vcsim_log(&self, site: Site) -> String {
        self.sims
            .get(site_key(site))
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .stderr_tail()
            })
            .unwrap_or_default()
    }

    /// Stops the operators, logs out of the vCenters, stops kube-sim and both vcsims.
    pub async fn shutdown(mut self) {
        let mut steps = StartSteps::new();
        self.cancel.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        steps.mark("simulated operators");
        self.vc.logout_all().await;
        steps.mark("logouts");
        // Both at once: what either writes on its way down is thrown away with it.
        let (ops, api) = (self.operators.take(), self.api.take());
        tokio::join!(
            async {
                if let Some(ops) = ops {
                    ops.shutdown().await;
                }
            },
            async {
                if let Some(api) = api {
                    api.shutdown().await;
                }
            }
        );
        steps.mark("API server and operators");
        let sims: Vec<_> = self.sims.drain().map(|(_, s)| s).collect();
        let _ = tokio::task::spawn_blocking(move || drop(sims)).await;
        steps.mark("vcsims");
        tracing::info!(%steps, "simulated cluster stopped");
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.cancel.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Creates the cluster's VMs in the source vCenter (folder and ownership tag as the
/// installer makes them) and their Machines, MachineSets, Nodes and the CPMS. Returns the
/// node names.
async fn seed_machines(
    ctx: &ops::Ctx,
    s: &Scenario,
    src: &VcenterInfo,
) -> Result<Vec<String>, Error> {
    let vc = ctx
        .vc
        .client(&src.server, &src.username, &src.password)
        .map_err(|e| Error::Seed {
            what: "source vCenter client".into(),
            message: e,
        })?;
    let folder = vc.ensure_folder(&src.folder).await?;
    let category = vc
        .ensure_category(&CategorySpec {
            name: format!("openshift-{}", ctx.infra_id),
            description: "Added by openshift-install do not remove".into(),
            cardinality: vcfm_vsphere::Cardinality::Single,
            associable_types: [
                "VirtualMachine",
                "ResourcePool",
                "Folder",
                "Datastore",
                "StoragePod",
            ]
            .iter()
            .map(|t| format!("urn:vim25:{t}"))
            .collect(),
        })
        .await?;
    let tag = vc
        .ensure_tag(
            &category.id,
            &ctx.infra_id,
            "Added by openshift-install do not remove",
        )
        .await?;
    vc.attach_tag(&tag.id, &folder).await?;
    let template = vc.find_vm(&src.template).await?;
    let pool = vc.find_resource_pool(&src.resource_pool).await?;
    let datastore = vc.find_datastore(&src.datastore).await?;
    let mut spec = CloneSpec::new(folder, Some(pool));
    spec.datastore = Some(datastore);
    spec.power_on = true;
    spec.timeout = Duration::from_secs(60);
    let seeder = Seeder {
        ctx,
        vc: &vc,
        template,
        spec,
        tag: tag.id,
    };

    let mut nodes = Vec::new();
    let master_spec = match s.installer {
        Some(_) => installer::provider("master", src),
        None => seed::provider_spec("master", src),
    };
    for i in 0..s.masters {
        let name = format!("{}-master-{i}", ctx.infra_id);
        seeder
            .machine(
                &name,
                "master",
                master_spec.clone(),
                seed::role_labels(&ctx.infra_id, "master"),
                None,
                &Value::Null,
            )
            .await?;
        nodes.push(name);
    }
    let mut sets = vec![("worker", s.workers)];
    if s.infra_machineset {
        sets.push(("infra", 1));
    }
    for (role, replicas) in sets {
        let mut ms = seed::machineset(&ctx.infra_id, role, replicas, src);
        if s.installer.is_some() {
            ms["spec"]["template"]["spec"]["providerSpec"]["value"] =
                installer::provider(role, src);
        }
        if role == "worker"
            && let Some(group) = &s.worker_vm_group
        {
            // A zonal source cluster's workers name their VM group
            // (machine-api-operator `pkg/controller/vsphere/reconciler.go` adds each clone to it).
            ms["spec"]["template"]["spec"]["providerSpec"]["value"]["workspace"]["vmGroup"] =
                json!(group);
        }
        let created = kapi::create(&ctx.client, &ms)
            .await
            .map_err(seed_err("MachineSet"))?;
        let ms_name = created["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let owner = json!([{"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
            "name": ms_name, "uid": created["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
        let labels: std::collections::BTreeMap<String, String> =
            serde_json::from_value(ms["spec"]["template"]["metadata"]["labels"].clone())
                .unwrap_or_default();
        let value = ms["spec"]["template"]["spec"]["providerSpec"]["value"].clone();
        let template_spec = ms["spec"]["template"]["spec"].clone();
        for _ in 0..replicas {
            let name = format!("{ms_name}-{}", kapi::suffix(5));
            seeder
                .machine(
                    &name,
                    role,
                    value.clone(),
                    labels.clone(),
                    Some(owner.clone()),
                    &template_spec,
                )
                .await?;
            nodes.push(name);
        }
    }
    let cpms = match s.installer {
        Some(_) => installer::cpms(&ctx.infra_id, s.masters, &master_spec),
        None => seed::cpms(
            &ctx.infra_id,
            s.masters,
            master_spec,
            &[seed::INSTALL_FAILURE_DOMAIN.to_string()],
            s.pre_416_cpms,
        ),
    };
    kapi::create(&ctx.client, &cpms)
        .await
        .map_err(seed_err("ControlPlaneMachineSet"))?;
    Ok(nodes)
}

struct Seeder<'a> {
    ctx: &'a ops::Ctx,
    vc: &'a vcfm_vsphere::Client,
    template: MoRef,
    spec: CloneSpec,
    tag: String,
}

impl Seeder<'_> {
    async fn machine(
        &self,
        name: &str,
        role: &str,
        provider: Value,
        labels: std::collections::BTreeMap<String, String>,
        owner: Option<Value>,
        template_spec: &Value,
    ) -> Result<(), Error> {
        let vm = self.vc.clone_vm(&self.template, name, &self.spec).await?;
        self.vc.attach_tag(&self.tag, &vm).await?;
        let props = self
            .vc
            .retrieve_properties(
                "VirtualMachine",
                std::slice::from_ref(&vm),
                &["config.uuid"],
            )
            .await?;
        let uuid = props
            .first()
            .and_then(|o| o.str("config.uuid"))
            .unwrap_or_default()
            .to_string();
        let provider_id = format!("vsphere://{uuid}");
        let ip = self.ctx.allocate_ip("");
        // The MachineSet template's node labels and taints, on the Machine and (by the
        // nodelink controller, see ops/drain.rs) on its Node.
        let node_meta = template_spec
            .get("metadata")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let taints = template_spec.get("taints").cloned();
        let mut node_obj = seed::node(name, role, &provider_id, &ip, true);
        if let Some(extra) = node_meta.get("labels").and_then(Value::as_object) {
            for (k, v) in extra {
                node_obj["metadata"]["labels"][k] = v.clone();
            }
        }
        if let Some(t) = taints
            .as_ref()
            .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
        {
            node_obj["spec"]["taints"] = t.clone();
        }
        let node = kapi::create(&self.ctx.client, &node_obj)
            .await
            .map_err(seed_err(format!("Node {name}")))?;
        let mut meta = json!({"name": name, "namespace": MAPI_NS, "labels": labels,
            "finalizers": [MACHINE_FINALIZER],
            "annotations": {"machine.openshift.io/instance-state": "poweredOn"}});
        if let Some(o) = owner {
            meta["ownerReferences"] = o;
        }
        let machine = json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "Machine",
            "metadata": meta,
            "spec": {"lifecycleHooks": {}, "metadata": node_meta, "providerID": provider_id,
                "providerSpec": {"value": provider}},
            "status": {"phase": "Running", "lastUpdated": kapi::now(),
                "nodeRef": {"kind": "Node", "name": name, "uid": node["metadata"]["uid"]},
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "InternalDNS", "address": name}],
                "providerStatus": {"instanceId": uuid, "instanceState": "poweredOn"}}});
        let mut machine = machine;
        if let Some(t) = taints {
            machine["spec"]["taints"] = t;
        }
        kapi::create(&self.ctx.client, &machine)
            .await
            .map_err(seed_err(format!("Machine {name}")))?;
        Ok(())
    }
}

/// The `--feature-gates` machine-api-operator gives its controllers: the four gates its
/// operator picks (`pkg/operator/operator.go`, the `features` map), each as the cluster's
/// FeatureGate status lists it for the release.
async fn machine_api_gates(
    client: &kube::Client,
) -> Result<std::collections::BTreeMap<String, bool>, Error> {
    use vcfm_api::openshift::FeatureGate;
    const PICKED: [&str; 4] = [
        "AWSDedicatedHosts",
        "MachineAPIMigration",
        "AzureWorkloadIdentity",
        "VSphereHostVMGroupZonal",
    ];
    let fg = kube::Api::<FeatureGate>::all(client.clone())
        .get(vcfm_api::openshift::CLUSTER)
        .await
        .map_err(|e| Error::Seed {
            what: "FeatureGate cluster".into(),
            message: e.to_string(),
        })?;
    let on = |gate: &str| {
        fg.status
            .as_ref()
            .and_then(|s| s.feature_gates.first())
            .is_some_and(|d| d.enabled.iter().any(|g| g.name == gate))
    };
    Ok(PICKED.iter().map(|g| (g.to_string(), on(g))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_shared_dir_is_a_clear_error() {
        let err = crd_dir_in(Path::new("/nonexistent/shared"), false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/shared/openshift-crds/default"),
            "{text}"
        );
        assert!(text.contains("VCFM_SHARED_DIR"), "{text}");
    }

    #[test]
    fn both_feature_sets_are_found_in_the_shared_dir() {
        assert!(crd_dir(false).is_ok_and(|d| d.ends_with("default")));
        assert!(crd_dir(true).is_ok_and(|d| d.ends_with("multi-vcenter-day2")));
    }
}
