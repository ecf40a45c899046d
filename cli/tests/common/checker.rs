//! A Jepsen-style history checker for the crash tests.
//!
//! A crash test records what every process did and saw: writes (sends, puts, publishes) as
//! invoked and then acknowledged, failed or unknown (the process was killed before it said);
//! queue receives with the receiving process's monotonic clock around the call and the
//! visibility timeout it asked for; acknowledged deletes; stream reads with shard and sequence
//! number. [`History::check`] then finds every violation of:
//!
//! - no acknowledged write lost (a queue's messages, once the queue and its dead-letter queue
//!   were drained; a stream's records, in its final read at their acknowledged sequence numbers);
//! - nothing read or received that was never written (or whose write failed, or with other bytes);
//! - no message received again before the visibility timeout of its previous receive ended;
//! - no message received after a delete of it was acknowledged;
//! - FIFO order per message group: no message received while an earlier message of its group
//!   could still be in the queue (not yet deleted, not yet moved to the dead-letter queue),
//!   except after it in the same receive batch;
//! - a message never in both a queue and its dead-letter queue: not received from the queue
//!   once it reached the dead-letter queue, not deleted from the queue and also dead-lettered,
//!   not received from the queue more times than `maxReceiveCount`;
//! - per shard, sequence numbers strictly increasing in every read, and never the same sequence
//!   number for two different records (across acknowledgements and reads of every round).
//!
//! Times are monotonic nanoseconds (`CLOCK_MONOTONIC`, one clock for every process). An
//! operation took effect somewhere between its invocation and its completion, so each rule
//! only flags what no such placement explains; the engine's own clock counts whole
//! milliseconds, so visibility comparisons allow [`CLOCK_SLACK_NS`].
#![allow(
    dead_code,
    reason = "each crash test binary uses the part of the checker it needs"
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// The engine computes visibility deadlines from a millisecond wall clock: a message may
/// come back up to a millisecond before its deadline as measured in nanoseconds here.
pub const CLOCK_SLACK_NS: u64 = 2_000_000;

/// What became of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: it must be there.
    Ok,
    /// Refused: it must not be there.
    Fail,
    /// Invoked, never answered (the writer was killed): it may or may not be there.
    Unknown,
}

/// A write to a queue or a stream.
#[derive(Clone, Debug)]
pub struct Write {
    /// Queue or stream name.
    pub target: String,
    /// Unique among the target's writes (the tests use the body or data).
    pub id: String,
    pub payload: Vec<u8>,
    /// FIFO message group.
    pub group: Option<String>,
    /// Position in its group's send order (FIFO).
    pub order: u64,
    pub outcome: Outcome,
    /// A stream write's acknowledged shard and sequence number.
    pub sequence: Option<(String, u128)>,
    /// A stream record retention may have removed by the final read.
    pub may_expire: bool,
}

/// One message returned by a receive call.
#[derive(Clone, Debug)]
pub struct Receive {
    pub queue: String,
    pub id: String,
    pub payload: Vec<u8>,
    pub receipt: String,
    /// Identifies the receive call (unique per history).
    pub call: u64,
    /// Position in the call's batch.
    pub position: usize,
    pub invoked_ns: u64,
    pub completed_ns: u64,
    /// The visibility timeout the message got.
    pub visibility_ns: u64,
    pub receive_count: u32,
}

/// A delete: invoked, and acknowledged or not (the deleter was killed before it said).
#[derive(Clone, Debug)]
pub struct Delete {
    pub queue: String,
    pub id: String,
    pub receipt: String,
    pub invoked_ns: u64,
    /// When it was acknowledged; `None` if it never was (it may or may not have happened).
    pub completed_ns: Option<u64>,
}

/// One record returned by a stream read.
#[derive(Clone, Debug)]
pub struct StreamRead {
    pub stream: String,
    /// A read pass: one reader's walk of the stream, each shard in order.
    pub pass: u64,
    pub shard: String,
    pub sequence: u128,
    pub id: String,
    pub payload: Vec<u8>,
}

/// The kinds of violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An acknowledged write missing.
    Lost,
    /// Something read that was never written, or whose write failed, or other bytes.
    Phantom,
    /// Received again while its previous receive's visibility timeout ran.
    Duplicate,
    /// Received after a delete of it was acknowledged.
    AfterDelete,
    /// Received while an earlier message of its FIFO group could still be in the queue.
    FifoOrder,
    /// In a queue and its dead-letter queue both.
    QueueAndDlq,
    /// A shard's sequence numbers not strictly increasing in a read.
    SequenceOrder,
    /// One shard sequence number for two records.
    SequenceReused,
}

/// One violation, with what shows it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub kind: Kind,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

/// How a queue is configured.
#[derive(Clone, Debug, Default)]
pub struct QueueSpec {
    pub fifo: bool,
    /// Dead-letter queue and maxReceiveCount.
    pub dead_letter: Option<(String, u32)>,
}

/// Everything the processes of a crash test did and saw.
#[derive(Clone, Debug, Default)]
pub struct History {
    writes: Vec<Write>,
    by_key: HashMap<(String, String), usize>,
    pub receives: Vec<Receive>,
    pub deletes: Vec<Delete>,
    pub reads: Vec<StreamRead>,
    queues: BTreeMap<String, QueueSpec>,
    /// Queues drained (with their dead-letter queues) at the end: loss is checked on these.
    drained: HashSet<String>,
    /// The pass of each stream's final read: loss is checked on it.
    final_pass: HashMap<String, u64>,
    next_call: u64,
}

