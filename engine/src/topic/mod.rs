//! SNS-style topics: publish once, every subscription gets its copy, durably.
//!
//! ```text
//! <data>/topics/LOCK                        serializes create, delete, subscribe, unsubscribe
//! <data>/topics/<name>/topic.meta           attributes (fifo, dedup, durability, created time)
//! <data>/topics/<name>/subscriptions.meta   the subscriptions (metadata file)
//! <data>/topics/<name>/messages/            the topic log: one record per published message
//! <data>/topics/<name>/cursors/<id>.cursor  a subscription's delivery cursor (metadata file)
//! <data>/topics/<name>/cursors/<id>.lock    held by the one process delivering it
//! ```
//!
//! A publish is appended to the topic's log (durable before it is acknowledged, under the
//! topic's durability) and then fanned out: each subscription has its own cursor, the topic
//! offset it has delivered up to, so a fan-out cut short by a crash is finished by the next
//! publish or by [`Topic::deliver`]. Queue subscriptions are delivered exactly once: each copy
//! carries its topic offset as its origin ([`crate::queue::Queue::deliver`]), and a deliverer
//! first looks, from the queue's log end recorded with the cursor, for copies that already
//! arrived. HTTP, command and file subscriptions are delivered at least once, retried with
//! exponential backoff, and after their last attempt go to the subscription's dead-letter
//! queue or are counted and reported as failed, never dropped silently.
//!
//! - [`filter`]: subscription filter policies (SNS's operators, attribute or body scope).
//! - [`handle`]: an open [`Topic`]: publish and deliver.
//! - `check`: verifying every topic's files for `shoal check`.
//! - `endpoint`: the SNS JSON envelope and the HTTP, command and file deliveries.

mod check;
mod endpoint;
pub mod filter;
pub mod handle;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::datadir::{DataDir, DirInner};
use crate::durability::DurabilityMode;
use crate::error::{Error, Result};
use crate::meta;
use crate::names::{validate_queue_name, validate_topic_name};

pub(crate) use check::check_topics;
pub use filter::{FilterPolicy, FilterScope};
pub use handle::{
    DeliveryReport, PublishMessage, Published, RetryPolicy, SubscriptionStatus, Topic,
};

const TOPIC_MAGIC: [u8; 8] = *b"SHOALTOP";
const SUBSCRIPTIONS_MAGIC: [u8; 8] = *b"SHOALSUB";
const META_FILE: &str = "topic.meta";
const SUBSCRIPTIONS_FILE: &str = "subscriptions.meta";

/// Largest published message, body plus attributes: 256 KiB, as SNS has it.
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;
/// Longest subject.
pub const MAX_SUBJECT_LEN: usize = 100;

/// The ARN of a topic, in the form SNS gives it (local region, account 0).
pub fn topic_arn(name: &str) -> String {
    format!("arn:aws:sns:local:000000000000:{name}")
}

/// A topic's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicAttributes {
    /// A FIFO topic (its name ends in `.fifo`): a group id per message, deduplication.
    pub fifo: bool,
    /// FIFO only: deduplicate by the SHA-256 of the body when no deduplication id is given.
    pub content_based_deduplication: bool,
    /// When a publish counts as done (default `Always`: fsynced before it returns).
    pub durability: DurabilityMode,
}

impl TopicAttributes {
    /// A standard topic, or a FIFO one when `fifo`.
    pub fn defaults(fifo: bool) -> Self {
        TopicAttributes {
            fifo,
            content_based_deduplication: false,
            durability: DurabilityMode::Always,
        }
    }

