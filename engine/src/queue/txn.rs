//! One locked operation on a queue's state ([`Txn`]): receiving (the scan of the message log,
//! FIFO group order, dead-letter moves), deleting, changing visibility, and the snapshots
//! and space reclaiming that follow state changes.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use super::attributes::QueueAttributes;
use super::handle::{
    HELD_LIMIT, Loaded, MAX_RECEIVE_MESSAGES, Queue, Receive, ReceivedMessage, SCAN_LIMIT,
    SNAPSHOT_FILE, SNAPSHOT_MAGIC, corrupt, is_queue_origin, lock, ms, sequence_number,
};
use super::message::{md5_hex, md5_of_message_attributes};
use super::stored::{Event, KIND_EVENT, Receipt, Scanned, decode_payload};
use crate::durability::DurabilityMode;
use crate::error::{Error, Result};
use crate::log::{Entry, ReadLimit, Record};
use crate::meta;

/// What a scan of one message decided.
pub(super) enum Decision {
    Deliver,
    Keep,
    Drop,
    Move(String),
}

/// One locked operation on the queue state.
pub(super) struct Txn<'a> {
    pub(super) queue: &'a Queue,
    pub(super) now: u64,
    pub(super) attributes: &'a QueueAttributes,
    pub(super) loaded: &'a mut Loaded,
    /// The journal's end when the operation began (every other process's events applied).
    pub(super) began_at: u64,
    /// Events that must be durable before the operation returns were appended: the journal
    /// is synced once the queue lock is released (on `Always` queues).
    pub(super) wrote: bool,
}

