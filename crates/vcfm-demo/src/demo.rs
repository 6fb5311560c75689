//! `vcfm-demo`: a whole migration on the embedded simulated environment (two
//! vcsim vCenters, kube-sim, openshift-sim), shown live in the terminal.
//!
//! The controller runs in this process exactly as in a cluster: as the
//! `vcfm-system/vcfm-controller` service account bound only by the shipped
//! RBAC manifests (kube-sim enforces RBAC), with leader election and the
//! metrics endpoint on. What the demo prints comes from the migration's
//! status, the simulators' inventories and the controller's /metrics.

use anyhow::{Context as _, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use openshift_sim::{Delays, Scenario, SimCluster, Site, WrongCredentials};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vcfm_api::{MigrationPhase, PhaseName, PhaseStatus, VmwareCloudFoundationMigration};

type Vcfm = VmwareCloudFoundationMigration;

/// Namespace, service account and migration names the demo uses (those of `deploy/`).
pub const NS: &str = "vcfm-system";
pub const SERVICE_ACCOUNT: &str = "vcfm-controller";
pub const MIGRATION: &str = "demo";
const TARGET_SECRET: &str = "target-vcenter-credentials";
const FAILURE_DOMAIN: &str = "wld01";

/// The shipped manifests the demo installs (the CRD comes from the binary itself).
const MANIFESTS: &[(&str, &str)] = &[
    (
        "namespace.yaml",
        include_str!("../../../deploy/namespace.yaml"),
    ),
    (
        "serviceaccount.yaml",
        include_str!("../../../deploy/serviceaccount.yaml"),
    ),
    ("rbac.yaml", include_str!("../../../deploy/rbac.yaml")),
];

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Manual approval mode: you approve each phase at the prompt.
    #[arg(long)]
    pub manual: bool,
    /// Make this phase fail to show the automatic rollback (Preflight, Backup,
    /// DisableCVO, UpdateSecrets, UpdateInfrastructure, UpdateConfig, RestartPods, CreateWorkers).
    #[arg(long, value_name = "PHASE")]
    pub fail_at: Option<String>,
    /// Workers in the simulated cluster (and on the target).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub workers: u32,
    /// Pace of the simulated operators: 1 is watchable (a few minutes), 10 is ten
    /// times faster, `max` is test speed (seconds).
    #[arg(long, default_value = "1")]
    pub speed: String,
    /// Leave the environment running at the end and print a kubeconfig for kubectl.
    #[arg(long)]
    pub keep: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Write the controller's API requests (user, verb, resource, count) as JSON here.
    #[arg(long, value_name = "FILE")]
    pub api_stats: Option<std::path::PathBuf>,
}

/// How a phase is made to fail for `--fail-at`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    /// The target credentials the user supplies are wrong.
    WrongTargetPassword,
    /// Target machines fail to provision (the clone task fails in vCenter).
    Provisioning,
    /// The API server forbids the phase's write: injected when the phase is
    /// about to start, cleared once the failure is recorded.
    Forbidden {
        verb: Option<&'static str>,
        resource: &'static str,
        name: Option<&'static str>,
    },
}

fn failure_for(p: PhaseName) -> anyhow::Result<Failure> {
    use PhaseName as P;
    let forbid = |verb, resource, name| Failure::Forbidden {
        verb,
        resource,
        name,
    };
    Ok(match p {
        P::Preflight => Failure::WrongTargetPassword,
        P::Backup => forbid(Some("create"), "secrets", None),
        P::DisableCvo => forbid(None, "deployments", Some("cluster-version-operator")),
        P::UpdateSecrets => forbid(None, "secrets", Some("vsphere-creds")),
        P::UpdateInfrastructure => forbid(None, "infrastructures", Some("cluster")),
        P::UpdateConfig => forbid(None, "configmaps", Some("cloud-provider-config")),
        P::RestartPods => forbid(Some("delete"), "pods", None),
        P::CreateWorkers => Failure::Provisioning,
        p if p.is_past_point_of_no_return() => bail!(
            "--fail-at {p}: {p} is at or past the point of no return ({}), where a failure is not rolled back automatically; pick an earlier phase",
            PhaseName::POINT_OF_NO_RETURN
        ),
        p => bail!(
            "--fail-at {p}: the simulation has no fault for {p} yet; pick one of Preflight, Backup, DisableCVO, UpdateSecrets, UpdateInfrastructure, UpdateConfig, RestartPods, CreateWorkers"
        ),
    })
}

