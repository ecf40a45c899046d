//! Side-by-side comparison of shoal with the systems a user would pick instead, on the same
//! machine, in the same run, at equal durability. `benches/compare/run` installs and starts
//! the peers and runs this; it can also run alone against servers already listening:
//!
//! ```sh
//! compare [--quick] [--runs N] [--only TEXT] [--dir DIR] [--shoal-bin PATH]
//!         [--beanstalkd-fsync ADDR] [--beanstalkd-nofsync ADDR] [--redis ADDR]
//!         [--nats ADDR] [--kinesalite ADDR]
//! ```
//!
//! A peer whose address is not given is left out (shoal, SQLite and the machine's limits
//! always run). Prints progress on stderr and one markdown table on stdout: per workload,
//! durability level and system, throughput min / median / max over the runs, the medians of
//! the runs' p50 and p99 latencies, and the ratio shoal/peer of median throughputs; then the
//! issue's goals with their numbers. `--only TEXT` runs only the workloads whose name (as the
//! table prints it, ceilings included) contains TEXT, e.g. `--only "8 clients"` or
//! `--only ceiling`. Exits 1 if any measurement failed.

mod api;
mod beanstalkd;
mod cli;
mod kinesalite;
mod machine;
mod nats;
mod net;
mod redis;
mod shoal;
mod sqlite;
mod workloads;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use api::{Level, System};
use workloads::Measured;

struct Args {
    quick: bool,
    runs: usize,
    only: Option<String>,
    dir: Option<PathBuf>,
    shoal_bin: Option<PathBuf>,
    beanstalkd: Option<(String, String)>,
    redis: Option<String>,
    nats: Option<String>,
    kinesalite: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        runs: 3,
        only: None,
        dir: None,
        shoal_bin: None,
        beanstalkd: None,
        redis: None,
        nats: None,
        kinesalite: None,
    };
    let (mut bf, mut bn) = (None, None);
    let mut runs = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--runs" => runs = Some(value()?.parse()?),
            "--only" => a.only = Some(value()?),
            "--dir" => a.dir = Some(value()?.into()),
            "--shoal-bin" => a.shoal_bin = Some(value()?.into()),
            "--beanstalkd-fsync" => bf = Some(value()?),
            "--beanstalkd-nofsync" => bn = Some(value()?),
            "--redis" => a.redis = Some(value()?),
            "--nats" => a.nats = Some(value()?),
            "--kinesalite" => a.kinesalite = Some(value()?),
            "-h" | "--help" => {
                println!(
                    "compare [--quick] [--runs N] [--only TEXT] [--dir DIR] [--shoal-bin PATH] [--beanstalkd-fsync ADDR] [--beanstalkd-nofsync ADDR] [--redis ADDR] [--nats ADDR] [--kinesalite ADDR]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    a.runs = runs.unwrap_or(if a.quick { 1 } else { 3 });
    if let (Some(f), Some(n)) = (bf, bn) {
        a.beanstalkd = Some((f, n));
    }
    Ok(a)
}

impl Args {
    /// Whether `--only` lets the workload named `workload` run.
    fn wants(&self, workload: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|text| workload.contains(text))
    }
}

/// How big each workload is.
struct Sizes {
    secs: f64,
    cli_secs: f64,
    backlog_fsync: usize,
    backlog_nofsync: usize,
    dd_mib: u64,
    /// A dd long enough to outrun the disk's write cache (this machine's disk takes about
    /// 600 MB at 1.3-1.5 GB/s, then about 320 MB/s): the bandwidth a workload of seconds meets.
    dd_sustained_mib: u64,
    /// The pause before each workload, after flushing the page cache, so that every one meets
    /// the disk in the same state (see [`settle`]).
    settle: Duration,
}

