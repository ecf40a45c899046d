//! Verifying every queue for `shoal check`, without changing anything: the attributes, both
//! logs (every frame, index, head and seal, as [`crate::log::check`] does for any log), every
//! message and journal record decoded as the queue would decode it, the state snapshot, and
//! that the journal still holds everything the snapshot does not cover.

use std::path::Path;

use super::attributes::{META_FILE, QUEUE_MAGIC, QueueMeta, queues_dir};
use super::state::State;
use super::stored::{Event, KIND_EVENT, KIND_MESSAGE, MessageHeader, decode_payload};
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::codec::head::Head;
use crate::codec::record::{self, Decoded};
use crate::datadir::DirInner;
use crate::error::{CorruptionKind, Error, Result};
use crate::log::{CheckReport, Problem, segment};
use crate::meta;
use crate::names::validate_queue_name;
use crate::storage::{OpenMode, Storage};

use super::handle::{SNAPSHOT_FILE, SNAPSHOT_MAGIC};
pub(super) const MESSAGES_DIR: &str = "messages";
pub(super) const JOURNAL_DIR: &str = "journal";

fn problem(file: &Path, offset: u64, kind: CorruptionKind) -> Problem {
    Problem::from_error(&Error::corruption(file, offset, kind), file)
}

/// Checks every queue under `<data>/queues/`. Changes nothing.
pub(crate) fn check_queues(dir: &DirInner, report: &mut CheckReport) -> Result<()> {
    let queues = queues_dir(dir);
    let names = match dir.storage.list_dir(&queues) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", &queues, e)),
    };
    let mut names: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| validate_queue_name(n).is_ok())
        .collect();
    names.sort();
    for name in names {
        check_queue(dir, &queues.join(&name), report)?;
    }
    Ok(())
}

fn check_queue(dir: &DirInner, path: &Path, report: &mut CheckReport) -> Result<()> {
    let storage = &*dir.storage;
    let meta_path = path.join(META_FILE);
    if !storage.exists(&meta_path) {
        // A creation that never wrote its attributes, or a deletion that removed them first:
        // not a queue.
        return Ok(());
    }
    report.files += 1;
    match meta::read::<QueueMeta>(storage, &meta_path, QUEUE_MAGIC) {
        Ok(Some(_)) => {}
        // Deleted meanwhile.
        Ok(None) => return Ok(()),
        // Without the attributes, still check everything else there is.
        Err(e) => report.problems.push(Problem::from_error(&e, &meta_path)),
    }
    let messages = path.join(MESSAGES_DIR);
    if check_log(storage, &messages, "message", report)? {
        check_records(storage, &messages, KIND_MESSAGE, report, |frame| {
            let header = MessageHeader::decode(frame.header)?;
            decode_payload(&header, frame.payload).map(drop)
        })?;
    }
    let journal = path.join(JOURNAL_DIR);
    // The journal's start is read before the snapshot: the journal is only ever trimmed below
    // a snapshot already written, so this order never sees a trim the snapshot misses.
    let journal_head = read_head(storage, &journal);
    if check_log(storage, &journal, "journal", report)? {
        check_records(storage, &journal, KIND_EVENT, report, |frame| {
            Event::decode(frame.payload).map(drop)
        })?;
    }
    let snapshot_path = path.join(SNAPSHOT_FILE);
    let covered = if storage.exists(&snapshot_path) {
        report.files += 1;
        match meta::read::<State>(storage, &snapshot_path, SNAPSHOT_MAGIC) {
            Ok(state) => state.map(|s| s.journal_next),
            Err(e) => {
                report
                    .problems
                    .push(Problem::from_error(&e, &snapshot_path));
                return Ok(());
            }
        }
    } else {
        None
    };
    // State is rebuilt from the snapshot and the journal from where it ends: a journal trimmed
    // past that has lost state changes.
    if let Some(head) = journal_head
        && head.start_offset > covered.unwrap_or(0)
    {
        let file = segment::segment_path(&journal, head.start_offset);
        let why = match covered {
            Some(at) => format!(
                "the journal starts at offset {} but the snapshot covers it only up to {at}",
                head.start_offset
            ),
            None => format!(
                "the journal starts at offset {} and there is no snapshot of what came before",
                head.start_offset
            ),
        };
        report
            .problems
            .push(problem(&file, 0, CorruptionKind::Inconsistent(why)));
    }
    Ok(())
}

/// Runs the generic log check; false (with a problem reported) when the log is missing.
fn check_log(
    storage: &dyn Storage,
    log_dir: &Path,
    what: &str,
    report: &mut CheckReport,
) -> Result<bool> {
    if !storage.exists(&log_dir.join(segment::HEAD_FILE)) {
        report.problems.push(Problem {
            file: log_dir.to_path_buf(),
            offset: 0,
            kind: format!("the {what} log of the queue is missing"),
        });
        return Ok(false);
    }
    crate::log::check(storage, log_dir, report)?;
    Ok(true)
}

