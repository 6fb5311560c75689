//! The proving ground with the controller run in-process against it over HTTP.

use kube::api::{Api, Patch, PatchParams, PostParams};
use openshift_sim::{Scenario, SimCluster};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vcfm_api::PhaseName;
use vcfm_controller::{ControllerConfig, LeaderElection, RunOptions};

use crate::status::{summary, waiting_for_approval};
use crate::{TARGET_SECRET, Vcfm, failure_domain_spec, init_tracing, migration_object};

/// Namespace of the migrations [`Env::start`] creates.
pub const NS: &str = "vcfm-e2e";
/// The identity the controller talks to the API server with (kube-sim counts its
/// requests apart).
pub const CONTROLLER_USER: &str = "system:serviceaccount:vcfm:vcfm-controller";

/// A seeded cluster plus an in-process controller.
pub struct Env {
    pub sim: SimCluster,
    /// The administrator's client.
    pub client: kube::Client,
    /// The controller's own client (user [`CONTROLLER_USER`]).
    pub controller_client: kube::Client,
    /// Namespace of the migrations and of the target Secret ([`TARGET_SECRET`]).
    pub ns: String,
    ca: Vec<u8>,
    controller: Option<(JoinHandle<()>, CancellationToken)>,
    pub leader_election: Option<LeaderElection>,
    pub listen: Option<std::net::SocketAddr>,
    /// MonitorHealth's settle window ([`ControllerConfig::health_settle`]).
    pub health_settle: Duration,
    /// Per-call vCenter timeout ([`ControllerConfig::vcenter_timeout`]).
    pub vcenter_timeout: Duration,
}

impl Env {
    /// The cluster of `scenario`, with namespace [`NS`] holding the target Secret.
    pub async fn start(scenario: Scenario) -> Env {
        Self::start_in(scenario, NS).await
    }

    /// The cluster of `scenario`, with namespace `ns` holding the target Secret.
    pub async fn start_in(scenario: Scenario, ns: &str) -> Env {
        init_tracing();
        let sim = SimCluster::start(scenario)
            .await
            .expect("simulated cluster");
        let client = sim.client();
        crate::seed_migration_namespace(&client, ns, TARGET_SECRET, sim.target(), None)
            .await
            .expect("namespace and target secret");
        let controller_client = sim
            .client_for_user(CONTROLLER_USER, &["system:masters"])
            .await
            .expect("controller client");
        let ca = crate::vcenter_ca_bundle(&sim).expect("vCenter CAs");
        Env {
            sim,
            client,
            controller_client,
            ns: ns.into(),
            ca,
            controller: None,
            leader_election: None,
            listen: None,
            health_settle: Duration::from_secs(3),
            vcenter_timeout: Duration::from_secs(30),
        }
    }

    pub fn config(&self) -> ControllerConfig {
        ControllerConfig {
            vcenter_ca_pem: Some(self.ca.clone()),
            vcenter_insecure: false,
            vcenter_timeout: self.vcenter_timeout,
            poll_interval: Duration::from_millis(300),
            manager: "vcfm-controller".into(),
            // The simulated operators notice a change at once (Delays::operator_notice).
            health_settle: self.health_settle,
        }
    }

