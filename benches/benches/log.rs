//! Segment log benchmarks: `cargo bench -p shoal-benches --bench log` (figures in BENCHMARKS.md;
//! `benches/run-log-bench.sh` runs this together with the disk's own `dd` ceiling).
//!
//! Groups:
//! - `codec`: framing one record of 100 B / 1 KiB with `codec::record::encode_into` (length,
//!   offset, timestamp, both CRCs) and checking it back with `decode`; payload bytes/s.
//! - `append`: `Log::append` from one thread of 100 B and 1 KiB records in batches of 1 and
//!   500, in each durability mode: `always` (fdatasync before `append` returns),
//!   `interval_10ms` (written to the OS, fsynced by the background thread every 10 ms),
//!   `never` (written to the OS only), and `always_prefill` (batches of 1 only: `always` with
//!   `LogOptions::prefill`, as a queue's logs). Each case gets a fresh log, which grows (and
//!   rolls its 64 MiB segments, fsyncing each sealed one) as criterion iterates; records/s
//!   and payload bytes/s.
//! - `append_threads`: `always` appends of one 100 B record from 4 and 16 threads at once on
//!   one log, where the group commit lets the waiting appenders share one fdatasync. One
//!   iteration is one append per thread; records/s counts all threads.
//! - `read`: a whole log front to back, `ReadLimit::records(4096)` per call, touching every
//!   payload: 256 MiB of 1 KiB records through the writer's `LogReader` (its maps already
//!   made), the same through a `LogReader` opened afresh each iteration (open, head, listing,
//!   `mmap` and page faults included), and 64 MiB of 100 B records (per-record cost). The
//!   reader verifies every record's CRC. The data is in the page cache (just written): this is
//!   the engine's cost, not the disk's.
//! - `seek`: one record at a random offset of the 256 MiB log (index lookup, then a scan of at
//!   most one index interval).
//! - `open`: `Log::open` for writing (writer lock, listing, recovery of the active segment's
//!   tail, head file) of logs of 4 MiB, 64 MiB and 640 MiB (ten segments): recovery reads only
//!   the tail, so this should not grow with the size.
//! - `recovery`: `Log::open` of a log whose active segment has an unsynced tail of 0, 1, 8
//!   and 32 MiB of 1 KiB records (the process died before syncing them): recovery time against
//!   tail size. Each iteration opens a fresh copy of the directory (copy not timed).
//!
//! After the groups a summary table is printed: per bench the min / median / max over
//! criterion's samples of the mean time per iteration, the throughput at the median, and the
//! checks against the targets of issue 2. If the environment holds `SHOAL_DD_SEQ`,
//! `SHOAL_DD_BATCHES` and `SHOAL_DD_DSYNC_4K` (each "BYTES SECONDS" of a `dd` run, as the
//! script sets them), durable appends are compared with those. The log lives in
//! `SHOAL_BENCH_DIR` if set, else in the temp directory (which must be on the disk to be
//! measured, not a tmpfs). With `SHOAL_BENCH_DIR` set, the volume `append/always/1KiB_x500`
//! wrote and its median rate go to `append-volume` there, and the script then runs `dd` over
//! that same volume for a like-for-like comparison.

use std::cell::OnceCell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use criterion::measurement::WallTime;
use criterion::{Bencher, BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group};
use shoal_engine::clock::SystemClock;
use shoal_engine::codec::record::{self, Decoded, FrameFields};
use shoal_engine::log::{Durability, Entry, Log, LogOptions, LogReader, ReadBatch, ReadLimit};
use shoal_engine::storage::FsStorage;
use tempfile::TempDir;

fn bench_dir() -> TempDir {
    match std::env::var_os("SHOAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create the bench directory")
}

/// A new, empty log in a new directory.
fn fresh_log(durability: Durability) -> (TempDir, Log) {
    fresh_log_with(LogOptions {
        durability,
        ..LogOptions::default()
    })
}

fn fresh_log_with(options: LogOptions) -> (TempDir, Log) {
    let tmp = bench_dir();
    let log = open_with(tmp.path(), options);
    (tmp, log)
}

fn open(dir: &Path, durability: Durability) -> Log {
    open_with(
        dir,
        LogOptions {
            durability,
            ..LogOptions::default()
        },
    )
}