/// The operators' delays for a speed factor (`max` = test pace).
fn delays(speed: &str) -> anyhow::Result<(Delays, f64)> {
    if speed == "max" {
        return Ok((Delays::instant(), f64::INFINITY));
    }
    let f: f64 = speed
        .parse()
        .ok()
        .filter(|f: &f64| f.is_finite() && *f > 0.0)
        .with_context(|| format!("--speed {speed:?}: a positive number or `max`"))?;
    let (d, min) = (Delays::demo(), Delays::instant());
    let s = |a: Duration, floor: Duration| a.div_f64(f).max(floor);
    Ok((
        Delays {
            provision: s(d.provision, min.provision),
            node_ready: s(d.node_ready, min.node_ready),
            machine_delete: s(d.machine_delete, min.machine_delete),
            credentials_sync: s(d.credentials_sync, min.credentials_sync),
            pod_ready: s(d.pod_ready, min.pod_ready),
            pod_terminate: s(d.pod_terminate, min.pod_terminate),
            operator_notice: s(d.operator_notice, min.operator_notice),
            operator_progressing: s(d.operator_progressing, min.operator_progressing),
            cpms_observe: s(d.cpms_observe, min.cpms_observe),
            cpms_recreate: s(d.cpms_recreate, min.cpms_recreate),
            deployment_ready: s(d.deployment_ready, min.deployment_ready),
            cvo_restore: s(d.cvo_restore, min.cvo_restore),
            resync: s(d.resync, min.resync),
            mcp_node_update: s(d.mcp_node_update, min.mcp_node_update),
        },
        f,
    ))
}

/// Runs the demo; `Ok(true)` only when the migration completed.
pub async fn run(args: DemoArgs) -> anyhow::Result<bool> {
    let fail_at = match &args.fail_at {
        Some(p) => {
            let p: PhaseName = p.parse().context("--fail-at")?;
            Some((p, failure_for(p)?))
        }
        None => None,
    };
    let (delays, factor) = delays(&args.speed)?;
    let tty = std::io::stdout().is_terminal();
    let dir = tempfile::Builder::new().prefix("vcfm-demo-").tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");

    say(&format!(
        "vcfm-demo: starting two vCenter simulators (vcsim), kube-sim and openshift-sim ({} masters, {} workers)…",
        3, args.workers
    ));
    let mut scenario = Scenario {
        workers: args.workers,
        delays,
        rbac: true,
        kubeconfig_path: Some(kubeconfig.clone()),
        ..Scenario::default()
    };
    match fail_at {
        Some((_, Failure::WrongTargetPassword)) => {
            scenario.faults.wrong_credentials = Some(WrongCredentials::Target);
        }
        Some((_, Failure::Provisioning)) => {
            scenario.faults.fail_provision_matching = Some(format!("-worker-{FAILURE_DOMAIN}-"));
        }
        _ => {}
    }
    let sim = SimCluster::start(scenario).await.context(
        "starting the simulated environment (is tools/vcsim/build.sh run? `make demo` does it)",
    )?;
    let result = drive(&sim, &args, fail_at, factor, tty).await;
    if args.keep && result.is_ok() {
        keep_running(&sim, &kubeconfig).await;
    }
    sim.shutdown().await;
    drop(dir);
    result
}

/// A lifecycle phase as the API spells it (`RecreateCPMS`, not `RecreateCpms`).
fn api_name(p: MigrationPhase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{p:?}"))
}