/// What a checked history held.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub acknowledged: usize,
    pub unknown: usize,
    pub receives: usize,
    pub deletes: usize,
    pub reads: usize,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Declares a queue (receives from undeclared queues are checked as standard queues).
    pub fn queue(&mut self, name: &str, spec: QueueSpec) {
        self.queues.insert(name.to_string(), spec);
    }

    /// A write invoked: [`Outcome::Unknown`] until [`History::ok`] or [`History::fail`].
    pub fn invoke(&mut self, target: &str, id: &str, payload: &[u8]) -> usize {
        self.invoke_in_group(target, id, payload, None, 0)
    }

    /// A FIFO send invoked: `order` is its place in the group's send order.
    pub fn invoke_in_group(
        &mut self,
        target: &str,
        id: &str,
        payload: &[u8],
        group: Option<&str>,
        order: u64,
    ) -> usize {
        let key = (target.to_string(), id.to_string());
        assert!(
            !self.by_key.contains_key(&key),
            "history: {target}/{id} written twice"
        );
        self.writes.push(Write {
            target: target.to_string(),
            id: id.to_string(),
            payload: payload.to_vec(),
            group: group.map(str::to_string),
            order,
            outcome: Outcome::Unknown,
            sequence: None,
            may_expire: false,
        });
        self.by_key.insert(key, self.writes.len() - 1);
        self.writes.len() - 1
    }

    /// The write `index` was acknowledged.
    pub fn ok(&mut self, index: usize) {
        self.writes[index].outcome = Outcome::Ok;
    }

    /// The stream write `index` was acknowledged at `shard`/`sequence`.
    pub fn ok_at(&mut self, index: usize, shard: &str, sequence: u128) {
        self.writes[index].outcome = Outcome::Ok;
        self.writes[index].sequence = Some((shard.to_string(), sequence));
    }

    /// The write `index` was refused.
    pub fn fail(&mut self, index: usize) {
        self.writes[index].outcome = Outcome::Fail;
    }

    /// Retention may have removed the stream write `index` by the final read.
    pub fn may_expire(&mut self, index: usize) {
        self.writes[index].may_expire = true;
    }

    /// The write of `id` to `target`, if any.
    pub fn write(&self, target: &str, id: &str) -> Option<&Write> {
        self.by_key
            .get(&(target.to_string(), id.to_string()))
            .map(|&i| &self.writes[i])
    }

    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// A fresh receive call id.
    pub fn call(&mut self) -> u64 {
        self.next_call += 1;
        self.next_call
    }

    pub fn receive(&mut self, receive: Receive) {
        self.receives.push(receive);
    }

    pub fn delete(&mut self, delete: Delete) {
        self.deletes.push(delete);
    }

    pub fn read(&mut self, read: StreamRead) {
        self.reads.push(read);
    }

    /// `queue` was drained empty (after any queue it is the dead-letter queue of): every
    /// acknowledged send must have been received from it or its dead-letter queue, and every
    /// message received from it must have been deleted from it or moved to that queue.
    pub fn drained(&mut self, queue: &str) {
        self.drained.insert(queue.to_string());
    }

    /// Read pass `pass` of `stream` read all of it: every acknowledged put must be in it.
    pub fn final_read(&mut self, stream: &str, pass: u64) {
        self.final_pass.insert(stream.to_string(), pass);
    }

    /// The queue a dead-letter queue's messages come from, by name.
    fn sources_of(&self, dlq: &str) -> Vec<&str> {
        self.queues
            .iter()
            .filter(|(_, s)| s.dead_letter.as_ref().is_some_and(|(d, _)| d == dlq))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The write a receive from `queue` of `id` comes from: a write to the queue, or to a
    /// queue it is the dead-letter queue of.
    fn origin(&self, queue: &str, id: &str) -> Option<&Write> {
        self.write(queue, id).or_else(|| {
            self.sources_of(queue)
                .into_iter()
                .find_map(|source| self.write(source, id))
        })
    }

    /// Every violation in the history.
    pub fn check(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        self.check_phantoms(&mut out);
        self.check_lost(&mut out);
        self.check_visibility_and_deletes(&mut out);
        self.check_fifo(&mut out);
        self.check_dead_letters(&mut out);
        self.check_sequences(&mut out);
        out
    }

    /// Counts of what the history holds.
    pub fn stats(&self) -> Stats {
        Stats {
            acknowledged: self
                .writes
                .iter()
                .filter(|w| w.outcome == Outcome::Ok)
                .count(),
            unknown: self
                .writes
                .iter()
                .filter(|w| w.outcome == Outcome::Unknown)
                .count(),
            receives: self.receives.len(),
            deletes: self.deletes.len(),
            reads: self.reads.len(),
        }
    }

    /// Panics listing the violations, if any; `context` names the test, round and seed.
    pub fn assert_valid(&self, context: &str) -> Stats {
        let violations = self.check();
        if !violations.is_empty() {
            let mut kinds: BTreeMap<Kind, usize> = BTreeMap::new();
            for v in &violations {
                *kinds.entry(v.kind).or_default() += 1;
            }
            let shown: Vec<String> = violations.iter().take(20).map(|v| v.to_string()).collect();
            panic!(
                "{context}: {} violation(s) {kinds:?}:\n{}",
                violations.len(),
                shown.join("\n")
            );
        }
        self.stats()
    }

    fn check_phantoms(&self, out: &mut Vec<Violation>) {
        for r in &self.receives {
            match self.origin(&r.queue, &r.id) {
                None => out.push(Violation {
                    kind: Kind::Phantom,
                    detail: format!("{} received {:?}, never sent", r.queue, r.id),
                }),
                Some(w) if w.outcome == Outcome::Fail => out.push(Violation {
                    kind: Kind::Phantom,
                    detail: format!("{} received {:?}, whose send failed", r.queue, r.id),
                }),
                Some(w) if w.payload != r.payload => out.push(Violation {
                    kind: Kind::Phantom,
                    detail: format!("{} received {:?} with other bytes", r.queue, r.id),
                }),
                Some(_) => {}
            }
        }
        for r in &self.reads {
            match self.write(&r.stream, &r.id) {
                None => out.push(Violation {
                    kind: Kind::Phantom,
                    detail: format!("{} read {:?}, never put", r.stream, r.id),
                }),
                Some(w) if w.outcome == Outcome::Fail => out.push(Violation {
                    kind: Kind::Phantom,
                    detail: format!("{} read {:?}, whose put failed", r.stream, r.id),
                }),
                Some(w) if w.payload != r.payload => out.push(Violation {
                    kind: Kind::Phantom,
                    detail: format!("{} read {:?} with other bytes", r.stream, r.id),
                }),
                Some(_) => {}
            }
        }
    }

    fn check_lost(&self, out: &mut Vec<Violation>) {
        let mut received: HashSet<(&str, &str)> = HashSet::new();
        for r in &self.receives {
            received.insert((&r.queue, &r.id));
        }
        let mut finals: HashMap<(&str, &str), Vec<&StreamRead>> = HashMap::new();
        for r in &self.reads {
            if self.final_pass.get(&r.stream) == Some(&r.pass) {
                finals.entry((&r.stream, &r.id)).or_default().push(r);
            }
        }
        for w in self.writes.iter().filter(|w| w.outcome == Outcome::Ok) {
            if self.drained.contains(&w.target) {
                let dlq = self
                    .queues
                    .get(&w.target)
                    .and_then(|s| s.dead_letter.as_ref());
                let found = received.contains(&(w.target.as_str(), w.id.as_str()))
                    || dlq.is_some_and(|(d, _)| received.contains(&(d.as_str(), w.id.as_str())));
                if !found && !w.may_expire {
                    out.push(Violation {
                        kind: Kind::Lost,
                        detail: format!(
                            "{}: acknowledged send {:?} never received",
                            w.target, w.id
                        ),
                    });
                }
            }
        }
        // A drained queue is empty: every message received from it left by a delete (perhaps
        // one not acknowledged), or by a move to its dead-letter queue. One that just
        // vanished was lost.
        let mut deleted: HashSet<(&str, &str)> = HashSet::new();
        for d in &self.deletes {
            deleted.insert((&d.queue, &d.id));
        }
        for &(queue, id) in &received {
            if !self.drained.contains(queue) || deleted.contains(&(queue, id)) {
                continue;
            }
            if self.origin(queue, id).is_some_and(|w| w.may_expire) {
                continue;
            }
            let dlq = self.queues.get(queue).and_then(|s| s.dead_letter.as_ref());
            let moved = dlq.is_some_and(|(d, _)| {
                received.contains(&(d.as_str(), id)) || deleted.contains(&(d.as_str(), id))
            });
            if !moved {
                out.push(Violation {
                    kind: Kind::Lost,
                    detail: format!(
                        "{queue}: {id:?} neither deleted nor dead-lettered, yet gone from the drained queue; {}",
                        self.explain(queue, id)
                    ),
                });
            }
        }
        for w in self.writes.iter().filter(|w| w.outcome == Outcome::Ok) {
            if self.final_pass.contains_key(&w.target) {
                let seen = finals.get(&(w.target.as_str(), w.id.as_str()));
                match (seen, &w.sequence) {
                    (None, _) if w.may_expire => {}
                    (None, _) => out.push(Violation {
                        kind: Kind::Lost,
                        detail: format!(
                            "{}: acknowledged put {:?} ({:?}) not in the final read",
                            w.target, w.id, w.sequence
                        ),
                    }),
                    (Some(reads), Some((shard, sequence))) => {
                        if !reads
                            .iter()
                            .any(|r| &r.shard == shard && r.sequence == *sequence)
                        {
                            out.push(Violation {
                                kind: Kind::Lost,
                                detail: format!(
                                    "{}: acknowledged put {:?} at {shard}/{sequence} read elsewhere",
                                    w.target, w.id
                                ),
                            });
                        }
                    }
                    (Some(_), None) => {}
                }
            }
        }
    }

    /// When `d` was acknowledged, if it certainly deleted its message: it was acknowledged
    /// while its receipt was the message's current one (before the visibility timeout of the
    /// receive that gave the receipt could have ended). A delete with a stale receipt may be
    /// acknowledged and do nothing, as SQS's DeleteMessage may: the message was received
    /// again, or moved to the dead-letter queue, in between.
    fn took_effect(&self, d: &Delete) -> Option<u64> {
        let acknowledged = d.completed_ns?;
        let receive = self
            .receives
            .iter()
            .find(|r| r.receipt == d.receipt && r.queue == d.queue && r.id == d.id)?;
        (acknowledged + CLOCK_SLACK_NS < receive.invoked_ns + receive.visibility_ns)
            .then_some(acknowledged)
    }

    /// Receives of each message in each queue, by invocation time.
    fn receives_by_message(&self) -> BTreeMap<(&str, &str), Vec<&Receive>> {
        let mut by: BTreeMap<(&str, &str), Vec<&Receive>> = BTreeMap::new();
        for r in &self.receives {
            by.entry((&r.queue, &r.id)).or_default().push(r);
        }
        for list in by.values_mut() {
            list.sort_by_key(|r| (r.invoked_ns, r.call, r.position));
        }
        by
    }

    fn check_visibility_and_deletes(&self, out: &mut Vec<Violation>) {
        let by = self.receives_by_message();
        for ((queue, id), list) in &by {
            for pair in list.windows(2) {
                let [a, b] = [pair[0], pair[1]];
                // `a` hid the message from some moment after a.invoked_ns for its visibility
                // timeout; `b` took it at some moment before b.completed_ns.
                if b.completed_ns + CLOCK_SLACK_NS < a.invoked_ns + a.visibility_ns {
                    out.push(Violation {
                        kind: Kind::Duplicate,
                        detail: format!(
                            "{queue}: {id:?} received again {} ms into a {} ms visibility timeout (calls {} and {})",
                            b.completed_ns.saturating_sub(a.invoked_ns) / 1_000_000,
                            a.visibility_ns / 1_000_000,
                            a.call,
                            b.call
                        ),
                    });
                }
            }
        }
        for d in &self.deletes {
            let Some(acknowledged) = self.took_effect(d) else {
                continue;
            };
            if let Some(list) = by.get(&(d.queue.as_str(), d.id.as_str())) {
                for r in list.iter().filter(|r| r.invoked_ns > acknowledged) {
                    out.push(Violation {
                        kind: Kind::AfterDelete,
                        detail: format!(
                            "{}: {:?} received (call {}) {} ms after its delete was acknowledged",
                            d.queue,
                            d.id,
                            r.call,
                            (r.invoked_ns - acknowledged) / 1_000_000
                        ),
                    });
                }
            }
        }
    }

    /// The earliest moment `id` can have left `queue` (deleted, or moved to the dead-letter
    /// queue) as far as the history shows; `None` if it never provably left.
    fn gone_ns(
        &self,
        queue: &str,
        id: &str,
        by: &BTreeMap<(&str, &str), Vec<&Receive>>,
        deletes: &HashMap<(&str, &str), u64>,
        dead_lettered: &HashSet<&str>,
    ) -> Option<u64> {
        let deleted = deletes.get(&(queue, id)).copied();
        // Before the dead-letter queue is drained, any message may have moved there unseen.
        let has_dlq = self
            .queues
            .get(queue)
            .is_some_and(|s| s.dead_letter.is_some());
        // An expired message leaves unseen too.
        let expired = self.write(queue, id).is_some_and(|w| w.may_expire);
        let maybe_moved = (has_dlq && !self.drained.contains(queue)) || expired;
        let moved = (maybe_moved || dead_lettered.contains(id)).then(|| {
            // Moved at a receive after its last receive's visibility ended; a receive the
            // history missed (a receiver killed before it printed) could only make it later.
            by.get(&(queue, id))
                .and_then(|l| l.iter().map(|r| r.invoked_ns + r.visibility_ns).max())
                .unwrap_or(0)
        });
        match (deleted, moved) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn check_fifo(&self, out: &mut Vec<Violation>) {
        let by = self.receives_by_message();
        let mut deletes: HashMap<(&str, &str), u64> = HashMap::new();
        for d in &self.deletes {
            let e = deletes.entry((&d.queue, &d.id)).or_insert(d.invoked_ns);
            *e = (*e).min(d.invoked_ns);
        }
        for (queue, spec) in self.queues.iter().filter(|(_, s)| s.fifo) {
            let dead_lettered: HashSet<&str> = match &spec.dead_letter {
                Some((dlq, _)) => self
                    .receives
                    .iter()
                    .filter(|r| &r.queue == dlq)
                    .map(|r| r.id.as_str())
                    .collect(),
                None => HashSet::new(),
            };
            let mut groups: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
            for w in self.writes.iter().filter(|w| &w.target == queue) {
                if let Some(g) = &w.group {
                    groups.entry(g).or_default().push(w);
                }
            }
            for (group, mut writes) in groups {
                writes.sort_by_key(|w| w.order);
                // Only messages the history shows were stored hold their group back.
                let stored: Vec<(&Write, u64)> = writes
                    .iter()
                    .filter(|w| {
                        by.contains_key(&(queue.as_str(), w.id.as_str()))
                            || dead_lettered.contains(w.id.as_str())
                    })
                    .map(|w| {
                        let gone = self
                            .gone_ns(queue, &w.id, &by, &deletes, &dead_lettered)
                            .unwrap_or(u64::MAX);
                        (*w, gone)
                    })
                    .collect();
                let mut latest_gone = 0u64;
                for (k, (w, gone)) in stored.iter().enumerate() {
                    let receives = by.get(&(queue.as_str(), w.id.as_str()));
                    for r in receives.into_iter().flatten() {
                        // A move to the DLQ is placed by the engine's millisecond clock.
                        let at = r.completed_ns + CLOCK_SLACK_NS;
                        if at >= latest_gone {
                            continue;
                        }
                        // A candidate: look for the earlier message that was still there,
                        // not counting those before it in the same receive batch.
                        for (earlier, earlier_gone) in &stored[..k] {
                            if at >= *earlier_gone {
                                continue;
                            }
                            let same_batch = by
                                .get(&(queue.as_str(), earlier.id.as_str()))
                                .into_iter()
                                .flatten()
                                .any(|e| e.call == r.call && e.position < r.position);
                            if !same_batch {
                                out.push(Violation {
                                    kind: Kind::FifoOrder,
                                    detail: format!(
                                        "{queue} group {group}: {:?} received (call {}, {}..{} ns) while {:?}, sent before it, was not yet deleted or dead-lettered; {}",
                                        w.id,
                                        r.call,
                                        r.invoked_ns,
                                        r.completed_ns,
                                        earlier.id,
                                        self.explain(queue, &earlier.id)
                                    ),
                                });
                                break;
                            }
                        }
                    }
                    latest_gone = latest_gone.max(*gone);
                }
            }
        }
    }

    /// What the history shows of message `id` in `queue` (and any dead-letter queue).
    pub fn explain(&self, queue: &str, id: &str) -> String {
        let mut parts = Vec::new();
        if let Some(w) = self.origin(queue, id) {
            parts.push(format!(
                "sent {:?} (group {:?}, order {})",
                w.outcome, w.group, w.order
            ));
        }
        for r in self.receives.iter().filter(|r| r.id == id) {
            parts.push(format!(
                "received from {} (call {} #{}, count {}, {}..{} ns, visible again at {} ns)",
                r.queue,
                r.call,
                r.position,
                r.receive_count,
                r.invoked_ns,
                r.completed_ns,
                r.invoked_ns + r.visibility_ns
            ));
        }
        for d in self.deletes.iter().filter(|d| d.id == id) {
            parts.push(format!(
                "delete from {} invoked at {} ns, acknowledged at {:?}",
                d.queue, d.invoked_ns, d.completed_ns
            ));
        }
        format!("{id:?}: {}", parts.join("; "))
    }

    fn check_dead_letters(&self, out: &mut Vec<Violation>) {
        let by = self.receives_by_message();
        for (queue, spec) in &self.queues {
            let Some((dlq, max_receives)) = &spec.dead_letter else {
                continue;
            };
            for r in self.receives.iter().filter(|r| &r.queue == queue) {
                if r.receive_count > *max_receives {
                    out.push(Violation {
                        kind: Kind::QueueAndDlq,
                        detail: format!(
                            "{queue}: {:?} received a {}th time, past maxReceiveCount {max_receives}",
                            r.id, r.receive_count
                        ),
                    });
                }
            }
            let mut first_in_dlq: HashMap<&str, u64> = HashMap::new();
            for r in self.receives.iter().filter(|r| &r.queue == dlq) {
                let e = first_in_dlq.entry(&r.id).or_insert(r.completed_ns);
                *e = (*e).min(r.completed_ns);
            }
            for (id, &in_dlq) in &first_in_dlq {
                if let Some(list) = by.get(&(queue.as_str(), *id)) {
                    for r in list.iter().filter(|r| r.invoked_ns > in_dlq) {
                        out.push(Violation {
                            kind: Kind::QueueAndDlq,
                            detail: format!(
                                "{queue}: {id:?} received (call {}) after it was received from {dlq}",
                                r.call
                            ),
                        });
                    }
                }
                if self
                    .deletes
                    .iter()
                    .any(|d| &d.queue == queue && d.id == *id && self.took_effect(d).is_some())
                {
                    out.push(Violation {
                        kind: Kind::QueueAndDlq,
                        detail: format!(
                            "{queue}: {id:?} deleted from the queue and also in {dlq}; {}",
                            self.explain(queue, id)
                        ),
                    });
                }
            }
        }
    }

    fn check_sequences(&self, out: &mut Vec<Violation>) {
        let mut owner: HashMap<(&str, &str, u128), &str> = HashMap::new();
        let mut claims: Vec<(&str, &str, u128, &str, &str)> = Vec::new();
        for w in &self.writes {
            if let Some((shard, sequence)) = &w.sequence {
                claims.push((&w.target, shard, *sequence, &w.id, "acknowledged"));
            }
        }
        for r in &self.reads {
            claims.push((&r.stream, &r.shard, r.sequence, &r.id, "read"));
        }
        for (stream, shard, sequence, id, how) in claims {
            match owner.get(&(stream, shard, sequence)) {
                Some(other) if *other != id => out.push(Violation {
                    kind: Kind::SequenceReused,
                    detail: format!(
                        "{stream} {shard}: sequence number {sequence} {how} for {id:?}, also {other:?}"
                    ),
                }),
                Some(_) => {}
                None => {
                    owner.insert((stream, shard, sequence), id);
                }
            }
        }
        let mut last: HashMap<(&str, u64, &str), u128> = HashMap::new();
        for r in &self.reads {
            let key = (r.stream.as_str(), r.pass, r.shard.as_str());
            if let Some(&previous) = last.get(&key)
                && r.sequence <= previous
            {
                out.push(Violation {
                    kind: Kind::SequenceOrder,
                    detail: format!(
                        "{} {} read pass {}: sequence number {} after {previous}",
                        r.stream, r.shard, r.pass, r.sequence
                    ),
                });
            }
            last.insert(key, r.sequence);
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine.
pub fn monotonic_ns() -> u64 {
    // `Instant` reads CLOCK_MONOTONIC on Linux but hides the value; its Debug form shows it
    // (`Instant { tv_sec: S, tv_nsec: N }`), which is all a test needs (and the assert below
    // fails loudly should that form change).
    let text = format!("{:?}", std::time::Instant::now());
    let number = |key: &str| -> u64 {
        let start = text.find(key).map(|i| i + key.len()).unwrap_or(text.len());
        text[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    };
    let (secs, nanos) = (number("tv_sec: "), number("tv_nsec: "));
    assert!(secs > 0, "cannot read CLOCK_MONOTONIC from {text}");
    secs * 1_000_000_000 + nanos
}

#[cfg(test)]
mod tests {
    //! Each rule fed a history that breaks it: the checker must say so (and must pass the
    //! same history without the break), so it cannot pass a broken engine silently.
    use super::*;

    const MS: u64 = 1_000_000;

    fn rx(h: &mut History, queue: &str, id: &str, at_ms: u64, count: u32) -> u64 {
        let call = h.call();
        rx_in(h, queue, id, call, 0, at_ms, count);
        call
    }

    fn rx_in(
        h: &mut History,
        queue: &str,
        id: &str,
        call: u64,
        position: usize,
        at_ms: u64,
        count: u32,
    ) {
        h.receive(Receive {
            queue: queue.into(),
            id: id.into(),
            payload: id.as_bytes().to_vec(),
            receipt: format!("{id}-{call}"),
            call,
            position,
            invoked_ns: at_ms * MS,
            completed_ns: at_ms * MS + MS,
            visibility_ns: 100 * MS,
            receive_count: count,
        });
    }

    /// A delete with the receipt of the message's latest receive from `queue`.
    fn del(h: &mut History, queue: &str, id: &str, at_ms: u64) {
        let receipt = h
            .receives
            .iter()
            .rev()
            .find(|r| r.queue == queue && r.id == id)
            .map(|r| r.receipt.clone())
            .unwrap_or_default();
        h.delete(Delete {
            queue: queue.into(),
            id: id.into(),
            receipt,
            invoked_ns: at_ms * MS,
            completed_ns: Some(at_ms * MS + MS),
        });
    }

    fn sent(h: &mut History, queue: &str, id: &str, outcome: Outcome) -> usize {
        let i = h.invoke(queue, id, id.as_bytes());
        match outcome {
            Outcome::Ok => h.ok(i),
            Outcome::Fail => h.fail(i),
            Outcome::Unknown => {}
        }
        i
    }

    fn kinds(h: &History) -> Vec<Kind> {
        let mut k: Vec<Kind> = h.check().iter().map(|v| v.kind).collect();
        k.dedup();
        k
    }

    /// A standard queue with a dead-letter queue (max 2 receives): `a` received, not deleted,
    /// received again after its visibility timeout and deleted; `b` received twice and
    /// dead-lettered; `c` an unknown send that was stored; `d` an unknown send that was not.
    fn queue_history() -> History {
        let mut h = History::new();
        h.queue(
            "q",
            QueueSpec {
                fifo: false,
                dead_letter: Some(("dlq".into(), 2)),
            },
        );
        h.queue("dlq", QueueSpec::default());
        sent(&mut h, "q", "a", Outcome::Ok);
        sent(&mut h, "q", "b", Outcome::Ok);
        sent(&mut h, "q", "c", Outcome::Unknown);
        sent(&mut h, "q", "d", Outcome::Unknown);
        sent(&mut h, "q", "e", Outcome::Fail);
        rx(&mut h, "q", "a", 0, 1);
        rx(&mut h, "q", "a", 150, 2);
        del(&mut h, "q", "a", 160);
        rx(&mut h, "q", "b", 10, 1);
        rx(&mut h, "q", "b", 200, 2);
        rx(&mut h, "dlq", "b", 400, 1);
        del(&mut h, "dlq", "b", 410);
        rx(&mut h, "q", "c", 20, 1);
        del(&mut h, "q", "c", 30);
        h.drained("q");
        h.drained("dlq");
        h
    }

    #[test]
    fn a_good_queue_history_passes() {
        let h = queue_history();
        assert_eq!(kinds(&h), vec![]);
        let stats = h.assert_valid("good");
        assert_eq!((stats.acknowledged, stats.unknown), (2, 2));
    }

    #[test]
    fn a_lost_acknowledged_send_is_caught() {
        let mut h = queue_history();
        sent(&mut h, "q", "f", Outcome::Ok);
        assert_eq!(kinds(&h), vec![Kind::Lost]);
        // Not drained: nothing can be called lost yet.
        let mut h = queue_history();
        h.drained.clear();
        sent(&mut h, "q", "f", Outcome::Ok);
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn a_message_that_vanished_from_a_drained_queue_is_caught() {
        // `f` received once, never deleted, not in the dead-letter queue.
        let mut h = queue_history();
        sent(&mut h, "q", "f", Outcome::Ok);
        rx(&mut h, "q", "f", 40, 1);
        assert_eq!(kinds(&h), vec![Kind::Lost]);
        // Its delete was invoked and never acknowledged: it may have happened.
        h.delete(Delete {
            queue: "q".into(),
            id: "f".into(),
            receipt: String::new(),
            invoked_ns: 50 * MS,
            completed_ns: None,
        });
        assert_eq!(kinds(&h), vec![]);
        // A message received from the dead-letter queue and never deleted from it.
        let mut h = queue_history();
        h.deletes.retain(|d| d.queue != "dlq");
        assert_eq!(kinds(&h), vec![Kind::Lost]);
    }

    #[test]
    fn a_phantom_receive_is_caught() {
        let mut h = queue_history();
        rx(&mut h, "q", "never-sent", 500, 1);
        del(&mut h, "q", "never-sent", 510);
        assert_eq!(kinds(&h), vec![Kind::Phantom]);
        let mut h = queue_history();
        rx(&mut h, "q", "e", 500, 1);
        del(&mut h, "q", "e", 510);
        assert_eq!(kinds(&h), vec![Kind::Phantom], "a failed send received");
        let mut h = queue_history();
        h.receives[0].payload = b"other".to_vec();
        assert_eq!(kinds(&h), vec![Kind::Phantom], "other bytes");
        // A dead-letter queue's message comes from its source queue, not from nowhere.
        let mut h = queue_history();
        rx(&mut h, "dlq", "never-sent", 500, 1);
        del(&mut h, "dlq", "never-sent", 510);
        assert_eq!(kinds(&h), vec![Kind::Phantom]);
    }

    #[test]
    fn a_duplicate_inside_the_visibility_timeout_is_caught() {
        let mut h = queue_history();
        // `a` received at 0 ms with 100 ms of visibility, again at 50 ms.
        rx(&mut h, "q", "a", 50, 2);
        assert_eq!(kinds(&h), vec![Kind::Duplicate]);
        // Twice in one batch.
        let mut h = queue_history();
        let call = h.call();
        rx_in(&mut h, "q", "c", call, 1, 20, 1);
        assert!(kinds(&h).contains(&Kind::Duplicate));
    }

    #[test]
    fn a_delivery_after_an_acknowledged_delete_is_caught() {
        let mut h = queue_history();
        // `c` deleted at 30 ms (acknowledged at 31 ms), received at 300 ms.
        rx(&mut h, "q", "c", 300, 2);
        assert_eq!(kinds(&h), vec![Kind::AfterDelete]);
        // A receive racing the delete (invoked before it was acknowledged) is not one.
        let mut h = queue_history();
        h.deletes[2].completed_ns = Some(400 * MS);
        rx(&mut h, "q", "c", 300, 2);
        assert_eq!(kinds(&h), vec![]);
    }

    fn fifo_history() -> History {
        let mut h = History::new();
        h.queue(
            "f.fifo",
            QueueSpec {
                fifo: true,
                dead_letter: Some(("d.fifo".into(), 1)),
            },
        );
        h.queue(
            "d.fifo",
            QueueSpec {
                fifo: true,
                dead_letter: None,
            },
        );
        for (order, id) in ["m1", "m2", "m3", "m4"].into_iter().enumerate() {
            let i = h.invoke_in_group("f.fifo", id, id.as_bytes(), Some("g"), order as u64);
            h.ok(i);
        }
        // m1 and m2 in one batch; both deleted; m3 received, never deleted, dead-lettered
        // after its visibility timeout; then m4.
        let call = h.call();
        rx_in(&mut h, "f.fifo", "m1", call, 0, 0, 1);
        rx_in(&mut h, "f.fifo", "m2", call, 1, 0, 1);
        del(&mut h, "f.fifo", "m1", 10);
        del(&mut h, "f.fifo", "m2", 10);
        rx(&mut h, "f.fifo", "m3", 20, 1);
        rx(&mut h, "f.fifo", "m4", 130, 1);
        del(&mut h, "f.fifo", "m4", 140);
        rx(&mut h, "d.fifo", "m3", 150, 1);
        del(&mut h, "d.fifo", "m3", 160);
        h.drained("f.fifo");
        h
    }

    #[test]
    fn a_delete_with_a_stale_receipt_may_do_nothing() {
        // `a` received at 0 ms (visible again at 100 ms) and at 150 ms; a delete with the
        // first receipt acknowledged at 200 ms is stale: `a` may come back after it.
        let mut h = queue_history();
        let first = h.receives[0].receipt.clone();
        h.deletes.retain(|d| d.id != "a");
        h.delete(Delete {
            queue: "q".into(),
            id: "a".into(),
            receipt: first.clone(),
            invoked_ns: 199 * MS,
            completed_ns: Some(200 * MS),
        });
        rx(&mut h, "q", "a", 300, 2);
        del(&mut h, "q", "a", 310);
        assert_eq!(kinds(&h), vec![]);
        // With the receipt still current (acknowledged at 50 ms), it deleted `a`.
        h.deletes
            .iter_mut()
            .find(|d| d.receipt == first)
            .unwrap()
            .completed_ns = Some(50 * MS);
        assert_eq!(kinds(&h), vec![Kind::AfterDelete]);
    }

    #[test]
    fn a_good_fifo_history_passes() {
        assert_eq!(kinds(&fifo_history()), vec![]);
    }

    #[test]
    fn before_the_drain_a_fifo_message_may_have_moved_unseen() {
        // m3 is not in the DLQ yet as far as the history goes (not drained): m4 after m3's
        // visibility timeout is fine; during it, still a reorder.
        let mut h = fifo_history();
        h.receives.retain(|r| r.queue != "d.fifo");
        h.drained.clear();
        assert_eq!(kinds(&h), vec![]);
        let m4 = h.receives.iter().position(|r| r.id == "m4").unwrap();
        h.receives[m4].invoked_ns = 60 * MS;
        h.receives[m4].completed_ns = 61 * MS;
        assert_eq!(kinds(&h), vec![Kind::FifoOrder]);
        // Drained, m3 never reached the DLQ: it holds its group back for good.
        let mut h = fifo_history();
        h.receives.retain(|r| r.queue != "d.fifo");
        assert!(kinds(&h).contains(&Kind::FifoOrder));
    }

    #[test]
    fn a_fifo_reorder_is_caught() {
        // m4 received while m3 was in flight (before its visibility timeout ended).
        let mut h = fifo_history();
        let m4 = h.receives.iter().position(|r| r.id == "m4").unwrap();
        h.receives[m4].invoked_ns = 60 * MS;
        h.receives[m4].completed_ns = 61 * MS;
        assert_eq!(kinds(&h), vec![Kind::FifoOrder]);
        // m2 before m1 in one batch.
        let mut h = fifo_history();
        h.receives[0].position = 1;
        h.receives[1].position = 0;
        assert_eq!(kinds(&h), vec![Kind::FifoOrder]);
        // m2 in a batch of its own before m1 was deleted.
        let mut h = fifo_history();
        h.receives[1].call = h.call();
        assert_eq!(kinds(&h), vec![Kind::FifoOrder]);
    }

    #[test]
    fn a_message_in_a_queue_and_its_dead_letter_queue_is_caught() {
        // m3 received from the queue after it was received from the dead-letter queue.
        let mut h = fifo_history();
        rx(&mut h, "f.fifo", "m3", 300, 1);
        assert!(kinds(&h).contains(&Kind::QueueAndDlq), "{:?}", kinds(&h));
        // m1 deleted from the queue and also in the dead-letter queue.
        let mut h = fifo_history();
        rx(&mut h, "d.fifo", "m1", 300, 1);
        assert!(kinds(&h).contains(&Kind::QueueAndDlq), "{:?}", kinds(&h));
        // Received past maxReceiveCount instead of moving.
        let mut h = queue_history();
        rx(&mut h, "q", "a", 1000, 3);
        assert!(kinds(&h).contains(&Kind::QueueAndDlq), "{:?}", kinds(&h));
    }

    fn read(h: &mut History, pass: u64, shard: &str, sequence: u128, id: &str) {
        h.read(StreamRead {
            stream: "s".into(),
            pass,
            shard: shard.into(),
            sequence,
            id: id.into(),
            payload: id.as_bytes().to_vec(),
        });
    }

    fn stream_history() -> History {
        let mut h = History::new();
        for (id, shard, sequence) in [("r1", "s0", 10), ("r2", "s0", 11), ("r3", "s1", 10)] {
            let i = h.invoke("s", id, id.as_bytes());
            h.ok_at(i, shard, sequence);
        }
        // An unknown put that was stored.
        h.invoke("s", "r4", b"r4");
        read(&mut h, 1, "s0", 10, "r1");
        read(&mut h, 1, "s0", 11, "r2");
        read(&mut h, 1, "s0", 12, "r4");
        read(&mut h, 1, "s1", 10, "r3");
        h.final_read("s", 1);
        h
    }

    #[test]
    fn a_good_stream_history_passes() {
        assert_eq!(kinds(&stream_history()), vec![]);
    }

    #[test]
    fn a_lost_or_moved_put_is_caught() {
        let mut h = stream_history();
        h.reads.remove(1);
        assert_eq!(kinds(&h), vec![Kind::Lost]);
        // Retention may take an expired record.
        let mut h = stream_history();
        h.reads.remove(1);
        h.may_expire(1);
        assert_eq!(kinds(&h), vec![]);
        // Read at another sequence number than acknowledged.
        let mut h = stream_history();
        h.reads[3].sequence = 11;
        assert!(kinds(&h).contains(&Kind::Lost));
    }

    #[test]
    fn a_phantom_read_is_caught() {
        let mut h = stream_history();
        read(&mut h, 1, "s1", 11, "never-put");
        assert_eq!(kinds(&h), vec![Kind::Phantom]);
    }

    #[test]
    fn a_reused_or_reordered_sequence_number_is_caught() {
        // A later round's record got an acknowledged record's sequence number.
        let mut h = stream_history();
        let i = h.invoke("s", "r5", b"r5");
        h.ok_at(i, "s0", 11);
        assert!(kinds(&h).contains(&Kind::SequenceReused), "{:?}", kinds(&h));
        // An earlier pass read something else there.
        let mut h = stream_history();
        h.invoke("s", "r6", b"r6");
        read(&mut h, 0, "s1", 10, "r6");
        assert_eq!(kinds(&h), vec![Kind::SequenceReused]);
        // Not strictly increasing within a read.
        let mut h = stream_history();
        read(&mut h, 1, "s0", 12, "r4");
        assert!(kinds(&h).contains(&Kind::SequenceOrder), "{:?}", kinds(&h));
        let mut h = stream_history();
        h.reads.swap(0, 1);
        assert_eq!(kinds(&h), vec![Kind::SequenceOrder]);
    }
}
