//! Topic commands: `topic create|list|delete|subscribe|unsubscribe|subscriptions|deliver`,
//! `publish`.

use std::io::{self, BufWriter, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};
use shoal_engine::DataDir;
use shoal_engine::durability::DurabilityMode;

use shoal_engine::topic::{
    DeliveryReport, FilterScope, Protocol, PublishMessage, RetryPolicy, Subscribe,
    SubscriptionStatus, Topic, TopicAttributes, TopicInfo,
};

use crate::Output;
use crate::util::{emit, invalid, parse_attribute, parse_durability, parse_duration, rfc3339_ms};

/// `shoal topic ...`
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic (a name ending in .fifo makes a FIFO topic). Creating an existing topic
    /// with the same attributes succeeds; with different ones it is a conflict (exit 7).
    Create {
        /// Topic name: 1-256 of A-Z a-z 0-9 _ - (and the .fifo suffix for FIFO).
        name: String,
        /// Make a FIFO topic (the name must end in .fifo; implied by it).
        #[arg(long)]
        fifo: bool,
        /// FIFO: deduplicate by the SHA-256 of the message when no deduplication id is given.
        #[arg(long)]
        content_based_dedup: bool,
        /// always (fsync before acknowledging a publish, the default), never, or interval:D.
        #[arg(long, value_parser = parse_durability)]
        durability: Option<DurabilityMode>,
    },
    /// List topics.
    List,
    /// Delete a topic, its subscriptions and its undelivered messages.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Subscribe an endpoint to a topic; prints the subscription ARN. It gets the messages
    /// published from now on.
    Subscribe(SubscribeArgs),
    /// Remove a subscription (by ARN, or by the id at its end).
    Unsubscribe {
        /// Subscription ARN or id.
        id: String,
    },
    /// List a topic's subscriptions with their delivery state (pending, failed,
    /// dead-lettered, last failure).
    Subscriptions {
        /// Topic name.
        topic: String,
    },
    /// Deliver what is pending now (every topic, or TOPIC): HTTP and command deliveries are
    /// retried with exponential backoff, then go to the dead-letter queue or are reported.
    /// Prints one line per subscription that did something.
    Deliver(DeliverArgs),
}

/// `shoal topic subscribe`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("endpoint").required(true)))]
pub struct SubscribeArgs {
    /// Topic name.
    topic: String,
    /// A queue of this data directory (exactly-once delivery).
    #[arg(long, group = "endpoint")]
    queue: Option<String>,
    /// An http:// URL to POST each message to (SNS headers; 2xx is success).
    #[arg(long, group = "endpoint")]
    http: Option<String>,
    /// A command run by `sh -c` per message, the message on stdin (exit 0 is success).
    #[arg(long, group = "endpoint")]
    exec: Option<String>,
    /// A file to append one JSON line per message to.
    #[arg(long, group = "endpoint")]
    file: Option<std::path::PathBuf>,
    /// Deliver the bare message (to a queue: with its attributes as message attributes)
    /// instead of the SNS JSON envelope.
    #[arg(long)]
    raw: bool,
    /// A filter policy (JSON, SNS syntax); messages that do not match are not delivered.
    #[arg(long, value_name = "JSON")]
    filter_policy: Option<String>,
    /// What the filter policy looks at.
    #[arg(long, value_enum, default_value = "attributes")]
    filter_scope: Scope,
    /// A queue for messages whose delivery failed after every retry.
    #[arg(long, value_name = "QUEUE")]
    dead_letter_queue: Option<String>,
}

/// `--filter-scope`
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Scope {
    /// The message attributes (SNS's MessageAttributes).
    Attributes,
    /// The message body, a JSON object (SNS's MessageBody).
    Body,
}

/// `shoal topic deliver`
#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// Only this topic.
    topic: Option<String>,
    /// Keep running as the dispatcher: deliver whatever is published, until interrupted.
    #[arg(long)]
    follow: bool,
    /// Attempts per HTTP or command delivery, in all.
    #[arg(long, default_value = "4")]
    attempts: u32,
    /// Wait after the first failed attempt; it doubles after each.
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    min_delay: Duration,
    /// Longest wait between attempts.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    max_delay: Duration,
}

fn durability_text(d: DurabilityMode) -> String {
    match d {
        DurabilityMode::Always => "always".into(),
        DurabilityMode::Never => "never".into(),
        DurabilityMode::IntervalMs(ms) => format!("interval:{ms}ms"),
    }
}

fn topic_json(info: &TopicInfo) -> Value {
    json!({
        "name": info.name,
        "arn": info.arn,
        "fifo": info.attributes.fifo,
        "content_based_deduplication": info.attributes.content_based_deduplication,
        "durability": durability_text(info.attributes.durability),
        "created_timestamp": rfc3339_ms(info.created_ms),
    })
}

