//! `shoal`: the command line front end. Parsing and printing only; every rule lives in
//! `shoal-engine`.
//!
//! The queue, stream and topic commands of the CLI contract (`../shared/DESIGN.md`) arrive with
//! their engine layers; today the binary resolves the data directory and reports it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes of the CLI contract.
mod exit {
    /// Any other failure.
    pub const FAILURE: u8 = 1;
    /// Bad command line.
    pub const USAGE: u8 = 2;
}

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    /// One JSON object per line.
    Json,
    /// Plain text.
    Text,
}

/// A durable local message and stream store: SQS-style queues, SNS-style topics and
/// Kinesis-style streams in one data directory.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, long_about = None)]
struct Cli {
    /// Data directory [default: $XDG_DATA_HOME/shoal, else ~/.local/share/shoal]
    #[arg(long, env = "SHOAL_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "json", global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the data directory this invocation would use.
    DataDir,
}

/// The data directory: `--data-dir`, else `$SHOAL_DATA_DIR` (handled by clap), else
/// `$XDG_DATA_HOME/shoal`, else `~/.local/share/shoal`.
fn data_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &cli.data_dir {
        return Ok(dir.clone());
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("shoal"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!("neither --data-dir, SHOAL_DATA_DIR, XDG_DATA_HOME nor HOME is set")
        })?;
    Ok(PathBuf::from(home).join(".local/share/shoal"))
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::DataDir => {
            let dir = data_dir(cli)?;
            match cli.output {
                Output::Json => println!("{}", serde_json::json!({ "data_dir": dir })),
                Output::Text => println!("{}", dir.display()),
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