fn say(s: &str) {
    println!("{s}");
}

async fn drive(
    sim: &SimCluster,
    args: &DemoArgs,
    fail_at: Option<(PhaseName, Failure)>,
    factor: f64,
    tty: bool,
) -> anyhow::Result<bool> {
    let client = sim.client();
    let (src, tgt) = (sim.source().clone(), sim.target().clone());
    say(&format!(
        "  cluster {} on source vCenter {} → target vCenter {}",
        sim.infra_id(),
        src.server,
        tgt.server
    ));

    // What `kubectl apply -k deploy/` installs that the controller needs.
    sim.kube().apply_yaml(&vcfm_api::crd_yaml()?)?;
    for (file, yaml) in MANIFESTS {
        sim.kube()
            .apply_yaml(yaml)
            .with_context(|| format!("installing deploy/{file}"))?;
    }
    say("  installed the CRD, namespace vcfm-system, service account and RBAC from deploy/");

    let secret =
        testbed::target_secret(NS, TARGET_SECRET, &tgt.server, &tgt.username, &tgt.password);
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the target credentials Secret")?;

    let forbidden_phase = match fail_at {
        Some((p, Failure::Forbidden { .. })) => Some(p),
        _ => None,
    };
    // A forced failure is injected when its phase is about to start: the demo
    // holds that phase with an approval gate and pre-approves every other one.
    let manual = args.manual || forbidden_phase.is_some();
    let approved: Vec<PhaseName> = match forbidden_phase {
        Some(p) if !args.manual => PhaseName::ALL.into_iter().filter(|x| *x != p).collect(),
        _ => vec![],
    };
    let m = testbed::migration_object(
        NS,
        MIGRATION,
        json!({
            "state": "Running",
            "approvalMode": if manual { "Manual" } else { "Automatic" },
            "approvedPhases": approved,
            "rollbackOnFailure": true,
            "targetVCenterCredentialsSecret": {"name": TARGET_SECRET},
            "failureDomains": [testbed::failure_domain_spec(FAILURE_DOMAIN, "region-b", "az1", &tgt)],
            "machineSetConfig": {"replicas": args.workers, "failureDomain": FAILURE_DOMAIN},
        }),
    )?;
    Api::<Vcfm>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &m)
        .await
        .context("creating the migration")?;
    say(&format!(
        "  created migration {NS}/{MIGRATION} ({} approval) and its target credentials Secret",
        if args.manual { "Manual" } else { "Automatic" }
    ));

    let mut vms = VmCounter::new(sim).await?;

    // The controller, as the service account the shipped RBAC binds.
    let sa_client = sim
        .kube()
        .service_account_client(NS, SERVICE_ACCOUNT)
        .await?;
    let listen = free_port()?;
    let mut ca = std::fs::read(&src.ca_pem_path)?;
    ca.extend(std::fs::read(&tgt.ca_pem_path)?);
    let poll = if factor.is_finite() {
        Duration::from_secs(2)
            .div_f64(factor)
            .max(Duration::from_millis(300))
    } else {
        Duration::from_millis(300)
    };
    let opts = vcfm_controller::RunOptions {
        config: vcfm_controller::ControllerConfig {
            vcenter_ca_pem: Some(ca),
            poll_interval: poll,
            // Longer than the simulated operators take to notice and digest a change.
            health_settle: sim.scenario().delays.operator_notice
                + sim.scenario().delays.operator_progressing
                + Duration::from_secs(2),
            ..Default::default()
        },
        leader_election: Some(vcfm_controller::LeaderElection::new(NS, "vcfm-demo")),
        listen: Some(listen),
    };
    let stop = CancellationToken::new();
    let controller = tokio::spawn(vcfm_controller::run(sa_client, opts, stop.clone()));
    say(&format!(
        "  controller running as system:serviceaccount:{NS}:{SERVICE_ACCOUNT}, metrics on http://{listen}/metrics\n"
    ));

    let started = Instant::now();
    let mut view = View::new(tty);
    let api = Api::<Vcfm>::namespaced(client.clone(), NS);
    let deadline = Duration::from_secs(args.timeout);
    let mut prompted: BTreeSet<PhaseName> = BTreeSet::new();
    let mut injected = false;
    let mut failed_since: Option<Instant> = None;
    let mut last_vm_sample = Instant::now();
    let fin = loop {
        if controller.is_finished() {
            view.finish();
            bail!("the controller stopped unexpectedly");
        }
        let m = match api.get(MIGRATION).await {
            Ok(m) => m,
            Err(e) if started.elapsed() < deadline => {
                tracing::debug!(error = %e, "reading the migration");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        view.update(&m, started.elapsed());
        let st = m.status.clone().unwrap_or_default();
        if st.phase.is_some_and(MigrationPhase::is_terminal) {
            // A failure before the point of no return is followed by the
            // automatic rollback: keep showing until it has run.
            let rollback_due = st.phase == Some(MigrationPhase::Failed)
                && m.spec.rollback_on_failure
                && st.rollback.is_none()
                && !vcfm_controller::state::started_phases(&st)
                    .iter()
                    .any(|p| p.is_past_point_of_no_return());
            let since = *failed_since.get_or_insert_with(Instant::now);
            if !rollback_due || since.elapsed() > Duration::from_secs(60) {
                view.finish();
                break m;
            }
        } else {
            failed_since = None;
        }
        if injected
            && (st.rollback.is_some()
                || matches!(
                    st.phase,
                    Some(MigrationPhase::Failed | MigrationPhase::RollingBack)
                ))
        {
            // The failure is recorded: let the rollback restore what it must.
            sim.kube().faults().clear();
            injected = false;
        }
        if let Some(c) = &st.current_phase_state
            && c.status == PhaseStatus::WaitingForApproval
            && !prompted.contains(&c.name)
        {
            prompted.insert(c.name);
            if let Some((
                p,
                Failure::Forbidden {
                    verb,
                    resource,
                    name,
                },
            )) = fail_at
                && p == c.name
            {
                let mut rule = kube_sim::FaultRule::new(kube_sim::FaultAction::Error { code: 403 })
                    .resource(resource);
                if let Some(v) = verb {
                    rule = rule.verb(v);
                }
                if let Some(n) = name {
                    rule = rule.name(n);
                }
                sim.kube().faults().inject(rule);
                injected = true;
                view.note(&format!(
                    "--fail-at {p}: the API server now refuses {} {resource}{}",
                    verb.unwrap_or("every request on"),
                    name.map(|n| format!(" {n}")).unwrap_or_default()
                ));
                vcfm::cli::approve(client.clone(), NS, MIGRATION, Some(p.as_str())).await?;
            } else if args.manual {
                match view.ask_approval(c.name, &c.message).await? {
                    Answer::Approve => {
                        vcfm::cli::approve(client.clone(), NS, MIGRATION, Some(c.name.as_str()))
                            .await?;
                    }
                    Answer::Rollback => {
                        let msg = vcfm::cli::set_state(
                            client.clone(),
                            NS,
                            MIGRATION,
                            vcfm_api::MigrationState::Rollback,
                        )
                        .await;
                        view.note(&match msg {
                            Ok(m) => m,
                            Err(e) => format!("{e:#}"),
                        });
                    }
                    Answer::Quit => {
                        view.finish();
                        say("stopped at your request; the migration waits for approval.");
                        stop.cancel();
                        let _ = controller.await;
                        return Ok(false);
                    }
                }
            }
        }
        if last_vm_sample.elapsed() > Duration::from_secs(1) {
            vms.sample(sim).await;
            last_vm_sample = Instant::now();
        }
        if started.elapsed() > deadline {
            view.finish();
            say(&format!(
                "timed out after {}s; last status:\n{}",
                args.timeout,
                serde_json::to_string_pretty(&m.status).unwrap_or_default()
            ));
            stop.cancel();
            let _ = controller.await;
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed();
    vms.sample(sim).await;
    let metrics = scrape_metrics(listen).await.unwrap_or_default();
    if !args.keep {
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    }
    if let Some(p) = &args.api_stats {
        let user = format!("system:serviceaccount:{NS}:{SERVICE_ACCOUNT}");
        let rows: Vec<serde_json::Value> = sim
            .kube()
            .stats()
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k.user == user)
            .map(|(k, n)| json!({"verb": k.verb, "resource": k.resource, "count": n}))
            .collect();
        std::fs::write(p, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let report = summary(&fin, elapsed, &vms, &metrics, sim);
    print!("{report}");
    Ok(fin.status.as_ref().and_then(|s| s.phase) == Some(MigrationPhase::Completed))
}

async fn keep_running(sim: &SimCluster, kubeconfig: &std::path::Path) {
    let keep = std::env::temp_dir().join("vcfm-demo.kubeconfig");
    let path = match std::fs::copy(kubeconfig, &keep) {
        Ok(_) => keep,
        Err(_) => kubeconfig.to_path_buf(),
    };
    say(&format!(
        "\nThe environment stays up (API server {}). Try:\n  export KUBECONFIG={}\n  kubectl get vcfm -A\n  kubectl get machines,machinesets -n openshift-machine-api\n  vcfm status {MIGRATION}\nPress Ctrl-C to stop.",
        sim.kube().url(),
        path.display()
    ));
    vcfm::cli::wait_for_signal().await;
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// GET /metrics over plain HTTP (the controller's own endpoint).
async fn scrape_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut buf)).await??;
    Ok(buf)
}

/// `vcfm_vsphere_calls_total` by server: (ok, failed).
fn vsphere_calls(metrics: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("vcfm_vsphere_calls_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels.split(',').find_map(|kv| {
                kv.strip_prefix(&format!("{k}=\""))
                    .map(|v| v.trim_end_matches('"').to_string())
            })
        };
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        let e = out.entry(label("server").unwrap_or_default()).or_default();
        if label("outcome").as_deref() == Some("ok") {
            e.0 += n;
        } else {
            e.1 += n;
        }
    }
    out
}

