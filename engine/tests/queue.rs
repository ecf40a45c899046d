//! Queue semantics through the engine API, with an injected clock and the simulated storage:
//! visibility, delay, retention, purge, receipt handles, FIFO order and deduplication,
//! dead-letter moves and redrive, and state surviving a reopen.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{Env, T0, env, env_with};
use std::sync::Arc;
use std::time::Duration;

use shoal_engine::clock::ManualClock;
use shoal_engine::queue::{
    AttributeValue, MessageAttribute, Queue, QueueAttributes, Receive, ReceivedMessage,
    RedrivePolicy, SendMessage,
};
use shoal_engine::storage::{SharedStorage, SimStorage};
use shoal_engine::{DataDir, Error};

impl Env {
    fn create(&self, name: &str, attributes: QueueAttributes) -> Arc<Queue> {
        self.data.create_queue(name, &attributes).unwrap();
        self.data.queue(name).unwrap()
    }

    fn standard(&self, name: &str) -> Arc<Queue> {
        self.create(name, QueueAttributes::defaults(false))
    }

    /// A second, independent handle, as another process would have.
    fn reopen(&self, name: &str) -> Arc<Queue> {
        let storage: SharedStorage = Arc::new(self.sim.clone());
        DataDir::open_with("/data", storage, self.clock.clone())
            .unwrap()
            .queue(name)
            .unwrap()
    }
}

fn receive(q: &Queue, max: usize) -> Vec<ReceivedMessage> {
    q.receive(&Receive {
        max_messages: max,
        wait: Some(Duration::ZERO),
        visibility_timeout: None,
    })
    .unwrap()
}

fn bodies(messages: &[ReceivedMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

/// Asserts that a call failed because queue `jobs` no longer exists.
fn not_found(r: Result<(), Error>) {
    assert!(
        matches!(&r, Err(Error::NotFound { kind: "queue", name }) if name == "jobs"),
        "not NotFound: {r:?}"
    );
}

fn send_all(q: &Queue, bodies: &[&str]) {
    for body in bodies {
        q.send(&SendMessage::new(*body)).unwrap();
    }
}

#[test]
fn send_receive_delete_with_digests_and_attributes() {
    let env = env();
    let q = env.standard("jobs");
    let message = SendMessage {
        body: "hello".into(),
        attributes: vec![MessageAttribute {
            name: "kind".into(),
            data_type: "String".into(),
            value: AttributeValue::String("greeting".into()),
        }],
        ..SendMessage::default()
    };
    let sent = q.send(&message).unwrap();
    assert_eq!(sent.md5_of_body, "5d41402abc4b2a76b9719d911017c592");
    assert!(sent.md5_of_message_attributes.is_some());
    assert_eq!(sent.sequence_number, None);

    let got = receive(&q, 10);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.message_id, sent.message_id);
    assert_eq!(m.body, "hello");
    assert_eq!(m.md5_of_body, sent.md5_of_body);
    assert_eq!(m.md5_of_message_attributes, sent.md5_of_message_attributes);
    assert_eq!(m.message_attributes, message.attributes);
    assert_eq!(m.receive_count, 1);
    assert_eq!(m.sent_timestamp, T0);
    assert_eq!(m.first_receive_timestamp, T0);

    // Invisible to every other receiver, in this handle and another.
    assert!(receive(&q, 10).is_empty());
    assert!(receive(&env.reopen("jobs"), 10).is_empty());
    q.delete(&m.receipt_handle).unwrap();
    env.clock.advance(60_000);
    assert!(receive(&q, 10).is_empty(), "deleted messages never return");
    // Deleting again succeeds without effect, as in SQS.
    q.delete(&m.receipt_handle).unwrap();
}

#[test]
fn visibility_timeout_expiry_returns_the_message_with_a_new_handle() {
    let env = env();
    let q = env.standard("jobs");
    send_all(&q, &["a"]);
    let first = receive(&q, 1).remove(0);
    env.clock.advance(29_999);
    assert!(receive(&q, 1).is_empty(), "still within the 30 s default");
    env.clock.advance(1);
    // Another process receives it once the timeout is over.
    let other = env.reopen("jobs");
    let second = receive(&other, 1).remove(0);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.receive_count, 2);
    assert_eq!(second.first_receive_timestamp, T0);
    assert_ne!(second.receipt_handle, first.receipt_handle);
    // The stale handle deletes nothing (SQS: succeeds, message stays).
    q.delete(&first.receipt_handle).unwrap();
    env.clock.advance(30_000);
    let third = receive(&q, 1).remove(0);
    assert_eq!(third.receive_count, 3);
    q.delete(&third.receipt_handle).unwrap();
    env.clock.advance(30_000);
    assert!(receive(&other, 1).is_empty());
}

