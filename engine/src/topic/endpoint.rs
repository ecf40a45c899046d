//! What a subscription receives (the SNS JSON envelope or the raw message) and the
//! deliveries that leave the data directory: an HTTP POST, a command, a line in a file.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use super::topic_arn;
use crate::queue::{AttributeValue, MessageAttribute};

/// How long an HTTP delivery may take to connect, send and be answered.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// A published message as the deliveries need it.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing<'a> {
    pub(crate) topic: &'a str,
    pub(crate) subscription_arn: &'a str,
    pub(crate) message_id: &'a str,
    pub(crate) subject: Option<&'a str>,
    pub(crate) body: &'a str,
    pub(crate) attributes: &'a [MessageAttribute],
    pub(crate) timestamp_ms: u64,
    pub(crate) sequence_number: Option<String>,
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds (`2026-12-01T07:00:00.000Z`).
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, in unsigned form
    // shifted to the era starting 0000-03-01).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

impl Outgoing<'_> {
    /// The SNS notification envelope.
    pub(crate) fn envelope(&self) -> Value {
        let mut v = Map::new();
        v.insert("Type".into(), "Notification".into());
        v.insert("MessageId".into(), self.message_id.into());
        if let Some(seq) = &self.sequence_number {
            v.insert("SequenceNumber".into(), seq.clone().into());
        }
        v.insert("TopicArn".into(), topic_arn(self.topic).into());
        if let Some(subject) = self.subject {
            v.insert("Subject".into(), subject.into());
        }
        v.insert("Message".into(), self.body.into());
        v.insert("Timestamp".into(), rfc3339_ms(self.timestamp_ms).into());
        if !self.attributes.is_empty() {
            let attributes: Map<String, Value> = self
                .attributes
                .iter()
                .map(|a| {
                    let value = match &a.value {
                        AttributeValue::String(s) => s.clone(),
                        AttributeValue::Binary(b) => BASE64.encode(b),
                    };
                    (
                        a.name.clone(),
                        json!({ "Type": a.data_type, "Value": value }),
                    )
                })
                .collect();
            v.insert("MessageAttributes".into(), Value::Object(attributes));
        }
        Value::Object(v)
    }

    /// The body a subscription receives: the raw message or the envelope.
    pub(crate) fn delivered_body(&self, raw: bool) -> String {
        if raw {
            self.body.to_string()
        } else {
            self.envelope().to_string()
        }
    }
}

/// `(host:port, path)` of an `http://` URL.
pub(crate) fn parse_http_url(url: &str) -> Result<(String, String), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "invalid HTTP endpoint {url:?}: only http:// URLs are supported"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty()
        || authority.contains('@')
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        || path.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("invalid HTTP endpoint {url:?}"));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// POSTs the message; `Ok` on a 2xx answer.
pub(crate) fn post(url: &str, message: &Outgoing<'_>, raw: bool) -> Result<(), String> {
    let (authority, path) = parse_http_url(url)?;
    let body = message.delivered_body(raw);
    let address = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let mut stream = TcpStream::connect_timeout(&address, HTTP_TIMEOUT)
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HTTP_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: shoal\r\nx-amz-sns-message-type: Notification\r\nx-amz-sns-message-id: {}\r\nx-amz-sns-topic-arn: {}\r\nx-amz-sns-subscription-arn: {}\r\n",
        body.len(),
        message.message_id,
        topic_arn(message.topic),
        message.subscription_arn,
    );
    if raw {
        request.push_str("x-amz-sns-rawdelivery: true\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .and_then(|()| stream.flush())
        .map_err(|e| format!("cannot send to {url}: {e}"))?;
    // The status line is all that matters; read until it is complete.
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 8192 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) => return Err(format!("no answer from {url}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&answer);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("{url} did not answer HTTP"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("{url} answered {status}"))
    }
}

/// Runs `sh -c command` with the message on stdin; `Ok` on exit status 0. The command's
/// stdout goes to this process's stderr, so it never mixes with a CLI's results.
pub(crate) fn exec(command: &str, message: &Outgoing<'_>, raw: bool) -> Result<(), String> {
    let body = message.delivered_body(raw);
    let stdout = std::os::fd::AsFd::as_fd(&std::io::stderr())
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::null(), Stdio::from);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("SHOAL_TOPIC", message.topic)
        .env("SHOAL_MESSAGE_ID", message.message_id)
        .env("SHOAL_SUBSCRIPTION_ARN", message.subscription_arn)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .spawn()
        .map_err(|e| format!("cannot run sh -c {command:?}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = stdin.write_all(body.as_bytes());
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("sh -c {command:?} failed ({status})"))
    }
}

/// Appends one JSON line per message to the file and fsyncs it: the envelope, or with `raw`
/// the message as a JSON string.
pub(crate) fn append_lines(path: &str, lines: &[String]) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| format!("cannot write {path}: {e}"))
}

/// The line a file subscription gets for a message.
pub(crate) fn file_line(message: &Outgoing<'_>, raw: bool) -> String {
    if raw {
        Value::String(message.body.to_string()).to_string()
    } else {
        message.envelope().to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_083_200_000), "2026-12-01T00:00:00.000Z");
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/hook").unwrap(),
            ("127.0.0.1:8080".into(), "/hook".into())
        );
        assert_eq!(
            parse_http_url("http://example.com").unwrap(),
            ("example.com:80".into(), "/".into())
        );
        assert!(parse_http_url("https://example.com/").is_err());
        assert!(parse_http_url("http://").is_err());
        assert!(parse_http_url("http://a b/").is_err());
    }

    #[test]
    fn envelope_fields() {
        let attributes = [MessageAttribute {
            name: "kind".into(),
            data_type: "String".into(),
            value: AttributeValue::String("x".into()),
        }];
        let m = Outgoing {
            topic: "t",
            subscription_arn: "arn:aws:sns:local:000000000000:t:1",
            message_id: "id",
            subject: Some("hi"),
            body: "hello",
            attributes: &attributes,
            timestamp_ms: 0,
            sequence_number: None,
        };
        let v = m.envelope();
        assert_eq!(v["Type"], "Notification");
        assert_eq!(v["TopicArn"], "arn:aws:sns:local:000000000000:t");
        assert_eq!(v["Subject"], "hi");
        assert_eq!(v["Message"], "hello");
        assert_eq!(v["Timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["MessageAttributes"]["kind"]["Type"], "String");
        assert_eq!(v["MessageAttributes"]["kind"]["Value"], "x");
        assert_eq!(m.delivered_body(true), "hello");
    }
}