fn open_with(dir: &Path, options: LogOptions) -> Log {
    Log::open(
        Arc::new(FsStorage::new()),
        Arc::new(SystemClock),
        dir,
        options,
    )
    .expect("open the log")
}

/// What one iteration of a bench processes, for criterion's throughput and the summary.
#[derive(Debug, Clone, Copy)]
struct Work {
    records: u64,
    /// Payload bytes (framing not counted).
    bytes: u64,
}

impl Work {
    fn throughput(self) -> Throughput {
        match (self.records, self.bytes) {
            (0, bytes) => Throughput::Bytes(bytes),
            (records, 0) => Throughput::Elements(records),
            (elements, bytes) => Throughput::ElementsAndBytes { elements, bytes },
        }
    }
}

/// Every bench defined in this run, by criterion's id, for the summary.
static DEFINED: Mutex<Vec<(String, Work)>> = Mutex::new(Vec::new());

/// Bytes of frames each `append` case wrote to its log (warm-up included), by criterion's id:
/// the volume a `dd` of the same size writes for a like-for-like comparison.
static APPENDED: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

/// A criterion group that also records its benches for the summary.
struct Group<'a> {
    name: &'static str,
    inner: BenchmarkGroup<'a, WallTime>,
}

impl<'a> Group<'a> {
    fn new(c: &'a mut Criterion, name: &'static str) -> Self {
        Group {
            name,
            inner: c.benchmark_group(name),
        }
    }

    fn finish(self) {
        self.inner.finish();
    }

    fn bench(
        &mut self,
        function: &str,
        parameter: &str,
        work: Work,
        f: impl FnMut(&mut Bencher<'_, WallTime>),
    ) {
        DEFINED
            .lock()
            .expect("the bench list")
            .push((format!("{}/{function}/{parameter}", self.name), work));
        if work.records > 0 || work.bytes > 0 {
            self.inner.throughput(work.throughput());
        }
        self.inner
            .bench_function(BenchmarkId::new(function, parameter), f);
    }
}

fn codec(c: &mut Criterion) {
    let mut group = Group::new(c, "codec");
    for size in [100usize, 1024] {
        let payload = vec![7u8; size];
        let fields = FrameFields {
            offset: 42,
            timestamp_ms: 1_700_000_000_000,
            kind: 1,
            flags: record::FLAG_END_OF_BATCH,
            header: b"partition-key",
            payload: &payload,
        };
        let work = Work {
            records: 0,
            bytes: size as u64,
        };
        let mut buf = Vec::with_capacity(2048);
        group.bench("encode", &size.to_string(), work, |b| {
            b.iter(|| {
                buf.clear();
                record::encode_into(&mut buf, black_box(&fields)).expect("encode");
                buf.len()
            });
        });
        buf.clear();
        record::encode_into(&mut buf, &fields).expect("encode");
        group.bench("decode", &size.to_string(), work, |b| {
            b.iter(|| match record::decode(black_box(&buf)) {
                Decoded::Frame(f) => f.payload.len(),
                _ => unreachable!("a valid frame"),
            });
        });
    }
    group.finish();
}

fn label(size: usize) -> String {
    if size.is_multiple_of(1024) {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

fn append(c: &mut Criterion) {
    let mut group = Group::new(c, "append");
    group.inner.measurement_time(Duration::from_secs(3));
    group.inner.warm_up_time(Duration::from_millis(500));
    let modes = [
        // Durable first: the `never` cases leave dirty pages for the kernel to write back,
        // which would land on whatever runs next.
        ("always", Durability::Always, false),
        // As a queue's logs: zeros written ahead of the data, so that small fsynced appends
        // overwrite instead of growing the file (batches of 500 are too large to prefill).
        ("always_prefill", Durability::Always, true),
        (
            "interval_10ms",
            Durability::Interval(Duration::from_millis(10)),
            false,
        ),
        ("never", Durability::Never, false),
    ];
    for (mode, durability, prefill) in modes {
        for size in [100usize, 1024] {
            for batch in [1usize, 500] {
                if prefill && batch > 1 {
                    continue;
                }
                let payload = vec![0x5au8; size];
                let entries: Vec<Entry<'_>> = (0..batch).map(|_| Entry::new(&payload)).collect();
                let work = Work {
                    records: batch as u64,
                    bytes: (batch * size) as u64,
                };
                // Made on first use, so that a filtered-out case costs nothing; a fresh log
                // for each case, removed after it.
                let fresh: OnceCell<(TempDir, Log)> = OnceCell::new();
                let parameter = format!("{}_x{batch}", label(size));
                group.bench(mode, &parameter, work, |b| {
                    let (_, log) = fresh.get_or_init(|| {
                        fresh_log_with(LogOptions {
                            durability,
                            prefill,
                            ..LogOptions::default()
                        })
                    });
                    b.iter(|| log.append(black_box(&entries)).expect("append"));
                });
                // Every record appended, warm-up included, is a frame in the log's files.
                if let Some((_, log)) = fresh.get() {
                    let frame = (record::FRAME_HEADER_LEN + size) as u64;
                    APPENDED.lock().expect("the volume list").push((
                        format!("append/{mode}/{parameter}"),
                        log.next_offset() * frame,
                    ));
                }
            }
        }
    }
    group.finish();
}

fn append_threads(c: &mut Criterion) {
    let mut group = Group::new(c, "append_threads");
    group.inner.measurement_time(Duration::from_secs(3));
    group.inner.warm_up_time(Duration::from_millis(500));
    group.inner.sample_size(30);
    for threads in [4usize, 16] {
        let payload = [0x5au8; 100];
        let entries = [Entry::new(&payload)];
        let work = Work {
            records: threads as u64,
            bytes: threads as u64 * 100,
        };
        let fresh: OnceCell<(TempDir, Log)> = OnceCell::new();
        group.bench("always", &format!("100B_x1_{threads}_threads"), work, |b| {
            let (_, log) = fresh.get_or_init(|| fresh_log(Durability::Always));
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            for _ in 0..iters {
                                log.append(&entries).expect("append");
                            }
                        });
                    }
                });
                start.elapsed()
            });
        });
    }
    group.finish();
}