/// The cluster's VMs on each vCenter, sampled over the run.
struct VmCounter {
    sites: Vec<SiteVms>,
}

struct SiteVms {
    site: Site,
    label: &'static str,
    server: String,
    folder: String,
    prefix: String,
    before: BTreeSet<String>,
    seen: BTreeSet<String>,
    after: BTreeSet<String>,
}

async fn cluster_vms(
    sim: &SimCluster,
    site: Site,
    folder: &str,
    prefix: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let vc = sim.vsphere_client(site)?;
    let f = vc.find_folder(folder).await?;
    let list = vc.list_vms(&f, true).await?;
    let _ = vc.logout().await;
    Ok(list
        .into_iter()
        .filter(|v| !v.template && v.name.starts_with(prefix))
        .map(|v| v.name)
        .collect())
}

impl VmCounter {
    async fn new(sim: &SimCluster) -> anyhow::Result<Self> {
        let mut sites = vec![];
        for (site, label) in [(Site::Source, "source"), (Site::Target, "target")] {
            let info = sim.vcenter(site);
            let folder = format!("/{}/vm", info.datacenter);
            let prefix = format!("{}-", sim.infra_id());
            let before = cluster_vms(sim, site, &folder, &prefix).await?;
            sites.push(SiteVms {
                site,
                label,
                server: info.server.clone(),
                folder,
                prefix,
                seen: before.clone(),
                after: before.clone(),
                before,
            });
        }
        Ok(Self { sites })
    }