    /// Checks the attributes against the name.
    pub fn validate(&self, name: &str) -> Result<()> {
        if self.fifo != name.ends_with(".fifo") {
            return Err(Error::InvalidArgument(format!(
                "topic {name:?}: a FIFO topic's name ends in .fifo, and only a FIFO topic's does"
            )));
        }
        if self.content_based_deduplication && !self.fifo {
            return Err(Error::InvalidArgument(
                "content-based deduplication is for FIFO topics only".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TopicMeta {
    name: String,
    attributes: TopicAttributes,
    created_ms: u64,
}

/// A topic as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Settings.
    pub attributes: TopicAttributes,
    /// Creation time, ms since the epoch (also the topic's incarnation).
    pub created_ms: u64,
}

fn info(meta: TopicMeta) -> TopicInfo {
    TopicInfo {
        arn: topic_arn(&meta.name),
        name: meta.name,
        attributes: meta.attributes,
        created_ms: meta.created_ms,
    }
}

/// Where a subscription delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// A queue of the same data directory (SNS's `sqs`): exactly once.
    Queue,
    /// An HTTP POST to a URL (`http://` only).
    Http,
    /// A command run by `sh -c` with the message on its stdin (a local stand-in for `lambda`).
    Exec,
    /// One JSON line per message appended to a file (an outbox).
    File,
}

impl Protocol {
    /// The protocol's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Queue => "queue",
            Protocol::Http => "http",
            Protocol::Exec => "exec",
            Protocol::File => "file",
        }
    }
}

/// What to subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The protocol.
    pub protocol: Protocol,
    /// The queue name, URL, command or file path.
    pub endpoint: String,
    /// Deliver the bare message (and, to a queue, its attributes as message attributes)
    /// instead of the SNS JSON envelope.
    pub raw: bool,
    /// A filter policy (JSON); `None` or `{}`: every message.
    pub filter_policy: Option<String>,
    /// What the filter policy looks at.
    pub filter_scope: FilterScope,
    /// Where deliveries that exhaust their retries go.
    pub dead_letter_queue: Option<String>,
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Its id (a UUID); the ARN is the topic's ARN, a colon and the id.
    pub id: String,
    /// The topic.
    pub topic: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The queue name, URL, command or file path.
    pub endpoint: String,
    /// Raw message delivery.
    pub raw: bool,
    /// The filter policy (JSON), if any.
    pub filter_policy: Option<String>,
    /// What the filter policy looks at.
    pub filter_scope: FilterScope,
    /// The dead-letter queue, if any.
    pub dead_letter_queue: Option<String>,
    /// When it was made, ms since the epoch.
    pub created_ms: u64,
}

