//! beanstalkd over its text protocol (a tube is the queue; `delete` after `reserve`).
//! Two servers: one started with `-b DIR -f 0` (fsync after every binlog write), one with
//! `-b DIR -F` (binlog never fsynced).

use anyhow::{Result, bail};

use crate::api::{Level, QueueClient, System};
use crate::net::Conn;

pub struct Beanstalkd {
    pub fsync_addr: String,
    pub nofsync_addr: String,
}

impl System for Beanstalkd {
    fn name(&self) -> &'static str {
        "beanstalkd"
    }

    fn durability(&self, level: Level) -> Option<&'static str> {
        Some(match level {
            Level::Fsync => {
                "`-b DIR -f 0`: binlog fsynced after every write (put, delete) before the reply"
            }
            Level::NoFsync => "`-b DIR -F`: binlog written, never fsynced",
        })
    }

    fn queue(
        &self,
        level: Level,
        name: &str,
        _create: bool,
    ) -> Option<Result<Box<dyn QueueClient>>> {
        let addr = match level {
            Level::Fsync => &self.fsync_addr,
            Level::NoFsync => &self.nofsync_addr,
        };
        Some((|| {
            let mut conn = Conn::connect(addr)?;
            conn.write(format!("use {name}\r\nwatch {name}\r\nignore default\r\n").as_bytes())?;
            conn.flush()?;
            for _ in 0..3 {
                let line = conn.line()?;
                if !(line.starts_with("USING") || line.starts_with("WATCHING")) {
                    bail!("beanstalkd: {line}");
                }
            }
            Ok(Box::new(Tube { conn }) as Box<dyn QueueClient>)
        })())
    }
}

struct Tube {
    conn: Conn,
}

impl QueueClient for Tube {
    fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        for body in bodies {
            self.conn
                .write(format!("put 1024 0 60 {}\r\n", body.len()).as_bytes())?;
            self.conn.write(body)?;
            self.conn.write(b"\r\n")?;
        }
        self.conn.flush()?;
        for _ in bodies {
            let line = self.conn.line()?;
            if !line.starts_with("INSERTED") {
                bail!("beanstalkd put: {line}");
            }
        }
        Ok(())
    }

    fn receive(&mut self, max: usize) -> Result<Vec<String>> {
        for _ in 0..max {
            self.conn.write(b"reserve-with-timeout 0\r\n")?;
        }
        self.conn.flush()?;
        let mut ids = Vec::with_capacity(max);
        for _ in 0..max {
            let line = self.conn.line()?;
            let mut words = line.split(' ');
            match (words.next(), words.next(), words.next()) {
                (Some("RESERVED"), Some(id), Some(len)) => {
                    let len: usize = len.parse()?;
                    self.conn.exact(len + 2)?;
                    ids.push(id.to_owned());
                }
                (Some("TIMED_OUT" | "DEADLINE_SOON"), _, _) => {}
                _ => bail!("beanstalkd reserve: {line}"),
            }
        }
        Ok(ids)
    }

    fn delete(&mut self, handles: &[String]) -> Result<()> {
        for id in handles {
            self.conn.write(format!("delete {id}\r\n").as_bytes())?;
        }
        self.conn.flush()?;
        for _ in handles {
            let line = self.conn.line()?;
            if line != "DELETED" {
                bail!("beanstalkd delete: {line}");
            }
        }
        Ok(())
    }
}
