//! `vcfm`: the single binary: the controller, the administrator's CLI, and the CRD.
//! It carries no simulator; the demo is `vcfm-demo`. Installed as `kubectl-vcfm` or
//! `oc-vcfm` it is a kubectl/oc plugin and names itself `kubectl vcfm` / `oc vcfm`.

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use vcfm::{bundle, cli, gather, plan};

/// The CRD manifest as shipped in deploy/crds (generated from the types by `make crd`;
/// tests/crd.rs fails when it and the types differ).
const CRD_YAML: &str = include_str!("../../../deploy/crds/vmwarecloudfoundationmigrations.yaml");

#[derive(Parser, Debug)]
#[command(
    name = "vcfm",
    version,
    about = "Move an OpenShift cluster from one vCenter to another, phase by phase."
)]
struct Cli {
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account).
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the migration.
    #[arg(short, long, global = true, default_value = "vcfm-system")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the VmwareCloudFoundationMigration CRD manifest (YAML).
    Crd,
    /// Write the OLM bundle (ClusterServiceVersion, CRD, metadata) generated from deploy/.
    #[command(hide = true)]
    Bundle {
        /// The kustomize base to generate from.
        #[arg(long, default_value = "deploy")]
        deploy_dir: PathBuf,
        /// Where to write the bundle.
        #[arg(long, default_value = "bundle")]
        out: PathBuf,
    },
    /// Run the controller.
    Controller(ControllerArgs),
    /// Show a migration: phase, progress, history, what it waits for, what to do next.
    Status { name: String },
    /// Approve a phase (Manual mode); without PHASE, the phase now waiting.
    Approve { name: String, phase: Option<String> },
    /// Stop at the next safe point.
    Pause { name: String },
    /// Start (from Pending) or continue (from Paused). A failed migration needs `retry`.
    Resume { name: String },
    /// Run the failed phase again once its cause is fixed (writes spec.retryToken).
    Retry { name: String },
    /// Undo the completed phases (refused past the point of no return).
    Rollback { name: String },
    /// Run the preflight checks read-only and print what the migration would change.
    Plan {
        name: String,
        /// PEM bundle of the CAs that sign the vCenter certificates (default: system roots).
        #[arg(long, env = "VCFM_VCENTER_CA_FILE")]
        vcenter_ca_file: Option<PathBuf>,
        /// Do not verify vCenter certificates. Only for labs.
        #[arg(long)]
        vcenter_insecure: bool,
    },
    /// Collect what support needs into a directory: migrations (of every namespace),
    /// Events, the objects vcfm reads and writes, the logs of the controller in
    /// --namespace. Secret values are never included. The must-gather image's
    /// /usr/bin/gather (tools/must-gather/gather) runs it into /must-gather.
    Gather {
        /// Output directory (default: ./vcfm-gather-<UTC time>).
        #[arg(long)]
        dest_dir: Option<PathBuf>,
    },
    /// Gone from the product binary: points at `vcfm-demo`.
    #[command(hide = true, disable_help_flag = true)]
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(clap::Args, Debug)]
struct ControllerArgs {
    /// Address of /healthz and /readyz (plain HTTP), and of /metrics unless
    /// --metrics-bind-address serves it securely.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Serve /metrics here over TLS, only to callers whose bearer token passes a
    /// TokenReview and who may `get` the non-resource URL /metrics (SubjectAccessReview).
    #[arg(long)]
    metrics_bind_address: Option<SocketAddr>,
    /// Directory of the metrics serving certificate (e.g. the service CA's Secret);
    /// without it, or without the files, a self-signed certificate is served.
    #[arg(long)]
    metrics_cert_path: Option<PathBuf>,
    /// Certificate file name in --metrics-cert-path.
    #[arg(long, default_value = "tls.crt")]
    metrics_cert_name: String,
    /// Key file name in --metrics-cert-path.
    #[arg(long, default_value = "tls.key")]
    metrics_cert_key: String,
    /// Hold a Lease so that only one replica acts.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the Lease (default: the pod's namespace, or --namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Lease duration in seconds; long enough to ride out an API outage during the control-plane rollout.
    #[arg(long, default_value_t = 137)]
    lease_duration: u64,
    /// Seconds MonitorHealth watches operators and nodes before trusting they are stable
    /// (operators take a while to notice a configuration change).
    #[arg(long, env = "VCFM_HEALTH_SETTLE", default_value_t = 60)]
    health_settle: u64,
    /// PEM bundle of the CAs that sign the vCenter certificates (default: system roots).
    #[arg(long, env = "VCFM_VCENTER_CA_FILE")]
    vcenter_ca_file: Option<PathBuf>,
    /// Do not verify vCenter certificates. Only for labs.
    #[arg(long)]
    vcenter_insecure: bool,
    /// Log format.
    #[arg(long, default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
}

