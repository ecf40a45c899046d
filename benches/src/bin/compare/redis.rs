//! Redis Streams over RESP: a queue is a stream with one consumer group (`XADD`,
//! `XREADGROUP ... >`, then `XACK` + `XDEL`); a stream is `XADD` and `XRANGE`. One server
//! with `appendonly yes`; the level is switched with `CONFIG SET appendfsync always|everysec`.
//! Batches are pipelined (one write, then the replies), as a client library pipeline does.

use anyhow::{Result, bail};

use crate::api::{Level, QueueClient, StreamClient, System};
use crate::net::Conn;

pub struct Redis {
    pub addr: String,
}

#[derive(Debug)]
pub enum Resp {
    Simple,
    Error(String),
    Int,
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

pub struct RespConn {
    conn: Conn,
}

impl RespConn {
    pub fn connect(addr: &str) -> Result<Self> {
        Ok(RespConn {
            conn: Conn::connect(addr)?,
        })
    }

    /// Queues one command (sent at the next `replies`).
    pub fn command(&mut self, args: &[&[u8]]) -> Result<()> {
        self.conn.write(format!("*{}\r\n", args.len()).as_bytes())?;
        for arg in args {
            self.conn.write(format!("${}\r\n", arg.len()).as_bytes())?;
            self.conn.write(arg)?;
            self.conn.write(b"\r\n")?;
        }
        Ok(())
    }

    /// Sends the queued commands and reads `n` replies; a Redis error is an error.
    pub fn replies(&mut self, n: usize) -> Result<Vec<Resp>> {
        self.conn.flush()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match self.reply()? {
                Resp::Error(e) => bail!("redis: {e}"),
                r => out.push(r),
            }
        }
        Ok(out)
    }

    pub fn call(&mut self, args: &[&[u8]]) -> Result<Resp> {
        self.command(args)?;
        self.replies(1)?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no reply"))
    }

    fn reply(&mut self) -> Result<Resp> {
        let line = self.conn.line()?;
        let (kind, rest) = line.split_at(line.len().min(1));
        Ok(match kind {
            "+" => Resp::Simple,
            "-" => Resp::Error(rest.to_owned()),
            ":" => {
                rest.parse::<i64>()?;
                Resp::Int
            }
            "$" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    Resp::Bulk(None)
                } else {
                    let mut data = self.conn.exact(usize::try_from(n)? + 2)?;
                    data.truncate(data.len() - 2);
                    Resp::Bulk(Some(data))
                }
            }
            "*" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    Resp::Array(None)
                } else {
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(self.reply()?);
                    }
                    Resp::Array(Some(items))
                }
            }
            _ => bail!("redis: unexpected reply {line:?}"),
        })
    }
}

impl System for Redis {
    fn name(&self) -> &'static str {
        "Redis Streams"
    }

    fn durability(&self, level: Level) -> Option<&'static str> {
        Some(match level {
            Level::Fsync => {
                "`appendonly yes`, `appendfsync always`: the AOF is written and fsynced before the replies of each event-loop pass"
            }
            Level::NoFsync => {
                "`appendfsync everysec`: AOF written before the reply, fsynced once a second in the background"
            }
        })
    }

    fn set_level(&self, level: Level) -> Result<()> {
        let value: &[u8] = match level {
            Level::Fsync => b"always",
            Level::NoFsync => b"everysec",
        };
        RespConn::connect(&self.addr)?.call(&[b"CONFIG", b"SET", b"appendfsync", value])?;
        Ok(())
    }

    fn queue(
        &self,
        _level: Level,
        name: &str,
        create: bool,
    ) -> Option<Result<Box<dyn QueueClient>>> {
        Some((|| {
            let mut conn = RespConn::connect(&self.addr)?;
            if create {
                conn.call(&[
                    b"XGROUP",
                    b"CREATE",
                    name.as_bytes(),
                    b"g",
                    b"0",
                    b"MKSTREAM",
                ])?;
            }
            let consumer = format!("c{}", rand_id());
            Ok(Box::new(RedisQueue {
                conn,
                key: name.to_owned(),
                consumer,
            }) as Box<dyn QueueClient>)
        })())
    }

    fn stream(
        &self,
        _level: Level,
        name: &str,
        _create: bool,
    ) -> Option<Result<Box<dyn StreamClient>>> {
        Some((|| {
            Ok(Box::new(RedisStream {
                conn: RespConn::connect(&self.addr)?,
                key: name.to_owned(),
                after: "-".to_owned(),
            }) as Box<dyn StreamClient>)
        })())
    }
}

/// A distinct-enough consumer name per client.
fn rand_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct RedisQueue {
    conn: RespConn,
    key: String,
    consumer: String,
}

impl QueueClient for RedisQueue {
    fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        for body in bodies {
            self.conn
                .command(&[b"XADD", self.key.as_bytes(), b"*", b"b", body])?;
        }
        self.conn.replies(bodies.len())?;
        Ok(())
    }

    fn receive(&mut self, max: usize) -> Result<Vec<String>> {
        let count = max.to_string();
        let reply = self.conn.call(&[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            self.consumer.as_bytes(),
            b"COUNT",
            count.as_bytes(),
            b"STREAMS",
            self.key.as_bytes(),
            b">",
        ])?;
        let mut ids = Vec::new();
        // [[key, [[id, [field, value]], ...]]]
        if let Resp::Array(Some(streams)) = reply {
            for stream in streams {
                if let Resp::Array(Some(mut parts)) = stream
                    && let Some(Resp::Array(Some(entries))) = parts.pop()
                {
                    for entry in entries {
                        if let Resp::Array(Some(fields)) = entry
                            && let Some(Resp::Bulk(Some(id))) = fields.into_iter().next()
                        {
                            ids.push(String::from_utf8_lossy(&id).into_owned());
                        }
                    }
                }
            }
        }
        Ok(ids)
    }

    fn delete(&mut self, handles: &[String]) -> Result<()> {
        let mut ack: Vec<&[u8]> = vec![b"XACK", self.key.as_bytes(), b"g"];
        let mut del: Vec<&[u8]> = vec![b"XDEL", self.key.as_bytes()];
        for h in handles {
            ack.push(h.as_bytes());
            del.push(h.as_bytes());
        }
        self.conn.command(&ack)?;
        self.conn.command(&del)?;
        self.conn.replies(2)?;
        Ok(())
    }
}

struct RedisStream {
    conn: RespConn,
    key: String,
    /// `XRANGE` start: `-`, then `(LAST_ID`.
    after: String,
}

impl StreamClient for RedisStream {
    fn append(&mut self, records: &[Vec<u8>]) -> Result<()> {
        for data in records {
            self.conn
                .command(&[b"XADD", self.key.as_bytes(), b"*", b"d", data])?;
        }
        self.conn.replies(records.len())?;
        Ok(())
    }

    fn read_next(&mut self, max: usize) -> Result<usize> {
        let count = max.to_string();
        let reply = self.conn.call(&[
            b"XRANGE",
            self.key.as_bytes(),
            self.after.as_bytes(),
            b"+",
            b"COUNT",
            count.as_bytes(),
        ])?;
        let Resp::Array(Some(entries)) = reply else {
            return Ok(0);
        };
        let n = entries.len();
        if let Some(Resp::Array(Some(fields))) = entries.into_iter().last()
            && let Some(Resp::Bulk(Some(id))) = fields.into_iter().next()
        {
            self.after = format!("({}", String::from_utf8_lossy(&id));
        }
        Ok(n)
    }
}
