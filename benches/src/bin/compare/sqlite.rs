//! SQLite in WAL mode (rusqlite, in process): the queue table a user would otherwise write by
//! hand, and an append table for the stream. `synchronous=FULL` fsyncs the WAL at every
//! commit; `synchronous=OFF` never syncs. One connection per client; writers serialize on
//! SQLite's lock (`BEGIN IMMEDIATE`, busy timeout).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use rusqlite::{Connection, params};

use crate::api::{Level, QueueClient, StreamClient, System};

pub struct Sqlite {
    pub dir: PathBuf,
}

fn open(dir: &Path, level: Level) -> Result<Connection> {
    let conn = Connection::open(dir.join(format!("sqlite-{}.db", level.tag())))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.execute_batch(match level {
        Level::Fsync => "PRAGMA synchronous=FULL;",
        Level::NoFsync => "PRAGMA synchronous=OFF;",
    })?;
    Ok(conn)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl System for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite WAL (rusqlite)"
    }

    fn durability(&self, level: Level) -> Option<&'static str> {
        Some(match level {
            Level::Fsync => {
                "`journal_mode=WAL`, `synchronous=FULL`: the WAL is fsynced at every commit"
            }
            Level::NoFsync => "`journal_mode=WAL`, `synchronous=OFF`: no fsync",
        })
    }

    fn queue(
        &self,
        level: Level,
        name: &str,
        create: bool,
    ) -> Option<Result<Box<dyn QueueClient>>> {
        Some((|| {
            let conn = open(&self.dir, level)?;
            if create {
                conn.execute_batch(&format!(
                    "CREATE TABLE {name} (id INTEGER PRIMARY KEY, body BLOB NOT NULL, visible_at INTEGER NOT NULL, receipt INTEGER NOT NULL DEFAULT 0);"
                ))?;
            }
            Ok(Box::new(SqliteQueue {
                conn,
                table: name.to_owned(),
            }) as Box<dyn QueueClient>)
        })())
    }

    fn stream(
        &self,
        level: Level,
        name: &str,
        create: bool,
    ) -> Option<Result<Box<dyn StreamClient>>> {
        Some((|| {
            let conn = open(&self.dir, level)?;
            if create {
                conn.execute_batch(&format!(
                    "CREATE TABLE {name} (seq INTEGER PRIMARY KEY, partition_key TEXT NOT NULL, arrived INTEGER NOT NULL, data BLOB NOT NULL);"
                ))?;
            }
            Ok(Box::new(SqliteStream {
                conn,
                table: name.to_owned(),
                after: 0,
            }) as Box<dyn StreamClient>)
        })())
    }
}

struct SqliteQueue {
    conn: Connection,
    table: String,
}

impl QueueClient for SqliteQueue {
    fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO {} (body, visible_at) VALUES (?1, 0)",
                self.table
            ))?;
            for body in bodies {
                insert.execute(params![body])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn receive(&mut self, max: usize) -> Result<Vec<String>> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut handles = Vec::with_capacity(max);
        {
            let mut select = tx.prepare_cached(&format!(
                "SELECT id, body, receipt FROM {} WHERE visible_at <= ?1 ORDER BY id LIMIT ?2",
                self.table
            ))?;
            let mut update = tx.prepare_cached(&format!(
                "UPDATE {} SET visible_at = ?1, receipt = receipt + 1 WHERE id = ?2",
                self.table
            ))?;
            let rows: Vec<(i64, i64)> = select
                .query_map(params![now, i64::try_from(max)?], |r| {
                    let _body: Vec<u8> = r.get(1)?;
                    Ok((r.get(0)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            for (id, receipt) in rows {
                update.execute(params![now + 30_000, id])?;
                handles.push(format!("{id}:{}", receipt + 1));
            }
        }
        tx.commit()?;
        Ok(handles)
    }

    fn delete(&mut self, handles: &[String]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut delete = tx.prepare_cached(&format!(
                "DELETE FROM {} WHERE id = ?1 AND receipt = ?2",
                self.table
            ))?;
            for h in handles {
                let (id, receipt) = h.split_once(':').unwrap_or((h, "0"));
                delete.execute(params![id.parse::<i64>()?, receipt.parse::<i64>()?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

struct SqliteStream {
    conn: Connection,
    table: String,
    after: i64,
}

impl StreamClient for SqliteStream {
    fn append(&mut self, records: &[Vec<u8>]) -> Result<()> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO {} (partition_key, arrived, data) VALUES ('k', ?1, ?2)",
                self.table
            ))?;
            for data in records {
                insert.execute(params![now, data])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn read_next(&mut self, max: usize) -> Result<usize> {
        let mut select = self.conn.prepare_cached(&format!(
            "SELECT seq, data FROM {} WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            self.table
        ))?;
        let mut n = 0;
        let mut rows = select.query(params![self.after, i64::try_from(max)?])?;
        while let Some(row) = rows.next()? {
            let data: Vec<u8> = row.get(1)?;
            std::hint::black_box(data);
            self.after = row.get(0)?;
            n += 1;
        }
        Ok(n)
    }
}
