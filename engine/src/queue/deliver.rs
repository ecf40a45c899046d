//! Exactly-once delivery into a queue from another log (a topic's fan-out).

use super::handle::{Queue, SendMessage, Sent, sequence_number};
use super::message::{md5_hex, md5_of_message_attributes};
use super::stored::Origin;
use crate::error::Result;

/// Exactly-once delivery into a queue from another log (a topic's fan-out): each delivered
/// message carries its origin (`source`, its incarnation, its offset there), so a delivery cut
/// short by a crash is completed without duplicates by looking, from a recorded
/// [`Queue::message_log_end`], for what already arrived.
impl Queue {
    /// The message log's next offset (for all processes): record it with a delivery cursor.
    pub fn message_log_end(&self) -> Result<u64> {
        self.message_reader().next_offset()
    }

    /// The origin offsets of the messages delivered from `source` (that incarnation) found in
    /// the message log at or after `from`.
    pub fn delivered_since(
        &self,
        from: u64,
        source: &str,
        incarnation: u64,
    ) -> Result<std::collections::BTreeSet<u64>> {
        let mut found = std::collections::BTreeSet::new();
        self.each_message(from, |_, header| {
            if let Some(origin) = header.origin
                && origin.queue == source
                && origin.incarnation == incarnation
            {
                found.insert(origin.offset);
            }
            std::ops::ControlFlow::Continue(())
        })?;
        Ok(found)
    }

    /// Sends messages delivered from `source` as one atomic append, each with its offset
    /// there. Checked like [`Queue::send_batch`]; a FIFO queue's deduplication is the source's
    /// business and is not applied again.
    pub fn deliver(
        &self,
        messages: &[(SendMessage, u64)],
        source: &str,
        incarnation: u64,
    ) -> Result<Vec<Sent>> {
        let attributes = self.attributes()?;
        let now = self.dir.clock.now_ms();
        let mut prepared = Vec::with_capacity(messages.len());
        for (m, offset) in messages {
            let (mut header, payload) = self.prepare(&attributes, m)?;
            header.sent_ms = now;
            header.origin = Some(Origin {
                queue: source.to_string(),
                incarnation,
                offset: *offset,
            });
            prepared.push((header, payload));
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.append_messages(&prepared)?;
        Ok(messages
            .iter()
            .zip(&prepared)
            .enumerate()
            .map(|(i, ((m, _), (header, _)))| Sent {
                message_id: header.id.clone(),
                md5_of_body: md5_hex(m.body.as_bytes()),
                md5_of_message_attributes: md5_of_message_attributes(&m.attributes),
                sequence_number: attributes.fifo.then(|| sequence_number(first + i as u64)),
            })
            .collect())
    }
}