/// The name the user typed. kubectl and oc run a plugin with its path as argv[0]
/// (kubernetes/kubernetes staging/src/k8s.io/kubectl/pkg/cmd/cmd.go,
/// `DefaultPluginHandler.Execute`); oc looks for `oc-NAME` first, then
/// `kubectl-NAME` (openshift/oc pkg/cli/kubectlwrappers/wrappers.go, `NewCmdPlugin`).
fn invoked_as(argv0: Option<&OsStr>) -> &'static str {
    let file = argv0
        .and_then(|a| Path::new(a).file_stem())
        .and_then(OsStr::to_str)
        .unwrap_or_default();
    match file {
        "kubectl-vcfm" => "kubectl vcfm",
        "oc-vcfm" => "oc vcfm",
        _ => "vcfm",
    }
}

/// Command hints (`vcfm resume NAME`) as the user invoked the binary.
fn as_invoked(text: &str, name: &str) -> String {
    if name == "vcfm" {
        text.to_string()
    } else {
        text.replace("`vcfm ", &format!("`{name} "))
    }
}

/// One thread runs everything: the controller waits on the network almost
/// all the time (the bench measured its CPU at well under a second per
/// migration), and a worker thread per core only added stacks, malloc arenas
/// and cross-thread wake-ups to its footprint. Blocking work still goes to
/// tokio's blocking pool.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let name = invoked_as(std::env::args_os().next().as_deref());
    let mut cmd = Cli::command().bin_name(name);
    if name == "vcfm" {
        cmd = cmd.after_help(
            "As a kubectl/oc plugin: link this binary as kubectl-vcfm (or oc-vcfm) on your PATH, then `kubectl vcfm status NAME`.",
        );
    }
    let cli = Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit());
    if let Err(e) = run(cli, name).await {
        eprintln!("Error: {}", as_invoked(&format!("{e:?}"), name));
        std::process::exit(1);
    }
}

async fn run(cli: Cli, invoked: &str) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd => {
            // The checked-in manifest (tests/crd.rs proves it is what the types
            // generate), so the binary carries no schema generator.
            std::io::stdout().lock().write_all(CRD_YAML.as_bytes())?;
            Ok(())
        }
        Command::Bundle { deploy_dir, out } => {
            let n = bundle::write(&deploy_dir, &out)?;
            println!("{n} files in {}", out.display());
            Ok(())
        }
        Command::Controller(args) => run_controller(cli.kubeconfig, &cli.namespace, args).await,
        Command::Status { name } => {
            let client = cli::client(cli.kubeconfig.as_deref()).await?;
            let text = cli::status(client, &cli.namespace, &name).await?;
            print!("{}", as_invoked(&text, invoked));
            Ok(())
        }
        Command::Approve { name, phase } => {
            let client = cli::client(cli.kubeconfig.as_deref()).await?;
            println!(
                "{}",
                cli::approve(client, &cli.namespace, &name, phase.as_deref()).await?
            );
            Ok(())
        }
        Command::Pause { name } => {
            set_state(
                cli.kubeconfig,
                &cli.namespace,
                &name,
                vcfm_api::MigrationState::Paused,
            )
            .await
        }
        Command::Resume { name } => {
            set_state(
                cli.kubeconfig,
                &cli.namespace,
                &name,
                vcfm_api::MigrationState::Running,
            )
            .await
        }
        Command::Retry { name } => {
            let client = cli::client(cli.kubeconfig.as_deref()).await?;
            println!("{}", cli::retry(client, &cli.namespace, &name).await?);
            Ok(())
        }
        Command::Plan {
            name,
            vcenter_ca_file,
            vcenter_insecure,
        } => {
            let client = cli::client(cli.kubeconfig.as_deref()).await?;
            let ca_pem = match &vcenter_ca_file {
                Some(p) => Some(std::fs::read(p).map_err(|e| {
                    anyhow::anyhow!("reading --vcenter-ca-file {}: {e}", p.display())
                })?),
                None => None,
            };
            let tls = plan::VcenterTls {
                ca_pem,
                insecure: vcenter_insecure,
            };
            let (text, passed) = plan::plan(client, &cli.namespace, &name, tls).await?;
            print!("{text}");
            if !passed {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Gather { dest_dir } => {
            let client = cli::client(cli.kubeconfig.as_deref()).await?;
            let dir = dest_dir.unwrap_or_else(|| {
                PathBuf::from(format!(
                    "vcfm-gather-{}",
                    jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
                ))
            });
            let s = gather::gather(client, &cli.namespace, &dir).await?;
            println!("{} files in {}", s.files, s.dir.display());
            if !s.errors.is_empty() {
                println!(
                    "{} item(s) could not be gathered (see gather-errors.txt):",
                    s.errors.len()
                );
                for e in &s.errors {
                    println!("  {e}");
                }
            }
            Ok(())
        }
        Command::Demo { .. } => {
            eprintln!(
                "The demo is its own binary, so that this one carries no simulator: run `make demo`, or `cargo run -p vcfm-demo -- ARGS` (`vcfm-demo --help`)."
            );
            std::process::exit(2);
        }
        Command::Rollback { name } => {
            set_state(
                cli.kubeconfig,
                &cli.namespace,
                &name,
                vcfm_api::MigrationState::Rollback,
            )
            .await
        }
    }
}

