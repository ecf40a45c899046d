//! Queue commands: `queue create|list|attributes|set|purge|delete`, `send`, `receive`,
//! `delete`, `change-visibility`, `redrive`, `worker`.

use std::io::{self, BufRead, BufWriter, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use shoal_engine::DataDir;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::{
    AttributeValue, MessageAttribute, Queue, QueueAttributes, QueueInfo, Receive, ReceivedMessage,
    RedrivePolicy, SendMessage, Sent,
};

use crate::Output;
use crate::util::{
    emit, invalid, parse_attribute, parse_durability, parse_duration, rfc3339_ms, stdin_ready,
};

/// `shoal queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Create a queue (a name ending in .fifo makes a FIFO queue). Creating an existing queue
    /// with the same attributes succeeds; with different ones it is a conflict (exit 7).
    Create {
        /// Queue name: 1-80 of A-Z a-z 0-9 _ - (and the .fifo suffix for FIFO).
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// List queues.
    List {
        /// Only queues whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Show a queue's attributes and approximate message counts.
    Attributes {
        /// Queue name.
        name: String,
    },
    /// Change a queue's attributes (only the ones given).
    Set {
        /// Queue name.
        name: String,
        #[command(flatten)]
        settings: Settings,
        /// Remove the dead-letter redrive policy.
        #[arg(long, conflicts_with_all = ["dead_letter_queue", "max_receives"])]
        no_dead_letter_queue: bool,
    },
    /// Remove every message sent before now (messages sent after stay).
    Purge {
        /// Queue name.
        name: String,
    },
    /// Delete a queue and every message in it (exit 7, changing nothing, while a process
    /// that owns the data directory, such as a server, has the queue open).
    Delete {
        /// Queue name.
        name: String,
    },
}

/// Queue attributes on the command line.
#[derive(Debug, Args)]
pub struct Settings {
    /// Make a FIFO queue (the name must end in .fifo; implied by it).
    #[arg(long)]
    fifo: bool,
    /// FIFO: deduplicate by the SHA-256 of the body when no deduplication id is given.
    #[arg(long)]
    content_based_dedup: bool,
    /// How long a received message stays invisible [default: 30s] (0 to 12h).
    #[arg(long, value_parser = parse_duration)]
    visibility_timeout: Option<Duration>,
    /// Delivery delay of every message [default: 0] (0 to 15m).
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// How long a message is kept [default: 4d] (60s to 14d).
    #[arg(long, value_parser = parse_duration)]
    retention: Option<Duration>,
    /// Largest message, body plus attributes, in bytes [default: 1048576] (1024 to 1048576).
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<u32>,
    /// Default long-poll wait of a receive [default: 0] (0 to 20s).
    #[arg(long, value_parser = parse_duration)]
    receive_wait: Option<Duration>,
    /// Dead-letter queue for messages received more than --max-receives times.
    #[arg(long, requires = "max_receives")]
    dead_letter_queue: Option<String>,
    /// Receives before a message moves to the dead-letter queue (1 to 1000).
    #[arg(long, requires = "dead_letter_queue")]
    max_receives: Option<u32>,
    /// always (fsync before acknowledging, the default), never, or interval:D.
    #[arg(long, value_parser = parse_durability)]
    durability: Option<DurabilityMode>,
}

impl Settings {
    fn apply(&self, a: &mut QueueAttributes) {
        a.content_based_deduplication |= self.content_based_dedup;
        if let Some(v) = self.visibility_timeout {
            a.visibility_timeout = v;
        }
        if let Some(v) = self.delay {
            a.delay = v;
        }
        if let Some(v) = self.retention {
            a.retention = v;
        }
        if let Some(v) = self.max_message_size {
            a.max_message_bytes = v;
        }
        if let Some(v) = self.receive_wait {
            a.receive_wait = v;
        }
        if let (Some(q), Some(n)) = (&self.dead_letter_queue, self.max_receives) {
            a.redrive = Some(RedrivePolicy {
                dead_letter_queue: q.clone(),
                max_receives: n,
            });
        }
        if let Some(d) = self.durability {
            a.durability = d;
        }
    }
}

fn durability_text(d: DurabilityMode) -> String {
    match d {
        DurabilityMode::Always => "always".into(),
        DurabilityMode::Never => "never".into(),
        DurabilityMode::IntervalMs(ms) => format!("interval:{ms}ms"),
    }
}

fn info_json(info: &QueueInfo, counts: Option<shoal_engine::queue::QueueCounts>) -> Value {
    let a = &info.attributes;
    let mut v = json!({
        "name": info.name,
        "fifo": a.fifo,
        "content_based_deduplication": a.content_based_deduplication,
        "visibility_timeout_seconds": a.visibility_timeout.as_secs_f64(),
        "delay_seconds": a.delay.as_secs_f64(),
        "message_retention_period_seconds": a.retention.as_secs_f64(),
        "maximum_message_size": a.max_message_bytes,
        "receive_message_wait_time_seconds": a.receive_wait.as_secs_f64(),
        "redrive_policy": a.redrive.as_ref().map(|r| json!({
            "dead_letter_target": r.dead_letter_queue,
            "max_receive_count": r.max_receives,
        })),
        "durability": durability_text(a.durability),
        "created_timestamp": rfc3339_ms(info.created_ms),
        "last_modified_timestamp": rfc3339_ms(info.modified_ms),
    });
    if let (Some(c), Value::Object(map)) = (counts, &mut v) {
        map.insert("approximate_number_of_messages".into(), c.visible.into());
        map.insert(
            "approximate_number_of_messages_not_visible".into(),
            c.in_flight.into(),
        );
        map.insert(
            "approximate_number_of_messages_delayed".into(),
            c.delayed.into(),
        );
    }
    v
}

fn print_info(out: &mut impl Write, output: Output, value: &Value) -> io::Result<()> {
    match output {
        Output::Json => emit(out, &value.to_string()),
        Output::Text => {
            if let Value::Object(map) = value {
                for (k, v) in map {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    emit(out, &format!("{k}\t{text}"))?;
                }
            }
            Ok(())
        }
    }
}

/// Runs `shoal queue ...`.
pub fn run_queue(dir: &DataDir, output: Output, command: &QueueCommand) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match command {
        QueueCommand::Create { name, settings } => {
            if settings.fifo && !name.ends_with(".fifo") {
                return invalid(format!(
                    "a FIFO queue's name must end in .fifo, not {name:?}"
                ));
            }
            let mut attributes = QueueAttributes::defaults(name.ends_with(".fifo"));
            settings.apply(&mut attributes);
            let info = dir.create_queue(name, &attributes)?;
            print_info(&mut out, output, &info_json(&info, None))?;
        }
        QueueCommand::List { prefix } => {
            for name in dir.list_queues(prefix)? {
                match output {
                    Output::Json => emit(&mut out, &json!({ "name": name }).to_string())?,
                    Output::Text => emit(&mut out, &name)?,
                }
            }
        }
        QueueCommand::Attributes { name } => {
            let queue = dir.queue(name)?;
            let counts = queue.counts()?;
            let info = queue.info()?;
            print_info(&mut out, output, &info_json(&info, Some(counts)))?;
        }
        QueueCommand::Set {
            name,
            settings,
            no_dead_letter_queue,
        } => {
            if settings.fifo != name.ends_with(".fifo") && settings.fifo {
                return invalid("a queue's type cannot change");
            }
            let mut attributes = dir.queue_info(name)?.attributes;
            settings.apply(&mut attributes);
            if *no_dead_letter_queue {
                attributes.redrive = None;
            }
            let info = dir.set_queue_attributes(name, &attributes)?;
            print_info(&mut out, output, &info_json(&info, None))?;
        }
        QueueCommand::Purge { name } => dir.queue(name)?.purge()?,
        QueueCommand::Delete { name } => dir.delete_queue(name)?,
    }
    Ok(())
}

/// `shoal send`
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Queue name.
    queue: String,
    /// The body; without it, all of stdin is one message (or, with --lines, each line is one).
    body: Option<String>,
    /// A message attribute NAME=TYPE:VALUE (TYPE String, Number or Binary, optionally with a
    /// custom suffix like Number.int; a Binary value is base64). Repeatable, at most 10.
    #[arg(long = "attr", value_name = "NAME=TYPE:VALUE")]
    attributes: Vec<String>,
    /// Delivery delay of this message (standard queues; 0 to 15m).
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// Message group id (required for FIFO queues).
    #[arg(long)]
    group_id: Option<String>,
    /// Deduplication id (FIFO queues without content-based deduplication).
    #[arg(long)]
    dedup_id: Option<String>,
    /// Send each line of stdin as one message, in batches; a result line is printed per
    /// message once it is durable, in input order. Empty lines are skipped.
    #[arg(long, conflicts_with = "body")]
    lines: bool,
}