impl Txn<'_> {
    /// Appends events to the journal as one atomic batch and applies them; they are durable
    /// before the operation returns.
    pub(super) fn commit(&mut self, events: &[Event]) -> Result<()> {
        self.append(events)?;
        self.wrote |= !events.is_empty();
        Ok(())
    }

    /// Like [`Txn::commit`], but the events become durable with the journal's next sync
    /// instead of before the operation returns. For a standard queue's receive: a power loss
    /// can lose it, and the message comes back visible with its receive count as before, a
    /// redelivery that at-least-once delivery allows (the consumer holding it died with the
    /// machine). A process crash loses nothing: the events were written.
    pub(super) fn commit_deferred(&mut self, events: &[Event]) -> Result<()> {
        self.append(events)?;
        if !events.is_empty() && self.attributes.durability == DurabilityMode::Always {
            self.queue.deferred.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn append(&mut self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let encoded: Vec<Vec<u8>> = events.iter().map(Event::encode).collect();
        let entries: Vec<Entry<'_>> = encoded
            .iter()
            .map(|payload| Entry {
                kind: KIND_EVENT,
                header: &[],
                payload,
            })
            .collect();
        let appended = self.queue.journal()?.append(&entries)?;
        let state = &mut self.loaded.state;
        if appended.first_offset != state.journal_next {
            return Err(Error::Conflict(format!(
                "queue {:?}: the journal moved without the queue lock",
                self.queue.name
            )));
        }
        for event in events {
            state.apply(event);
        }
        state.journal_next = appended.first_offset + appended.count;
        Ok(())
    }

    pub(super) fn maybe_snapshot(&mut self) -> Result<()> {
        if self.loaded.state.journal_next < self.loaded.snapshot_due {
            return Ok(());
        }
        self.snapshot()
    }

    /// Writes a snapshot now if the journal moved since the newest one.
    pub(super) fn snapshot_now(&mut self) -> Result<()> {
        if self.loaded.state.journal_next > self.loaded.snapshot_at {
            self.snapshot()?;
        }
        Ok(())
    }

    pub(super) fn snapshot(&mut self) -> Result<()> {
        // The snapshot may only cover journal records that are durable.
        self.queue.journal()?.sync()?;
        let path = self.queue.path.join(SNAPSHOT_FILE);
        let next = self.loaded.state.journal_next;
        match meta::write(
            &*self.queue.dir.storage,
            &path,
            SNAPSHOT_MAGIC,
            &self.loaded.state,
        ) {
            Ok(()) => self.loaded.snapshot_at = next,
            // Too large for one metadata file: keep replaying the journal (and keeping it)
            // until the state shrinks.
            Err(Error::InvalidArgument(_)) => {}
            Err(e) => return Err(e),
        }
        self.loaded.snapshot_due = next + self.queue.snapshot_every();
        Ok(())
    }

    /// Looks for disk space to give back when this operation's events carried the journal
    /// past a multiple of [`Queue::reclaim_every`]: once per that many events whichever
    /// process writes them, where counting from each handle's start had every new handle
    /// (every CLI command) look, and sync the journal, once the journal was that far past its
    /// snapshot.
    pub(super) fn maybe_reclaim(&mut self) -> Result<()> {
        let every = self.queue.reclaim_every();
        let crossed = self.loaded.state.journal_next / every > self.began_at / every;
        // A damaged message log cannot be compacted; receiving goes on without it.
        if !crossed || self.queue.messages_damaged() {
            return Ok(());
        }
        self.queue.reclaim(self.loaded, self.attributes)
    }

    pub(super) fn expired(&self, sent_ms: u64) -> bool {
        sent_ms.saturating_add(ms(self.attributes.retention)) <= self.now
    }

    /// The receipt's message, if the handle is this queue's and its message is in flight
    /// under this very receive.
    pub(super) fn in_flight(&self, handle: &str) -> Result<u64> {
        let receipt = Receipt::decode(handle)?;
        if receipt.incarnation != self.queue.incarnation {
            return Err(Error::InvalidReceiptHandle(handle.to_string()));
        }
        let state = &self.loaded.state;
        match state.slot(receipt.offset) {
            Some(slot)
                if slot.receive_count == receipt.receive_count
                    && slot.visible_at > self.now
                    && state.is_waiting(receipt.offset) =>
            {
                Ok(receipt.offset)
            }
            _ => Err(Error::MessageNotInflight(
                "the message was deleted, received again or its visibility timeout expired".into(),
            )),
        }
    }

    /// What deleting by `handle` does: `Some(offset)` deletes it, `None` does nothing.
    pub(super) fn check_delete(&self, handle: &str) -> Result<Option<u64>> {
        let receipt = Receipt::decode(handle)?;
        if receipt.incarnation != self.queue.incarnation {
            return Err(Error::InvalidReceiptHandle(handle.to_string()));
        }
        if self.attributes.fifo {
            return self.in_flight(handle).map(Some);
        }
        Ok(self
            .loaded
            .state
            .slot(receipt.offset)
            .filter(|slot| slot.receive_count == receipt.receive_count)
            .map(|_| receipt.offset))
    }

    pub(super) fn decide(&self, m: &Scanned, groups: &mut HashMap<String, bool>) -> Decision {
        if m.offset < self.loaded.state.purged_below || self.expired(m.sent_ms) {
            return Decision::Drop;
        }
        let visible = m.visible_at <= self.now;
        if let Some(group) = m.group.as_ref().filter(|_| self.attributes.fifo) {
            let taken = match groups.get(group) {
                Some(taken) => *taken,
                None => !self.loaded.state.group_busy(group),
            };
            if !taken || !visible {
                // The group is busy, or this message must wait: nothing after it in the
                // group may go ahead of it.
                groups.insert(group.clone(), false);
                return Decision::Keep;
            }
        } else if !visible {
            return Decision::Keep;
        }
        if let Some(redrive) = &self.attributes.redrive
            && m.receive_count >= redrive.max_receives
        {
            return Decision::Move(redrive.dead_letter_queue.clone());
        }
        if let Some(group) = m.group.as_ref().filter(|_| self.attributes.fifo) {
            groups.insert(group.clone(), true);
        }
        Decision::Deliver
    }

    pub(super) fn received(
        &self,
        m: &Scanned,
        record: &Record<'_>,
        visible_at: u64,
    ) -> Result<(Event, ReceivedMessage)> {
        let queue = self.queue;
        let header = queue.message_header(record)?;
        let (attributes, body) = decode_payload(&header, record.payload)
            .map_err(|e| corrupt(&queue.path.join("messages"), record.offset, &e))?;
        let receive_count = m.receive_count + 1;
        let first_receive_ms = if m.first_receive_ms == 0 {
            self.now
        } else {
            m.first_receive_ms
        };
        let event = Event::Received {
            message: Scanned {
                receive_count,
                first_receive_ms,
                ..m.clone()
            },
            visible_at,
        };
        let receipt = Receipt {
            incarnation: queue.incarnation,
            offset: m.offset,
            receive_count,
        };
        let message = ReceivedMessage {
            message_id: header.id,
            receipt_handle: receipt.encode(),
            body: String::from_utf8_lossy(body).into_owned(),
            md5_of_body: md5_hex(body),
            md5_of_message_attributes: md5_of_message_attributes(&attributes),
            message_attributes: attributes,
            receive_count,
            sent_timestamp: header.sent_ms,
            first_receive_timestamp: first_receive_ms,
            sequence_number: self.attributes.fifo.then(|| sequence_number(m.offset)),
            dedup_id: header.dedup.filter(|_| self.attributes.fifo),
            group_id: header.group,
        };
        Ok((event, message))
    }

    pub(super) fn move_started(&self, m: &Scanned, target: String) -> Result<Event> {
        let target_from = self.queue.target(&target)?.message_reader().next_offset()?;
        Ok(Event::MoveStarted {
            offset: m.offset,
            target,
            target_from,
            receive_count: m.receive_count,
            first_receive_ms: m.first_receive_ms,
        })
    }

    pub(super) fn receive(&mut self, request: &Receive) -> Result<Vec<ReceivedMessage>> {
        let queue = self.queue;
        let now = self.now;
        self.loaded.state.expire(now);
        let visible_at = now.saturating_add(ms(request
            .visibility_timeout
            .unwrap_or(self.attributes.visibility_timeout)));
        let max = request.max_messages;
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut moves = Vec::new();
        let mut groups = HashMap::new();

        // Messages visible again (or held back before): on a standard queue oldest first; on
        // a FIFO queue group by group, each group's in order, taking turns between receives.
        let state = &self.loaded.state;
        let mut fully_visited = HashSet::new();
        let ready: Vec<Scanned> = if self.attributes.fifo {
            let mut ready = Vec::new();
            let after = lock(&queue.fifo_turn).clone();
            for group in state.ready_groups_from(&after) {
                if ready.len() >= SCAN_LIMIT {
                    break;
                }
                if state.group_busy(&group) {
                    continue;
                }
                let before = ready.len();
                ready.extend(
                    state
                        .ready_in_group(&group)
                        .take(max + 1)
                        .map(|(offset, slot)| slot.scanned(offset)),
                );
                if ready.len() - before <= max {
                    fully_visited.insert(group);
                } else {
                    ready.pop();
                }
            }
            ready
        } else {
            state
                .ready()
                .take(SCAN_LIMIT)
                .map(|(offset, slot)| slot.scanned(offset))
                .collect()
        };
        for m in ready {
            if out.len() == max {
                break;
            }
            match self.decide(&m, &mut groups) {
                Decision::Keep => {}
                Decision::Drop => events.push(Event::Deleted { offset: m.offset }),
                Decision::Move(target) => {
                    events.push(self.move_started(&m, target.clone())?);
                    moves.push(m.offset);
                }
                Decision::Deliver => {
                    let batch = match queue.message_reader().read(m.offset, ReadLimit::records(1)) {
                        Err(Error::OffsetTrimmed { .. }) => {
                            events.push(Event::Deleted { offset: m.offset });
                            continue;
                        }
                        batch => batch?,
                    };
                    let Some(record) = batch.iter().next().filter(|r| r.offset == m.offset) else {
                        events.push(Event::Deleted { offset: m.offset });
                        continue;
                    };
                    let (event, message) = self.received(&m, &record, visible_at)?;
                    if let Some(group) = m.group.as_ref().filter(|_| self.attributes.fifo) {
                        group.clone_into(&mut lock(&queue.fifo_turn));
                    }
                    events.push(event);
                    out.push(message);
                }
            }
        }
        // A FIFO group whose held-back messages were not all looked at must not have newer
        // messages delivered ahead of them.
        for group in self.loaded.state.ready_groups_from("") {
            if !fully_visited.contains(&group) {
                groups.insert(group, false);
            }
        }

        // Then never-received messages, in log order. A FIFO queue stops passing messages
        // of busy groups once it holds HELD_LIMIT of them, which bounds its memory.
        let mut cursor = self.loaded.state.cursor;
        let mut kept = Vec::new();
        let mut scanned = 0;
        let held_full = self.attributes.fifo && self.loaded.state.ready_len() >= HELD_LIMIT;
        'scan: while out.len() < max && scanned < SCAN_LIMIT && !held_full {
            let batch = match queue.message_reader().read(cursor, ReadLimit::records(256)) {
                Err(Error::OffsetTrimmed { start, .. }) => {
                    cursor = start;
                    continue;
                }
                // Damage ends the scan: what was found before it is delivered, and the next
                // receive that reaches it fails naming it.
                Err(e) if e.is_corruption() && !out.is_empty() => break,
                batch => batch?,
            };
            if batch.is_empty() {
                break;
            }
            for record in batch.iter() {
                if out.len() == max || scanned == SCAN_LIMIT {
                    break 'scan;
                }
                cursor = record.offset + 1;
                scanned += 1;
                let header = queue.message_header(&record)?;
                let m = Scanned {
                    offset: record.offset,
                    visible_at: record.timestamp_ms.saturating_add(header.delay_ms),
                    sent_ms: header.sent_ms,
                    group: header.group,
                    receive_count: header.receive_count,
                    first_receive_ms: header.first_receive_ms,
                };
                match self.decide(&m, &mut groups) {
                    Decision::Drop => {}
                    Decision::Keep => kept.push(m),
                    Decision::Move(target) => {
                        events.push(self.move_started(&m, target.clone())?);
                        moves.push(m.offset);
                    }
                    Decision::Deliver => {
                        let (event, message) = self.received(&m, &record, visible_at)?;
                        events.push(event);
                        out.push(message);
                    }
                }
            }
        }
        if cursor != self.loaded.state.cursor {
            events.insert(0, Event::Scanned { cursor, kept });
        }
        if self.attributes.fifo {
            // A FIFO queue promises no duplicates: its receives are durable before they
            // return, so a message in flight stays in flight across a power loss.
            self.commit(&events)?;
        } else {
            self.commit_deferred(&events)?;
        }
        for offset in moves {
            self.finish_move(offset, false)?;
        }
        Ok(out)
    }

    /// Copies a moving message to its target unless a copy is there already (`look_from`),
    /// then records the move done.
    pub(super) fn finish_move(&mut self, offset: u64, recovering: bool) -> Result<()> {
        let queue = self.queue;
        let Some(pending) = self
            .loaded
            .state
            .pending_moves()
            .find(|(o, _)| *o == offset)
            .map(|(_, m)| m.clone())
        else {
            return Ok(());
        };
        let target = queue.target(&pending.target)?;
        if self.attributes.durability != DurabilityMode::Never {
            // The record of the move must be durable before the copy can be: a power loss
            // that kept the copy and lost the record would leave the message in both queues.
            queue.journal()?.sync()?;
        }
        if !(recovering && queue.copied(&target, pending.target_from, offset)?) {
            // A dead-letter move keeps the receive count; a redrive starts it again.
            let to_dlq = self
                .attributes
                .redrive
                .as_ref()
                .is_some_and(|r| r.dead_letter_queue == pending.target);
            let counts = to_dlq.then_some((pending.receive_count, pending.first_receive_ms));
            queue.copy_to(&target, offset, counts)?;
        }
        self.commit(&[Event::MoveDone { offset }])
    }

    /// Finishes moves that a crashed process started.
    pub(super) fn finish_moves(&mut self) -> Result<()> {
        let pending: Vec<u64> = self.loaded.state.pending_moves().map(|(o, _)| o).collect();
        for offset in pending {
            self.finish_move(offset, true)?;
        }
        Ok(())
    }

    /// Moves up to one batch of visible messages out of this queue (a redrive).
    pub(super) fn redrive_some(&mut self, to: Option<&str>) -> Result<u64> {
        let queue = self.queue;
        let now = self.now;
        self.loaded.state.expire(now);
        let mut candidates: Vec<Scanned> = self
            .loaded
            .state
            .ready()
            .take(MAX_RECEIVE_MESSAGES * 10)
            .map(|(o, s)| s.scanned(o))
            .collect();
        const LIMIT: usize = MAX_RECEIVE_MESSAGES * 10;
        let mut cursor = self.loaded.state.cursor;
        let mut kept = Vec::new();
        let mut origins = HashMap::new();
        if candidates.len() < LIMIT {
            cursor = queue.each_message(cursor, |record, header| {
                let m = Scanned {
                    offset: record.offset,
                    visible_at: record.timestamp_ms.saturating_add(header.delay_ms),
                    sent_ms: header.sent_ms,
                    group: header.group.clone(),
                    receive_count: header.receive_count,
                    first_receive_ms: header.first_receive_ms,
                };
                let back_to = header.origin.as_ref().filter(|o| is_queue_origin(o));
                if m.visible_at > now || (to.is_none() && back_to.is_none()) {
                    // Delayed, or sent straight here with no source to go back to: stays.
                    kept.push(m);
                } else if !self.expired(m.sent_ms) {
                    if let Some(origin) = back_to {
                        origins.insert(m.offset, origin.queue.clone());
                    }
                    candidates.push(m);
                }
                if candidates.len() < LIMIT {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            })?;
        }
        let mut events = Vec::new();
        if cursor != self.loaded.state.cursor {
            events.push(Event::Scanned { cursor, kept });
        }
        let mut moves = Vec::new();
        for m in candidates {
            if self.expired(m.sent_ms) || m.offset < self.loaded.state.purged_below {
                events.push(Event::Deleted { offset: m.offset });
                continue;
            }
            let target = match to {
                Some(to) => to.to_string(),
                None => match origins.remove(&m.offset) {
                    Some(origin) => origin,
                    None => {
                        // Received here before: look at the record for its origin.
                        let batch = queue
                            .message_reader()
                            .read(m.offset, ReadLimit::records(1))?;
                        let origin = batch
                            .iter()
                            .next()
                            .filter(|r| r.offset == m.offset)
                            .map(|r| queue.message_header(&r))
                            .transpose()?
                            .and_then(|h| h.origin)
                            .filter(is_queue_origin);
                        match origin {
                            Some(origin) => origin.queue,
                            // Sent straight to this queue: it has no source to go back to.
                            None => continue,
                        }
                    }
                },
            };
            events.push(self.move_started(&m, target.clone())?);
            moves.push(m.offset);
        }
        self.commit(&events)?;
        let n = moves.len() as u64;
        for offset in moves {
            self.finish_move(offset, false)?;
        }
        Ok(n)
    }
}
