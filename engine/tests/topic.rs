//! Topics through the engine API, with an injected clock and the simulated storage: fan-out
//! to queues through filter policies, exactly-once delivery across handles (processes),
//! FIFO order and deduplication, raw delivery, file and command subscribers, dead letters.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{Env, env, subscribe_queue};
use std::sync::Arc;
use std::time::Duration;

use shoal_engine::queue::{AttributeValue, MessageAttribute, QueueAttributes, Receive};
use shoal_engine::storage::SharedStorage;
use shoal_engine::topic::{
    FilterScope, Protocol, PublishMessage, RetryPolicy, Subscribe, TopicAttributes,
};
use shoal_engine::{DataDir, Error};

impl Env {
    /// A second, independent handle on the same directory, as another process has.
    fn other(&self) -> DataDir {
        let storage: SharedStorage = Arc::new(self.sim.clone());
        DataDir::open_with("/data", storage, self.clock.clone()).unwrap()
    }
}

fn attr(name: &str, data_type: &str, value: &str) -> MessageAttribute {
    MessageAttribute {
        name: name.into(),
        data_type: data_type.into(),
        value: AttributeValue::String(value.into()),
    }
}

/// Every body in the queue (received and deleted), in receive order.
fn drain(data: &DataDir, queue: &str) -> Vec<String> {
    let q = data.queue(queue).unwrap();
    let mut out = Vec::new();
    loop {
        let got = q
            .receive(&Receive {
                max_messages: 10,
                wait: Some(Duration::ZERO),
                visibility_timeout: Some(Duration::from_secs(600)),
            })
            .unwrap();
        if got.is_empty() {
            return out;
        }
        for m in got {
            q.delete(&m.receipt_handle).unwrap();
            out.push(m.body);
        }
    }
}

