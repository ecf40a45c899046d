//! NATS JetStream over the plain client protocol: streams and durable pull consumers made
//! through `$JS.API` request/reply, publishes acknowledged by the stream (`PubAck` on a reply
//! inbox), pull fetches with `$JS.API.CONSUMER.MSG.NEXT`, and `+ACK` to the message's reply
//! subject. A queue is a work-queue stream with one durable consumer (explicit ack); a stream
//! is a limits stream read back by a consumer that needs no acks.

use anyhow::{Result, bail};

use crate::api::{Level, QueueClient, StreamClient, System};
use crate::net::Conn;

pub struct Nats {
    pub addr: String,
}

/// One delivered message: subject, reply subject, header block (if any).
struct Msg {
    subject: String,
    reply: Option<String>,
    headers: Option<String>,
    payload: Vec<u8>,
}

struct NatsConn {
    conn: Conn,
    inbox: String,
    next: u64,
}

static CLIENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl NatsConn {
    fn connect(addr: &str) -> Result<Self> {
        let mut conn = Conn::connect(addr)?;
        let info = conn.line()?;
        if !info.starts_with("INFO") {
            bail!("nats: expected INFO, got {info}");
        }
        let id = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let inbox = format!("_INBOX.cmp{}x{id}", std::process::id());
        conn.write(
            br#"CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"lang":"rust","version":"0"}"#,
        )?;
        conn.write(format!("\r\nSUB {inbox}.* 1\r\nPING\r\n").as_bytes())?;
        conn.flush()?;
        loop {
            let line = conn.line()?;
            if line == "PONG" {
                break;
            }
            if line.starts_with("-ERR") {
                bail!("nats: {line}");
            }
        }
        Ok(NatsConn {
            conn,
            inbox,
            next: 0,
        })
    }

    fn new_inbox(&mut self) -> String {
        self.next += 1;
        format!("{}.{}", self.inbox, self.next)
    }

    fn publish(&mut self, subject: &str, reply: Option<&str>, payload: &[u8]) -> Result<()> {
        let head = match reply {
            Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
            None => format!("PUB {subject} {}\r\n", payload.len()),
        };
        self.conn.write(head.as_bytes())?;
        self.conn.write(payload)?;
        self.conn.write(b"\r\n")?;
        Ok(())
    }

    /// The next message delivered to this connection (answering server PINGs).
    fn next_msg(&mut self) -> Result<Msg> {
        loop {
            let line = self.conn.line()?;
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first().copied() {
                Some("MSG") => {
                    let (subject, reply, len) = match words.as_slice() {
                        [_, s, _, len] => (*s, None, *len),
                        [_, s, _, r, len] => (*s, Some(*r), *len),
                        _ => bail!("nats: bad MSG {line}"),
                    };
                    let len: usize = len.parse()?;
                    let mut payload = self.conn.exact(len + 2)?;
                    payload.truncate(len);
                    return Ok(Msg {
                        subject: subject.to_owned(),
                        reply: reply.map(str::to_owned),
                        headers: None,
                        payload,
                    });
                }
                Some("HMSG") => {
                    let (subject, reply, hlen, total) = match words.as_slice() {
                        [_, s, _, h, t] => (*s, None, *h, *t),
                        [_, s, _, r, h, t] => (*s, Some(*r), *h, *t),
                        _ => bail!("nats: bad HMSG {line}"),
                    };
                    let (hlen, total): (usize, usize) = (hlen.parse()?, total.parse()?);
                    let mut all = self.conn.exact(total + 2)?;
                    all.truncate(total);
                    let payload = all.split_off(hlen.min(all.len()));
                    return Ok(Msg {
                        subject: subject.to_owned(),
                        reply: reply.map(str::to_owned),
                        headers: Some(String::from_utf8_lossy(&all).into_owned()),
                        payload,
                    });
                }
                Some("PING") => {
                    self.conn.write(b"PONG\r\n")?;
                    self.conn.flush()?;
                }
                Some("PONG" | "+OK") => {}
                _ => bail!("nats: {line}"),
            }
        }
    }

    /// A request/reply; a JetStream API error is an error.
    fn request(&mut self, subject: &str, payload: &[u8]) -> Result<Vec<u8>> {
        let inbox = self.new_inbox();
        self.publish(subject, Some(&inbox), payload)?;
        self.conn.flush()?;
        loop {
            let msg = self.next_msg()?;
            if msg.subject == inbox {
                if let Some(h) = &msg.headers
                    && h.contains(" 503")
                {
                    bail!("nats: no responders for {subject} (is JetStream on?)");
                }
                let text = String::from_utf8_lossy(&msg.payload);
                if text.contains("\"error\"") {
                    bail!("nats {subject}: {text}");
                }
                return Ok(msg.payload);
            }
        }
    }

    /// Publishes every payload with a reply inbox, then waits for every stream ack.
    fn publish_acked(&mut self, subject: &str, payloads: &[Vec<u8>]) -> Result<()> {
        let prefix = self.new_inbox();
        for (i, p) in payloads.iter().enumerate() {
            self.publish(subject, Some(&format!("{prefix}{i}")), p)?;
        }
        self.conn.flush()?;
        let mut acked = 0;
        while acked < payloads.len() {
            let msg = self.next_msg()?;
            if msg.subject.starts_with(&prefix) {
                if msg.payload.windows(7).any(|w| w == b"\"error\"") || msg.headers.is_some() {
                    bail!(
                        "nats publish: {} {}",
                        msg.headers.unwrap_or_default(),
                        String::from_utf8_lossy(&msg.payload)
                    );
                }
                acked += 1;
            }
        }
        Ok(())
    }

    /// Pulls up to `max` messages from a durable consumer; waits at most `expires_ms` for a
    /// batch that cannot be filled. Returns the messages' reply (ack) subjects.
    fn fetch(
        &mut self,
        stream: &str,
        consumer: &str,
        max: usize,
        expires_ms: u64,
    ) -> Result<Vec<String>> {
        let inbox = self.new_inbox();
        let body = format!(r#"{{"batch":{max},"expires":{}}}"#, expires_ms * 1_000_000);
        self.publish(
            &format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            Some(&inbox),
            body.as_bytes(),
        )?;
        self.conn.flush()?;
        let mut acks = Vec::with_capacity(max);
        while acks.len() < max {
            let msg = self.next_msg()?;
            // Pulled messages keep their stream subject and carry their ack subject as the
            // reply; a status (404 no messages, 408 request timeout) comes to the inbox.
            match msg.reply {
                Some(reply) if reply.starts_with("$JS.ACK.") => acks.push(reply),
                _ if msg.subject == inbox => break,
                _ => {}
            }
        }
        Ok(acks)
    }
}

impl System for Nats {
    fn name(&self) -> &'static str {
        "NATS JetStream"
    }

    fn durability(&self, level: Level) -> Option<&'static str> {
        match level {
            Level::Fsync => None,
            Level::NoFsync => Some(
                "file storage, written to the OS before the publish ack; fsynced every 2 min (the server's default; the Debian 2.9.10 build has no `sync_interval` to sync each write)",
            ),
        }
    }

    fn queue(
        &self,
        _level: Level,
        name: &str,
        create: bool,
    ) -> Option<Result<Box<dyn QueueClient>>> {
        Some((|| {
            let mut conn = NatsConn::connect(&self.addr)?;
            if create {
                create_stream(&mut conn, name, "workqueue", "explicit")?;
            }
            Ok(Box::new(NatsQueue {
                conn,
                name: name.to_owned(),
            }) as Box<dyn QueueClient>)
        })())
    }

    fn stream(
        &self,
        _level: Level,
        name: &str,
        create: bool,
    ) -> Option<Result<Box<dyn StreamClient>>> {
        Some((|| {
            let mut conn = NatsConn::connect(&self.addr)?;
            if create {
                create_stream(&mut conn, name, "limits", "none")?;
            }
            Ok(Box::new(NatsStream {
                conn,
                name: name.to_owned(),
            }) as Box<dyn StreamClient>)
        })())
    }
}