    async fn sample(&mut self, sim: &SimCluster) {
        for s in &mut self.sites {
            if let Ok(now) = cluster_vms(sim, s.site, &s.folder, &s.prefix).await {
                s.seen.extend(now.iter().cloned());
                s.after = now;
            }
        }
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
}

fn phase_duration(e: &vcfm_api::PhaseHistoryEntry) -> Option<Duration> {
    let (a, b) = (e.start_time.as_ref()?, e.completion_time.as_ref()?);
    let span = b.0.duration_since(a.0);
    Duration::try_from(span).ok()
}

/// The final report: phases, rollback, VMs and calls per vCenter, API requests.
fn summary(
    m: &Vcfm,
    elapsed: Duration,
    vms: &VmCounter,
    metrics: &str,
    sim: &SimCluster,
) -> String {
    let st = m.status.clone().unwrap_or_default();
    let phase = st.phase.map(api_name).unwrap_or_else(|| "Pending".into());
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nSummary: migration {NS}/{MIGRATION} {phase} after {}",
        secs(elapsed)
    );
    let _ = writeln!(o, "\n  #  phase                  result          duration");
    for p in PhaseName::ALL {
        let entries: Vec<_> = st.phase_history.iter().filter(|e| e.phase == p).collect();
        let last = entries
            .iter()
            .rev()
            .find(|e| e.status != PhaseStatus::Running)
            .or(entries.last());
        let (result, dur) = match last {
            Some(e) => (
                format!("{:?}", e.status),
                phase_duration(e).map(secs).unwrap_or_else(|| "-".into()),
            ),
            None => ("not run".into(), "-".into()),
        };
        let _ = writeln!(
            o,
            "  {:>2} {:<22} {:<15} {:>8}",
            p.number(),
            p.as_str(),
            result,
            dur
        );
    }
    if let Some(r) = &st.rollback {
        let undone: Vec<&str> = r.rolled_back_phases.iter().map(|p| p.as_str()).collect();
        let _ = writeln!(
            o,
            "\n  Rollback ({:?}): {}\n  undone: {}",
            r.trigger,
            r.reason,
            if undone.is_empty() {
                "nothing".into()
            } else {
                undone.join(", ")
            }
        );
    }
    if let Some(c) = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
    {
        let _ = writeln!(o, "  failure: {}", c.message);
    }
    let calls = vsphere_calls(metrics);
    let _ = writeln!(
        o,
        "\n  vCenter               VMs before  created  destroyed  after   vSphere calls by vcfm (failed)"
    );
    for s in &vms.sites {
        let created = s.seen.difference(&s.before).count();
        let destroyed = s.seen.difference(&s.after).count();
        let (ok, failed) = calls.get(&s.server).copied().unwrap_or_default();
        let _ = writeln!(
            o,
            "  {:<6} {:<14} {:>10} {:>8} {:>10} {:>6}   {:>12} ({failed})",
            s.label,
            s.server,
            s.before.len(),
            created,
            destroyed,
            s.after.len(),
            ok + failed
        );
    }
    let stats = sim.kube().stats();
    let user = format!("system:serviceaccount:{NS}:{SERVICE_ACCOUNT}");
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for (k, n) in stats.snapshot() {
        if k.user == user {
            *by.entry(k.verb.clone()).or_default() += n;
        }
    }
    let mine = stats.total_for_user(&user);
    let verbs: Vec<String> = by.iter().map(|(v, n)| format!("{v} {n}")).collect();
    let _ = writeln!(
        o,
        "\n  Kubernetes API requests by the controller ({user}): {mine} ({})",
        verbs.join(", ")
    );
    let _ = writeln!(
        o,
        "  Kubernetes API requests in total (controller, simulated operators, this demo): {}",
        stats.total()
    );
    let _ = writeln!(o, "\nResult: {phase}");
    o
}

