//! `vcfm-demo`: a whole migration on the embedded simulated environment, shown
//! live. A binary of its own so that `vcfm`, the product, links no simulator.

mod demo;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "vcfm-demo",
    version,
    about = "A whole vcfm migration on an embedded simulated cluster and two simulated vCenters, shown live."
)]
struct Args {
    #[command(flatten)]
    demo: demo::DemoArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if !demo::run(args.demo).await? {
        std::process::exit(1);
    }
    Ok(())
}
