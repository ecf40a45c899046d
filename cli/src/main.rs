//! `shoal`: the command line front end. Parsing and printing only; every rule lives in
//! `shoal-engine`.

mod check;
mod compact;
mod consume;
mod queue;
mod stats;
mod stream;
mod topic;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand, ValueEnum};
use shoal_engine::DataDir;

use crate::util::exit;

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    /// One JSON object per line.
    Json,
    /// Plain text, tab-separated.
    Text,
}

/// A durable local message and stream store: SQS-style queues, SNS-style topics and
/// Kinesis-style streams in one data directory.
///
/// Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 throttled, 5 invalid input,
/// 6 corruption detected, 7 conflict.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
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
    /// Create, list, inspect, configure, purge and delete SQS-style queues.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Send a message to a queue; prints its id and MD5 digests once it is durable.
    Send(queue::SendArgs),
    /// Receive up to 10 messages from a queue (they stay invisible to other receivers for
    /// their visibility timeout); prints nothing if there is none.
    Receive(queue::ReceiveArgs),
    /// Delete received messages by their receipt handles.
    Delete(queue::DeleteArgs),
    /// Change a received message's visibility timeout.
    ChangeVisibility(queue::ChangeVisibilityArgs),
    /// Move a dead-letter queue's messages back to their source queue (or --to another).
    Redrive(queue::RedriveArgs),
    /// Run a command per message of a queue: exit 0 deletes the message, anything else leaves
    /// it to come back after its visibility timeout.
    Worker(queue::WorkerArgs),
    /// Create, list, describe, delete and configure Kinesis-style streams.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Put records into a stream; prints each record's shard and sequence number once durable.
    Put(stream::PutArgs),
    /// Read records from a stream.
    Get(stream::GetArgs),
    /// Split, merge or scale a stream's shards.
    Reshard(stream::ReshardArgs),
    /// Process a stream as one worker of a consumer group (checkpoints and shard leases in
    /// the data directory).
    Consume(consume::ConsumeArgs),
    /// Create, list and delete SNS-style topics; subscribe queues, HTTP endpoints, commands
    /// and files; deliver what is pending.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Publish a message to a topic; prints its id (and FIFO sequence number) once it is
    /// durable, then fans it out to the subscriptions.
    Publish(topic::PublishArgs),
    /// Verify every file of the data directory: headers, every record's checksum, indexes,
    /// metadata. Prints one JSON line per problem (file, offset, kind); exit 6 if any.
    Check(check::CheckArgs),
    /// Give queue disk space back now: delete message-log segments no message needs, rewrite
    /// segments mostly of deleted messages, delete journal segments a fresh snapshot covers.
    /// Every queue, or just NAME. Prints one JSON line per queue (segments_removed,
    /// segments_compacted, journal_segments_removed, bytes_freed).
    Compact(compact::CompactArgs),
    /// What each stream, queue and topic holds (records, message counts, subscriptions) and
    /// its files on disk, one JSON line each, then the data directory's total.
    Stats,
    /// Print the data directory this invocation would use.
    DataDir,
}

/// The data directory: `--data-dir`, else `$SHOAL_DATA_DIR` (handled by clap), else
/// `$XDG_DATA_HOME/shoal`, else `~/.local/share/shoal`.
fn data_dir_path(cli: &Cli) -> anyhow::Result<PathBuf> {
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

fn run(cli: &Cli) -> anyhow::Result<u8> {
    let path = data_dir_path(cli)?;
    if let Command::DataDir = cli.command {
        match cli.output {
            Output::Json => println!("{}", serde_json::json!({ "data_dir": path })),
            Output::Text => println!("{}", path.display()),
        }
        return Ok(0);
    }
    let dir = DataDir::open(&path)?;
    match &cli.command {
        Command::Queue(command) => queue::run_queue(&dir, cli.output, command)?,
        Command::Send(args) => queue::run_send(&dir, cli.output, args)?,
        Command::Receive(args) => queue::run_receive(&dir, cli.output, args)?,
        Command::Delete(args) => queue::run_delete(&dir, args)?,
        Command::ChangeVisibility(args) => queue::run_change_visibility(&dir, args)?,
        Command::Redrive(args) => queue::run_redrive(&dir, cli.output, args)?,
        Command::Worker(args) => queue::run_worker(&dir, args)?,
        Command::Stream(command) => stream::run_stream(&dir, cli.output, command)?,
        Command::Put(args) => stream::run_put(&dir, cli.output, args)?,
        Command::Get(args) => stream::run_get(&dir, cli.output, args)?,
        Command::Reshard(args) => stream::run_reshard(&dir, cli.output, args)?,
        Command::Consume(args) => consume::run_consume(&dir, cli.output, args)?,
        Command::Topic(command) => topic::run_topic(&dir, cli.output, command)?,
        Command::Publish(args) => topic::run_publish(&dir, cli.output, args)?,
        Command::Check(args) => return check::run_check(&dir, args, cli.output),
        Command::Compact(args) => compact::run_compact(&dir, cli.output, args)?,
        Command::Stats => stats::run_stats(&dir, cli.output)?,
        Command::DataDir => {}
    }
    Ok(0)
}

/// The error and its causes on one line, skipping causes the message already quotes (the
/// engine's I/O errors name their cause themselves).
fn one_line(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message.replace('\n', " ")
}

/// clap's error message on one line: its lines up to the usage summary, joined (the contract
/// is one line starting `error:`; `--help` has the rest).
fn usage_error_line(rendered: &str) -> String {
    rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", usage_error_line(&e.render().to_string()));
            return ExitCode::from(match e.kind() {
                ErrorKind::InvalidValue | ErrorKind::ValueValidation => exit::INVALID,
                _ => exit::USAGE,
            });
        }
    };
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = util::exit_code(&e);
            if code != 0 {
                eprintln!("error: {}", one_line(&e));
            }
            ExitCode::from(code)
        }
    }
}
