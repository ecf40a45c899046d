//! The workloads, run the same way against every system.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::api::{Level, QueueClient, System};

/// One measurement: `units` done in `secs`, and per-operation latencies (ns).
#[derive(Debug, Default, Clone)]
pub struct Measured {
    pub units: f64,
    pub secs: f64,
    pub lat_ns: Vec<u64>,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.units / self.secs
        } else {
            0.0
        }
    }

    /// The `p`-th percentile latency in ms.
    pub fn percentile_ms(&mut self, p: f64) -> Option<f64> {
        if self.lat_ns.is_empty() {
            return None;
        }
        self.lat_ns.sort_unstable();
        let last = self.lat_ns.len() - 1;
        let rank = (p / 100.0 * last as f64).round();
        let i = (0..=last).find(|&i| i as f64 >= rank).unwrap_or(last);
        self.lat_ns.get(i).map(|&ns| ns as f64 / 1e6)
    }
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn need<T>(what: Option<Result<T>>, sys: &dyn System) -> Result<T> {
    match what {
        Some(r) => r,
        None => bail!("{} does not offer this workload", sys.name()),
    }
}

/// `clients` clients each loop: send one 100-byte message, receive one, delete it. One
/// operation = one whole cycle; throughput in messages (cycles) per second.
pub fn queue_cycle(
    sys: &dyn System,
    level: Level,
    name: &str,
    clients: usize,
    secs: f64,
) -> Result<Measured> {
    let mut all: Vec<Box<dyn QueueClient>> = Vec::with_capacity(clients);
    for i in 0..clients {
        all.push(need(sys.queue(level, name, i == 0), sys)?);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let body = vec![b'x'; 100];
    let results: Vec<Result<(u64, Vec<u64>, Instant)>> = std::thread::scope(|s| {
        let handles: Vec<_> = all
            .into_iter()
            .map(|mut client| {
                let body = body.clone();
                s.spawn(move || -> Result<(u64, Vec<u64>, Instant)> {
                    let batch = [body];
                    let mut lat = Vec::new();
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        client.send(&batch)?;
                        let mut tries = 0;
                        loop {
                            let got = client.receive(1)?;
                            if !got.is_empty() {
                                client.delete(&got)?;
                                break;
                            }
                            tries += 1;
                            if tries > 10_000 {
                                bail!("no message to receive after a send");
                            }
                        }
                        lat.push(nanos(t.elapsed()));
                        done += 1;
                    }
                    Ok((done, lat, Instant::now()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked")))
            })
            .collect()
    });
    let mut out = Measured::default();
    let mut end = start;
    for r in results {
        let (done, lat, finished) = r?;
        out.units += done as f64;
        out.lat_ns.extend(lat);
        end = end.max(finished);
    }
    out.secs = (end - start).as_secs_f64();
    Ok(out)
}

/// Appends records of `size` bytes in batches of `batch` for `secs`, then reads them all
/// back from the start in calls of up to 1000 with a new client. Latency per call.
pub fn stream_append_read(
    sys: &dyn System,
    level: Level,
    name: &str,
    size: usize,
    batch: usize,
    secs: f64,
) -> Result<(Measured, Measured)> {
    let mut writer = need(sys.stream(level, name, true), sys)?;
    let records = vec![vec![b'x'; size]; batch];
    let mut append = Measured::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        let t = Instant::now();
        writer.append(&records)?;
        append.lat_ns.push(nanos(t.elapsed()));
        append.units += batch as f64;
    }
    append.secs = start.elapsed().as_secs_f64();
    drop(writer);

    let total = append.lat_ns.len() * batch;
    let mut reader = need(sys.stream(level, name, false), sys)?;
    let mut read = Measured::default();
    let start = Instant::now();
    let (mut got, mut empty) = (0usize, 0u32);
    while got < total {
        let t = Instant::now();
        let n = reader.read_next((total - got).min(1000))?;
        read.lat_ns.push(nanos(t.elapsed()));
        got += n;
        if n == 0 {
            empty += 1;
            if empty > 100 {
                bail!("read back {got} of {total} records, then nothing");
            }
        }
    }
    read.units = got as f64;
    read.secs = start.elapsed().as_secs_f64();
    Ok((append, read))
}

/// Fills a queue with `n` 100-byte messages in sends of 10, then drains it with receives of
/// up to 10, each followed by a delete of what it got. Latency per send / per
/// receive + delete.
pub fn backlog(
    sys: &dyn System,
    level: Level,
    name: &str,
    n: usize,
) -> Result<(Measured, Measured)> {
    let mut client = need(sys.queue(level, name, true), sys)?;
    let mut fill = Measured::default();
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < n {
        let k = (n - sent).min(10);
        let batch: Vec<Vec<u8>> = (sent..sent + k)
            .map(|i| format!("{i:0>100}").into_bytes())
            .collect();
        let t = Instant::now();
        client.send(&batch)?;
        fill.lat_ns.push(nanos(t.elapsed()));
        sent += k;
    }
    fill.units = sent as f64;
    fill.secs = start.elapsed().as_secs_f64();

    let mut drain = Measured::default();
    let start = Instant::now();
    let (mut got, mut empty) = (0usize, 0u32);
    while got < n {
        let t = Instant::now();
        let handles = client.receive((n - got).min(10))?;
        if handles.is_empty() {
            empty += 1;
            if empty > 100 {
                bail!("drained {got} of {n}, then nothing");
            }
            continue;
        }
        client.delete(&handles)?;
        drain.lat_ns.push(nanos(t.elapsed()));
        got += handles.len();
    }
    drain.units = got as f64;
    drain.secs = start.elapsed().as_secs_f64();
    Ok((fill, drain))
}