enum Answer {
    Approve,
    Rollback,
    Quit,
}

#[derive(Clone, PartialEq)]
struct Row {
    status: String,
    progress: i32,
    detail: String,
    running: bool,
}

/// The live view: indicatif bars on a terminal, plain lines otherwise.
struct View {
    tty: bool,
    multi: Option<MultiProgress>,
    header: Option<ProgressBar>,
    bars: Vec<ProgressBar>,
    rows: Vec<Option<Row>>,
    waiting: Option<ProgressBar>,
    last_line: BTreeMap<PhaseName, String>,
    last_top: String,
}

impl View {
    fn new(tty: bool) -> Self {
        let mut v = View {
            tty,
            multi: None,
            header: None,
            bars: vec![],
            rows: vec![None; PhaseName::ALL.len()],
            waiting: None,
            last_line: BTreeMap::new(),
            last_top: String::new(),
        };
        if tty {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let plain = ProgressStyle::with_template("{wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            let header = multi.add(ProgressBar::new(1).with_style(plain.clone()));
            for p in PhaseName::ALL {
                let b = multi.add(ProgressBar::new(100).with_style(plain.clone()));
                b.set_message(format!("  {:>2}. {:<22} · pending", p.number(), p.as_str()));
                v.bars.push(b);
            }
            let waiting = multi.add(ProgressBar::new(1).with_style(plain));
            v.header = Some(header);
            v.waiting = Some(waiting);
            v.multi = Some(multi);
        }
        v
    }

    fn note(&self, s: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(s);
            }
            None => println!("{s}"),
        }
    }

    fn update(&mut self, m: &Vcfm, elapsed: Duration) {
        let st = m.status.clone().unwrap_or_default();
        let overall = st.phase.map(api_name).unwrap_or_else(|| "Pending".into());
        let cur = st.current_phase_state.clone();
        for (i, p) in PhaseName::ALL.into_iter().enumerate() {
            let live = cur.as_ref().filter(|c| c.name == p);
            let hist = st.phase_history.iter().rev().find(|e| e.phase == p);
            let row = match (live, hist) {
                (Some(c), _)
                    if !matches!(c.status, PhaseStatus::Completed | PhaseStatus::Skipped) =>
                {
                    Row {
                        status: format!("{:?}", c.status),
                        progress: c.progress.clamp(0, 100),
                        detail: c.message.clone(),
                        running: c.status == PhaseStatus::Running,
                    }
                }
                (_, Some(e)) => Row {
                    status: format!("{:?}", e.status),
                    progress: 100,
                    detail: phase_duration(e).map(secs).unwrap_or_default(),
                    running: e.status == PhaseStatus::Running,
                },
                (Some(c), None) => Row {
                    status: format!("{:?}", c.status),
                    progress: c.progress,
                    detail: c.message.clone(),
                    running: false,
                },
                (None, None) => continue,
            };
            if self.tty {
                if self.rows[i].as_ref() != Some(&row) {
                    self.draw_row(i, p, &row);
                    self.rows[i] = Some(row);
                }
            } else if row.status != "Pending" {
                let line = format!(
                    "{:>2}/15 {:<22} {:<18} {:>3}%  {}",
                    p.number(),
                    p.as_str(),
                    row.status,
                    row.progress,
                    row.detail
                );
                if self.last_line.get(&p) != Some(&line) {
                    println!("[{:>7}] {line}", secs(elapsed));
                    self.last_line.insert(p, line);
                }
            }
        }
        let waiting = cur
            .as_ref()
            .filter(|c| !c.waiting_for.is_empty())
            .map(|c| format!("waiting for: {}", c.waiting_for.join("; ")))
            .unwrap_or_default();
        let top = format!("migration {NS}/{MIGRATION}: {overall}");
        if self.tty {
            if let Some(h) = &self.header {
                h.set_message(format!("{top}   ({})", secs(elapsed)));
            }
            if let Some(w) = &self.waiting {
                w.set_message(format!("  {waiting}"));
            }
        } else {
            let mut full = format!("{top}  {waiting}");
            if full.chars().count() > 220 {
                full = full.chars().take(219).collect::<String>() + "…";
            }
            if full != self.last_top {
                println!("[{:>7}] {full}", secs(elapsed));
                self.last_top = full;
            }
        }
    }

    fn draw_row(&self, i: usize, p: PhaseName, row: &Row) {
        let Some(b) = self.bars.get(i) else { return };
        let name = format!("  {:>2}. {:<22}", p.number(), p.as_str());
        let icon = match row.status.as_str() {
            "Completed" => "✔",
            "Skipped" => "↷",
            "Failed" | "RollbackFailed" => "✘",
            "RolledBack" => "↺",
            "WaitingForApproval" => "⏸",
            "Running" => "▶",
            _ => "·",
        };
        if row.running {
            let style = ProgressStyle::with_template(&format!(
                "{name} {icon} {{bar:30.cyan/blue}} {{pos:>3}}% {{wide_msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▉▊▋▌▍▎▏ ");
            b.set_style(style);
            b.set_position(u64::try_from(row.progress).unwrap_or(0));
            b.set_message(row.detail.clone());
        } else {
            b.set_style(
                ProgressStyle::with_template("{wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(format!("{name} {icon} {:<18} {}", row.status, row.detail));
        }
    }

    async fn ask_approval(&self, p: PhaseName, message: &str) -> anyhow::Result<Answer> {
        let question = format!(
            "\nPhase {}/15 {} waits for your approval{}.\nApprove it? [Y]es / [r]ollback / [q]uit: ",
            p.number(),
            p.as_str(),
            if message.is_empty() {
                String::new()
            } else {
                format!(" ({message})")
            }
        );
        let read = move || -> std::io::Result<String> {
            use std::io::Write as _;
            print!("{question}");
            std::io::stdout().flush()?;
            let mut line = String::new();
            // End of input is no approval.
            if std::io::stdin().read_line(&mut line)? == 0 {
                return Ok("q".into());
            }
            Ok(line)
        };
        let line = match &self.multi {
            // Hide the live view while the prompt is up.
            Some(m) => {
                let m = m.clone();
                tokio::task::spawn_blocking(move || m.suspend(read)).await??
            }
            None => tokio::task::spawn_blocking(read).await??,
        };
        Ok(match line.trim().to_ascii_lowercase().as_str() {
            "" | "y" | "yes" => Answer::Approve,
            "r" | "rollback" => Answer::Rollback,
            _ => Answer::Quit,
        })
    }

    fn finish(&mut self) {
        if let Some(m) = self.multi.take() {
            for b in &self.bars {
                b.abandon();
            }
            if let Some(h) = &self.header {
                h.abandon();
            }
            if let Some(w) = &self.waiting {
                w.finish_and_clear();
            }
            drop(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_scales_the_demo_pace_and_never_goes_below_test_pace() {
        let (d, _) = delays("1").expect("speed 1");
        assert_eq!(d.node_ready, Delays::demo().node_ready);
        let (d, _) = delays("1000").expect("speed 1000");
        assert_eq!(d.node_ready, Delays::instant().node_ready);
        assert!(delays("0").is_err() && delays("fast").is_err());
    }

    #[test]
    fn fail_at_refuses_phases_past_the_point_of_no_return() {
        let e = failure_for(PhaseName::Cleanup).expect_err("no rollback past RecreateCPMS");
        assert!(e.to_string().contains("point of no return"), "{e}");
        assert_eq!(
            failure_for(PhaseName::CreateWorkers).ok(),
            Some(Failure::Provisioning)
        );
    }

    #[test]
    fn vsphere_call_counts_are_read_from_the_metrics_text() {
        let text = "# TYPE vcfm_vsphere_calls counter\nvcfm_vsphere_calls_total{server=\"127.0.0.3\",outcome=\"ok\"} 12\nvcfm_vsphere_calls_total{server=\"127.0.0.3\",outcome=\"NotFound\"} 2\n";
        let c = vsphere_calls(text);
        assert_eq!(c.get("127.0.0.3"), Some(&(12, 2)));
    }
}
