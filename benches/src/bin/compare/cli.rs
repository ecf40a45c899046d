//! Process per operation, the shell user's case: each operation is one whole process (start,
//! open, work, exit), timed from spawn to exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::api::Level;
use crate::redis::RespConn;
use crate::workloads::{Measured, nanos};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Send one 100-byte message to a queue.
    Send,
    /// Receive one message and delete it.
    ReceiveDelete,
    /// Append one 100-byte record to a stream.
    Put,
}

pub enum Tool {
    /// `shoal` with `SHOAL_DATA_DIR`.
    Shoal { bin: PathBuf, data: PathBuf },
    /// `redis-cli` against the harness's server.
    RedisCli { host: String, port: String },
    /// The `sqlite3` shell on a WAL database file.
    Sqlite3 { dir: PathBuf },
}

impl Tool {
    pub fn name(&self) -> &'static str {
        match self {
            Tool::Shoal { .. } => "shoal (CLI)",
            Tool::RedisCli { .. } => "Redis Streams (redis-cli)",
            Tool::Sqlite3 { .. } => "SQLite WAL (sqlite3 shell)",
        }
    }

    pub fn durability(&self, level: Level) -> &'static str {
        match (self, level) {
            (Tool::Shoal { .. }, Level::Fsync) => crate::shoal::FSYNC_NOTE,
            (Tool::Shoal { .. }, Level::NoFsync) => crate::shoal::NOFSYNC_NOTE,
            (Tool::RedisCli { .. }, Level::Fsync) => "as Redis above, `appendfsync always`",
            (Tool::RedisCli { .. }, Level::NoFsync) => "as Redis above, `appendfsync everysec`",
            (Tool::Sqlite3 { .. }, Level::Fsync) => "`synchronous=FULL` (set by each process)",
            (Tool::Sqlite3 { .. }, Level::NoFsync) => "`synchronous=OFF` (set by each process)",
        }
    }

    fn sqlite_db(dir: &Path, level: Level) -> PathBuf {
        dir.join(format!("sqlite3-cli-{}.db", level.tag()))
    }

    /// Creates the queue and stream `name` (at `level`) for the operations.
    pub fn setup(&self, level: Level, name: &str) -> Result<()> {
        match self {
            Tool::Shoal { bin, data } => {
                let durability = match level {
                    Level::Fsync => "always",
                    Level::NoFsync => "never",
                };
                for args in [
                    vec!["queue", "create", name, "--durability", durability],
                    vec![
                        "stream",
                        "create",
                        name,
                        "--shards",
                        "1",
                        "--durability",
                        durability,
                    ],
                ] {
                    let out = Command::new(bin)
                        .args(&args)
                        .env("SHOAL_DATA_DIR", data)
                        .output()?;
                    if !out.status.success() {
                        bail!(
                            "shoal {}: {}",
                            args.join(" "),
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
            }
            Tool::RedisCli { host, port } => {
                let mut c = RespConn::connect(&format!("{host}:{port}"))?;
                let q = format!("{name}q");
                c.call(&[b"XGROUP", b"CREATE", q.as_bytes(), b"g", b"0", b"MKSTREAM"])?;
            }
            Tool::Sqlite3 { dir } => {
                let conn = rusqlite::Connection::open(Self::sqlite_db(dir, level))?;
                conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
                conn.execute_batch(&format!(
                    "CREATE TABLE {name}q (id INTEGER PRIMARY KEY, body BLOB NOT NULL, visible_at INTEGER NOT NULL, receipt INTEGER NOT NULL DEFAULT 0);
                     CREATE TABLE {name}s (seq INTEGER PRIMARY KEY, partition_key TEXT NOT NULL, arrived INTEGER NOT NULL, data BLOB NOT NULL);"
                ))?;
            }
        }
        Ok(())
    }

    fn command(&self, level: Level, name: &str, op: Op) -> Command {
        let body = "x".repeat(100);
        match self {
            Tool::Shoal { bin, data } => {
                let mut c = Command::new(bin);
                c.env("SHOAL_DATA_DIR", data);
                match op {
                    Op::Send => c.args(["send", name, &body]),
                    Op::ReceiveDelete => c.args(["receive", name, "--delete"]),
                    Op::Put => c.args(["put", name, &body, "--partition-key", "k"]),
                };
                c
            }
            Tool::RedisCli { host, port } => {
                let mut c = Command::new("redis-cli");
                c.args(["-h", host, "-p", port]);
                let q = format!("{name}q");
                let s = format!("{name}s");
                match op {
                    Op::Send => c.args(["XADD", &q, "*", "b", &body]),
                    Op::ReceiveDelete => c.args([
                        "EVAL",
                        "local r = redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'COUNT', 1, 'STREAMS', KEYS[1], '>') \
                         if not r then return nil end \
                         local e = r[1][2][1] \
                         redis.call('XACK', KEYS[1], 'g', e[1]) redis.call('XDEL', KEYS[1], e[1]) \
                         return e[2][2]",
                        "1",
                        &q,
                    ]),
                    Op::Put => c.args(["XADD", &s, "*", "d", &body]),
                };
                c
            }
            Tool::Sqlite3 { dir } => {
                let mut c = Command::new("sqlite3");
                c.arg(Self::sqlite_db(dir, level));
                let sync = match level {
                    Level::Fsync => "FULL",
                    Level::NoFsync => "OFF",
                };
                let sql = match op {
                    Op::Send => format!(
                        "PRAGMA synchronous={sync}; INSERT INTO {name}q (body, visible_at) VALUES ('{body}', 0);"
                    ),
                    Op::ReceiveDelete => format!(
                        "PRAGMA synchronous={sync}; DELETE FROM {name}q WHERE id = (SELECT min(id) FROM {name}q) RETURNING body;"
                    ),
                    Op::Put => format!(
                        "PRAGMA synchronous={sync}; INSERT INTO {name}s (partition_key, arrived, data) VALUES ('k', 0, '{body}');"
                    ),
                };
                c.arg(sql);
                c
            }
        }
    }

    /// Runs `op` as one process after another for `secs` (or exactly `count` times).
    pub fn run(
        &self,
        level: Level,
        name: &str,
        op: Op,
        secs: f64,
        count: Option<usize>,
    ) -> Result<Measured> {
        let mut m = Measured::default();
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        loop {
            match count {
                Some(n) if m.lat_ns.len() >= n => break,
                None if Instant::now() >= deadline => break,
                _ => {}
            }
            let mut c = self.command(level, name, op);
            let t = Instant::now();
            let out = c
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .with_context(|| format!("run {}", self.name()))?;
            m.lat_ns.push(nanos(t.elapsed()));
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || stdout.starts_with("(error)") || stdout.starts_with("ERR") {
                bail!(
                    "{} {op:?}: {}{}",
                    self.name(),
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            if op == Op::ReceiveDelete && stdout.trim().is_empty() {
                bail!("{} received nothing", self.name());
            }
            m.units += 1.0;
        }
        m.secs = start.elapsed().as_secs_f64();
        Ok(m)
    }
}