/// A `never` log of `records` records of `size` bytes, appended in batches of 500, synced.
fn filled(records: u64, size: usize) -> (TempDir, Log) {
    let (tmp, log) = fresh_log(Durability::Never);
    let payload = vec![0xa5u8; size];
    let entries: Vec<Entry<'_>> = (0..500).map(|_| Entry::new(&payload)).collect();
    let mut left = records;
    while left > 0 {
        let n = left.min(500);
        let batch = entries
            .get(..usize::try_from(n).expect("n <= 500"))
            .expect("n <= 500");
        log.append(batch).expect("fill");
        left -= n;
    }
    log.sync().expect("sync");
    assert_eq!(log.next_offset(), records, "the fill");
    (tmp, log)
}

/// Reads offsets `0..records` in calls of up to 4096 records, touching every payload.
fn read_through(read: impl Fn(u64) -> ReadBatch, records: u64) -> u64 {
    let mut next = 0;
    let mut sum = 0u64;
    while next < records {
        let batch = read(next);
        for record in batch.iter() {
            sum += u64::from(record.payload.last().copied().unwrap_or_default());
        }
        next = batch.next_offset();
    }
    sum
}

fn read(c: &mut Criterion) {
    let records_1k = (256u64 << 20) / 1024;
    // Shared by `read` and `seek`, made on first use.
    let big: OnceCell<(TempDir, Log)> = OnceCell::new();
    let big_log = || big.get_or_init(|| filled(records_1k, 1024));
    let mut group = Group::new(c, "read");
    group.inner.sample_size(20);
    let work = Work {
        records: records_1k,
        bytes: records_1k * 1024,
    };
    let limit = ReadLimit::records(4096);
    group.bench("sequential", "1KiB_256MiB", work, |b| {
        let (_, log) = big_log();
        b.iter(|| read_through(|at| log.read(at, limit).expect("read"), records_1k));
    });
    group.bench("sequential_new_reader", "1KiB_256MiB", work, |b| {
        let (tmp, _) = big_log();
        b.iter(|| {
            let reader =
                LogReader::open(Arc::new(FsStorage::new()), tmp.path()).expect("open a reader");
            read_through(|at| reader.read(at, limit).expect("read"), records_1k)
        });
    });
    let records_100 = (64u64 << 20) / 100;
    let work = Work {
        records: records_100,
        bytes: records_100 * 100,
    };
    let small: OnceCell<(TempDir, Log)> = OnceCell::new();
    group.bench("sequential", "100B_64MiB", work, |b| {
        let (_, log) = small.get_or_init(|| filled(records_100, 100));
        b.iter(|| read_through(|at| log.read(at, limit).expect("read"), records_100));
    });
    drop(small);
    group.finish();

    let mut group = Group::new(c, "seek");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let work = Work {
        records: 1,
        bytes: 1024,
    };
    group.bench("one_record_at_a_random_offset", "1KiB_256MiB", work, |b| {
        let (_, log) = big_log();
        b.iter(|| {
            // xorshift64: a cheap, fixed sequence of offsets.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let batch = log
                .read(x % records_1k, ReadLimit::records(1))
                .expect("read");
            batch.len()
        });
    });
    group.finish();
}

