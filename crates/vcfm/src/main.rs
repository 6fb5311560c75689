//! `vcfm`: the single binary (controller, CLI and demo).

use clap::{Parser, Subcommand};
use std::io::Write;

#[derive(Parser, Debug)]
#[command(
    name = "vcfm",
    version,
    about = "Move an OpenShift cluster from one vCenter to another, phase by phase."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the VmwareCloudFoundationMigration CRD manifest (YAML).
    Crd,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let yaml = vcfm_api::crd_yaml()?;
            std::io::stdout().lock().write_all(yaml.as_bytes())?;
        }
    }
    Ok(())
}
