//! A queue's mutable state, rebuilt from a snapshot and the journal's tail: which messages are
//! in flight or delayed until when, which returned ones are visible again, receive counts,
//! purges and unfinished moves. Pure data: the I/O lives in [`super::handle`].
//!
//! Messages the scan has not reached (at or past [`State::cursor`]) are not in the state at all:
//! they are visible unless their own delay says otherwise, which the scan decides when it gets
//! there. So the state holds only what was received, delayed or held back, and opening a queue
//! costs time and memory proportional to that, not to the backlog.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::stored::{Event, Scanned};

/// A message the state tracks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// First sent, ms.
    pub sent_ms: u64,
    /// FIFO group.
    pub group: Option<String>,
    /// Receives so far.
    pub receive_count: u32,
    /// First receive, ms (0: never received).
    pub first_receive_ms: u64,
    /// When it is (or was) visible again, ms.
    pub visible_at: u64,
}

impl Slot {
    fn from_scanned(m: &Scanned) -> Slot {
        Slot {
            sent_ms: m.sent_ms,
            group: m.group.clone(),
            receive_count: m.receive_count,
            first_receive_ms: m.first_receive_ms,
            visible_at: m.visible_at,
        }
    }

    /// What a journal event needs to recreate this slot.
    pub fn scanned(&self, offset: u64) -> Scanned {
        Scanned {
            offset,
            visible_at: self.visible_at,
            sent_ms: self.sent_ms,
            group: self.group.clone(),
            receive_count: self.receive_count,
            first_receive_ms: self.first_receive_ms,
        }
    }
}

/// A move to another queue that started and has not been confirmed done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMove {
    /// Destination queue.
    pub target: String,
    /// Where the copy may be found in the destination's message log.
    pub target_from: u64,
    /// The message's receive count when the move started.
    pub receive_count: u32,
    /// Its first receive, ms (0: never).
    pub first_receive_ms: u64,
}

/// The state. Every slot is in exactly one of `waiting` (in flight or delayed, by deadline)
/// and `ready` (visible, behind the cursor).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Next offset of the message log the scan has not looked at.
    pub cursor: u64,
    /// Messages below this offset were purged.
    pub purged_below: u64,
    /// Journal offset up to which events are applied.
    pub journal_next: u64,
    slots: BTreeMap<u64, Slot>,
    waiting: BTreeSet<(u64, u64)>,
    ready: BTreeSet<u64>,
    /// FIFO: slots of each group that are in flight or delayed.
    busy_groups: BTreeMap<String, u32>,
    /// The `ready` slots of each group, in offset order (FIFO receives take a group's
    /// messages in order, group by group).
    ready_groups: BTreeMap<String, BTreeSet<u64>>,
    moves: BTreeMap<u64, PendingMove>,
}

