//! Small pieces every command uses: durations, exit codes, output.

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use shoal_engine::Error;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::{AttributeValue, MessageAttribute};

/// Exit codes of the CLI contract.
pub mod exit {
    /// Any other failure.
    pub const FAILURE: u8 = 1;
    /// Bad command line.
    pub const USAGE: u8 = 2;
    /// The named queue, stream, topic or shard does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// A throughput limit was exceeded.
    pub const THROTTLED: u8 = 4;
    /// Invalid input (a record, a body, a sequence number, a duration, ...).
    pub const INVALID: u8 = 5;
    /// Corruption detected on disk.
    pub const CORRUPTION: u8 = 6;
    /// Conflict with the current state (exists already, closed shard, locked, ...).
    pub const CONFLICT: u8 = 7;
}

/// Invalid input found by the CLI itself (bad JSON, bad base64, bad duration): exit 5.
#[derive(Debug)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// Returns an [`Invalid`] error.
/// True when a read of stdin would not block (bytes are ready, or the input ended). A line
/// reader whose buffer is empty sends what it has gathered only when this is false: a slow
/// producer's lines are acknowledged as they come, a fast one's in full batches.
pub fn stdin_ready() -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let stdin = io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0)
}

pub fn invalid<T>(message: impl Into<String>) -> anyhow::Result<T> {
    Err(Invalid(message.into()).into())
}

/// The exit code for an error, by the contract.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<Invalid>().is_some() {
        return exit::INVALID;
    }
    if let Some(e) = err.downcast_ref::<io::Error>()
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        return 0;
    }
    match err.downcast_ref::<Error>() {
        Some(Error::NotFound { .. }) => exit::NOT_FOUND,
        Some(Error::Throttled(_)) => exit::THROTTLED,
        Some(
            Error::InvalidArgument(_)
            | Error::RecordTooLarge { .. }
            | Error::OffsetTrimmed { .. }
            | Error::InvalidReceiptHandle(_),
        ) => exit::INVALID,
        Some(Error::Corruption { .. } | Error::UnsupportedVersion { .. }) => exit::CORRUPTION,
        Some(
            Error::AlreadyExists { .. }
            | Error::Conflict(_)
            | Error::MessageNotInflight(_)
            | Error::Locked { .. }
            | Error::Sealed { .. },
        ) => exit::CONFLICT,
        _ => exit::FAILURE,
    }
}

/// Parses a duration: `500ms`, `30s`, `15m`, `4h`, `4d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {text:?} is too large"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid duration {text:?} ({e}); use e.g. 500ms, 30s, 15m, 4h, 4d or seconds")
    })
}

/// Parses a durability mode: `always`, `never` or `interval:DURATION`.
pub fn parse_durability(text: &str) -> Result<DurabilityMode, String> {
    match text {
        "always" => Ok(DurabilityMode::Always),
        "never" => Ok(DurabilityMode::Never),
        _ => {
            let Some(every) = text.strip_prefix("interval:") else {
                return Err(format!(
                    "invalid durability {text:?}: use always, never or interval:DURATION"
                ));
            };
            let every = parse_duration(every)?;
            let ms = u64::try_from(every.as_millis()).map_err(|_| "interval too long")?;
            if ms == 0 {
                return Err("the interval must be at least 1ms".into());
            }
            Ok(DurabilityMode::IntervalMs(ms))
        }
    }
}

/// Parses a message attribute `NAME=TYPE:VALUE` (`--attr` of `send` and `publish`): TYPE is
/// String, Number or Binary, optionally with a custom suffix (`Number.int`); a Binary value is
/// base64. The engine checks names, types and values.
pub fn parse_attribute(text: &str) -> anyhow::Result<MessageAttribute> {
    let Some((name, rest)) = text.split_once('=') else {
        return invalid(format!("--attr {text:?}: use NAME=TYPE:VALUE"));
    };
    let Some((data_type, value)) = rest.split_once(':') else {
        return invalid(format!("--attr {text:?}: use NAME=TYPE:VALUE"));
    };
    let value = if data_type.split('.').next() == Some("Binary") {
        match BASE64.decode(value.as_bytes()) {
            Ok(bytes) => AttributeValue::Binary(bytes),
            Err(e) => {
                return invalid(format!(
                    "--attr {name}: the Binary value is not base64: {e}"
                ));
            }
        }
    } else {
        AttributeValue::String(value.to_string())
    };
    Ok(MessageAttribute {
        name: name.to_string(),
        data_type: data_type.to_string(),
        value,
    })
}

/// Writes one output line and flushes: a line printed is a line the reader can see.
pub fn emit(out: &mut impl Write, line: &str) -> io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}

/// Milliseconds since the epoch as RFC 3339 with milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_duration("4d"), Ok(Duration::from_secs(4 * 86400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "abc", "-1", "1.5.3s", "10 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