fn status_json(s: &SubscriptionStatus) -> Value {
    let sub = &s.subscription;
    json!({
        "subscription_arn": sub.arn(),
        "topic": sub.topic,
        "protocol": sub.protocol.as_str(),
        "endpoint": sub.endpoint,
        "raw": sub.raw,
        "filter_policy": sub.filter_policy,
        "filter_scope": match sub.filter_scope {
            FilterScope::Attributes => "attributes",
            FilterScope::Body => "body",
        },
        "dead_letter_queue": sub.dead_letter_queue,
        "pending": s.pending,
        "failed": s.failed,
        "dead_lettered": s.dead_lettered,
        "attempts": s.attempts,
        "last_failure": s.last_failure,
    })
}

fn print(out: &mut impl Write, output: Output, value: &Value, text: &str) -> io::Result<()> {
    match output {
        Output::Json => emit(out, &value.to_string()),
        Output::Text => emit(out, text),
    }
}

/// Runs `shoal topic ...`.
pub fn run_topic(dir: &DataDir, output: Output, command: &TopicCommand) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match command {
        TopicCommand::Create {
            name,
            fifo,
            content_based_dedup,
            durability,
        } => {
            if *fifo && !name.ends_with(".fifo") {
                return invalid(format!(
                    "a FIFO topic's name must end in .fifo, not {name:?}"
                ));
            }
            let mut attributes = TopicAttributes::defaults(name.ends_with(".fifo"));
            attributes.content_based_deduplication = *content_based_dedup;
            if let Some(d) = durability {
                attributes.durability = *d;
            }
            let info = dir.create_topic(name, &attributes)?;
            print(&mut out, output, &topic_json(&info), &info.arn)?;
        }
        TopicCommand::List => {
            for name in dir.list_topics()? {
                let info = dir.topic_info(&name)?;
                print(
                    &mut out,
                    output,
                    &json!({ "name": info.name, "arn": info.arn }),
                    &name,
                )?;
            }
        }
        TopicCommand::Delete { name } => dir.delete_topic(name)?,
        TopicCommand::Subscribe(args) => {
            let (protocol, endpoint) = match (&args.queue, &args.http, &args.exec, &args.file) {
                (Some(q), ..) => (Protocol::Queue, q.clone()),
                (_, Some(url), ..) => (Protocol::Http, url.clone()),
                (_, _, Some(cmd), _) => (Protocol::Exec, cmd.clone()),
                (_, _, _, Some(path)) => {
                    // Absolute, so that a dispatcher started elsewhere writes the same file.
                    let path = std::path::absolute(path)?;
                    let Some(path) = path.to_str() else {
                        return invalid("the --file path is not UTF-8");
                    };
                    (Protocol::File, path.to_string())
                }
                _ => return invalid("give one of --queue, --http, --exec, --file"),
            };
            let sub = dir.subscribe(
                &args.topic,
                &Subscribe {
                    protocol,
                    endpoint,
                    raw: args.raw,
                    filter_policy: args.filter_policy.clone(),
                    filter_scope: match args.filter_scope {
                        Scope::Attributes => FilterScope::Attributes,
                        Scope::Body => FilterScope::Body,
                    },
                    dead_letter_queue: args.dead_letter_queue.clone(),
                },
            )?;
            print(
                &mut out,
                output,
                &json!({ "subscription_arn": sub.arn(), "subscription_id": sub.id }),
                &sub.arn(),
            )?;
        }
        TopicCommand::Unsubscribe { id } => {
            dir.unsubscribe(id)?;
        }
        TopicCommand::Subscriptions { topic } => {
            for s in dir.subscriptions(topic)? {
                let text = format!(
                    "{}\t{}\t{}\tpending={}\tfailed={}\tdead_lettered={}",
                    s.subscription.arn(),
                    s.subscription.protocol.as_str(),
                    s.subscription.endpoint,
                    s.pending,
                    s.failed,
                    s.dead_lettered
                );
                print(&mut out, output, &status_json(&s), &text)?;
            }
        }
        TopicCommand::Deliver(args) => {
            drop(out);
            run_deliver(dir, output, args)?;
        }
    }
    Ok(())
}

fn report_line(output: Output, r: &DeliveryReport) -> String {
    match output {
        Output::Json => json!({
            "subscription_arn": r.subscription_arn,
            "delivered": r.delivered,
            "failed": r.failed,
            "dead_lettered": r.dead_lettered,
            "pending": r.pending,
            "error": r.error,
        })
        .to_string(),
        Output::Text => format!(
            "{}\tdelivered={}\tfailed={}\tdead_lettered={}",
            r.subscription_arn, r.delivered, r.failed, r.dead_lettered
        ),
    }
}

