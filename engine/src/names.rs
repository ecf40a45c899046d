//! Validation of resource names, done before any path is built from one.

use crate::error::{Error, Result};

/// A Kinesis stream name: 1-128 of `[A-Za-z0-9_.-]`, and not `.` or `..`.
pub fn validate_stream_name(name: &str) -> Result<()> {
    validate(name, "stream", 128, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
    })
}

/// An SQS queue name: 1-80 of `[A-Za-z0-9_-]`, FIFO queues ending in `.fifo` (counted).
pub fn validate_queue_name(name: &str) -> Result<()> {
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    validate(name, "queue", 80, |_| true)?;
    validate(stem, "queue", 80, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
    })
}

/// An SNS topic name: 1-256 of `[A-Za-z0-9_-]`, FIFO topics ending in `.fifo` (counted).
pub fn validate_topic_name(name: &str) -> Result<()> {
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    validate(name, "topic", 256, |_| true)?;
    validate(stem, "topic", 256, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
    })
}

fn validate(name: &str, kind: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<()> {
    let invalid = |why: String| {
        Err(Error::InvalidArgument(format!(
            "invalid {kind} name {name:?}: {why}"
        )))
    };
    if name.is_empty() {
        return invalid("it is empty".into());
    }
    if name.len() > max {
        return invalid(format!("longer than {max} characters"));
    }
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return invalid(format!("character {c:?} is not allowed"));
    }
    if name.chars().all(|c| c == '.') {
        return invalid("it is only dots".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        for good in ["a", "orders", "my.stream-1_x", &"s".repeat(128)] {
            assert!(validate_stream_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\0b",
            "é",
            "a b",
            &"s".repeat(129),
            "../x",
        ] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn queue_names() {
        for good in [
            "q",
            "jobs-1_a",
            "orders.fifo",
            &"q".repeat(80),
            &format!("{}.fifo", "q".repeat(75)),
        ] {
            assert!(validate_queue_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".fifo",
            "a.b",
            "a/b",
            "..",
            &"q".repeat(81),
            &format!("{}.fifo", "q".repeat(76)),
        ] {
            assert!(validate_queue_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("alerts").is_ok());
        assert!(validate_topic_name("alerts.fifo").is_ok());
        assert!(validate_topic_name("a.b").is_err());
        assert!(validate_topic_name(&"t".repeat(257)).is_err());
    }
}