impl State {
    /// Applies one journal event.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Scanned { cursor, kept } => {
                self.cursor = self.cursor.max(*cursor);
                for m in kept {
                    if m.offset >= self.purged_below {
                        self.insert(m.offset, Slot::from_scanned(m));
                    }
                }
            }
            Event::Received {
                message,
                visible_at,
            } => {
                if message.offset < self.purged_below {
                    return;
                }
                let mut slot = self
                    .remove(message.offset)
                    .unwrap_or_else(|| Slot::from_scanned(message));
                slot.receive_count = message.receive_count;
                slot.first_receive_ms = message.first_receive_ms;
                slot.visible_at = *visible_at;
                self.insert(message.offset, slot);
            }
            Event::Deleted { offset } => {
                self.remove(*offset);
            }
            Event::Visibility { offset, visible_at } => {
                if let Some(mut slot) = self.remove(*offset) {
                    slot.visible_at = *visible_at;
                    self.insert(*offset, slot);
                }
            }
            Event::Purged { below } => {
                self.purged_below = self.purged_below.max(*below);
                self.cursor = self.cursor.max(*below);
                let purged: Vec<u64> = self.slots.range(..*below).map(|(o, _)| *o).collect();
                for offset in purged {
                    self.remove(offset);
                }
            }
            Event::MoveStarted {
                offset,
                target,
                target_from,
                receive_count,
                first_receive_ms,
            } => {
                self.remove(*offset);
                self.moves.insert(
                    *offset,
                    PendingMove {
                        target: target.clone(),
                        target_from: *target_from,
                        receive_count: *receive_count,
                        first_receive_ms: *first_receive_ms,
                    },
                );
            }
            Event::MoveDone { offset } => {
                self.moves.remove(offset);
            }
        }
    }

    fn insert(&mut self, offset: u64, slot: Slot) {
        self.remove(offset);
        if let Some(group) = &slot.group {
            *self.busy_groups.entry(group.clone()).or_default() += 1;
        }
        // Everything enters `waiting`; `expire` moves what is due to `ready`.
        self.waiting.insert((slot.visible_at, offset));
        self.slots.insert(offset, slot);
    }

    fn unlink(&mut self, offset: u64, slot: &Slot) {
        if self.waiting.remove(&(slot.visible_at, offset))
            && let Some(group) = &slot.group
            && let Some(busy) = self.busy_groups.get_mut(group)
        {
            *busy = busy.saturating_sub(1);
            if *busy == 0 {
                self.busy_groups.remove(group);
            }
        }
        if self.ready.remove(&offset)
            && let Some(group) = &slot.group
            && let Some(offsets) = self.ready_groups.get_mut(group)
        {
            offsets.remove(&offset);
            if offsets.is_empty() {
                self.ready_groups.remove(group);
            }
        }
    }

    fn remove(&mut self, offset: u64) -> Option<Slot> {
        let slot = self.slots.remove(&offset)?;
        self.unlink(offset, &slot);
        Some(slot)
    }

    /// Makes every slot whose deadline has passed visible.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(deadline, offset)) = self.waiting.first() {
            if deadline > now_ms {
                break;
            }
            let Some(slot) = self.slots.get(&offset).cloned() else {
                self.waiting.pop_first();
                continue;
            };
            self.unlink(offset, &slot);
            // Gone already unless a snapshot's index disagreed with its slot: then drop the
            // stray entry, so that this loop ends.
            self.waiting.remove(&(deadline, offset));
            self.ready.insert(offset);
            if let Some(group) = slot.group {
                self.ready_groups.entry(group).or_default().insert(offset);
            }
        }
    }

    /// Visible slots behind the cursor, in offset order.
    pub fn ready(&self) -> impl Iterator<Item = (u64, &Slot)> + '_ {
        self.ready
            .iter()
            .filter_map(|o| self.slots.get(o).map(|s| (*o, s)))
    }

    /// Groups with visible slots behind the cursor, starting after `after` and wrapping
    /// around, so successive receives serve the groups in turn.
    pub fn ready_groups_from(&self, after: &str) -> Vec<String> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        self.ready_groups
            .range::<str, _>((Excluded(after), Unbounded))
            .chain(
                self.ready_groups
                    .range::<str, _>((Unbounded, Included(after))),
            )
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// A group's visible slots behind the cursor, in offset order.
    pub fn ready_in_group(&self, group: &str) -> impl Iterator<Item = (u64, &Slot)> + '_ {
        self.ready_groups
            .get(group)
            .into_iter()
            .flatten()
            .filter_map(|o| self.slots.get(o).map(|s| (*o, s)))
    }

    /// True when a group has visible slots behind the cursor.
    pub fn group_has_ready(&self, group: &str) -> bool {
        self.ready_groups.contains_key(group)
    }

    /// Number of visible slots behind the cursor.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// A tracked message.
    pub fn slot(&self, offset: u64) -> Option<&Slot> {
        self.slots.get(&offset)
    }

    /// True when a FIFO group has a message in flight or delayed.
    pub fn group_busy(&self, group: &str) -> bool {
        self.busy_groups.contains_key(group)
    }

    /// True when the slot is in flight or delayed (not visible).
    pub fn is_waiting(&self, offset: u64) -> bool {
        self.slots
            .get(&offset)
            .is_some_and(|s| self.waiting.contains(&(s.visible_at, offset)))
    }

    /// The earliest deadline of a waiting slot.
    pub fn next_deadline(&self) -> Option<u64> {
        self.waiting.first().map(|(d, _)| *d)
    }

    /// Moves that started and are not confirmed done.
    pub fn pending_moves(&self) -> impl Iterator<Item = (u64, &PendingMove)> + '_ {
        self.moves.iter().map(|(o, m)| (*o, m))
    }

    /// The lowest message offset the state still needs (everything below it in the message
    /// log may be reclaimed).
    pub fn low_water(&self) -> u64 {
        let slots = self.slots.keys().next().copied().unwrap_or(u64::MAX);
        let moves = self.moves.keys().next().copied().unwrap_or(u64::MAX);
        self.cursor.min(slots).min(moves)
    }

    /// Messages in `range` the state still tracks (in flight, delayed, held, moving).
    pub fn live_in(&self, range: std::ops::Range<u64>) -> u64 {
        (self.slots.range(range.clone()).count() + self.moves.range(range).count()) as u64
    }

    /// True when the message at `offset` may still be delivered or moved: tracked, or not
    /// reached by the scan yet.
    pub fn needs(&self, offset: u64) -> bool {
        offset >= self.cursor
            || self.slots.contains_key(&offset)
            || self.moves.contains_key(&offset)
    }

    /// Counts as of `now`: (visible behind the cursor, in flight, delayed).
    pub fn counts(&self, now_ms: u64) -> (u64, u64, u64) {
        let (mut visible, mut in_flight, mut delayed) = (self.ready.len() as u64, 0, 0);
        for (deadline, offset) in &self.waiting {
            let received = self.slots.get(offset).is_some_and(|s| s.receive_count > 0);
            match (*deadline <= now_ms, received) {
                (true, _) => visible += 1,
                (false, true) => in_flight += 1,
                (false, false) => delayed += 1,
            }
        }
        (visible, in_flight, delayed)
    }

    /// Number of tracked messages.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no message is tracked.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(offset: u64, visible_at: u64, group: Option<&str>) -> Scanned {
        Scanned {
            offset,
            visible_at,
            sent_ms: 0,
            group: group.map(str::to_string),
            receive_count: 0,
            first_receive_ms: 0,
        }
    }

    fn received(offset: u64, count: u32, until: u64, group: Option<&str>) -> Event {
        Event::Received {
            message: Scanned {
                receive_count: count,
                first_receive_ms: 1,
                ..scanned(offset, 0, group)
            },
            visible_at: until,
        }
    }

    #[test]
    fn received_messages_wait_then_return_in_offset_order() {
        let mut s = State::default();
        s.apply(&Event::Scanned {
            cursor: 5,
            kept: vec![],
        });
        s.apply(&received(3, 1, 100, None));
        s.apply(&received(1, 1, 50, None));
        assert_eq!(s.counts(0), (0, 2, 0));
        s.expire(60);
        assert_eq!(s.ready().map(|(o, _)| o).collect::<Vec<_>>(), [1]);
        assert_eq!(s.counts(60), (1, 1, 0));
        s.expire(100);
        assert_eq!(s.ready().map(|(o, _)| o).collect::<Vec<_>>(), [1, 3]);
        // Received again: in flight again with the higher count.
        s.apply(&received(1, 2, 200, None));
        assert_eq!(s.slot(1).unwrap().receive_count, 2);
        assert!(s.is_waiting(1));
        s.apply(&Event::Deleted { offset: 1 });
        s.apply(&Event::Deleted { offset: 3 });
        assert_eq!(s.len(), 0);
        assert_eq!(s.low_water(), 5);
    }

    #[test]
    fn fifo_groups_are_busy_while_a_message_waits() {
        let mut s = State::default();
        s.apply(&Event::Scanned {
            cursor: 3,
            kept: vec![scanned(2, 0, Some("g"))],
        });
        s.apply(&received(0, 1, 100, Some("g")));
        assert!(s.group_busy("g"));
        assert!(!s.group_busy("h"));
        s.expire(10);
        // Offset 2 was held back (visible_at 0): ready, but its group is busy with offset 0.
        assert_eq!(s.ready().map(|(o, _)| o).collect::<Vec<_>>(), [2]);
        assert!(s.group_busy("g"));
        assert!(s.group_has_ready("g"));
        assert_eq!(
            s.ready_in_group("g").map(|(o, _)| o).collect::<Vec<_>>(),
            [2]
        );
        s.apply(&Event::Deleted { offset: 0 });
        assert!(!s.group_busy("g"));
        s.apply(&received(2, 1, 100, Some("g")));
        assert!(!s.group_has_ready("g"));
        assert!(s.group_busy("g"));
    }

    #[test]
    fn purge_drops_everything_below_and_moves_the_cursor() {
        let mut s = State::default();
        s.apply(&Event::Scanned {
            cursor: 2,
            kept: vec![scanned(1, 500, None)],
        });
        s.apply(&received(0, 1, 100, None));
        s.apply(&Event::Purged { below: 10 });
        assert_eq!((s.len(), s.cursor), (0, 10));
        // A late event about a purged message does not bring it back.
        s.apply(&received(4, 1, 100, None));
        assert_eq!(s.len(), 0);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn moves_leave_the_state_until_done() {
        let mut s = State::default();
        s.apply(&received(0, 3, 100, None));
        s.apply(&Event::MoveStarted {
            offset: 0,
            target: "dlq".into(),
            target_from: 7,
            receive_count: 3,
            first_receive_ms: 1,
        });
        assert_eq!(s.len(), 0);
        assert_eq!(s.pending_moves().count(), 1);
        assert_eq!(s.low_water(), 0);
        s.apply(&Event::MoveDone { offset: 0 });
        assert_eq!(s.pending_moves().count(), 0);
    }

    #[test]
    fn visibility_change_moves_the_deadline() {
        let mut s = State::default();
        s.apply(&received(0, 1, 100, Some("g")));
        s.apply(&Event::Visibility {
            offset: 0,
            visible_at: 10,
        });
        assert_eq!(s.next_deadline(), Some(10));
        s.expire(10);
        assert!(!s.is_waiting(0));
        assert!(!s.group_busy("g"));
    }
}