/// Runs `shoal topic deliver`: one round over the topics, or with `--follow` a round
/// whenever something is published (and every second, for retries that come due), until
/// SIGINT or SIGTERM.
fn run_deliver(dir: &DataDir, output: Output, args: &DeliverArgs) -> anyhow::Result<()> {
    if args.attempts == 0 {
        return invalid("--attempts must be at least 1");
    }
    let retry = RetryPolicy {
        attempts: args.attempts,
        min_delay: args.min_delay,
        max_delay: args.max_delay,
    };
    let stop = Arc::new(AtomicBool::new(false));
    if args.follow {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&stop))?;
        }
    }
    let names = match &args.topic {
        Some(name) => vec![name.clone()],
        None => dir.list_topics()?,
    };
    let topics: Vec<Topic> = names
        .iter()
        .map(|n| dir.topic(n).map(|t| t.with_retry(retry)))
        .collect::<Result<_, _>>()?;
    let mut watchers = Vec::new();
    if args.follow {
        for t in &topics {
            watchers.push(t.watch()?);
        }
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let mut failed = false;
    loop {
        for topic in &topics {
            for r in topic.deliver()? {
                if r.failed > 0 || (r.error.is_some() && r.pending) {
                    failed = true;
                }
                if let Some(e) = &r.error {
                    eprintln!("warning: {}: {e}", r.subscription_arn);
                }
                if r.delivered > 0 || r.failed > 0 || r.dead_lettered > 0 || r.error.is_some() {
                    emit(&mut out, &report_line(output, &r))?;
                }
            }
        }
        out.flush()?;
        if !args.follow || stop.load(Ordering::SeqCst) {
            break;
        }
        // Sleep until a topic log changes (or a second passes, for retries and new topics'
        // signals); with several topics, look at each in turn.
        let slice = Duration::from_millis(1000 / u64::try_from(watchers.len().max(1)).unwrap_or(1));
        for w in &mut watchers {
            if w.wait(slice)? {
                break;
            }
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    if failed {
        eprintln!(
            "warning: some deliveries failed or are still pending (see `shoal topic subscriptions`)"
        );
    }
    Ok(())
}

/// `shoal publish`
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Topic name.
    topic: String,
    /// The message; without it, all of stdin is the message.
    message: Option<String>,
    /// Subject (delivered in the envelope).
    #[arg(long)]
    subject: Option<String>,
    /// A message attribute NAME=TYPE:VALUE (TYPE String, String.Array, Number or Binary; a
    /// Binary value is base64). Repeatable, at most 10.
    #[arg(long = "attr", value_name = "NAME=TYPE:VALUE")]
    attributes: Vec<String>,
    /// Message group id (required for FIFO topics).
    #[arg(long)]
    group_id: Option<String>,
    /// Deduplication id (FIFO topics without content-based deduplication).
    #[arg(long)]
    dedup_id: Option<String>,
}

/// Parses `--attr NAME=TYPE:VALUE` (as `shoal send` does).
/// Runs `shoal publish`: prints `{"message_id", "sequence_number"?}` once the message is
/// durable; deliveries that could not happen now are warnings on stderr (they stay pending
/// for `shoal topic deliver`).
pub fn run_publish(dir: &DataDir, output: Output, args: &PublishArgs) -> anyhow::Result<()> {
    let attributes = args
        .attributes
        .iter()
        .map(|a| parse_attribute(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let topic = dir.topic(&args.topic)?;
    let body = match &args.message {
        Some(m) => m.clone(),
        None => {
            let mut bytes = Vec::new();
            io::stdin().lock().read_to_end(&mut bytes)?;
            match String::from_utf8(bytes) {
                Ok(body) => body,
                Err(_) => return invalid("the message on stdin is not UTF-8"),
            }
        }
    };
    let published = topic.publish(&PublishMessage {
        body,
        subject: args.subject.clone(),
        attributes,
        group_id: args.group_id.clone(),
        dedup_id: args.dedup_id.clone(),
    })?;
    let mut out = io::stdout().lock();
    let mut v = Map::new();
    v.insert("message_id".into(), published.message_id.clone().into());
    if let Some(seq) = &published.sequence_number {
        v.insert("sequence_number".into(), seq.clone().into());
    }
    print(&mut out, output, &Value::Object(v), &published.message_id)?;
    out.flush()?;
    for w in &published.warnings {
        eprintln!("warning: delivery pending: {w}");
    }
    Ok(())
}