fn open_time(c: &mut Criterion) {
    let mut group = Group::new(c, "open");
    group.inner.sample_size(20);
    for mib in [4u64, 64, 640] {
        let dir: OnceCell<TempDir> = OnceCell::new();
        let work = Work {
            records: 0,
            bytes: 0,
        };
        group.bench("recover_and_open", &format!("{mib}MiB"), work, |b| {
            let tmp = dir.get_or_init(|| {
                let (tmp, log) = filled((mib << 20) / 1024, 1024);
                // Closed as by a shutdown; every iteration then opens it again.
                log.close().expect("close");
                tmp
            });
            b.iter(|| open(tmp.path(), Durability::Always).next_offset());
        });
    }
    group.finish();
}

/// Copies every file of `from` into `to` (a log directory has no subdirectories).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("list the log") {
        let entry = entry.expect("list the log");
        let target = to.join(entry.file_name());
        std::fs::copy(entry.path(), &target).expect("copy a log file");
        // Synced here, so the timed open does not pay for flushing the copy's dirty pages.
        std::fs::File::open(&target)
            .and_then(|f| f.sync_all())
            .expect("sync the copy");
    }
}

/// Recovery time against the unsynced tail: a `never` log of 4 MiB, synced, then `tail` MiB
/// appended, with its head file put back to what it said right after the sync (as if the
/// process had died before syncing the tail) is opened; recovery scans and verifies the tail
/// (every CRC) and rebuilds its index entries. Each iteration opens a fresh, synced copy (the
/// copy is not timed; its files are in the page cache, so this is the CPU cost of the scan,
/// not the disk's).
fn recovery_tail(c: &mut Criterion) {
    let mut group = Group::new(c, "recovery");
    group.inner.sample_size(10);
    for tail_mib in [0u64, 1, 8, 32] {
        let template: OnceCell<TempDir> = OnceCell::new();
        let work = Work {
            records: 0,
            bytes: tail_mib << 20,
        };
        group.bench(
            "open_with_unsynced_tail",
            &format!("{tail_mib}MiB"),
            work,
            |b| {
                let tmp = template.get_or_init(|| {
                    let tmp = bench_dir();
                    let log = open(tmp.path(), Durability::Never);
                    let payload = vec![0xa5u8; 1024];
                    let entries: Vec<Entry<'_>> = (0..512).map(|_| Entry::new(&payload)).collect();
                    for _ in 0..8 {
                        log.append(&entries).expect("fill");
                    }
                    log.sync().expect("sync the first 4 MiB");
                    // The head as it was then (it says how much of the segment is synced).
                    let head = tmp.path().join("head");
                    let synced_head = std::fs::read(&head).expect("read the head");
                    for _ in 0..tail_mib * 2 {
                        log.append(&entries).expect("append the tail");
                    }
                    drop(log);
                    // As if the process had died before any of the tail was synced: the head
                    // goes back to what it said after the sync.
                    std::fs::write(&head, synced_head).expect("put the head back");
                    let probe = bench_dir();
                    copy_dir(tmp.path(), probe.path());
                    let report = open(probe.path(), Durability::Never)
                        .recovery_report()
                        .clone();
                    eprintln!(
                        "recovery/{tail_mib}MiB: the tail scan read {} bytes from {}",
                        report.scanned_bytes, report.scanned_from
                    );
                    tmp
                });
                let copies = bench_dir();
                let mut n = 0u64;
                b.iter_batched(
                    || {
                        n += 1;
                        let to = copies.path().join(n.to_string());
                        copy_dir(tmp.path(), &to);
                        to
                    },
                    |dir| {
                        let log = open(&dir, Durability::Never);
                        black_box(log.recovery_report().scanned_bytes);
                        log.next_offset()
                    },
                    criterion::BatchSize::PerIteration,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    codec,
    append,
    append_threads,
    read,
    open_time,
    recovery_tail
);

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary::print(started);
}

/// The table printed after the run, from the samples criterion saved.
mod summary {
    use super::{APPENDED, DEFINED, Path, PathBuf, SystemTime, Work, record};

    /// Where criterion keeps its results, found as criterion finds it.
    fn criterion_home() -> Option<PathBuf> {
        if let Some(home) = std::env::var_os("CRITERION_HOME") {
            return Some(PathBuf::from(home));
        }
        if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
            return Some(Path::new(&target).join("criterion"));
        }
        // TARGET/release/deps/log-HASH
        let exe = std::env::current_exe().ok()?;
        Some(exe.parent()?.parent()?.parent()?.join("criterion"))
    }

    /// A JSON array of numbers under `key`, as criterion's `sample.json` holds them.
    fn numbers(json: &str, key: &str) -> Option<Vec<f64>> {
        let open = format!("\"{key}\":[");
        let start = json.find(&open)? + open.len();
        let len = json.get(start..)?.find(']')?;
        json.get(start..start + len)?
            .split(',')
            .map(|n| n.trim().parse().ok())
            .collect()
    }

    /// Min, median and max of the mean nanoseconds per iteration of each sample, if criterion
    /// saved samples for `id` during this run.
    fn spread(home: &Path, id: &str, since: SystemTime) -> Option<[f64; 3]> {
        let path = home.join(id).join("new").join("sample.json");
        if std::fs::metadata(&path).ok()?.modified().ok()? < since {
            return None;
        }
        let json = std::fs::read_to_string(&path).ok()?;
        let iters = numbers(&json, "iters")?;
        let times = numbers(&json, "times")?;
        let mut per_iter: Vec<f64> = iters
            .iter()
            .zip(&times)
            .filter(|(n, _)| **n > 0.0)
            .map(|(n, t)| t / n)
            .collect();
        per_iter.sort_by(f64::total_cmp);
        let n = per_iter.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => per_iter.get(n / 2).copied()?,
            _ => (per_iter.get(n / 2 - 1)? + per_iter.get(n / 2)?) / 2.0,
        };
        Some([*per_iter.first()?, median, *per_iter.last()?])
    }

    fn time(ns: f64) -> String {
        match ns {
            _ if ns < 1e3 => format!("{ns:.1} ns"),
            _ if ns < 1e6 => format!("{:.2} µs", ns / 1e3),
            _ if ns < 1e9 => format!("{:.2} ms", ns / 1e6),
            _ => format!("{:.2} s", ns / 1e9),
        }
    }

    /// A rate with a decimal prefix (as `dd` prints it).
    fn rate(per_s: f64, unit: &str) -> String {
        match per_s {
            _ if per_s >= 1e9 => format!("{:.2} G{unit}/s", per_s / 1e9),
            _ if per_s >= 1e6 => format!("{:.2} M{unit}/s", per_s / 1e6),
            _ if per_s >= 1e3 => format!("{:.1} K{unit}/s", per_s / 1e3),
            _ => format!("{per_s:.0} {unit}/s"),
        }
    }

    /// Bytes per second of a `dd` run given as "BYTES SECONDS" in the environment variable.
    fn dd(var: &str) -> Option<(f64, f64)> {
        let value = std::env::var(var).ok()?;
        let mut parts = value.split_whitespace();
        let bytes: f64 = parts.next()?.parse().ok()?;
        let seconds: f64 = parts.next()?.parse().ok()?;
        (seconds > 0.0).then_some((bytes, seconds))
    }

    fn verdict(met: bool) -> &'static str {
        if met { "MET" } else { "MISSED" }
    }

    /// For `benches/run-log-bench.sh`, which runs `dd` over the same volume after the benches:
    /// `$SHOAL_BENCH_DIR/append-volume` holds the bytes of frames the case `id` wrote and its
    /// median payload rate (bytes/s), as two integers.
    fn write_volume(id: &str, payload_per_s: f64) {
        let Some(dir) = std::env::var_os("SHOAL_BENCH_DIR") else {
            return;
        };
        let appended = APPENDED.lock().expect("the volume list");
        let Some((_, bytes)) = appended.iter().find(|(i, _)| i == id) else {
            return;
        };
        let line = format!("{bytes} {payload_per_s:.0}\n");
        if let Err(e) = std::fs::write(Path::new(&dir).join("append-volume"), line) {
            println!("summary: cannot write the append volume: {e}");
        }
    }

    pub(super) fn print(since: SystemTime) {
        let defined = std::mem::take(&mut *DEFINED.lock().expect("the bench list"));
        let Some(home) = criterion_home() else {
            println!("summary: cannot tell where criterion saved its results");
            return;
        };
        let results: Vec<(String, Work, [f64; 3])> = defined
            .into_iter()
            .filter_map(|(id, work)| spread(&home, &id, since).map(|s| (id, work, s)))
            .collect();
        if results.is_empty() {
            println!(
                "summary: no samples saved by this run (test or profile mode, or no bench matched)"
            );
            return;
        }
        println!();
        println!("## Summary (time per iteration over criterion's samples; rates at the median)");
        println!();
        println!("| bench | min | median | max | records/s | payload bytes/s |");
        println!("|---|---|---|---|---|---|");
        for (id, work, [min, median, max]) in &results {
            let per_s = |n: u64, unit: &str| {
                if n == 0 {
                    String::new()
                } else {
                    rate(n as f64 * 1e9 / median, unit)
                }
            };
            println!(
                "| `{id}` | {} | {} | {} | {} | {} |",
                time(*min),
                time(*median),
                time(*max),
                per_s(work.records, ""),
                per_s(work.bytes, "B")
            );
        }
        let median_rate = |id: &str, records: bool| {
            results.iter().find(|(i, ..)| i == id).map(|(_, w, s)| {
                let n = if records { w.records } else { w.bytes };
                n as f64 * 1e9 / s[1]
            })
        };
        println!();
        println!("Targets (issue 2):");
        if let Some(r) = median_rate("append/never/100B_x500", true) {
            println!(
                "- `never` appends of 100 B records, one thread, >= 3 M records/s: {} ({})",
                rate(r, ""),
                verdict(r >= 3e6)
            );
        }
        for id in [
            "read/sequential/1KiB_256MiB",
            "read/sequential_new_reader/1KiB_256MiB",
        ] {
            if let Some(r) = median_rate(id, false) {
                println!(
                    "- sequential mmap read >= 2 GB/s, `{id}`: {} ({})",
                    rate(r, "B"),
                    verdict(r >= 2e9)
                );
            }
        }
        let seq = dd("SHOAL_DD_SEQ");
        if let Some(r) = median_rate("append/always/1KiB_x500", false) {
            // 32 bytes of framing per record go to the file with each 1 KiB payload.
            let file = r * (1024.0 + record::FRAME_HEADER_LEN as f64) / 1024.0;
            match seq {
                Some((bytes, seconds)) => {
                    let dd = bytes / seconds;
                    println!(
                        "- `always` appends in batches of 500 within 1.5x of `dd conv=fdatasync` \
                         ({}): 1 KiB records {} of payload ({} into the file), dd is {:.2}x \
                         that ({})",
                        rate(dd, "B"),
                        rate(r, "B"),
                        rate(file, "B"),
                        dd / r,
                        verdict(dd / r <= 1.5)
                    );
                }
                None => println!(
                    "- `always` appends in batches of 500, 1 KiB records: {} of payload (set \
                     SHOAL_DD_SEQ, or use benches/run-log-bench.sh, to compare with dd)",
                    rate(r, "B")
                ),
            }
            write_volume("append/always/1KiB_x500", r);
        }
        if let (Some(r), Some((bytes, seconds))) = (
            median_rate("append/always/1KiB_x500", false),
            dd("SHOAL_DD_BATCHES"),
        ) {
            let dd = bytes / seconds;
            println!(
                "- (no target) the same against dd writing the same pattern (528000-byte writes, \
                 each synced, oflag=dsync; 1 GB): dd {}, {:.2}x shoal",
                rate(dd, "B"),
                dd / r
            );
        }
        if let (Some(r), Some((bytes, seconds))) = (
            median_rate("append/always/100B_x1", true),
            dd("SHOAL_DD_DSYNC_4K"),
        ) {
            let writes = bytes / 4096.0 / seconds;
            println!(
                "- (no target) `always` appends of one record: {} against {} synced 4 KiB \
                 writes by dd (oflag=dsync)",
                rate(r, ""),
                rate(writes, "")
            );
        }
    }
}
