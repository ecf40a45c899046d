//! The machine's own limits, measured in the same run and directory: the ceiling row.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::workloads::{Measured, nanos};

/// The file [`dd`] writes in the run's directory.
pub const DD_FILE: &str = "dd.test";

/// `dd if=/dev/zero bs=1M count=MIB conv=fdatasync`: sequential write bandwidth with one
/// fdatasync at the end, in MB/s (decimal, as dd prints). Leaves [`DD_FILE`] behind.
pub fn dd(dir: &Path, mib: u64) -> Result<Measured> {
    let file = dir.join(DD_FILE);
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", &format!("count={mib}"), "conv=fdatasync"])
        .env("LC_ALL", "C")
        .stdout(Stdio::null())
        .output()
        .context("run dd")?;
    let text = String::from_utf8_lossy(&out.stderr);
    // "268435456 bytes (268 MB, 256 MiB) copied, 0.21 s, 1.3 GB/s"
    let line = text.lines().last().unwrap_or_default();
    let bytes: f64 = line
        .split(' ')
        .next()
        .and_then(|w| w.parse().ok())
        .context("dd's byte count")?;
    let secs: f64 = line
        .split(", ")
        .find_map(|w| w.strip_suffix(" s").and_then(|s| s.parse().ok()))
        .with_context(|| format!("dd's seconds in {line:?}"))?;
    Ok(Measured {
        units: bytes / 1e6,
        secs,
        lat_ns: Vec::new(),
    })
}

/// Reads the file dd just wrote (in the page cache) twice with 1 MiB reads; the second pass
/// is measured, in MB/s.
pub fn page_cache_read(dir: &Path) -> Result<Measured> {
    let path = dir.join(DD_FILE);
    let mut buf = vec![0u8; 1 << 20];
    let mut pass = || -> Result<(u64, f64)> {
        let mut f = File::open(&path)?;
        let start = Instant::now();
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        Ok((total, start.elapsed().as_secs_f64()))
    };
    pass()?;
    let (bytes, secs) = pass()?;
    std::fs::remove_file(&path)?;
    Ok(Measured {
        units: bytes as f64 / 1e6,
        secs,
        lat_ns: Vec::new(),
    })
}

/// 4 KiB appends to a new file, each followed by fdatasync, for `secs`: writes/s.
pub fn append_fdatasync(dir: &Path, secs: f64) -> Result<Measured> {
    let path = dir.join("append.test");
    let mut f = File::create(&path)?;
    let block = vec![0x5au8; 4096];
    let mut m = Measured::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        m.lat_ns.push(nanos(t.elapsed()));
        m.units += 1.0;
    }
    m.secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(m)
}

/// Runs `/bin/true` (fork/exec/wait) for `secs`: spawns/s.
pub fn spawn(secs: f64) -> Result<Measured> {
    let mut m = Measured::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        let t = Instant::now();
        if !Command::new("/bin/true").status()?.success() {
            bail!("/bin/true failed");
        }
        m.lat_ns.push(nanos(t.elapsed()));
        m.units += 1.0;
    }
    m.secs = start.elapsed().as_secs_f64();
    Ok(m)
}