    /// Starts the controller (a no-op when it runs).
    pub fn spawn_controller(&mut self) {
        if self.controller.is_some() {
            return;
        }
        let token = CancellationToken::new();
        let opts = RunOptions {
            config: self.config(),
            leader_election: self.leader_election.clone(),
            listen: self.listen,
        };
        let client = self.controller_client.clone();
        let t = token.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = vcfm_controller::run(client, opts, t).await {
                tracing::warn!(error = %e, "controller stopped with an error");
            }
        });
        self.controller = Some((handle, token));
    }

    /// Kills the controller at once (the task is aborted mid-flight, like a SIGKILL).
    pub async fn kill_controller(&mut self) {
        if let Some((h, _)) = self.controller.take() {
            h.abort();
            let _ = h.await;
        }
    }

    /// Stops the controller gracefully.
    pub async fn stop_controller(&mut self) {
        if let Some((h, t)) = self.controller.take() {
            t.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }

    pub async fn shutdown(mut self) {
        self.kill_controller().await;
        self.sim.shutdown().await;
    }

    pub fn api(&self) -> Api<Vcfm> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The migration spec for this cluster: one target failure domain (named `fd`) with
    /// the target's inventory, folder left to the default, rollback on failure.
    pub fn spec(&self, fd: &str, workers: u32, manual: bool) -> Value {
        serde_json::json!({
            "state": "Running",
            "approvalMode": if manual { "Manual" } else { "Automatic" },
            "targetVCenterCredentialsSecret": {"name": TARGET_SECRET},
            "failureDomains": [failure_domain_spec(fd, "target-region", "target-zone", self.sim.target())],
            "machineSetConfig": {"replicas": workers},
            "rollbackOnFailure": true,
        })
    }

    pub async fn create_migration(&self, name: &str, spec: Value) -> Vcfm {
        let obj = migration_object(&self.ns, name, spec).expect("valid migration");
        self.api()
            .create(&PostParams::default(), &obj)
            .await
            .expect("create migration")
    }

    /// Merges `spec` into the migration's spec.
    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.api()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({ "spec": spec })),
            )
            .await
            .expect("patch spec");
    }

    /// Creates a Manual migration of `workers` per failure domain (domain `fd`) with
    /// every phase up to `upto` approved (`tweak` merged into the spec) and waits until
    /// the next phase waits for its approval.
    pub async fn migrate_through_in(
        &self,
        name: &str,
        fd: &str,
        workers: u32,
        upto: PhaseName,
        tweak: Value,
    ) -> Vcfm {
        let mut spec = self.spec(fd, workers, true);
        let approved: Vec<PhaseName> = PhaseName::ALL.into_iter().filter(|p| *p <= upto).collect();
        spec["approvedPhases"] = serde_json::to_value(&approved).unwrap();
        if let (Some(s), Some(t)) = (spec.as_object_mut(), tweak.as_object()) {
            s.extend(t.clone());
        }
        self.create_migration(name, spec).await;
        let next = upto.next().expect("a phase after upto");
        self.wait(
            name,
            &format!("{next} to wait for approval"),
            Duration::from_secs(180),
            |m| waiting_for_approval(m) == Some(next),
        )
        .await
    }

    /// What `vcfm approve NAME PHASE` does: append to spec.approvedPhases.
    pub async fn approve(&self, name: &str, phases: &[PhaseName]) {
        for _ in 0..20 {
            let m = self.api().get(name).await.expect("migration");
            let mut list = m.spec.approved_phases.clone();
            for p in phases {
                if !list.contains(p) {
                    list.push(*p);
                }
            }
            let patch = serde_json::json!({"metadata": {"resourceVersion": m.metadata.resource_version},
                "spec": {"approvedPhases": list}});
            match self
                .api()
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => panic!("approving {phases:?}: {e}"),
            }
        }
        panic!("approving {phases:?} kept conflicting");
    }

    pub async fn set_state(&self, name: &str, state: &str) {
        self.patch_spec(name, serde_json::json!({ "state": state }))
            .await;
    }

    /// Polls the migration until `pred` holds; panics with a status summary on timeout.
    pub async fn wait(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Vcfm) -> bool,
    ) -> Vcfm {
        wait_for_migration(&self.api(), name, what, timeout, pred, |m| match m {
            Some(m) => format!(
                "{}\n{}",
                summary(m),
                self.sim.operator_logs(10).unwrap_or_default()
            ),
            None => "migration unreadable".into(),
        })
        .await
    }

    /// Asks for a rollback of `name` and waits until it has ended (however it ended:
    /// callers assert the outcome they expect).
    pub async fn roll_back(&self, name: &str, timeout: Duration) -> Vcfm {
        self.set_state(name, "Rollback").await;
        self.wait_rollback_end(name, timeout).await
    }

    /// Waits until the rollback of `name` has ended.
    pub async fn wait_rollback_end(&self, name: &str, timeout: Duration) -> Vcfm {
        self.wait(name, "the rollback to end", timeout, |m| {
            m.status
                .as_ref()
                .and_then(|s| s.rollback.as_ref())
                .is_some_and(|r| r.completion_time.is_some())
        })
        .await
    }

    pub async fn wait_terminal(&self, name: &str, timeout: Duration) -> Vcfm {
        let m = self
            .wait(name, "a terminal phase", timeout, |m| {
                m.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_terminal())
            })
            .await;
        // Where a scenario's time went (RUST_LOG=testbed=info).
        tracing::info!(migration = name, phases = %crate::status::durations(&m), "migration ended");
        m
    }
}

/// Polls migration `name` until `pred` holds; at `timeout` panics naming `what` and what
/// `report` says of the last migration read (`None`: it could not be read).
pub async fn wait_for_migration(
    api: &Api<Vcfm>,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Vcfm) -> bool,
    report: impl Fn(Option<&Vcfm>) -> String,
) -> Vcfm {
    let start = Instant::now();
    loop {
        let last = api.get(name).await.ok();
        if let Some(m) = &last
            && pred(m)
        {
            return last.unwrap();
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}:\n{}",
                report(last.as_ref())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