async fn set_state(
    kubeconfig: Option<PathBuf>,
    ns: &str,
    name: &str,
    state: vcfm_api::MigrationState,
) -> anyhow::Result<()> {
    let client = cli::client(kubeconfig.as_deref()).await?;
    println!("{}", cli::set_state(client, ns, name, state).await?);
    Ok(())
}

async fn run_controller(
    kubeconfig: Option<PathBuf>,
    namespace: &str,
    args: ControllerArgs,
) -> anyhow::Result<()> {
    use tracing_subscriber::{filter::Targets, fmt, prelude::*};
    // RUST_LOG as a `target=level` list (`info,vcfm_controller=debug`); when it is
    // unset or does not parse, info with kube and hyper at warn. `Targets` rather
    // than `EnvFilter`, whose span and field directives bring two regex engines
    // into the binary.
    let asked = std::env::var("RUST_LOG").ok().map(|v| v.parse::<Targets>());
    let unparsed = match &asked {
        Some(Err(e)) => Some(e.to_string()),
        _ => None,
    };
    let filter = asked.and_then(Result::ok).unwrap_or_else(|| {
        Targets::new()
            .with_default(tracing::Level::INFO)
            .with_target("kube", tracing::Level::WARN)
            .with_target("hyper", tracing::Level::WARN)
    });
    let logs = tracing_subscriber::registry().with(filter);
    if args.log_format == "json" {
        logs.with(fmt::layer().json()).init();
    } else {
        logs.with(fmt::layer()).init();
    }
    if let Some(error) = unparsed {
        // Said once, so that a directive EnvFilter would take is not ignored unseen.
        tracing::warn!(
            %error,
            "RUST_LOG is not a comma-separated list of target=level directives; logging at info (kube and hyper at warn)"
        );
    }
    let client = cli::client(kubeconfig.as_deref()).await?;
    let ca = match &args.vcenter_ca_file {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| anyhow::anyhow!("reading --vcenter-ca-file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let config = vcfm_controller::ControllerConfig {
        vcenter_ca_pem: ca,
        vcenter_insecure: args.vcenter_insecure,
        health_settle: std::time::Duration::from_secs(args.health_settle),
        ..Default::default()
    };
    let leader_election = args.leader_elect.then(|| {
        let identity =
            std::env::var("POD_NAME").unwrap_or_else(|_| format!("vcfm-{}", std::process::id()));
        let mut le = vcfm_controller::LeaderElection::new(
            args.lease_namespace
                .clone()
                .unwrap_or_else(|| namespace.to_string()),
            identity,
        );
        le.lease_duration = std::time::Duration::from_secs(args.lease_duration.max(15));
        le.renew_deadline = le.lease_duration.mul_f64(0.78);
        le.retry_period = le.lease_duration / 5;
        le
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        cli::wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    let opts = vcfm_controller::RunOptions {
        config,
        leader_election,
        listen: Some(args.listen),
    };
    let secure_metrics = args
        .metrics_bind_address
        .map(|addr| vcfm_controller::SecureMetrics {
            addr,
            cert_dir: args.metrics_cert_path.clone(),
            cert_name: args.metrics_cert_name.clone(),
            key_name: args.metrics_cert_key.clone(),
        });
    vcfm_controller::run_with_metrics(client, opts, secure_metrics, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_follow_argv0() {
        let name = |s: &str| invoked_as(Some(OsStr::new(s)));
        assert_eq!(name("/usr/local/bin/kubectl-vcfm"), "kubectl vcfm");
        assert_eq!(name("oc-vcfm"), "oc vcfm");
        assert_eq!(name("target/debug/vcfm"), "vcfm");
        assert_eq!(invoked_as(None), "vcfm");
        assert_eq!(
            as_invoked(
                "start it with `vcfm resume demo`; `kubectl get vcfm -A`",
                "oc vcfm"
            ),
            "start it with `oc vcfm resume demo`; `kubectl get vcfm -A`"
        );
    }
}