/// The head of the log in `log_dir`; `None` when it cannot be read (the log check reports it).
fn read_head(storage: &dyn Storage, log_dir: &Path) -> Option<Head> {
    let file = storage
        .open(&log_dir.join(segment::HEAD_FILE), OpenMode::Read)
        .ok()?;
    let mut buf = [0u8; crate::codec::head::HEAD_LEN];
    file.read_exact_at(&mut buf, 0).ok()?;
    Head::decode(&buf).ok()
}

/// Decodes every record of the log in `log_dir` whose frame is intact, up to the committed
/// end, with `decode`; a record of another kind or that does not decode is a problem at its
/// position. Damaged frames and files are left to the log check, which reports them.
fn check_records(
    storage: &dyn Storage,
    log_dir: &Path,
    kind: u8,
    report: &mut CheckReport,
    decode: impl Fn(&record::Frame<'_>) -> Result<()>,
) -> Result<()> {
    let head = read_head(storage, log_dir);
    let listing = segment::list(storage, log_dir)?;
    for &base in &listing.segments {
        let path = segment::segment_path(log_dir, base);
        let bytes = match segment::read_file(storage, &path) {
            Ok(bytes) => bytes,
            // Removed by retention or replaced by compaction since the listing.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(e),
        };
        if FileHeader::decode(FileKind::Segment, &bytes).is_err() {
            continue;
        }
        let end = match head {
            Some(h) if h.active_base == base => usize::try_from(h.committed_len)
                .unwrap_or(bytes.len())
                .min(bytes.len()),
            _ => bytes.len(),
        };
        let mut position = FILE_HEADER_LEN;
        while position < end {
            let Decoded::Frame(frame) = record::decode(bytes.get(position..end).unwrap_or(&[]))
            else {
                break;
            };
            let outcome = if frame.kind == kind {
                decode(&frame)
            } else {
                Err(Error::InvalidArgument(format!(
                    "kind {}, where this log holds only kind {kind}",
                    frame.kind
                )))
            };
            if let Err(e) = outcome {
                let why = match e {
                    Error::InvalidArgument(why) => why,
                    other => other.to_string(),
                };
                report.problems.push(problem(
                    &path,
                    position as u64,
                    CorruptionKind::Metadata(format!("record {}: {why}", frame.offset)),
                ));
            }
            position += frame.frame_len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::DataDir;
    use crate::clock::ManualClock;
    use crate::log::{Entry, Log, LogOptions, Retention};
    use crate::queue::{QueueAttributes, SendMessage};
    use crate::storage::{SharedStorage, SimStorage};

    const QUEUE: &str = "/d/queues/jobs";

    fn setup() -> (DataDir, SimStorage, Arc<ManualClock>) {
        let sim = SimStorage::new();
        let clock = ManualClock::new(1_000_000);
        let storage: SharedStorage = Arc::new(sim.clone());
        let data = DataDir::open_with("/d", storage, clock.clone()).unwrap();
        data.create_queue("jobs", &QueueAttributes::defaults(false))
            .unwrap();
        (data, sim, clock)
    }

    /// Opens one of the queue's logs directly, as a writer that does not know the queue's
    /// encoding would.
    fn raw_log(sim: &SimStorage, clock: &Arc<ManualClock>, sub: &str, options: LogOptions) -> Log {
        Log::open(
            Arc::new(sim.clone()),
            clock.clone(),
            Path::new(QUEUE).join(sub),
            options,
        )
        .unwrap()
    }

    /// File positions of the frames of a segment.
    fn frame_positions(sim: &SimStorage, file: &str) -> Vec<u64> {
        let bytes = sim.contents(Path::new(file)).unwrap();
        let mut out = Vec::new();
        let mut at = FILE_HEADER_LEN;
        while let Decoded::Frame(frame) = record::decode(&bytes[at..]) {
            out.push(at as u64);
            at += frame.frame_len;
        }
        out
    }

    fn kinds(data: &DataDir) -> Vec<(String, u64, String)> {
        data.check()
            .unwrap()
            .problems
            .into_iter()
            .map(|p| (p.file.display().to_string(), p.offset, p.kind))
            .collect()
    }

    #[test]
    fn records_with_intact_frames_that_do_not_decode_are_reported_where_they_are() {
        let (data, sim, clock) = setup();
        let q = data.queue("jobs").unwrap();
        q.send(&SendMessage::new("fine")).unwrap();
        drop(q);
        assert!(kinds(&data).is_empty());
        let log = raw_log(&sim, &clock, "messages", LogOptions::default());
        let good = MessageHeader {
            id: "id".into(),
            sent_ms: 1,
            delay_ms: 0,
            group: None,
            dedup: None,
            receive_count: 0,
            first_receive_ms: 0,
            origin: None,
            attributes_len: 10,
        }
        .encode();
        log.append(&[
            // Offset 1: a header that is not a message header.
            Entry {
                kind: KIND_MESSAGE,
                header: &[0xff; 7],
                payload: b"body",
            },
            // Offset 2: attributes longer than the payload.
            Entry {
                kind: KIND_MESSAGE,
                header: &good,
                payload: b"body",
            },
            // Offset 3: not a message at all.
            Entry {
                kind: KIND_EVENT,
                header: &[],
                payload: &Event::Deleted { offset: 0 }.encode(),
            },
        ])
        .unwrap();
        drop(log);
        let journal = raw_log(&sim, &clock, "journal", LogOptions::default());
        journal
            .append(&[
                Entry {
                    kind: KIND_EVENT,
                    header: &[],
                    payload: &Event::Purged { below: 1 }.encode(),
                },
                Entry {
                    kind: KIND_EVENT,
                    header: &[],
                    payload: &[200; 3],
                },
                Entry {
                    kind: KIND_MESSAGE,
                    header: &[],
                    payload: &Event::Purged { below: 1 }.encode(),
                },
            ])
            .unwrap();
        drop(journal);

        let problems = kinds(&data);
        let segment = |sub: &str| format!("{QUEUE}/{sub}/00000000000000000000.log");
        let (messages, events) = (segment("messages"), segment("journal"));
        let at = |file: &str, i: usize| (file.to_string(), frame_positions(&sim, file)[i]);
        let found: Vec<(String, u64)> = problems.iter().map(|(f, o, _)| (f.clone(), *o)).collect();
        assert_eq!(
            found,
            [
                at(&messages, 1),
                at(&messages, 2),
                at(&messages, 3),
                at(&events, 1),
                at(&events, 2)
            ],
            "{problems:#?}"
        );
        assert!(
            problems[0].2.contains("record 1: message header"),
            "{problems:#?}"
        );
        assert!(
            problems[1].2.contains("record 2: message payload shorter"),
            "{problems:#?}"
        );
        assert!(problems[2].2.contains("record 3: kind 2"), "{problems:#?}");
        assert!(
            problems[3].2.contains("record 1: queue journal event"),
            "{problems:#?}"
        );
        assert!(problems[4].2.contains("record 2: kind 1"), "{problems:#?}");
    }

    #[test]
    fn a_journal_trimmed_past_the_snapshot_is_reported() {
        let (data, sim, clock) = setup();
        let journal = raw_log(
            &sim,
            &clock,
            "journal",
            LogOptions {
                segment_bytes_max: 4096,
                ..LogOptions::default()
            },
        );
        let event = Event::Deleted { offset: 7 }.encode();
        for _ in 0..3 {
            journal
                .append(&[Entry {
                    kind: KIND_EVENT,
                    header: &[],
                    payload: &event,
                }])
                .unwrap();
        }
        journal.roll().unwrap();
        assert!(
            kinds(&data).is_empty(),
            "a journal from 0 needs no snapshot"
        );
        journal
            .enforce_retention(&Retention {
                below_offset: Some(3),
                ..Retention::default()
            })
            .unwrap();
        let problems = kinds(&data);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(
            problems[0].0,
            format!("{QUEUE}/journal/00000000000000000003.log")
        );
        assert!(problems[0].2.contains("no snapshot"), "{problems:#?}");

        // A snapshot covering offsets below 2 only: still a gap.
        let mut state = State::default();
        state.journal_next = 2;
        let snap = Path::new(QUEUE).join(SNAPSHOT_FILE);
        meta::write(&sim, &snap, SNAPSHOT_MAGIC, &state).unwrap();
        let problems = kinds(&data);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].2.contains("only up to 2"), "{problems:#?}");
        // One covering everything trimmed: healthy.
        let mut state = State::default();
        state.journal_next = 3;
        meta::write(&sim, &snap, SNAPSHOT_MAGIC, &state).unwrap();
        assert!(kinds(&data).is_empty());
    }

    #[test]
    fn a_missing_log_and_an_unfinished_create_are_told_apart() {
        let (data, sim, _clock) = setup();
        sim.remove_file(&Path::new(QUEUE).join("journal/head"))
            .unwrap();
        let problems = kinds(&data);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].0, format!("{QUEUE}/journal"));
        assert!(problems[0].2.contains("journal log"), "{problems:#?}");
        // A directory without attributes is not a queue (a create that died midway).
        sim.create_dir_all(Path::new("/d/queues/half/messages"))
            .unwrap();
        let problems = kinds(&data);
        assert_eq!(problems.len(), 1, "{problems:#?}");
    }
}
