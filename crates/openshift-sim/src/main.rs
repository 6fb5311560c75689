//! `openshift-sim`: starts kube-sim, two vcsims and the simulated OpenShift operators from
//! one command, writes the admin kubeconfig, and stops everything on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use openshift_sim::{ConfigFormat, Delays, Scenario, SimCluster};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Ini,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Pace {
    /// Test speed: every step takes milliseconds.
    Instant,
    /// Demo speed: a migration takes a few minutes.
    Demo,
}

/// A simulated OpenShift cluster on vSphere (kube-sim + source and target vcsim).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where to write the admin kubeconfig.
    #[arg(long)]
    kubeconfig_out: PathBuf,
    /// Where to write a JSON description of the cluster (infraID, both vCenters).
    #[arg(long)]
    info_out: Option<PathBuf>,
    /// Cluster name (the infraID is `<name>-xxxxx`).
    #[arg(long, default_value = "ocp")]
    cluster_name: String,
    /// Control-plane machines.
    #[arg(long, default_value_t = 3)]
    masters: u32,
    /// Workers in the worker MachineSet.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Also seed an infra MachineSet.
    #[arg(long)]
    infra_machineset: bool,
    /// Enable the VSphereMultiVCenterDay2 feature gate (and serve its CRDs).
    #[arg(long)]
    multi_vcenter_day2_gate: bool,
    /// Format of openshift-config/cloud-provider-config.
    #[arg(long, value_enum, default_value = "yaml")]
    config_format: Format,
    /// Time scale of the simulated operators.
    #[arg(long, value_enum, default_value = "demo")]
    pace: Pace,
    /// Fault: API outage of this many seconds when the first old master is deleted.
    #[arg(long)]
    fault_api_outage_secs: Option<u64>,
    /// Fault: Machines whose name contains this string fail to provision.
    #[arg(long)]
    fault_fail_provision: Option<String>,
    /// Fault: this ClusterOperator stays Degraded.
    #[arg(long)]
    fault_degraded_operator: Option<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut scenario = Scenario {
        cluster_name: args.cluster_name,
        masters: args.masters,
        workers: args.workers,
        infra_machineset: args.infra_machineset,
        multi_vcenter_day2_gate: args.multi_vcenter_day2_gate,
        config_format: match args.config_format {
            Format::Yaml => ConfigFormat::Yaml,
            Format::Ini => ConfigFormat::Ini,
        },
        delays: match args.pace {
            Pace::Instant => Delays::instant(),
            Pace::Demo => Delays::demo(),
        },
        kubeconfig_path: Some(args.kubeconfig_out.clone()),
        ..Scenario::default()
    };
    scenario.faults.api_outage_during_cpms_rollout =
        args.fault_api_outage_secs.map(Duration::from_secs);
    scenario.faults.fail_provision_matching = args.fault_fail_provision;
    scenario.faults.degraded_operator = args.fault_degraded_operator;

    let sim = SimCluster::start(scenario)
        .await
        .context("starting the simulated cluster")?;
    let info = serde_json::json!({
        "infraID": sim.infra_id(),
        "kubeconfig": args.kubeconfig_out,
        "apiServer": sim.kube().url(),
        "source": sim.source(),
        "target": sim.target(),
    });
    if let Some(p) = &args.info_out {
        std::fs::write(p, serde_json::to_vec_pretty(&info)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    // One machine-readable line for scripts and tests; humans get the log.
    println!("OPENSHIFT_SIM_READY {info}");
    tracing::info!(
        kubeconfig = %args.kubeconfig_out.display(),
        "ready: try `kubectl --kubeconfig {} get machines,machinesets,co,infrastructure -A`",
        args.kubeconfig_out.display()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
    }
    tokio::time::timeout(Duration::from_secs(30), sim.shutdown())
        .await
        .context("shutdown took longer than 30s")?;
    Ok(())
}