/// One row of the table: every run's measurement of one workload, level and system.
struct Row {
    workload: String,
    unit: &'static str,
    /// Bytes per unit, to show MB/s beside records/s (0: none).
    bytes: u64,
    level: Option<Level>,
    system: String,
    note: String,
    /// The row shoal's figure is compared with: `Some(shoal row's system name)`.
    shoal: Option<&'static str>,
    runs: Vec<Measured>,
    failed: Option<String>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        workload: &str,
        unit: &'static str,
        bytes: u64,
        level: Option<Level>,
        system: &str,
        note: &str,
        shoal: Option<&'static str>,
        result: Result<Measured>,
    ) {
        let idx = match self
            .rows
            .iter()
            .position(|r| r.workload == workload && r.level == level && r.system == system)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    workload: workload.to_owned(),
                    unit,
                    bytes,
                    level,
                    system: system.to_owned(),
                    note: note.to_owned(),
                    shoal,
                    runs: Vec::new(),
                    failed: None,
                });
                self.rows.len() - 1
            }
        };
        let Some(row) = self.rows.get_mut(idx) else {
            return;
        };
        match result {
            Ok(m) => {
                eprintln!(
                    "   {workload} | {} | {system}: {} {unit}",
                    level.map_or("-", Level::label),
                    fmt_rate(m.rate())
                );
                row.runs.push(m);
            }
            Err(e) => {
                eprintln!(
                    "   {workload} | {} | {system}: FAILED: {e:#}",
                    level.map_or("-", Level::label)
                );
                row.failed = Some(format!("{e:#}"));
            }
        }
    }

    fn median_rate(&self, workload: &str, level: Option<Level>, system: &str) -> Option<f64> {
        let row = self
            .rows
            .iter()
            .find(|r| r.workload == workload && r.level == level && r.system == system)?;
        median(row.runs.iter().map(Measured::rate).collect())
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn fmt_rate(x: f64) -> String {
    let (v, suffix) = if x >= 1e6 {
        (x / 1e6, " M")
    } else if x >= 1e3 {
        (x / 1e3, " K")
    } else {
        (x, "")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{suffix}")
}

fn fmt_ms(ms: f64) -> String {
    if ms < 0.1 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

pub const SHOAL: &str = "shoal (engine API)";
const SHOAL_EXCLUSIVE: &str = "shoal (engine API, exclusive)";
const SHOAL_CLI: &str = "shoal (CLI)";

fn main() -> Result<()> {
    let args = parse_args()?;
    let sizes = if args.quick {
        Sizes {
            secs: 0.3,
            cli_secs: 0.3,
            backlog_fsync: 2_000,
            backlog_nofsync: 10_000,
            dd_mib: 32,
            dd_sustained_mib: 64,
            settle: Duration::ZERO,
        }
    } else {
        Sizes {
            secs: 3.0,
            cli_secs: 2.0,
            backlog_fsync: 20_000,
            backlog_nofsync: 1_000_000,
            dd_mib: 256,
            dd_sustained_mib: 2048,
            settle: Duration::from_secs(3),
        }
    };
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let mut table = Table::default();

    let started = std::time::Instant::now();
    for run in 0..args.runs {
        eprintln!(
            "== run {} of {} at {:.0} s (load: {})",
            run + 1,
            args.runs,
            started.elapsed().as_secs_f64(),
            loadavg()
        );
        // The disk's speed depends on what it wrote in the last minutes, more than a pause
        // between workloads undoes: so no level and no system always goes first. Each run
        // starts the systems one further along, and every other run starts with no fsync.
        let levels = if run % 2 == 0 {
            [Level::Fsync, Level::NoFsync]
        } else {
            [Level::NoFsync, Level::Fsync]
        };
        let run_dir = dir.join(format!("run{run}"));
        std::fs::create_dir_all(&run_dir)?;

        // The machine's limits, first, in the same directory.
        let dd = format!("ceiling: dd bs=1M count={} conv=fdatasync", sizes.dd_mib);
        let page_cache = "ceiling: page-cache read (1 MiB reads of the dd file)";
        if args.wants(&dd) || args.wants(page_cache) {
            settle(sizes.settle);
            table.record(
                &dd,
                "MB/s",
                0,
                None,
                "machine",
                "sequential write, one fdatasync at the end",
                None,
                machine::dd(&run_dir, sizes.dd_mib),
            );
            table.record(
                page_cache,
                "MB/s",
                0,
                None,
                "machine",
                "no disk I/O",
                None,
                machine::page_cache_read(&run_dir),
            );
        }
        let sustained = format!(
            "ceiling: dd bs=1M count={} conv=fdatasync (sustained)",
            sizes.dd_sustained_mib
        );
        if args.wants(&sustained) {
            settle(sizes.settle);
            table.record(
                &sustained,
                "MB/s",
                0,
                None,
                "machine",
                "sequential write past the disk's write cache, one fdatasync at the end",
                None,
                machine::dd(&run_dir, sizes.dd_sustained_mib).and_then(|m| {
                    std::fs::remove_file(run_dir.join(machine::DD_FILE))?;
                    Ok(m)
                }),
            );
        }
        let append = "ceiling: 4 KiB append + fdatasync";
        if args.wants(append) {
            settle(sizes.settle);
            table.record(
                append,
                "writes/s",
                0,
                None,
                "machine",
                "one fdatasync per write",
                None,
                machine::append_fdatasync(&run_dir, sizes.secs),
            );
        }
        let spawn = "ceiling: process spawn (/bin/true)";
        if args.wants(spawn) {
            table.record(
                spawn,
                "spawns/s",
                0,
                None,
                "machine",
                "fork + exec + wait",
                None,
                machine::spawn(sizes.cli_secs),
            );
        }

        // Every system, fresh for this run.
        let mut systems: Vec<Box<dyn System>> = Vec::new();
        let shoal_dir = run_dir.join("shoal");
        std::fs::create_dir_all(&shoal_dir)?;
        systems.push(Box::new(shoal::Shoal::open(&shoal_dir, false)?));
        let exclusive_dir = run_dir.join("shoal-exclusive");
        std::fs::create_dir_all(&exclusive_dir)?;
        systems.push(Box::new(shoal::Shoal::open(&exclusive_dir, true)?));
        if let Some((f, n)) = &args.beanstalkd {
            systems.push(Box::new(beanstalkd::Beanstalkd {
                fsync_addr: f.clone(),
                nofsync_addr: n.clone(),
            }));
        }
        if let Some(a) = &args.redis {
            systems.push(Box::new(redis::Redis { addr: a.clone() }));
        }
        if let Some(a) = &args.nats {
            systems.push(Box::new(nats::Nats { addr: a.clone() }));
        }
        if let Some(a) = &args.kinesalite {
            systems.push(Box::new(kinesalite::Kinesalite { addr: a.clone() }));
        }
        let sqlite_dir = run_dir.join("sqlite");
        std::fs::create_dir_all(&sqlite_dir)?;
        systems.push(Box::new(sqlite::Sqlite { dir: sqlite_dir }));
        let first = run % systems.len();
        systems.rotate_left(first);

        for level in levels {
            for sys in &systems {
                let Some(note) = sys.durability(level) else {
                    continue;
                };
                if let Err(e) = sys.set_level(level) {
                    eprintln!(
                        "   {}: cannot set level {}: {e:#}",
                        sys.name(),
                        level.label()
                    );
                    continue;
                }
                let shoal = (!sys.name().starts_with("shoal")).then_some(SHOAL);
                let tag = format!("{}r{run}", level.tag());
                let offers_queue = sys.queue(level, "probe", false).is_some();
                let offers_stream = sys.stream(level, "probe", false).is_some();
                if offers_queue {
                    for clients in [1usize, 8] {
                        let workload = format!(
                            "queue send+receive+delete, 100 B, {clients} client{}",
                            if clients == 1 { "" } else { "s" }
                        );
                        if !args.wants(&workload) {
                            continue;
                        }
                        settle(sizes.settle);
                        let result = workloads::queue_cycle(
                            sys.as_ref(),
                            level,
                            &format!("q{clients}{tag}"),
                            clients,
                            sizes.secs,
                        );
                        table.record(
                            &workload,
                            "msg/s",
                            0,
                            Some(level),
                            sys.name(),
                            note,
                            shoal,
                            result,
                        );
                    }
                }
                if offers_stream {
                    for size in [100usize, 1024] {
                        let label = if size == 100 { "100 B" } else { "1 KiB" };
                        let append_name = format!("stream append, {label} records, batches of 500");
                        let read_name = format!("stream read-back, {label} records, 1000 per call");
                        if !args.wants(&append_name) && !args.wants(&read_name) {
                            continue;
                        }
                        settle(sizes.settle);
                        let result = workloads::stream_append_read(
                            sys.as_ref(),
                            level,
                            &format!("s{size}{tag}"),
                            size,
                            500,
                            sizes.secs,
                        );
                        let (append, read) = match result {
                            Ok((a, r)) => (Ok(a), Ok(r)),
                            Err(e) => (Err(anyhow::anyhow!("{e:#}")), Err(e)),
                        };
                        let bytes = u64::try_from(size)?;
                        table.record(
                            &append_name,
                            "records/s",
                            bytes,
                            Some(level),
                            sys.name(),
                            note,
                            shoal,
                            append,
                        );
                        table.record(
                            &read_name,
                            "records/s",
                            bytes,
                            Some(level),
                            sys.name(),
                            note,
                            shoal,
                            read,
                        );
                    }
                }
                let n = match level {
                    Level::Fsync => sizes.backlog_fsync,
                    Level::NoFsync => sizes.backlog_nofsync,
                };
                let k = if n >= 1_000_000 {
                    format!("{} M", n / 1_000_000)
                } else {
                    format!("{} K", n / 1000)
                };
                let fill_name = format!("backlog of {k}: fill, sends of 10");
                let drain_name = format!("backlog of {k}: drain, receive 10 + delete");
                if offers_queue && (args.wants(&fill_name) || args.wants(&drain_name)) {
                    settle(sizes.settle);
                    let result = workloads::backlog(sys.as_ref(), level, &format!("b{tag}"), n);
                    let (fill, drain) = match result {
                        Ok((f, d)) => (Ok(f), Ok(d)),
                        Err(e) => (Err(anyhow::anyhow!("{e:#}")), Err(e)),
                    };
                    table.record(
                        &fill_name,
                        "msg/s",
                        0,
                        Some(level),
                        sys.name(),
                        note,
                        shoal,
                        fill,
                    );
                    table.record(
                        &drain_name,
                        "msg/s",
                        0,
                        Some(level),
                        sys.name(),
                        note,
                        shoal,
                        drain,
                    );
                }
            }
        }
        drop(systems);

        // Process per operation.
        const CLI_SEND: &str = "CLI, process per operation: send one message";
        const CLI_RECEIVE: &str = "CLI, process per operation: receive + delete one message";
        const CLI_PUT: &str = "CLI, process per operation: append one stream record";
        let mut tools = Vec::new();
        if let Some(bin) = &args.shoal_bin {
            let data = run_dir.join("shoal-cli");
            std::fs::create_dir_all(&data)?;
            tools.push(cli::Tool::Shoal {
                bin: bin.clone(),
                data,
            });
        }
        if let Some(a) = &args.redis
            && on_path("redis-cli")
        {
            let (host, port) = a.rsplit_once(':').context("--redis HOST:PORT")?;
            tools.push(cli::Tool::RedisCli {
                host: host.to_owned(),
                port: port.to_owned(),
            });
        }
        if on_path("sqlite3") {
            tools.push(cli::Tool::Sqlite3 {
                dir: run_dir.join("sqlite"),
            });
        }
        // The receives need the sends before them: all three run if any is wanted.
        if ![CLI_SEND, CLI_RECEIVE, CLI_PUT]
            .iter()
            .any(|workload| args.wants(workload))
        {
            tools.clear();
        }
        if !tools.is_empty() {
            let first = run % tools.len();
            tools.rotate_left(first);
        }
        for level in levels {
            if let Some(a) = &args.redis {
                let redis = redis::Redis { addr: a.clone() };
                if let Err(e) = redis.set_level(level) {
                    eprintln!("   redis: cannot set level: {e:#}");
                }
            }
            for tool in &tools {
                let name = format!("cli{}r{run}", level.tag());
                let shoal = (tool.name() != SHOAL_CLI).then_some(SHOAL_CLI);
                let note = tool.durability(level);
                if let Err(e) = tool.setup(level, &name) {
                    table.record(
                        CLI_SEND,
                        "ops/s",
                        0,
                        Some(level),
                        tool.name(),
                        note,
                        shoal,
                        Err(e),
                    );
                    continue;
                }
                settle(sizes.settle);
                let send = tool.run(level, &name, cli::Op::Send, sizes.cli_secs, None);
                let sent = send.as_ref().map_or(0, |m| m.lat_ns.len());
                table.record(
                    CLI_SEND,
                    "ops/s",
                    0,
                    Some(level),
                    tool.name(),
                    note,
                    shoal,
                    send,
                );
                if sent > 0 {
                    let result = tool.run(level, &name, cli::Op::ReceiveDelete, 0.0, Some(sent));
                    table.record(
                        CLI_RECEIVE,
                        "ops/s",
                        0,
                        Some(level),
                        tool.name(),
                        note,
                        shoal,
                        result,
                    );
                }
                let result = tool.run(level, &name, cli::Op::Put, sizes.cli_secs, None);
                table.record(
                    CLI_PUT,
                    "ops/s",
                    0,
                    Some(level),
                    tool.name(),
                    note,
                    shoal,
                    result,
                );
            }
        }
        // Give the disk space back between runs.
        if let Err(e) = std::fs::remove_dir_all(&run_dir) {
            eprintln!("   cannot remove {}: {e}", run_dir.display());
        }
    }

    eprintln!("== done in {:.0} s", started.elapsed().as_secs_f64());
    print_table(&mut table, &args);
    print_goals(&table);
    if table.rows.iter().any(|r| r.failed.is_some()) {
        eprintln!("error: some measurements failed (see FAILED above and in the table)");
        std::process::exit(1);
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn print_table(table: &mut Table, args: &Args) {
    println!();
    println!(
        "{} run(s){}; throughput min / median / max over the runs; p50 and p99: medians over the runs of each run's per-operation latency; shoal/peer: shoal's median throughput over the peer's, same workload and durability level (the engine API against servers and SQLite, the CLI against other CLIs). Load at the end: {}.",
        args.runs,
        if args.quick { ", --quick sizes" } else { "" },
        loadavg()
    );
    println!();
    println!(
        "| workload | durability | system | throughput (min / median / max) | p50 | p99 | shoal/peer | what the durability level means for this system |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let medians: Vec<Option<f64>> = table
        .rows
        .iter()
        .map(|r| {
            r.shoal
                .and_then(|s| table.median_rate(&r.workload, r.level, s))
        })
        .collect();
    for (row, shoal) in table.rows.iter_mut().zip(medians) {
        let level = row.level.map_or("-", Level::label);
        if row.runs.is_empty() {
            println!(
                "| {} | {level} | {} | failed: {} | | | | {} |",
                row.workload,
                row.system,
                row.failed.as_deref().unwrap_or("no run").replace('|', "/"),
                row.note
            );
            continue;
        }
        let mut rates: Vec<f64> = row.runs.iter().map(Measured::rate).collect();
        rates.sort_by(f64::total_cmp);
        let med = median(rates.clone()).unwrap_or(0.0);
        let mut throughput = format!(
            "{} / {} / {} {}",
            fmt_rate(rates.first().copied().unwrap_or(0.0)),
            fmt_rate(med),
            fmt_rate(rates.last().copied().unwrap_or(0.0)),
            row.unit
        );
        if row.bytes > 0 {
            throughput.push_str(&format!(" ({:.0} MB/s)", med * row.bytes as f64 / 1e6));
        }
        if row.failed.is_some() {
            throughput.push_str(" (some runs failed)");
        }
        let p50 = median(
            row.runs
                .iter_mut()
                .filter_map(|m| m.percentile_ms(50.0))
                .collect(),
        );
        let p99 = median(
            row.runs
                .iter_mut()
                .filter_map(|m| m.percentile_ms(99.0))
                .collect(),
        );
        let ratio = match (row.shoal, shoal) {
            (Some(_), Some(s)) if med > 0.0 => format!("{:.2}x", s / med),
            _ => String::new(),
        };
        println!(
            "| {} | {level} | {} | {throughput} | {} | {} | {ratio} | {} |",
            row.workload,
            row.system,
            p50.map(fmt_ms).unwrap_or_default(),
            p99.map(fmt_ms).unwrap_or_default(),
            row.note
        );
    }
}

/// Flushes every dirty page (`sync`), empties the page cache where it may (as root), and waits
/// `pause`: what one workload left must not slow the next. This disk writes its first ~600 MB
/// several times faster than the rest (its write cache) and needs a moment to drain it; and on
/// this virtual machine a write that must grow the page cache into memory the guest has not
/// used since it booted goes 5-8x slower than one that reuses freed pages, so without emptying
/// it every workload would meet the cache of every earlier one (the harness keeps their data
/// to the end). Without this a workload's rate depended on which ran before it (in one run
/// shoal's 1 KiB durable appends went at 367 K records/s, and the same workload on the
/// exclusive handle right after at 148 K).
fn settle(pause: Duration) {
    if pause.is_zero() {
        return;
    }
    if let Err(e) = Command::new("sync").status() {
        eprintln!("   sync: {e}");
    }
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
        WARNED.call_once(|| {
            eprintln!("warning: cannot empty the page cache between workloads ({e}); run as root for comparable rows");
        });
    }
    std::thread::sleep(pause);
}

fn print_goals(table: &Table) {
    println!();
    println!("Goals of issue 7 (median throughputs of this run):");
    let rate = |w: &str, l: Level, s: &str| table.median_rate(w, Some(l), s);
    let goal = |what: &str, ours: Option<f64>, theirs: Option<f64>, want: f64| match (ours, theirs)
    {
        (Some(a), Some(b)) if b > 0.0 => {
            let x = a / b;
            println!(
                "- {what}: {:.2}x (want >= {want}x): {}",
                x,
                if x >= want { "met" } else { "MISSED" }
            );
        }
        _ => println!("- {what}: not measured"),
    };
    for clients in ["1 client", "8 clients"] {
        let w = format!("queue send+receive+delete, 100 B, {clients}");
        for (who, system) in [("shoal", SHOAL), ("shoal exclusive", SHOAL_EXCLUSIVE)] {
            goal(
                &format!("queue cycle ({clients}), fsync: {who} / beanstalkd -f 0"),
                rate(&w, Level::Fsync, system),
                rate(&w, Level::Fsync, "beanstalkd"),
                10.0,
            );
            goal(
                &format!("queue cycle ({clients}), fsync: {who} / Redis appendfsync always"),
                rate(&w, Level::Fsync, system),
                rate(&w, Level::Fsync, "Redis Streams"),
                2.0,
            );
        }
    }
    for size in ["100 B", "1 KiB"] {
        let w = format!("stream append, {size} records, batches of 500");
        goal(
            &format!(
                "stream append {size}, no fsync (kinesalite never fsyncs): shoal / kinesalite"
            ),
            rate(&w, Level::NoFsync, SHOAL),
            rate(&w, Level::NoFsync, "kinesalite"),
            20.0,
        );
        goal(
            &format!("stream append {size}, shoal fsync / kinesalite (no fsync)"),
            rate(&w, Level::Fsync, SHOAL),
            rate(&w, Level::NoFsync, "kinesalite"),
            20.0,
        );
    }
    let append = rate(
        "stream append, 1 KiB records, batches of 500",
        Level::Fsync,
        SHOAL,
    )
    .map(|r| r * 1024.0 / 1e6);
    for (which, sustained) in [("dd", false), ("sustained dd", true)] {
        let dd = table
            .rows
            .iter()
            .find(|r| {
                r.workload.starts_with("ceiling: dd")
                    && r.workload.ends_with("(sustained)") == sustained
            })
            .and_then(|r| median(r.runs.iter().map(Measured::rate).collect()));
        match (dd, append) {
            (Some(dd), Some(a)) if a > 0.0 => println!(
                "- durable 1 KiB stream append {a:.0} MB/s of payload vs {which} {dd:.0} MB/s: dd is {:.2}x (want <= 1.5x): {}",
                dd / a,
                if dd / a <= 1.5 { "met" } else { "MISSED" }
            ),
            _ => println!("- durable 1 KiB stream append vs {which}: not measured"),
        }
    }
}