fn sent_line(output: Output, sent: &Sent) -> String {
    match output {
        Output::Json => {
            let mut v = Map::new();
            v.insert("message_id".into(), sent.message_id.clone().into());
            v.insert("md5_of_body".into(), sent.md5_of_body.clone().into());
            if let Some(md5) = &sent.md5_of_message_attributes {
                v.insert("md5_of_message_attributes".into(), md5.clone().into());
            }
            if let Some(seq) = &sent.sequence_number {
                v.insert("sequence_number".into(), seq.clone().into());
            }
            Value::Object(v).to_string()
        }
        Output::Text => sent.message_id.clone(),
    }
}

/// Messages sent per append by `send --lines` when stdin is faster than the disk.
const LINES_BATCH: usize = 500;

/// Runs `shoal send`.
pub fn run_send(dir: &DataDir, output: Output, args: &SendArgs) -> anyhow::Result<()> {
    let attributes = args
        .attributes
        .iter()
        .map(|a| parse_attribute(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let template = SendMessage {
        body: String::new(),
        attributes,
        delay: args.delay,
        group_id: args.group_id.clone(),
        dedup_id: args.dedup_id.clone(),
    };
    let queue = dir.queue(&args.queue)?;
    let mut out = BufWriter::new(io::stdout().lock());
    if !args.lines {
        let body = match &args.body {
            Some(body) => body.clone(),
            None => {
                let mut bytes = Vec::new();
                io::stdin().lock().read_to_end(&mut bytes)?;
                match String::from_utf8(bytes) {
                    Ok(body) => body,
                    Err(_) => return invalid("the message body on stdin is not UTF-8"),
                }
            }
        };
        let sent = queue.send(&SendMessage { body, ..template })?;
        emit(&mut out, &sent_line(output, &sent))?;
        out.flush()?;
        return Ok(());
    }
    let mut input = io::BufReader::with_capacity(1 << 20, io::stdin().lock());
    let mut batch: Vec<SendMessage> = Vec::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let eof = input.read_until(b'\n', &mut line)? == 0;
        if !eof {
            number += 1;
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                let Ok(body) = String::from_utf8(line.clone()) else {
                    return invalid(format!("line {number} is not UTF-8"));
                };
                batch.push(SendMessage {
                    body,
                    ..template.clone()
                });
            }
        }
        // Send when the batch is full, at the end, or when stdin has nothing more ready (so
        // a slow producer's lines go out one by one, a fast one's in big batches).
        if !batch.is_empty()
            && (eof || batch.len() >= LINES_BATCH || (input.buffer().is_empty() && !stdin_ready()))
        {
            let sent = queue.send_batch(&batch).map_err(|e| {
                anyhow::Error::new(e).context(format!(
                    "lines {}-{number} were not sent",
                    number + 1 - batch.len() as u64
                ))
            })?;
            for s in &sent {
                emit(&mut out, &sent_line(output, s))?;
            }
            out.flush()?;
            batch.clear();
        }
        if eof {
            return Ok(());
        }
    }
}