fn create_stream(conn: &mut NatsConn, name: &str, retention: &str, ack: &str) -> Result<()> {
    let config = format!(
        r#"{{"name":"{name}","subjects":["{name}.m"],"retention":"{retention}","storage":"file","num_replicas":1}}"#
    );
    conn.request(&format!("$JS.API.STREAM.CREATE.{name}"), config.as_bytes())?;
    let consumer = format!(
        r#"{{"stream_name":"{name}","config":{{"durable_name":"c","ack_policy":"{ack}","deliver_policy":"all","ack_wait":60000000000,"max_ack_pending":-1}}}}"#
    );
    conn.request(
        &format!("$JS.API.CONSUMER.DURABLE.CREATE.{name}.c"),
        consumer.as_bytes(),
    )?;
    Ok(())
}

struct NatsQueue {
    conn: NatsConn,
    name: String,
}

impl QueueClient for NatsQueue {
    fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        self.conn.publish_acked(&format!("{}.m", self.name), bodies)
    }

    fn receive(&mut self, max: usize) -> Result<Vec<String>> {
        self.conn.fetch(&self.name, "c", max, 1000)
    }

    fn delete(&mut self, handles: &[String]) -> Result<()> {
        for reply in handles {
            self.conn.publish(reply, None, b"+ACK")?;
        }
        self.conn.conn.flush()
    }
}

struct NatsStream {
    conn: NatsConn,
    name: String,
}

impl StreamClient for NatsStream {
    fn append(&mut self, records: &[Vec<u8>]) -> Result<()> {
        self.conn
            .publish_acked(&format!("{}.m", self.name), records)
    }

    fn read_next(&mut self, max: usize) -> Result<usize> {
        Ok(self.conn.fetch(&self.name, "c", max, 200)?.len())
    }
}
