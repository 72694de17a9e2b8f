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
    /// Log lines as human-readable text or as one JSON object per line (for log shippers).
    #[arg(long, global = true, env = "FIRKIN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FIRKIN_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // Fields at the top level, so `jq .sandbox` works.
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => rt.block_on(serve::run(args)),
        Command::Bench(args) => rt.block_on(bench::run(args)),
        Command::Doctor(args) => doctor::run(&args),
        Command::Template(args) => rt.block_on(template::run(args)),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_command_line_is_consistent_and_parses_host_options() {
        super::Cli::command().debug_assert();
        let args = ["firkin", "serve", "--egress", "off", "--dns", "198.19.250.2, 127.0.0.1:5353"];
        super::Cli::try_parse_from(args).expect("parses");
        assert!(super::Cli::try_parse_from(["firkin", "serve", "--egress", "maybe"]).is_err());
        assert!(super::Cli::try_parse_from(["firkin", "serve", "--dns", "not-an-address"]).is_err());
    }
}
