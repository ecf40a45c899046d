//! Verifying every topic's files for `shoal check`: `topic.meta`, `subscriptions.meta`, every
//! cursor, the topic log (frames, indexes, head) and every record decoded as a published
//! message. Changes nothing.

use std::path::Path;

use super::handle::{CURSORS_DIR, check_cursor, decode_record};
use super::{
    META_FILE, SUBSCRIPTIONS_FILE, SUBSCRIPTIONS_MAGIC, SubscriptionsMeta, TOPIC_MAGIC, TopicMeta,
    topics_dir,
};
use crate::datadir::DirInner;
use crate::error::{Error, Result};
use crate::log::{CheckReport, LogReader, Problem, ReadLimit};
use crate::meta;
use crate::names::validate_topic_name;

pub(crate) fn check_topics(dir: &DirInner, report: &mut CheckReport) -> Result<()> {
    let topics = topics_dir(dir);
    let names = match dir.storage.list_dir(&topics) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", &topics, e)),
    };
    let mut names: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| validate_topic_name(n).is_ok())
        .collect();
    names.sort();
    for name in names {
        check_topic(dir, &topics.join(&name), report)?;
    }
    Ok(())
}

fn check_meta<T: serde::de::DeserializeOwned>(
    dir: &DirInner,
    path: &Path,
    magic: [u8; 8],
    report: &mut CheckReport,
) {
    if !dir.storage.exists(path) {
        return;
    }
    report.files += 1;
    if let Err(e) = meta::read::<T>(&*dir.storage, path, magic) {
        report.problems.push(Problem::from_error(&e, path));
    }
}

fn check_topic(dir: &DirInner, path: &Path, report: &mut CheckReport) -> Result<()> {
    let meta_path = path.join(META_FILE);
    if !dir.storage.exists(&meta_path) {
        // An interrupted create or delete: not a topic.
        return Ok(());
    }
    check_meta::<TopicMeta>(dir, &meta_path, TOPIC_MAGIC, report);
    check_meta::<SubscriptionsMeta>(
        dir,
        &path.join(SUBSCRIPTIONS_FILE),
        SUBSCRIPTIONS_MAGIC,
        report,
    );
    let cursors = path.join(CURSORS_DIR);
    if let Ok(names) = dir.storage.list_dir(&cursors) {
        let mut names: Vec<String> = names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect();
        names.sort();
        for name in names.iter().filter(|n| n.ends_with(".cursor")) {
            let cursor = cursors.join(name);
            report.files += 1;
            if let Err(e) = check_cursor(&*dir.storage, &cursor) {
                report.problems.push(Problem::from_error(&e, &cursor));
            }
        }
    }
    let messages = path.join("messages");
    if !dir
        .storage
        .exists(&messages.join(crate::log::segment::HEAD_FILE))
    {
        report.problems.push(Problem {
            file: messages,
            offset: 0,
            kind: "the message log of the topic is missing".into(),
        });
        return Ok(());
    }
    let problems_before = report.problems.len();
    crate::log::check(&*dir.storage, &messages, report)?;
    if report.problems.len() > problems_before {
        // The frames are damaged; the log check named where.
        return Ok(());
    }
    let reader = LogReader::open(std::sync::Arc::clone(&dir.storage), &messages)?;
    let mut from = reader.start_offset()?;
    loop {
        let batch = match reader.read(from, ReadLimit::default()) {
            Ok(batch) => batch,
            Err(Error::OffsetTrimmed { start, .. }) => {
                from = start;
                continue;
            }
            Err(e) => {
                report.problems.push(Problem::from_error(&e, &messages));
                return Ok(());
            }
        };
        if batch.is_empty() {
            return Ok(());
        }
        for record in batch.iter() {
            if let Err(e) = decode_record(&record) {
                report.problems.push(Problem {
                    file: messages.clone(),
                    offset: 0,
                    kind: format!(
                        "record at topic offset {} is not a published message: {e}",
                        record.offset
                    ),
                });
            }
        }
        from = batch.next_offset();
    }
}
