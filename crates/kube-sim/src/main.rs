//! `kube-sim serve`: run the simulated API server until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kube-sim", about = "In-memory Kubernetes API server simulator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the API until SIGINT/SIGTERM.
    Serve {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Where to write the admin kubeconfig.
        #[arg(long)]
        kubeconfig_out: PathBuf,
        /// Enforce RBAC for non-admin tokens.
        #[arg(long)]
        rbac: bool,
        /// Serve plain HTTP instead of HTTPS.
        #[arg(long)]
        plain_http: bool,
        /// Directory of YAML manifests to load at start (CRDs first).
        #[arg(long)]
        load: Vec<PathBuf>,
        /// Fixed admin token (default: random).
        #[arg(long, env = "KUBE_SIM_ADMIN_TOKEN")]
        admin_token: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let Cmd::Serve {
        listen,
        kubeconfig_out,
        rbac,
        plain_http,
        load,
        admin_token,
    } = Cli::parse().cmd;
    let mut b = kube_sim::KubeSim::builder()
        .listen(listen)
        .rbac(rbac)
        .tls(!plain_http)
        .kubeconfig_path(&kubeconfig_out);
    if let Some(t) = admin_token {
        b = b.admin_token(t);
    }
    let sim = b.start().await.context("starting kube-sim")?;
    for dir in &load {
        let n = sim
            .apply_yaml_dir(dir)
            .with_context(|| format!("loading {}", dir.display()))?;
        tracing::info!(count = n, dir = %dir.display(), "loaded manifests");
    }
    println!(
        "kube-sim serving at {} (kubeconfig: {})",
        sim.url(),
        kubeconfig_out.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}