#[test]
fn change_visibility_rules() {
    let env = env();
    let q = env.standard("jobs");
    send_all(&q, &["a"]);
    let m = receive(&q, 1).remove(0);
    // Extend to 10 minutes: still invisible after the default 30 s.
    q.change_visibility(&m.receipt_handle, Duration::from_secs(600))
        .unwrap();
    env.clock.advance(31_000);
    assert!(receive(&q, 1).is_empty());
    // Zero makes it visible now.
    q.change_visibility(&m.receipt_handle, Duration::ZERO)
        .unwrap();
    let again = receive(&q, 1).remove(0);
    assert_eq!(again.receive_count, 2);
    q.change_visibility(&again.receipt_handle, Duration::from_secs(11 * 3600 + 1800))
        .unwrap();
    // The first handle is stale now.
    assert!(matches!(
        q.change_visibility(&m.receipt_handle, Duration::from_secs(5)),
        Err(Error::MessageNotInflight(_))
    ));
    // At most 12 hours from the first receive in total.
    env.clock.advance(11 * 3600 * 1000);
    assert!(matches!(
        q.change_visibility(&again.receipt_handle, Duration::from_secs(3600)),
        Err(Error::InvalidArgument(_))
    ));
    q.change_visibility(&again.receipt_handle, Duration::from_secs(1800))
        .unwrap();
    // Malformed handles.
    for bad in ["", "nonsense", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert!(
            matches!(q.delete(bad), Err(Error::InvalidReceiptHandle(_))),
            "{bad:?}"
        );
        assert!(matches!(
            q.change_visibility(bad, Duration::ZERO),
            Err(Error::InvalidReceiptHandle(_))
        ));
    }
    // A handle of another queue is not this queue's.
    let other = env.standard("other");
    send_all(&other, &["x"]);
    let foreign = receive(&other, 1).remove(0);
    assert!(matches!(
        q.delete(&foreign.receipt_handle),
        Err(Error::InvalidReceiptHandle(_))
    ));
}

