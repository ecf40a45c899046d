//! `shoal stats`: one line per stream, queue and topic, then the data directory's total.

use std::io::{self, Write};

use serde_json::{Value, json};
use shoal_engine::DataDir;
use shoal_engine::stats::DiskUsage;

use crate::Output;
use crate::util::emit;

fn disk(usage: &DiskUsage) -> Value {
    json!({ "files": usage.files, "bytes": usage.bytes, "segments": usage.segments })
}

fn text(line: &Value) -> String {
    let fields = line.as_object().into_iter().flatten();
    fields
        .map(|(key, value)| match value {
            Value::Object(inner) => inner
                .iter()
                .map(|(k, v)| format!("{key}.{k}={v}"))
                .collect::<Vec<_>>()
                .join("\t"),
            Value::String(s) => format!("{key}={s}"),
            other => format!("{key}={other}"),
        })
        .collect::<Vec<_>>()
        .join("\t")
}

/// Runs `shoal stats`.
pub fn run_stats(dir: &DataDir, output: Output) -> anyhow::Result<()> {
    let stats = dir.stats()?;
    let mut lines = Vec::new();
    for s in &stats.streams {
        lines.push(json!({
            "stream": s.name,
            "open_shards": s.open_shards,
            "records": s.records,
            "disk": disk(&s.disk),
        }));
    }
    for q in &stats.queues {
        lines.push(json!({
            "queue": q.name,
            "visible": q.counts.visible,
            "in_flight": q.counts.in_flight,
            "delayed": q.counts.delayed,
            "disk": disk(&q.disk),
        }));
    }
    for t in &stats.topics {
        lines.push(json!({
            "topic": t.name,
            "subscriptions": t.subscriptions,
            "messages": t.messages,
            "disk": disk(&t.disk),
        }));
    }
    lines.push(json!({ "total": disk(&stats.total) }));
    let mut out = io::stdout().lock();
    for line in &lines {
        let line = match output {
            Output::Json => line.to_string(),
            Output::Text => text(line),
        };
        emit(&mut out, &line)?;
    }
    out.flush()?;
    Ok(())
}
