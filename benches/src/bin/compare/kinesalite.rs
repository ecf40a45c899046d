//! kinesalite over the Kinesis JSON API (HTTP/1.1 keep-alive, one connection per client).
//! kinesalite checks that a request carries SigV4-shaped headers but not the signature, so
//! fixed ones are sent. Data is base64 in JSON, as Kinesis has it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::api::{Level, StreamClient, System};
use crate::net::Conn;

pub struct Kinesalite {
    pub addr: String,
}

struct Http {
    conn: Conn,
    addr: String,
}

impl Http {
    fn connect(addr: &str) -> Result<Self> {
        Ok(Http {
            conn: Conn::connect(addr)?,
            addr: addr.to_owned(),
        })
    }

    fn call(&mut self, action: &str, body: &Value) -> Result<Value> {
        let body = serde_json::to_vec(body)?;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-amz-json-1.1\r\n\
             X-Amz-Target: Kinesis_20131202.{action}\r\nX-Amz-Date: 20260101T000000Z\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/kinesis/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0000\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.conn.write(head.as_bytes())?;
        self.conn.write(&body)?;
        self.conn.flush()?;
        let status = self.conn.line()?;
        let (mut length, mut chunked) = (None, false);
        loop {
            let line = self.conn.line()?;
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>()?);
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let data = if chunked {
            let mut data = Vec::new();
            loop {
                let size = usize::from_str_radix(self.conn.line()?.trim(), 16)?;
                let mut chunk = self.conn.exact(size + 2)?;
                chunk.truncate(size);
                if size == 0 {
                    break;
                }
                data.extend_from_slice(&chunk);
            }
            data
        } else {
            self.conn.exact(length.context("no Content-Length")?)?
        };
        if !status.contains(" 200") {
            bail!(
                "kinesalite {action}: {status}: {}",
                String::from_utf8_lossy(&data)
            );
        }
        if data.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&data)?)
    }
}

impl System for Kinesalite {
    fn name(&self) -> &'static str {
        "kinesalite"
    }

    fn durability(&self, level: Level) -> Option<&'static str> {
        match level {
            Level::Fsync => None,
            Level::NoFsync => Some(
                "`--path DIR`: LevelDB (leveldown) writes without sync, so records reach the OS but are never fsynced before the reply",
            ),
        }
    }

    fn stream(
        &self,
        _level: Level,
        name: &str,
        create: bool,
    ) -> Option<Result<Box<dyn StreamClient>>> {
        Some((|| {
            let mut http = Http::connect(&self.addr)?;
            if create {
                http.call(
                    "CreateStream",
                    &json!({"StreamName": name, "ShardCount": 1}),
                )?;
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let d = http.call("DescribeStream", &json!({"StreamName": name}))?;
                    if d["StreamDescription"]["StreamStatus"] == "ACTIVE" {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("kinesalite: stream {name} not ACTIVE after 10 s");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let it = http.call(
                "GetShardIterator",
                &json!({"StreamName": name, "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"}),
            )?["ShardIterator"]
                .as_str()
                .context("no ShardIterator")?
                .to_owned();
            Ok(Box::new(KinesisStream {
                http,
                name: name.to_owned(),
                iterator: it,
            }) as Box<dyn StreamClient>)
        })())
    }
}

struct KinesisStream {
    http: Http,
    name: String,
    iterator: String,
}

impl StreamClient for KinesisStream {
    fn append(&mut self, records: &[Vec<u8>]) -> Result<()> {
        let records: Vec<Value> = records
            .iter()
            .map(|d| json!({"Data": STANDARD.encode(d), "PartitionKey": "k"}))
            .collect();
        let out = self.http.call(
            "PutRecords",
            &json!({"StreamName": self.name, "Records": records}),
        )?;
        if out["FailedRecordCount"].as_u64().unwrap_or(0) > 0 {
            bail!("kinesalite PutRecords: {out}");
        }
        Ok(())
    }

    fn read_next(&mut self, max: usize) -> Result<usize> {
        let out = self.http.call(
            "GetRecords",
            &json!({"ShardIterator": self.iterator, "Limit": max.min(10_000)}),
        )?;
        if let Some(next) = out["NextShardIterator"].as_str() {
            self.iterator = next.to_owned();
        }
        Ok(out["Records"].as_array().map_or(0, Vec::len))
    }
}