#[test]
fn receive_visibility_override_and_batch_limits() {
    let env = env();
    let q = env.standard("jobs");
    send_all(&q, &["1", "2", "3"]);
    let got = q
        .receive(&Receive {
            max_messages: 2,
            wait: Some(Duration::ZERO),
            visibility_timeout: Some(Duration::from_secs(5)),
        })
        .unwrap();
    assert_eq!(bodies(&got), ["1", "2"]);
    env.clock.advance(5_000);
    assert_eq!(bodies(&receive(&q, 10)), ["1", "2", "3"]);
    for max in [0, 11] {
        assert!(matches!(
            q.receive(&Receive {
                max_messages: max,
                ..Receive::default()
            }),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn delayed_messages_wait_and_are_counted() {
    let env = env();
    let q = env.standard("jobs");
    q.send(&SendMessage {
        body: "later".into(),
        delay: Some(Duration::from_secs(60)),
        ..SendMessage::default()
    })
    .unwrap();
    send_all(&q, &["now"]);
    let counts = q.counts().unwrap();
    assert_eq!(
        (counts.visible, counts.delayed, counts.in_flight),
        (1, 1, 0)
    );
    let now = receive(&q, 10);
    assert_eq!(bodies(&now), ["now"]);
    let counts = q.counts().unwrap();
    assert_eq!(
        (counts.visible, counts.delayed, counts.in_flight),
        (0, 1, 1)
    );
    q.delete(&now[0].receipt_handle).unwrap();
    env.clock.advance(59_999);
    assert!(receive(&q, 10).is_empty());
    env.clock.advance(1);
    assert_eq!(bodies(&receive(&q, 10)), ["later"]);
    assert!(matches!(
        q.send(&SendMessage {
            body: "x".into(),
            delay: Some(Duration::from_secs(901)),
            ..SendMessage::default()
        }),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn queue_delay_applies_to_every_message() {
    let env = env();
    let q = env.create(
        "slow",
        QueueAttributes {
            delay: Duration::from_secs(10),
            ..QueueAttributes::defaults(false)
        },
    );
    send_all(&q, &["a"]);
    assert!(receive(&q, 1).is_empty());
    env.clock.advance(10_000);
    assert_eq!(bodies(&receive(&q, 1)), ["a"]);
}

#[test]
fn retention_drops_expired_messages() {
    let env = env();
    let q = env.create(
        "short",
        QueueAttributes {
            retention: Duration::from_secs(60),
            ..QueueAttributes::defaults(false)
        },
    );
    send_all(&q, &["old", "returning"]);
    // "returning" is received, then expires while in the state.
    let got = q
        .receive(&Receive {
            max_messages: 1,
            wait: Some(Duration::ZERO),
            visibility_timeout: Some(Duration::from_secs(1)),
        })
        .unwrap();
    assert_eq!(bodies(&got), ["old"]);
    env.clock.advance(30_000);
    send_all(&q, &["young"]);
    env.clock.advance(30_000);
    assert_eq!(bodies(&receive(&q, 10)), ["young"]);
}

#[test]
fn purge_removes_what_was_sent_before_it() {
    let env = env();
    let q = env.standard("jobs");
    send_all(&q, &["a", "b", "c"]);
    let in_flight = receive(&q, 1).remove(0);
    q.purge().unwrap();
    send_all(&q, &["after"]);
    env.clock.advance(60_000);
    assert_eq!(bodies(&receive(&env.reopen("jobs"), 10)), ["after"]);
    // The purged message's handle deletes nothing and fails nothing.
    q.delete(&in_flight.receipt_handle).unwrap();
}

#[test]
fn state_survives_reopen_and_many_snapshots() {
    let env = env();
    let q = env.standard("jobs");
    let n = 5_000;
    for i in 0..n {
        q.send(&SendMessage::new(format!("m{i}"))).unwrap();
    }
    // Receive all, delete the even ones: well past one snapshot interval of events.
    let mut kept = Vec::new();
    loop {
        let got = receive(&q, 10);
        if got.is_empty() {
            break;
        }
        let handles: Vec<&str> = got
            .iter()
            .filter(|m| m.body[1..].parse::<u32>().unwrap() % 2 == 0)
            .map(|m| m.receipt_handle.as_str())
            .collect();
        for r in q.delete_batch(&handles).unwrap() {
            r.unwrap();
        }
        kept.extend(
            got.iter()
                .filter(|m| m.body[1..].parse::<u32>().unwrap() % 2 == 1)
                .map(|m| m.body.clone()),
        );
    }
    assert!(
        env.sim.files().iter().any(|f| f.ends_with("state.snap")),
        "a snapshot was written"
    );
    let other = env.reopen("jobs");
    let counts = other.counts().unwrap();
    assert_eq!(counts.in_flight, n / 2);
    env.clock.advance(30_000);
    let mut back = Vec::new();
    loop {
        let got = receive(&other, 10);
        if got.is_empty() {
            break;
        }
        assert!(got.iter().all(|m| m.receive_count == 2));
        back.extend(got.into_iter().map(|m| m.body));
    }
    assert_eq!(back, kept);
}

fn fifo(env: &Env, name: &str, content_dedup: bool) -> Arc<Queue> {
    env.create(
        name,
        QueueAttributes {
            content_based_deduplication: content_dedup,
            ..QueueAttributes::defaults(true)
        },
    )
}

fn fifo_message(body: &str, group: &str, dedup: &str) -> SendMessage {
    SendMessage {
        body: body.into(),
        group_id: Some(group.into()),
        dedup_id: Some(dedup.into()),
        ..SendMessage::default()
    }
}

#[test]
fn fifo_orders_within_a_group_and_holds_a_busy_group() {
    let env = env();
    let q = fifo(&env, "orders.fifo", false);
    let mut sequence = Vec::new();
    for (body, group) in [
        ("a1", "a"),
        ("b1", "b"),
        ("a2", "a"),
        ("b2", "b"),
        ("a3", "a"),
    ] {
        let sent = q.send(&fifo_message(body, group, body)).unwrap();
        sequence.push(sent.sequence_number.unwrap());
    }
    let mut sorted = sequence.clone();
    sorted.sort();
    assert_eq!(sequence, sorted, "sequence numbers increase");

    // One receive of one message: a1. Group a is now held; b goes ahead.
    let a1 = receive(&q, 1).remove(0);
    assert_eq!(a1.body, "a1");
    assert_eq!(a1.group_id.as_deref(), Some("a"));
    assert_eq!(a1.dedup_id.as_deref(), Some("a1"));
    assert_eq!(a1.sequence_number.as_deref(), Some(sequence[0].as_str()));
    let b = receive(&q, 10);
    assert_eq!(
        bodies(&b),
        ["b1", "b2"],
        "a batch takes a group's messages in order"
    );
    assert!(receive(&q, 10).is_empty(), "both groups are in flight");
    // a1's timeout expires: a1 comes back before a2.
    env.clock.advance(30_000);
    let again = receive(&q, 1);
    assert_eq!(bodies(&again), ["a1"]);
    q.delete(&again[0].receipt_handle).unwrap();
    // The expired first handle of a1 is refused on a FIFO queue.
    assert!(matches!(
        q.delete(&a1.receipt_handle),
        Err(Error::MessageNotInflight(_))
    ));
    let rest = receive(&q, 10);
    let of_group = |g: &str| {
        rest.iter()
            .filter(|m| m.group_id.as_deref() == Some(g))
            .map(|m| m.body.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(rest.len(), 4);
    assert_eq!(of_group("a"), ["a2", "a3"]);
    assert_eq!(of_group("b"), ["b1", "b2"]);
}

#[test]
fn fifo_deduplicates_for_five_minutes() {
    let env = env();
    let q = fifo(&env, "dedup.fifo", false);
    let first = q.send(&fifo_message("x", "g", "id-1")).unwrap();
    env.clock.advance(299_999);
    // Another process sees the same window.
    let dup = env
        .reopen("dedup.fifo")
        .send(&fifo_message("different body", "g", "id-1"))
        .unwrap();
    assert_eq!(dup.message_id, first.message_id);
    assert_eq!(dup.sequence_number, first.sequence_number);
    env.clock.advance(1);
    let later = q.send(&fifo_message("x", "g", "id-1")).unwrap();
    assert_ne!(later.message_id, first.message_id);
    env.clock.advance(60_000);
    assert_eq!(bodies(&receive(&q, 10)), ["x", "x"]);

    let content = fifo(&env, "content.fifo", true);
    let a = content
        .send(&SendMessage {
            body: "same".into(),
            group_id: Some("g".into()),
            ..SendMessage::default()
        })
        .unwrap();
    let b = content
        .send(&SendMessage {
            body: "same".into(),
            group_id: Some("h".into()),
            ..SendMessage::default()
        })
        .unwrap();
    assert_eq!(
        a.message_id, b.message_id,
        "SHA-256 of the body is the dedup id"
    );
    assert_eq!(receive(&content, 10).len(), 1);
}

#[test]
fn fifo_send_rules() {
    let env = env();
    let q = fifo(&env, "rules.fifo", false);
    let cases = [
        SendMessage {
            body: "x".into(),
            dedup_id: Some("d".into()),
            ..SendMessage::default()
        },
        SendMessage {
            body: "x".into(),
            group_id: Some("g".into()),
            ..SendMessage::default()
        },
        SendMessage {
            delay: Some(Duration::from_secs(1)),
            ..fifo_message("x", "g", "d")
        },
        fifo_message("x", "has space", "d"),
    ];
    for case in cases {
        assert!(
            matches!(q.send(&case), Err(Error::InvalidArgument(_))),
            "{case:?}"
        );
    }
    assert_eq!(q.counts().unwrap().visible, 0, "nothing was written");
}

#[test]
fn send_rejects_bad_bodies_and_oversized_messages_writing_nothing() {
    let env = env();
    let q = env.create(
        "small",
        QueueAttributes {
            max_message_bytes: 1024,
            ..QueueAttributes::defaults(false)
        },
    );
    let batch = [SendMessage::new("fine"), SendMessage::new("x".repeat(1025))];
    assert!(matches!(
        q.send_batch(&batch),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        q.send(&SendMessage::new("bad \u{1} char")),
        Err(Error::InvalidArgument(_))
    ));
    q.send(&SendMessage::new("x".repeat(1024))).unwrap();
    assert_eq!(receive(&q, 10).len(), 1, "only the valid send was stored");
}

fn with_dlq(env: &Env, max_receives: u32) -> (Arc<Queue>, Arc<Queue>) {
    let dlq = env.standard("dlq");
    let q = env.create(
        "work",
        QueueAttributes {
            redrive: Some(RedrivePolicy {
                dead_letter_queue: "dlq".into(),
                max_receives,
            }),
            ..QueueAttributes::defaults(false)
        },
    );
    (q, dlq)
}

#[test]
fn dead_letter_queue_receives_after_max_receives_and_redrive_brings_back() {
    let env = env();
    let (q, dlq) = with_dlq(&env, 2);
    let message = SendMessage {
        body: "poison".into(),
        attributes: vec![MessageAttribute {
            name: "n".into(),
            data_type: "Number".into(),
            value: AttributeValue::String("1".into()),
        }],
        ..SendMessage::default()
    };
    let sent = q.send(&message).unwrap();
    for count in 1..=2 {
        let m = receive(&q, 1).remove(0);
        assert_eq!(m.receive_count, count);
        env.clock.advance(30_000);
    }
    // The third receive would pass max receives: the message moves instead.
    assert!(receive(&q, 1).is_empty());
    assert_eq!(q.counts().unwrap().visible, 0);
    let dead = receive(&dlq, 1).remove(0);
    assert_eq!(dead.message_id, sent.message_id);
    assert_eq!(dead.body, "poison");
    assert_eq!(dead.message_attributes, message.attributes);
    assert_eq!(
        dead.sent_timestamp, T0,
        "the original sent timestamp is kept"
    );
    assert_eq!(dead.receive_count, 3, "the receive count carries over");
    env.clock.advance(30_000);

    assert_eq!(dlq.redrive(None).unwrap(), 1);
    assert!(receive(&dlq, 10).is_empty());
    let back = receive(&q, 1).remove(0);
    assert_eq!(back.message_id, sent.message_id);
    assert_eq!(back.receive_count, 1, "a redrive starts the count again");
}

/// As SQS's StartMessageMoveTask, a redrive takes only a queue some queue's redrive policy
/// names as its dead-letter queue, and refuses any other without touching it.
#[test]
fn only_a_dead_letter_queue_is_redriven() {
    let env = env();
    let (q, dlq) = with_dlq(&env, 2);
    let other = env.standard("other");
    assert_eq!(env.data.dead_letter_source_queues("dlq").unwrap(), ["work"]);
    assert!(
        env.data
            .dead_letter_source_queues("other")
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        env.data.dead_letter_source_queues("nosuch"),
        Err(Error::NotFound { .. })
    ));
    other.send(&SendMessage::new("stays")).unwrap();
    let files = |sim: &shoal_engine::storage::SimStorage| {
        sim.files()
            .into_iter()
            .map(|f| (sim.contents(&f).unwrap(), f))
            .collect::<Vec<_>>()
    };
    let before = files(&env.sim);
    for to in [None, Some("work")] {
        let err = other.redrive(to).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("dead-letter queue"), "{err}");
    }
    assert_eq!(files(&env.sim), before, "a refused redrive wrote");
    // The policy goes: the queue it named is no dead-letter queue any more.
    env.data
        .set_queue_attributes("work", &QueueAttributes::defaults(false))
        .unwrap();
    assert!(matches!(dlq.redrive(None), Err(Error::InvalidArgument(_))));
    drop(q);
}

#[test]
fn fifo_keeps_group_order_with_many_held_messages() {
    let env = env();
    let q = fifo(&env, "held.fifo", false);
    let send = |body: &str, group: &str| {
        q.send(&fifo_message(body, group, body)).unwrap();
    };
    send("a0", "a");
    send("b0", "b");
    let first = receive(&q, 10);
    assert_eq!(bodies(&first), ["a0", "b0"]);
    // More held-back messages of busy group b than one receive looks at, then a's.
    for i in 1..=1100 {
        send(&format!("b{i}"), "b");
    }
    send("a1", "a");
    send("a2", "a");
    assert!(receive(&q, 10).is_empty(), "both groups busy");
    assert!(receive(&q, 10).is_empty(), "both groups busy");
    q.delete(&first[0].receipt_handle).unwrap();
    send("a3", "a");
    assert_eq!(bodies(&receive(&q, 10)), ["a1", "a2", "a3"]);
    // Group b, once free, comes back in order from its first held message.
    q.delete(&first[1].receipt_handle).unwrap();
    let b = receive(&q, 10);
    let expected: Vec<String> = (1..=10).map(|i| format!("b{i}")).collect();
    assert_eq!(bodies(&b), expected);
}

/// Bytes of every file under `dir` in the simulated storage.
fn bytes_under(sim: &SimStorage, dir: &str) -> u64 {
    sim.files()
        .iter()
        .filter(|f| f.starts_with(dir))
        .map(|f| sim.contents(f).unwrap().len() as u64)
        .sum()
}

#[test]
fn disk_use_stays_near_the_live_data_as_messages_flow_through() {
    const SEGMENT: u64 = 64 << 10;
    let Env { sim, clock, data } = env_with(shoal_engine::DirOptions {
        queue_segment_bytes: Some(SEGMENT),
        ..shoal_engine::DirOptions::default()
    });
    data.create_queue("flow", &QueueAttributes::defaults(false))
        .unwrap();
    let q = data.queue("flow").unwrap();
    // 20,000 messages of 100 bytes through the queue; every 500th stays in flight, pinning
    // the segment it is in, so only compaction can give those segments back.
    let mut pinned = Vec::new();
    for round in 0..2_000u64 {
        let batch: Vec<SendMessage> = (0..10)
            .map(|i| SendMessage::new(format!("{:0>100}", round * 10 + i)))
            .collect();
        q.send_batch(&batch).unwrap();
        let got = q
            .receive(&Receive {
                max_messages: 10,
                wait: Some(Duration::ZERO),
                visibility_timeout: Some(Duration::from_secs(12 * 3600)),
            })
            .unwrap();
        let mut handles = Vec::new();
        for m in &got {
            if m.body.trim_start_matches('0').parse::<u64>().unwrap_or(0) % 500 == 0 {
                pinned.push(m.body.clone());
            } else {
                handles.push(m.receipt_handle.as_str());
            }
        }
        for r in q.delete_batch(&handles).unwrap() {
            r.unwrap();
        }
    }
    q.compact().unwrap();
    assert_eq!(pinned.len(), 40);
    // A stored message is its body plus about 130 bytes of id, header and framing.
    let live: u64 = pinned.len() as u64 * (100 + 130);
    let messages = bytes_under(&sim, "/data/queues/flow/messages");
    let all = bytes_under(&sim, "/data/queues/flow");
    let written = 20_000 * (100 + 130);
    assert!(
        messages <= 2 * live + SEGMENT,
        "message log holds {messages} bytes for {live} live bytes (of {written} sent)"
    );
    // With the journal (its active segment and what the snapshot does not cover yet).
    assert!(
        all <= 2 * live + 2 * SEGMENT,
        "queue holds {all} bytes for {live} live bytes (of {written} sent)"
    );
    // And the pinned messages are all still there, intact.
    assert_eq!(q.counts().unwrap().in_flight, 40);
    let reopened = data.queue("flow").unwrap();
    clock.advance(12 * 3600 * 1000);
    let mut back = Vec::new();
    loop {
        let got = receive(&reopened, 10);
        if got.is_empty() {
            break;
        }
        back.extend(got.into_iter().map(|m| m.body));
    }
    assert_eq!(back, pinned);
}

#[test]
fn a_long_poll_returns_when_another_handle_sends() {
    let env = env();
    let q = env.standard("jobs");
    let other = env.reopen("jobs");
    let started = std::time::Instant::now();
    let waiter = std::thread::spawn(move || {
        q.receive(&Receive {
            max_messages: 1,
            wait: Some(Duration::from_secs(20)),
            visibility_timeout: None,
        })
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    other.send(&SendMessage::new("wake")).unwrap();
    let got = waiter.join().unwrap();
    assert_eq!(bodies(&got), ["wake"]);
    // Woken by the send, not by the end of the 20 s wait.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn deliveries_carry_their_origin_so_a_resumed_fan_out_skips_what_arrived() {
    let env = env();
    let q = env.standard("sub");
    let dlq_source = "topic:news";
    let mark = q.message_log_end().unwrap();
    let batch: Vec<(SendMessage, u64)> = (10..13)
        .map(|o| (SendMessage::new(format!("publish {o}")), o))
        .collect();
    q.deliver(&batch, dlq_source, 7).unwrap();
    q.send(&SendMessage::new("direct")).unwrap();
    let seen = env
        .reopen("sub")
        .delivered_since(mark, dlq_source, 7)
        .unwrap();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [10, 11, 12]);
    assert!(q.delivered_since(mark, dlq_source, 8).unwrap().is_empty());
    assert!(
        q.delivered_since(mark + 3, dlq_source, 7)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        bodies(&receive(&q, 10)),
        ["publish 10", "publish 11", "publish 12", "direct"]
    );
}

/// Without `exclusive`, threads of a process share one handle per queue too (so they share
/// its fsyncs), but only while it is the queue on disk and its logs take writes.
#[test]
fn a_shared_directory_hands_out_one_handle_while_it_is_current() {
    let Env { sim, clock, data } = env();
    data.create_queue("work", &QueueAttributes::defaults(false))
        .unwrap();
    let work = data.queue("work").unwrap();
    assert!(Arc::ptr_eq(&work, &data.queue("work").unwrap()));
    // Another process (another DataDir on the same files) deletes it and makes it again:
    // this process's next call opens the new queue, not the old handle.
    let other = {
        let storage: SharedStorage = Arc::new(sim.clone());
        DataDir::open_with("/data", storage, clock.clone()).unwrap()
    };
    other.delete_queue("work").unwrap();
    clock.advance(1);
    other
        .create_queue("work", &QueueAttributes::defaults(false))
        .unwrap();
    send_all(&other.queue("work").unwrap(), &["new"]);
    let fresh = data.queue("work").unwrap();
    assert!(!Arc::ptr_eq(&work, &fresh));
    assert_eq!(bodies(&receive(&fresh, 10)), ["new"]);
    // A handle whose log failed an fsync is not handed out again: the next call reopens.
    sim.fail_sync_after(0);
    assert!(fresh.send(&SendMessage::new("lost".to_string())).is_err());
    sim.clear_faults();
    let reopened = data.queue("work").unwrap();
    assert!(!Arc::ptr_eq(&fresh, &reopened));
    send_all(&reopened, &["after"]);
    // Deleted through this directory: gone, and not served from the cache.
    drop((work, fresh, reopened));
    data.delete_queue("work").unwrap();
    assert!(matches!(data.queue("work"), Err(Error::NotFound { .. })));
}

#[test]
fn an_exclusive_directory_shares_one_handle_per_queue_and_locks_out_others() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(T0);
    let exclusive = shoal_engine::DirOptions {
        exclusive: true,
        ..shoal_engine::DirOptions::default()
    };
    let open = |options: shoal_engine::DirOptions| {
        let storage: SharedStorage = Arc::new(sim.clone());
        DataDir::open_with_options("/data", storage, clock.clone(), options).unwrap()
    };
    let data = open(exclusive.clone());
    data.create_queue("dlq", &QueueAttributes::defaults(false))
        .unwrap();
    data.create_queue(
        "work",
        &QueueAttributes {
            redrive: Some(RedrivePolicy {
                dead_letter_queue: "dlq".into(),
                max_receives: 1,
            }),
            ..QueueAttributes::defaults(false)
        },
    )
    .unwrap();
    let work = data.queue("work").unwrap();
    let dlq = data.queue("dlq").unwrap();
    assert!(Arc::ptr_eq(&work, &data.queue("work").unwrap()));
    // Another owner of the directory is refused while these are open.
    assert!(matches!(
        open(exclusive).queue("work"),
        Err(Error::Locked { .. })
    ));
    // Everything works through the shared handles, dead-letter moves included.
    send_all(&work, &["a", "b"]);
    let got = receive(&work, 10);
    assert_eq!(bodies(&got), ["a", "b"]);
    work.delete(&got[0].receipt_handle).unwrap();
    clock.advance(30_000);
    assert!(
        receive(&work, 10).is_empty(),
        "b moved to the dead-letter queue"
    );
    assert_eq!(bodies(&receive(&dlq, 10)), ["b"]);
    // Deleted and made again: a fresh handle, not the old one.
    drop((work, dlq));
    data.delete_queue("work").unwrap();
    data.create_queue("work", &QueueAttributes::defaults(false))
        .unwrap();
    assert!(receive(&data.queue("work").unwrap(), 10).is_empty());
}

#[test]
fn expired_messages_leave_the_counts_and_the_disk_without_a_receive() {
    const SEGMENT: u64 = 4 << 10;
    let Env { sim, clock, data } = env_with(shoal_engine::DirOptions {
        queue_segment_bytes: Some(SEGMENT),
        ..shoal_engine::DirOptions::default()
    });
    data.create_queue(
        "short",
        &QueueAttributes {
            retention: Duration::from_secs(60),
            ..QueueAttributes::defaults(false)
        },
    )
    .unwrap();
    let q = data.queue("short").unwrap();
    for i in 0..100 {
        q.send(&SendMessage::new(format!("{i:0>100}"))).unwrap();
    }
    clock.advance(30_000);
    q.send(&SendMessage::new("young")).unwrap();
    assert_eq!(q.counts().unwrap().visible, 101);
    let before = bytes_under(&sim, "/data/queues/short/messages");
    clock.advance(30_000);
    assert_eq!(q.counts().unwrap().visible, 1, "the first 100 expired");
    // The next opener gives their segments back without receiving anything.
    drop(q);
    let q = data.queue("short").unwrap();
    let after = bytes_under(&sim, "/data/queues/short/messages");
    assert!(after * 3 < before, "{after} bytes left of {before}");
    assert_eq!(bodies(&receive(&q, 10)), ["young"]);
}

/// In an exclusive directory (a server's), a queue stopped by an fsync failure is opened
/// again once nobody holds the stopped handle: one transient I/O error does not leave the
/// queue refusing writes until the process restarts.
#[test]
fn an_exclusive_directory_opens_a_queue_again_after_an_fsync_failure() {
    let sim = SimStorage::new();
    let storage: SharedStorage = Arc::new(sim.clone());
    let options = shoal_engine::DirOptions {
        exclusive: true,
        ..shoal_engine::DirOptions::default()
    };
    let data = DataDir::open_with_options("/data", storage, ManualClock::new(T0), options).unwrap();
    data.create_queue("q", &QueueAttributes::defaults(false))
        .unwrap();
    let q = data.queue("q").unwrap();
    sim.fail_sync_after(0);
    q.send(&SendMessage::new("lost")).unwrap_err();
    // While a request still holds the stopped handle, that is what the queue is.
    let held = data.queue("q").unwrap();
    assert!(Arc::ptr_eq(&q, &held));
    held.send(&SendMessage::new("refused")).unwrap_err();
    drop((q, held));
    let q = data.queue("q").unwrap();
    q.send(&SendMessage::new("after")).unwrap();
    let got = q
        .receive(&Receive {
            max_messages: 10,
            ..Receive::default()
        })
        .unwrap();
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    // The unacknowledged send was written before its fsync failed: recovery may keep it.
    assert_eq!(bodies.last(), Some(&"after"));
    assert!(!bodies.contains(&"refused"));
}

/// A handle kept while another process deletes its queue (and makes a new one of that name)
/// refuses to work, instead of acknowledging sends into deleted files or touching the new
/// queue's files.
#[test]
fn a_handle_of_a_deleted_queue_fails_with_not_found() {
    let env = env();
    let q = env.standard("jobs");
    send_all(&q, &["a"]);
    assert_eq!(bodies(&receive(&q, 1)), ["a"]);
    let other = || {
        let storage: SharedStorage = Arc::new(env.sim.clone());
        DataDir::open_with("/data", storage, env.clock.clone()).unwrap()
    };
    other().delete_queue("jobs").unwrap();
    not_found(q.send(&SendMessage::new("lost")).map(drop));
    not_found(q.receive(&Receive::default()).map(drop));

    env.clock.advance(1);
    let again = other();
    again
        .create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    send_all(&again.queue("jobs").unwrap(), &["b"]);
    not_found(q.send(&SendMessage::new("lost")).map(drop));
    not_found(q.purge());
    assert_eq!(bodies(&receive(&again.queue("jobs").unwrap(), 10)), ["b"]);
    // The directory hands out a handle of the new queue in place of the stale one.
    let fresh = env.data.queue("jobs").unwrap();
    assert_eq!(fresh.counts().unwrap().in_flight, 1);
}

/// The same on the real filesystem, where the deleted queue's lock file is a file with no
/// name left.
#[test]
fn a_handle_of_a_deleted_queue_fails_on_the_real_filesystem_too() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    data.create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let q = data.queue("jobs").unwrap();
    send_all(&q, &["a"]);
    DataDir::open(tmp.path())
        .unwrap()
        .delete_queue("jobs")
        .unwrap();
    let sent = q.send(&SendMessage::new("lost"));
    assert!(
        matches!(sent, Err(Error::NotFound { .. })),
        "not NotFound: {sent:?}"
    );
}

/// A queue owned by another process (`DirOptions::exclusive`, as a server opens its
/// directory) is not deleted from under it: the delete waits a moment for the owner's locks,
/// then fails with `Locked` and changes nothing. Once the owner lets go, it goes through.
#[test]
fn a_queue_owned_by_another_process_is_not_deleted_from_under_it() {
    let env = env();
    let owner = {
        let storage: SharedStorage = Arc::new(env.sim.clone());
        let options = shoal_engine::DirOptions {
            exclusive: true,
            ..shoal_engine::DirOptions::default()
        };
        DataDir::open_with_options("/data", storage, env.clock.clone(), options).unwrap()
    };
    env.data
        .create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let q = owner.queue("jobs").unwrap();
    send_all(&q, &["a"]);

    let refused = env.data.delete_queue("jobs");
    assert!(
        matches!(&refused, Err(Error::Locked { .. })),
        "not Locked: {refused:?}"
    );
    assert!(
        env.data.queue_info("jobs").is_ok(),
        "the queue is still there"
    );
    send_all(&q, &["b"]);
    assert_eq!(bodies(&receive(&q, 10)), ["a", "b"]);

    drop(q);
    env.data.delete_queue("jobs").unwrap();
    assert!(matches!(
        owner.queue("jobs"),
        Err(Error::NotFound { kind: "queue", .. })
    ));
}

/// A process that owns its directory and deletes one of its queues: handles of it kept by
/// its threads fail with `NotFound` from then on, also once a queue of that name is made
/// again, and dropping them touches nothing of the new queue.
#[test]
fn an_exclusive_directory_stops_its_handles_of_a_queue_it_deletes() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(T0);
    let storage: SharedStorage = Arc::new(sim.clone());
    let options = shoal_engine::DirOptions {
        exclusive: true,
        ..shoal_engine::DirOptions::default()
    };
    let data = DataDir::open_with_options("/data", storage, clock.clone(), options).unwrap();
    data.create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let old = data.queue("jobs").unwrap();
    send_all(&old, &["a", "b"]);
    assert_eq!(bodies(&receive(&old, 1)), ["a"]);

    data.delete_queue("jobs").unwrap();
    not_found(old.send(&SendMessage::new("lost")).map(drop));
    not_found(old.receive(&Receive::default()).map(drop));

    clock.advance(1);
    data.create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let new = data.queue("jobs").unwrap();
    assert!(!Arc::ptr_eq(&old, &new));
    send_all(&new, &["c"]);
    not_found(old.purge());
    let syncs = common::file_syncs(&sim);
    drop(old);
    assert_eq!(
        common::file_syncs(&sim),
        syncs,
        "the old handle synced nothing"
    );
    assert_eq!(bodies(&receive(&new, 10)), ["c"]);
}

/// The same refusal on the real filesystem, where the owner's locks are `flock`s.
#[test]
fn a_queue_owned_by_another_process_is_not_deleted_on_the_real_filesystem_either() {
    let tmp = tempfile::tempdir().unwrap();
    let owner = DataDir::open_with_options(
        tmp.path(),
        Arc::new(shoal_engine::storage::FsStorage::new()),
        Arc::new(shoal_engine::clock::SystemClock),
        shoal_engine::DirOptions {
            exclusive: true,
            ..shoal_engine::DirOptions::default()
        },
    )
    .unwrap();
    owner
        .create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let q = owner.queue("jobs").unwrap();
    let other = DataDir::open(tmp.path()).unwrap();
    let refused = other.delete_queue("jobs");
    assert!(
        matches!(&refused, Err(Error::Locked { .. })),
        "not Locked: {refused:?}"
    );
    send_all(&q, &["a"]);
    drop(q);
    other.delete_queue("jobs").unwrap();
}

/// A process per operation, as the CLI runs, on a `never` queue: opening the queue fsyncs
/// nothing (recovery leaves the logs' unsynced tails unsynced, as the mode asks) and neither
/// do the operations, however far the journal is past its snapshot. Giving space back, which
/// syncs the journal first, comes once per so many events, from whichever handle writes the
/// one that crosses the mark, not from every new handle once the journal is that far.
#[test]
fn a_handle_per_operation_syncs_nothing_on_a_never_queue() {
    let env = env();
    env.create(
        "cli",
        QueueAttributes {
            durability: shoal_engine::durability::DurabilityMode::Never,
            ..QueueAttributes::defaults(false)
        },
    );
    let cycle = |i: usize| {
        env.reopen("cli")
            .send(&SendMessage::new(format!("m{i}")))
            .unwrap();
        let q = env.reopen("cli");
        let got = receive(&q, 1);
        assert_eq!(bodies(&got), [format!("m{i}").as_str()]);
        q.delete(&got[0].receipt_handle).unwrap();
    };
    // 1,200 journal events (a receive and a delete per cycle): past the first mark for
    // giving space back (1,024), short of the first snapshot (4,096).
    for i in 0..600 {
        cycle(i);
    }
    let before = common::file_syncs(&env.sim);
    for i in 600..620 {
        cycle(i);
    }
    assert_eq!(common::file_syncs(&env.sim), before);
}

/// Handles that each make one operation still give disk space back, without `compact`.
#[test]
fn a_handle_per_operation_still_gives_space_back() {
    const SEGMENT: u64 = 4 << 10;
    let options = shoal_engine::DirOptions {
        queue_segment_bytes: Some(SEGMENT),
        ..shoal_engine::DirOptions::default()
    };
    let env = env_with(options.clone());
    env.standard("cli");
    let open = || {
        let storage: SharedStorage = Arc::new(env.sim.clone());
        DataDir::open_with_options("/data", storage, env.clock.clone(), options.clone())
            .unwrap()
            .queue("cli")
            .unwrap()
    };
    // 1,000 messages of 100 bytes, about 230 KB stored: more than 50 segments.
    for i in 0..1_000 {
        open()
            .send(&SendMessage::new(format!("{i:0>100}")))
            .unwrap();
        let q = open();
        let got = receive(&q, 1);
        q.delete(&got[0].receipt_handle).unwrap();
    }
    let messages = bytes_under(&env.sim, "/data/queues/cli/messages");
    assert!(
        messages <= 16 * SEGMENT,
        "the message log holds {messages} bytes with every message deleted"
    );
}