/// `shoal receive`
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Queue name.
    queue: String,
    /// Most messages to receive (1 to 10).
    #[arg(long, default_value = "1")]
    max: usize,
    /// Long-poll up to this long for a message [default: the queue's receive wait] (0 to 20s).
    #[arg(long, value_parser = parse_duration)]
    wait: Option<Duration>,
    /// Visibility timeout of the received messages [default: the queue's].
    #[arg(long, value_parser = parse_duration)]
    visibility_timeout: Option<Duration>,
    /// Delete each message once it is printed.
    #[arg(long)]
    delete: bool,
    /// Print only the bodies, one per line.
    #[arg(long)]
    raw: bool,
}

fn attribute_json(a: &MessageAttribute) -> Value {
    match &a.value {
        AttributeValue::String(s) => json!({ "data_type": a.data_type, "string_value": s }),
        AttributeValue::Binary(b) => {
            json!({ "data_type": a.data_type, "binary_value": BASE64.encode(b) })
        }
    }
}

fn received_line(output: Output, m: &ReceivedMessage) -> String {
    match output {
        Output::Json => {
            let mut attributes = Map::new();
            attributes.insert(
                "ApproximateReceiveCount".into(),
                m.receive_count.to_string().into(),
            );
            attributes.insert("SentTimestamp".into(), m.sent_timestamp.to_string().into());
            attributes.insert(
                "ApproximateFirstReceiveTimestamp".into(),
                m.first_receive_timestamp.to_string().into(),
            );
            if let Some(g) = &m.group_id {
                attributes.insert("MessageGroupId".into(), g.clone().into());
            }
            if let Some(d) = &m.dedup_id {
                attributes.insert("MessageDeduplicationId".into(), d.clone().into());
            }
            if let Some(s) = &m.sequence_number {
                attributes.insert("SequenceNumber".into(), s.clone().into());
            }
            let message_attributes: Map<String, Value> = m
                .message_attributes
                .iter()
                .map(|a| (a.name.clone(), attribute_json(a)))
                .collect();
            let mut v = Map::new();
            v.insert("message_id".into(), m.message_id.clone().into());
            v.insert("receipt_handle".into(), m.receipt_handle.clone().into());
            v.insert("body".into(), m.body.clone().into());
            v.insert("md5_of_body".into(), m.md5_of_body.clone().into());
            if let Some(md5) = &m.md5_of_message_attributes {
                v.insert("md5_of_message_attributes".into(), md5.clone().into());
            }
            v.insert("attributes".into(), Value::Object(attributes));
            v.insert(
                "message_attributes".into(),
                Value::Object(message_attributes),
            );
            Value::Object(v).to_string()
        }
        Output::Text => format!("{}\t{}\t{}", m.message_id, m.receipt_handle, m.body),
    }
}