impl Subscription {
    /// The subscription ARN.
    pub fn arn(&self) -> String {
        format!("{}:{}", topic_arn(&self.topic), self.id)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SubscriptionsMeta {
    subscriptions: Vec<Subscription>,
}

pub(crate) fn topics_dir(dir: &DirInner) -> PathBuf {
    dir.root.join("topics")
}

fn meta_path(dir: &DirInner, name: &str) -> PathBuf {
    topics_dir(dir).join(name).join(META_FILE)
}

fn subscriptions_path(dir: &DirInner, name: &str) -> PathBuf {
    topics_dir(dir).join(name).join(SUBSCRIPTIONS_FILE)
}

fn not_found(name: &str) -> Error {
    Error::NotFound {
        kind: "topic",
        name: name.to_string(),
    }
}

fn load(dir: &DirInner, name: &str) -> Result<Option<TopicMeta>> {
    validate_topic_name(name)?;
    meta::read(&*dir.storage, &meta_path(dir, name), TOPIC_MAGIC)
}

fn load_subscriptions(dir: &DirInner, name: &str) -> Result<Vec<Subscription>> {
    Ok(meta::read::<SubscriptionsMeta>(
        &*dir.storage,
        &subscriptions_path(dir, name),
        SUBSCRIPTIONS_MAGIC,
    )?
    .unwrap_or_default()
    .subscriptions)
}

fn save_subscriptions(dir: &DirInner, name: &str, subscriptions: &[Subscription]) -> Result<()> {
    meta::write(
        &*dir.storage,
        &subscriptions_path(dir, name),
        SUBSCRIPTIONS_MAGIC,
        &SubscriptionsMeta {
            subscriptions: subscriptions.to_vec(),
        },
    )
}

/// Checks a subscription's endpoint and options against the topic.
fn check_subscribe(dir: &DataDir, topic: &TopicMeta, request: &Subscribe) -> Result<()> {
    let invalid = |why: String| Err(Error::InvalidArgument(why));
    match request.protocol {
        Protocol::Queue => {
            validate_queue_name(&request.endpoint)?;
            let queue = dir.queue_info(&request.endpoint)?;
            if queue.attributes.fifo && !topic.attributes.fifo {
                return invalid(format!(
                    "FIFO queue {:?} cannot subscribe to standard topic {:?} (a FIFO queue needs a FIFO topic)",
                    request.endpoint, topic.name
                ));
            }
        }
        Protocol::Http => {
            endpoint::parse_http_url(&request.endpoint).map_err(Error::InvalidArgument)?;
        }
        Protocol::Exec | Protocol::File => {
            if request.endpoint.trim().is_empty() {
                return invalid(format!(
                    "the {} endpoint is empty",
                    request.protocol.as_str()
                ));
            }
        }
    }
    if let Some(policy) = &request.filter_policy {
        FilterPolicy::parse(policy, request.filter_scope)?;
    }
    if let Some(dlq) = &request.dead_letter_queue {
        validate_queue_name(dlq)?;
        let queue = dir.queue_info(dlq).map_err(|e| match e {
            Error::NotFound { name, .. } => Error::NotFound {
                kind: "dead-letter queue",
                name,
            },
            other => other,
        })?;
        if queue.attributes.fifo != topic.attributes.fifo {
            return invalid(
                "a FIFO topic's dead-letter queue must be FIFO, and a standard topic's standard"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Topic catalog and subscription operations.
impl DataDir {
    /// Creates a topic. Creating one that exists with the same attributes succeeds (as SNS's
    /// CreateTopic does); with different attributes it is [`Error::AlreadyExists`].
    pub fn create_topic(&self, name: &str, attributes: &TopicAttributes) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        attributes.validate(name)?;
        let dir = self.inner();
        let _lock = dir.lock_kind_to_create(&topics_dir(dir))?;
        if let Some(existing) = load(dir, name)? {
            if existing.attributes == *attributes {
                return Ok(info(existing));
            }
            return Err(Error::AlreadyExists {
                kind: "topic",
                name: name.to_string(),
                detail: " with different attributes".into(),
            });
        }
        let path = topics_dir(dir).join(name);
        // Leftovers of an interrupted create or delete.
        dir.remove_tree(&path)?;
        dir.ensure_dir(&path)?;
        dir.ensure_dir(&path.join(handle::CURSORS_DIR))?;
        // The log exists before the topic does, so that opening a topic never writes.
        handle::open_log(dir, &path, attributes)?.close()?;
        let meta = TopicMeta {
            name: name.to_string(),
            attributes: attributes.clone(),
            created_ms: dir.clock.now_ms(),
        };
        meta::write(&*dir.storage, &meta_path(dir, name), TOPIC_MAGIC, &meta)?;
        Ok(info(meta))
    }

    /// Topic names, sorted.
    pub fn list_topics(&self) -> Result<Vec<String>> {
        let dir = self.inner();
        dir.list_kind(&topics_dir(dir), META_FILE, |n| {
            validate_topic_name(n).is_ok()
        })
    }

    /// A topic's settings.
    pub fn topic_info(&self, name: &str) -> Result<TopicInfo> {
        load(self.inner(), name)?
            .map(info)
            .ok_or_else(|| not_found(name))
    }

    /// Deletes a topic, its subscriptions and its undelivered messages.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let dir = self.inner();
        let _lock = dir.lock_kind(&topics_dir(dir), || not_found(name))?;
        if load(dir, name)?.is_none() {
            return Err(not_found(name));
        }
        let path = meta_path(dir, name);
        let topic_dir = topics_dir(dir).join(name);
        // The metadata goes first: from then on the topic does not exist, whatever is left.
        dir.storage
            .remove_file(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
        dir.storage
            .sync_dir(&topic_dir)
            .map_err(|e| Error::io("fsync", &topic_dir, e))?;
        dir.remove_tree(&topic_dir)
    }

    /// Subscribes an endpoint to a topic; it gets the messages published from now on.
    /// Subscribing the same endpoint again with the same settings returns the existing
    /// subscription; with other settings it is a conflict.
    pub fn subscribe(&self, topic: &str, request: &Subscribe) -> Result<Subscription> {
        let dir = self.inner();
        let _lock = dir.lock_kind(&topics_dir(dir), || not_found(topic))?;
        let meta = load(dir, topic)?.ok_or_else(|| not_found(topic))?;
        check_subscribe(self, &meta, request)?;
        let policy = request.filter_policy.clone().filter(|p| p.trim() != "{}");
        let mut subscriptions = load_subscriptions(dir, topic)?;
        if let Some(existing) = subscriptions
            .iter()
            .find(|s| s.protocol == request.protocol && s.endpoint == request.endpoint)
        {
            let same = existing.raw == request.raw
                && existing.filter_policy == policy
                && existing.filter_scope == request.filter_scope
                && existing.dead_letter_queue == request.dead_letter_queue;
            if same {
                return Ok(existing.clone());
            }
            return Err(Error::Conflict(format!(
                "{} {:?} is already subscribed to topic {topic:?} with other settings ({}); unsubscribe it first",
                request.protocol.as_str(),
                request.endpoint,
                existing.arn()
            )));
        }
        let subscription = Subscription {
            id: uuid::Uuid::new_v4().to_string(),
            topic: topic.to_string(),
            protocol: request.protocol,
            endpoint: request.endpoint.clone(),
            raw: request.raw,
            filter_policy: policy,
            filter_scope: request.filter_scope,
            dead_letter_queue: request.dead_letter_queue.clone(),
            created_ms: dir.clock.now_ms(),
        };
        // The cursor first, at the topic's end: the subscription starts with the next publish.
        handle::start_cursor(self, &meta, &subscription)?;
        subscriptions.push(subscription.clone());
        save_subscriptions(dir, topic, &subscriptions)?;
        Ok(subscription)
    }

    /// Removes a subscription, by ARN or id.
    pub fn unsubscribe(&self, id: &str) -> Result<Subscription> {
        let dir = self.inner();
        let no_subscription = || Error::NotFound {
            kind: "subscription",
            name: id.rsplit(':').next().unwrap_or(id).to_string(),
        };
        let _lock = dir.lock_kind(&topics_dir(dir), no_subscription)?;
        let topics = match id.rsplit_once(':') {
            Some((arn, _)) => {
                let name = arn.rsplit(':').next().unwrap_or_default();
                vec![name.to_string()]
            }
            None => self.list_topics()?,
        };
        let id = id.rsplit(':').next().unwrap_or(id);
        for topic in topics {
            if load(dir, &topic)?.is_none() {
                continue;
            }
            let mut subscriptions = load_subscriptions(dir, &topic)?;
            if let Some(i) = subscriptions.iter().position(|s| s.id == id) {
                let removed = subscriptions.remove(i);
                save_subscriptions(dir, &topic, &subscriptions)?;
                handle::remove_cursor(dir, &topic, id)?;
                return Ok(removed);
            }
        }
        Err(no_subscription())
    }

    /// A topic's subscriptions with their delivery state.
    pub fn subscriptions(&self, topic: &str) -> Result<Vec<SubscriptionStatus>> {
        self.topic(topic)?.statuses()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use super::*;

    #[test]
    fn arns() {
        assert_eq!(topic_arn("t"), "arn:aws:sns:local:000000000000:t");
    }
}