#[test]
fn fan_out_to_three_queues_through_filter_policies() {
    let env = env();
    let data = &env.data;
    for q in ["all", "big-orders", "eu"] {
        data.create_queue(q, &QueueAttributes::defaults(false))
            .unwrap();
    }
    data.create_topic("orders", &TopicAttributes::defaults(false))
        .unwrap();
    data.subscribe("orders", &subscribe_queue("all", None, true))
        .unwrap();
    data.subscribe(
        "orders",
        &subscribe_queue(
            "big-orders",
            Some(r#"{"amount": [{"numeric": [">=", 100]}], "kind": [{"anything-but": "test"}]}"#),
            true,
        ),
    )
    .unwrap();
    data.subscribe(
        "eu",
        &Subscribe {
            filter_scope: FilterScope::Body,
            ..subscribe_queue("eu", Some(r#"{"region": {"country": ["fr", "de"]}}"#), true)
        },
    )
    .unwrap_err();
    let eu = data
        .subscribe(
            "orders",
            &Subscribe {
                filter_scope: FilterScope::Body,
                ..subscribe_queue("eu", Some(r#"{"region": {"country": ["fr", "de"]}}"#), true)
            },
        )
        .unwrap();
    assert!(
        eu.arn()
            .starts_with("arn:aws:sns:local:000000000000:orders:")
    );

    let topic = data.topic("orders").unwrap();
    // (body, amount, kind) and which of (all, big-orders, eu) get it.
    let cases = [
        (
            r#"{"n":1,"region":{"country":"fr"}}"#,
            "150",
            "real",
            [true, true, true],
        ),
        (
            r#"{"n":2,"region":{"country":"us"}}"#,
            "150",
            "real",
            [true, true, false],
        ),
        (
            r#"{"n":3,"region":{"country":"de"}}"#,
            "99.5",
            "real",
            [true, false, true],
        ),
        (
            r#"{"n":4,"region":{"country":"de"}}"#,
            "500",
            "test",
            [true, false, true],
        ),
        (r#"{"n":5}"#, "100", "real", [true, true, false]),
        ("not json", "1", "real", [true, false, false]),
    ];
    for (body, amount, kind, _) in &cases {
        let published = topic
            .publish(&PublishMessage {
                body: (*body).to_string(),
                attributes: vec![
                    attr("amount", "Number", amount),
                    attr("kind", "String", kind),
                ],
                ..PublishMessage::default()
            })
            .unwrap();
        assert!(published.warnings.is_empty(), "{:?}", published.warnings);
        assert_eq!(published.sequence_number, None);
    }
    for (i, queue) in ["all", "big-orders", "eu"].iter().enumerate() {
        let want: Vec<String> = cases
            .iter()
            .filter(|c| c.3[i])
            .map(|c| c.0.to_string())
            .collect();
        assert_eq!(drain(data, queue), want, "queue {queue}");
    }
    // Raw delivery carried the attributes along.
    topic
        .publish(&PublishMessage {
            body: "x".into(),
            attributes: vec![attr("amount", "Number", "7")],
            ..PublishMessage::default()
        })
        .unwrap();
    let got = data
        .queue("all")
        .unwrap()
        .receive(&Receive {
            max_messages: 1,
            wait: Some(Duration::ZERO),
            visibility_timeout: None,
        })
        .unwrap();
    assert_eq!(got[0].message_attributes, [attr("amount", "Number", "7")]);
}

#[test]
fn the_envelope_is_delivered_unless_raw() {
    let env = env();
    let data = &env.data;
    data.create_queue("q", &QueueAttributes::defaults(false))
        .unwrap();
    data.create_topic("t", &TopicAttributes::defaults(false))
        .unwrap();
    data.subscribe("t", &subscribe_queue("q", None, false))
        .unwrap();
    let published = data
        .topic("t")
        .unwrap()
        .publish(&PublishMessage {
            body: "hello".into(),
            subject: Some("greeting".into()),
            attributes: vec![attr("tags", "String.Array", r#"["a","b"]"#)],
            ..PublishMessage::default()
        })
        .unwrap();
    let body = drain(data, "q").pop().unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Type"], "Notification");
    assert_eq!(v["MessageId"], published.message_id.as_str());
    assert_eq!(v["TopicArn"], "arn:aws:sns:local:000000000000:t");
    assert_eq!(v["Subject"], "greeting");
    assert_eq!(v["Message"], "hello");
    assert_eq!(v["Timestamp"], "2023-11-14T22:13:20.000Z");
    assert_eq!(v["MessageAttributes"]["tags"]["Type"], "String.Array");
    assert_eq!(v["MessageAttributes"]["tags"]["Value"], r#"["a","b"]"#);
}

#[test]
fn a_fan_out_cut_short_is_finished_by_another_process_without_duplicates() {
    let env = env();
    let data = &env.data;
    for q in ["a", "b"] {
        data.create_queue(q, &QueueAttributes::defaults(false))
            .unwrap();
    }
    data.create_topic("t", &TopicAttributes::defaults(false))
        .unwrap();
    data.subscribe("t", &subscribe_queue("a", None, true))
        .unwrap();
    data.subscribe("t", &subscribe_queue("b", None, true))
        .unwrap();
    // A process publishes 600 messages; its cursors are written only now and then, and it
    // dies (the handle is forgotten, so not even its drop writes them).
    let topic = data.topic("t").unwrap();
    for i in 0..600 {
        topic
            .publish(&PublishMessage::new(format!("m{i}")))
            .unwrap();
    }
    std::mem::forget(topic);
    // Another process delivers what is pending: nothing, though the cursors lag.
    let third = env.other().topic("t").unwrap();
    for report in third.deliver().unwrap() {
        assert_eq!(report.delivered, 0, "{report:?}");
        assert_eq!(report.error, None);
    }
    third.publish(&PublishMessage::new("last")).unwrap();
    // Dropping a handle writes the cursors it advanced.
    drop(third);
    for q in ["a", "b"] {
        let got = drain(data, q);
        let mut want: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
        want.push("last".into());
        assert_eq!(got, want, "queue {q}: each message exactly once, in order");
    }
    // Subscription status: nothing pending, nothing failed.
    for status in data.subscriptions("t").unwrap() {
        assert_eq!((status.pending, status.failed), (0, 0));
    }
}

#[test]
fn fifo_topic_to_fifo_queues_keeps_group_order_and_drops_duplicates() {
    let env = env();
    let data = &env.data;
    for q in ["a.fifo", "b.fifo"] {
        data.create_queue(q, &QueueAttributes::defaults(true))
            .unwrap();
    }
    data.create_queue("std", &QueueAttributes::defaults(false))
        .unwrap();
    data.create_topic(
        "t.fifo",
        &TopicAttributes {
            content_based_deduplication: true,
            ..TopicAttributes::defaults(true)
        },
    )
    .unwrap();
    // A FIFO queue needs a FIFO topic.
    data.create_topic("plain", &TopicAttributes::defaults(false))
        .unwrap();
    let err = data
        .subscribe("plain", &subscribe_queue("a.fifo", None, true))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    for q in ["a.fifo", "b.fifo"] {
        data.subscribe("t.fifo", &subscribe_queue(q, None, true))
            .unwrap();
    }
    let topic = data.topic("t.fifo").unwrap();
    let err = topic.publish(&PublishMessage::new("no group")).unwrap_err();
    assert!(err.to_string().contains("group id"), "{err}");
    let mut first_ids = Vec::new();
    for i in 0..30 {
        let p = topic
            .publish(&PublishMessage {
                body: format!("g{}-{i}", i % 3),
                group_id: Some(format!("g{}", i % 3)),
                ..PublishMessage::default()
            })
            .unwrap();
        assert_eq!(p.sequence_number, Some(format!("{:020}", p.offset)));
        first_ids.push(p.message_id);
    }
    // Duplicates (same body: content-based) within 5 minutes: the original's id, no copy.
    env.clock.advance(299_000);
    let dup = topic
        .publish(&PublishMessage {
            body: "g0-0".into(),
            group_id: Some("g0".into()),
            ..PublishMessage::default()
        })
        .unwrap();
    assert_eq!(dup.message_id, first_ids[0]);
    assert_eq!(dup.offset, 0);
    // Another process sees the same window.
    let dup2 = env
        .other()
        .topic("t.fifo")
        .unwrap()
        .publish(&PublishMessage {
            body: "g1-1".into(),
            group_id: Some("g1".into()),
            dedup_id: None,
            ..PublishMessage::default()
        })
        .unwrap();
    assert_eq!(dup2.message_id, first_ids[1]);
    // After the window, the same body is a new message.
    env.clock.advance(2_000);
    let again = topic
        .publish(&PublishMessage {
            body: "g0-0".into(),
            group_id: Some("g0".into()),
            ..PublishMessage::default()
        })
        .unwrap();
    assert_ne!(again.message_id, first_ids[0]);
    for q in ["a.fifo", "b.fifo"] {
        let got = drain(data, q);
        assert_eq!(got.len(), 31, "{q}: {got:?}");
        for g in 0..3 {
            let in_group: Vec<&String> = got
                .iter()
                .filter(|b| b.starts_with(&format!("g{g}-")))
                .collect();
            let mut want: Vec<String> = (0..30)
                .filter(|i| i % 3 == g)
                .map(|i| format!("g{g}-{i}"))
                .collect();
            if g == 0 {
                want.push("g0-0".into());
            }
            assert_eq!(in_group, want.iter().collect::<Vec<_>>(), "{q} group {g}");
        }
    }
}

#[test]
fn rejected_subscriptions_and_publishes_change_nothing() {
    let env = env();
    let data = &env.data;
    data.create_queue("q", &QueueAttributes::defaults(false))
        .unwrap();
    data.create_topic("t", &TopicAttributes::defaults(false))
        .unwrap();
    for bad in [
        r#"{"a": "x"}"#,
        r#"{"a": [{"numeric": [">", "x"]}]}"#,
        "nope",
    ] {
        let err = data
            .subscribe("t", &subscribe_queue("q", Some(bad), false))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    let err = data
        .subscribe("t", &subscribe_queue("missing", None, false))
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = data
        .subscribe("nope", &subscribe_queue("q", None, false))
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(data.subscriptions("t").unwrap().is_empty());
    let topic = data.topic("t").unwrap();
    for bad in [
        PublishMessage::new(""),
        PublishMessage::new("x".repeat(256 * 1024 + 1)),
        PublishMessage {
            body: "x".into(),
            dedup_id: Some("d".into()),
            ..PublishMessage::default()
        },
        PublishMessage {
            body: "x".into(),
            subject: Some("two\nlines".into()),
            ..PublishMessage::default()
        },
        PublishMessage {
            body: "x".into(),
            attributes: vec![attr("a", "String.Array", "not an array")],
            ..PublishMessage::default()
        },
        PublishMessage {
            body: "x".into(),
            attributes: (0..11)
                .map(|i| attr(&format!("a{i}"), "String", "v"))
                .collect(),
            ..PublishMessage::default()
        },
    ] {
        let err = topic.publish(&bad).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    assert_eq!(topic.end_offset().unwrap(), 0);
    // Same subscription twice: the same one; other settings: a conflict; unsubscribe.
    let s = data
        .subscribe("t", &subscribe_queue("q", None, false))
        .unwrap();
    assert_eq!(
        data.subscribe("t", &subscribe_queue("q", None, false))
            .unwrap(),
        s
    );
    let err = data
        .subscribe("t", &subscribe_queue("q", None, true))
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert_eq!(data.unsubscribe(&s.arn()).unwrap().id, s.id);
    assert!(matches!(
        data.unsubscribe(&s.id).unwrap_err(),
        Error::NotFound { .. }
    ));
    // Topics: idempotent create, conflict on other attributes, delete.
    data.create_topic("t", &TopicAttributes::defaults(false))
        .unwrap();
    assert!(matches!(
        data.create_topic(
            "t",
            &TopicAttributes {
                durability: shoal_engine::durability::DurabilityMode::Never,
                ..TopicAttributes::defaults(false)
            }
        )
        .unwrap_err(),
        Error::AlreadyExists { .. }
    ));
    assert!(
        data.create_topic("x.fifo", &TopicAttributes::defaults(false))
            .is_err()
    );
    assert_eq!(data.list_topics().unwrap(), ["t"]);
    data.delete_topic("t").unwrap();
    assert!(data.list_topics().unwrap().is_empty());
    assert!(matches!(
        data.topic("t").unwrap_err(),
        Error::NotFound { .. }
    ));
}

#[test]
fn file_and_command_subscribers_and_dead_letters() {
    let env = env();
    let data = &env.data;
    let tmp = tempfile::tempdir().unwrap();
    let outbox = tmp.path().join("outbox.jsonl");
    let ran = tmp.path().join("ran.txt");
    data.create_queue("dlq", &QueueAttributes::defaults(false))
        .unwrap();
    data.create_topic("t", &TopicAttributes::defaults(false))
        .unwrap();
    let sub = |protocol, endpoint: &str, raw, dlq: Option<&str>| Subscribe {
        protocol,
        endpoint: endpoint.into(),
        raw,
        filter_policy: None,
        filter_scope: FilterScope::Attributes,
        dead_letter_queue: dlq.map(str::to_string),
    };
    data.subscribe(
        "t",
        &sub(Protocol::File, outbox.to_str().unwrap(), false, None),
    )
    .unwrap();
    data.subscribe(
        "t",
        &sub(
            Protocol::Exec,
            &format!("cat >> '{}'; echo >> '{}'", ran.display(), ran.display()),
            true,
            None,
        ),
    )
    .unwrap();
    // A command that always fails: after its attempts, to the dead-letter queue.
    let failing = data
        .subscribe("t", &sub(Protocol::Exec, "exit 3", true, Some("dlq")))
        .unwrap();
    // And one without a dead-letter queue: counted as failed.
    data.subscribe("t", &sub(Protocol::Exec, "false", true, None))
        .unwrap();
    let topic = data.topic("t").unwrap().with_retry(RetryPolicy {
        attempts: 3,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    });
    let published = topic.publish(&PublishMessage::new("one")).unwrap();
    // The failing commands left warnings; the message is pending for them.
    assert_eq!(published.warnings.len(), 2, "{:?}", published.warnings);
    topic.publish(&PublishMessage::new("two")).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&outbox)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["Message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["one", "two"]);
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "one\ntwo\n");
    // Publishes do not retry before the backoff's time; a drain retries now.
    let reports = topic.deliver().unwrap();
    let by_arn = |arn: &str| reports.iter().find(|r| r.subscription_arn == arn).unwrap();
    assert_eq!(by_arn(&failing.arn()).dead_lettered, 2);
    assert_eq!(drain(data, "dlq"), ["one", "two"]);
    let statuses = data.subscriptions("t").unwrap();
    let failed: Vec<(u64, u64, u64)> = statuses
        .iter()
        .map(|s| (s.pending, s.failed, s.dead_lettered))
        .collect();
    assert_eq!(failed, [(0, 0, 0), (0, 0, 0), (0, 0, 2), (0, 2, 0)]);
    assert!(
        statuses[3]
            .last_failure
            .as_deref()
            .unwrap()
            .contains("3 attempts failed"),
        "{:?}",
        statuses[3].last_failure
    );
}

#[test]
fn delivered_segments_are_removed_and_check_reads_every_topic_file() {
    let env = env();
    let data = &env.data;
    data.create_queue("q", &QueueAttributes::defaults(false))
        .unwrap();
    data.create_topic("t", &TopicAttributes::defaults(false))
        .unwrap();
    data.subscribe("t", &subscribe_queue("q", Some(r#"{"k": ["v"]}"#), false))
        .unwrap();
    let topic = data.topic("t").unwrap();
    for i in 0..10 {
        topic
            .publish(&PublishMessage::new(format!("m{i}")))
            .unwrap();
    }
    let report = data.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // Two hours on, the next publish starts a new segment (segments roll by age); once the
    // cursor is past the old one, it goes.
    env.clock.advance(2 * 3600 * 1000);
    topic.publish(&PublishMessage::new("later")).unwrap();
    topic.deliver().unwrap();
    assert!(matches!(
        topic.read(0, 10).unwrap_err(),
        Error::OffsetTrimmed { .. }
    ));
    assert_eq!(topic.read(10, 10).unwrap()[0].body, "later");
    let report = data.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // A flipped bit in a cursor and in the topic log are both found.
    let cursor = env
        .sim
        .files()
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "cursor"))
        .unwrap();
    env.sim.corrupt(&cursor, 24, 0x01).unwrap();
    let segment = env
        .sim
        .files()
        .into_iter()
        .filter(|f| {
            f.starts_with("/data/topics/t/messages") && f.extension().is_some_and(|e| e == "log")
        })
        .max()
        .unwrap();
    // Inside the last message, not in the zeros written ahead of the data (a prefill).
    let bytes = env.sim.contents(&segment).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    env.sim.corrupt(&segment, end - 3, 0x10).unwrap();
    let report = data.check().unwrap();
    let files: Vec<&std::path::Path> = report.problems.iter().map(|p| p.file.as_path()).collect();
    assert!(files.contains(&cursor.as_path()), "{:?}", report.problems);
    assert!(files.contains(&segment.as_path()), "{:?}", report.problems);
}

#[test]
fn a_file_that_cannot_be_written_dead_letters_only_matching_messages() {
    let env = env();
    let data = &env.data;
    data.create_queue("dlq", &QueueAttributes::defaults(false))
        .unwrap();
    data.create_topic("t", &TopicAttributes::defaults(false))
        .unwrap();
    data.subscribe(
        "t",
        &Subscribe {
            protocol: Protocol::File,
            endpoint: "/nonexistent-dir/outbox.jsonl".into(),
            raw: true,
            filter_policy: Some(r#"{"keep": ["yes"]}"#.into()),
            filter_scope: FilterScope::Attributes,
            dead_letter_queue: Some("dlq".into()),
        },
    )
    .unwrap();
    let topic = data.topic("t").unwrap().with_retry(RetryPolicy {
        attempts: 2,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
    });
    for (body, keep) in [
        ("skip", "no"),
        ("a", "yes"),
        ("skip too", "no"),
        ("b", "yes"),
    ] {
        topic
            .publish(&PublishMessage {
                body: body.into(),
                attributes: vec![attr("keep", "String", keep)],
                ..PublishMessage::default()
            })
            .unwrap();
    }
    topic.deliver().unwrap();
    assert_eq!(drain(data, "dlq"), ["a", "b"]);
    let status = &data.subscriptions("t").unwrap()[0];
    assert_eq!((status.pending, status.dead_lettered), (0, 2));
}

/// A topic handle keeps the queue handles it delivers to. After an fsync failure stops one
/// (its log refuses writes until reopened), the next delivery opens the queue again instead
/// of failing on the stopped handle for as long as the topic is open.
#[test]
fn a_delivery_after_an_fsync_failure_opens_the_queue_again() {
    let env = env();
    let data = &env.data;
    data.create_queue("q", &QueueAttributes::defaults(false))
        .unwrap();
    data.create_topic("t", &TopicAttributes::defaults(false))
        .unwrap();
    data.subscribe("t", &subscribe_queue("q", None, true))
        .unwrap();
    let topic = data.topic("t").unwrap();
    // The publish's own fsync succeeds, the delivery's (to the queue) fails.
    env.sim.fail_sync_after(1);
    let first = topic.publish(&PublishMessage::new("one")).unwrap();
    assert_eq!(first.warnings.len(), 1, "{:?}", first.warnings);
    assert!(first.warnings[0].contains("fsync"), "{:?}", first.warnings);
    let second = topic.publish(&PublishMessage::new("two")).unwrap();
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    let q = data.queue("q").unwrap();
    let got = q
        .receive(&Receive {
            max_messages: 10,
            wait: Some(Duration::ZERO),
            visibility_timeout: None,
        })
        .unwrap();
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["one", "two"]);
}