/// Runs `shoal receive`.
pub fn run_receive(dir: &DataDir, output: Output, args: &ReceiveArgs) -> anyhow::Result<()> {
    let queue = dir.queue(&args.queue)?;
    let messages = queue.receive(&Receive {
        max_messages: args.max,
        wait: args.wait,
        visibility_timeout: args.visibility_timeout,
    })?;
    let mut out = BufWriter::new(io::stdout().lock());
    for m in &messages {
        if args.raw {
            emit(&mut out, &m.body)?;
        } else {
            emit(&mut out, &received_line(output, m))?;
        }
    }
    // Printed before deleted: a crash in between redelivers, never loses.
    out.flush()?;
    if args.delete && !messages.is_empty() {
        let handles: Vec<&str> = messages.iter().map(|m| m.receipt_handle.as_str()).collect();
        for result in queue.delete_batch(&handles)? {
            result?;
        }
    }
    Ok(())
}

/// `shoal delete`
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Queue name.
    queue: String,
    /// Receipt handles; `-` reads them from stdin, one per line.
    #[arg(required = true)]
    handles: Vec<String>,
}

/// Runs `shoal delete`: every handle is tried; exits with the first failure's code after
/// reporting each failure on stderr.
pub fn run_delete(dir: &DataDir, args: &DeleteArgs) -> anyhow::Result<()> {
    let mut handles = Vec::new();
    for h in &args.handles {
        if h == "-" {
            for line in io::stdin().lock().lines() {
                let line = line?;
                let line = line.trim();
                if !line.is_empty() {
                    handles.push(line.to_string());
                }
            }
        } else {
            handles.push(h.clone());
        }
    }
    let queue = dir.queue(&args.queue)?;
    let mut first_error = None;
    for chunk in handles.chunks(1000) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (handle, result) in chunk.iter().zip(queue.delete_batch(&refs)?) {
            if let Err(e) = result {
                if first_error.is_some() {
                    eprintln!("error: {handle}: {e}");
                } else {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `shoal change-visibility`
#[derive(Debug, Args)]
pub struct ChangeVisibilityArgs {
    /// Queue name.
    queue: String,
    /// Receipt handle of the received message.
    handle: String,
    /// New visibility timeout from now (0 makes the message visible now).
    #[arg(long, value_parser = parse_duration)]
    timeout: Duration,
}

/// Runs `shoal change-visibility`.
pub fn run_change_visibility(dir: &DataDir, args: &ChangeVisibilityArgs) -> anyhow::Result<()> {
    dir.queue(&args.queue)?
        .change_visibility(&args.handle, args.timeout)?;
    Ok(())
}

/// `shoal redrive`
#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The dead-letter queue to empty.
    dlq: String,
    /// Move to this queue instead of each message's source queue.
    #[arg(long)]
    to: Option<String>,
}

/// Runs `shoal redrive`.
pub fn run_redrive(dir: &DataDir, output: Output, args: &RedriveArgs) -> anyhow::Result<()> {
    let moved = dir.queue(&args.dlq)?.redrive(args.to.as_deref())?;
    let mut out = io::stdout().lock();
    match output {
        Output::Json => emit(&mut out, &json!({ "moved": moved }).to_string())?,
        Output::Text => emit(&mut out, &moved.to_string())?,
    }
    Ok(())
}

/// `shoal worker`
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Queue name.
    queue: String,
    /// Commands running at once.
    #[arg(long, default_value = "1")]
    concurrency: usize,
    /// Visibility timeout of each received message [default: the queue's].
    #[arg(long, value_parser = parse_duration)]
    visibility_timeout: Option<Duration>,
    /// Stop after this many messages were handled (deleted or failed).
    #[arg(long)]
    limit: Option<u64>,
    /// Stop once the queue has no visible message (instead of waiting for more).
    #[arg(long)]
    exit_when_empty: bool,
    /// The command: the body on its stdin (env: SHOAL_QUEUE, SHOAL_MESSAGE_ID,
    /// SHOAL_RECEIVE_COUNT). Exit 0 deletes the message; anything else leaves it to become
    /// visible again after its visibility timeout (and reach the dead-letter queue).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Runs `shoal worker`: `--concurrency` threads, each receiving one message at a time and
/// running the command on it. SIGINT and SIGTERM stop it cleanly: commands running finish and
/// their messages are deleted or left, then it exits 0.
pub fn run_worker(dir: &DataDir, args: &WorkerArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        return invalid("--concurrency must be at least 1");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let queue = dir.queue(&args.queue)?;
    let handled = AtomicU64::new(0);
    let limit = args.limit.unwrap_or(u64::MAX);
    let failure: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..args.concurrency {
            scope.spawn(|| {
                if let Err(e) = worker_loop(&queue, args, &stop, &handled, limit) {
                    stop.store(true, Ordering::SeqCst);
                    let mut slot = failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    slot.get_or_insert(e);
                }
            });
        }
    });
    match failure
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn worker_loop(
    queue: &Queue,
    args: &WorkerArgs,
    stop: &AtomicBool,
    handled: &AtomicU64,
    limit: u64,
) -> anyhow::Result<()> {
    let (program, program_args) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no command given"))?;
    while !stop.load(Ordering::SeqCst) {
        // Claim a slot under the limit before receiving.
        if handled.fetch_add(1, Ordering::SeqCst) >= limit {
            return Ok(());
        }
        // Waits of at most a second, so a signal stops the worker promptly.
        let got = queue.receive(&Receive {
            max_messages: 1,
            wait: Some(Duration::from_secs(1)),
            visibility_timeout: args.visibility_timeout,
        })?;
        let Some(message) = got.into_iter().next() else {
            handled.fetch_sub(1, Ordering::SeqCst);
            if args.exit_when_empty {
                return Ok(());
            }
            continue;
        };
        let mut child = Command::new(program)
            .args(program_args)
            .env("SHOAL_QUEUE", queue.name())
            .env("SHOAL_MESSAGE_ID", &message.message_id)
            .env("SHOAL_RECEIVE_COUNT", message.receive_count.to_string())
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input is fine.
            let _ = stdin.write_all(message.body.as_bytes());
        }
        let status = child.wait()?;
        if status.success() {
            queue.delete(&message.receipt_handle)?;
        } else {
            eprintln!(
                "warning: {program} failed ({status}) on message {}; it becomes visible again after its visibility timeout",
                message.message_id
            );
        }
    }
    Ok(())
}
