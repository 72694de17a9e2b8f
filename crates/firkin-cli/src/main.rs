//! `firkin`: a thin shell over the core and the HTTP edge.

mod bench;
mod doctor;
mod serve;
mod setup;
mod template;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "firkin", version, about = "Self-hosted, E2B-compatible sandbox runtime on gVisor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the E2B-compatible server.
    Serve(serve::ServeArgs),
    /// Measure lifecycle latencies and write a JSON report.
    Bench(bench::BenchArgs),
    /// Build, list and remove templates on a running server.
    Template(template::TemplateArgs),
    /// Check that this host can run firkin.
    Doctor(setup::HostArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIRKIN_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => rt.block_on(serve::run(args)),
        Command::Bench(args) => rt.block_on(bench::run(args)),
        Command::Doctor(args) => doctor::run(&args),
        Command::Template(args) => rt.block_on(template::run(args)),
    }
}
