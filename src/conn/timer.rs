//! One coarse timer wheel per core for handshake, idle, ping and close deadlines (no I/O).

/// A hashed timer wheel with one-second slots.
///
/// Entries are `(key, generation)` pairs, never removed when a deadline moves:
/// the owner re-checks the connection when its slot comes round and either
/// acts or re-inserts it at the new deadline. So a message arriving costs a
/// store of the current second, not a wheel operation, and a connection
/// costs one slot entry (8 bytes) whatever its timeouts.
pub(super) struct TimerWheel {
    slots: Vec<Vec<(u32, u32)>>,
    now: u64,
}

impl TimerWheel {
    /// A wheel with `slots` one-second slots (rounded up to a power of two),
    /// starting at second `now`. Deadlines further out than the wheel's span
    /// come round early and are re-inserted by the owner.
    pub(super) fn new(slots: usize, now: u64) -> Self {
        let slots = slots.max(2).next_power_of_two();
        Self {
            slots: (0..slots).map(|_| Vec::new()).collect(),
            now,
        }
    }

    /// Schedules `(key, gen)` to come round at second `at` (clamped to the
    /// next tick at the earliest and to the wheel's span at the latest).
    pub(super) fn insert(&mut self, at: u64, key: u32, gen: u32) {
        let span = self.slots.len() as u64 - 1;
        let at = at.clamp(self.now + 1, self.now + span);
        let i = (at as usize) & (self.slots.len() - 1);
        self.slots[i].push((key, gen));
    }

    /// Advances to second `now`, moving every entry whose slot passed into
    /// `due` (which the caller reuses between ticks to avoid allocating).
    pub(super) fn advance(&mut self, now: u64, due: &mut Vec<(u32, u32)>) {
        let len = self.slots.len() as u64;
        // After a long stall, visit each slot once rather than every second.
        let start = self.now.max(now.saturating_sub(len));
        for s in start + 1..=now {
            let i = (s as usize) & (self.slots.len() - 1);
            let slot = &mut self.slots[i];
            let n = slot.len();
            due.append(slot);
            // A slot keeps room for what it held this time round: a burst
            // of connections does not pin its memory after they are gone.
            if slot.capacity() > 2 * n.max(8) {
                slot.shrink_to(n);
            }
        }
        if now > self.now {
            self.now = now;
        }
    }

    /// Number of scheduled entries (stale ones included).
    pub(super) fn len(&self) -> usize {
        self.slots.iter().map(Vec::len).sum()
    }

    /// Drops every entry `live` rejects (connections that closed since they
    /// were scheduled) and gives back the memory of emptied slots and slot
    /// memory beyond twice what is left. O(entries): for the owner to call when stale entries
    /// outnumber live connections, not per tick.
    pub(super) fn retain(&mut self, mut live: impl FnMut(u32, u32) -> bool) {
        for slot in &mut self.slots {
            slot.retain(|&(k, g)| live(k, g));
            if slot.is_empty() {
                *slot = Vec::new();
            } else if slot.capacity() > 2 * slot.len().max(8) {
                slot.shrink_to(slot.len());
            }
        }
    }

    /// Entries the slots can hold without growing.
    pub(super) fn capacity(&self) -> usize {
        self.slots.iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_round_at_their_second() {
        let mut w = TimerWheel::new(8, 100);
        w.insert(103, 1, 0);
        w.insert(101, 2, 0);
        let mut due = Vec::new();
        w.advance(102, &mut due);
        assert_eq!(due, vec![(2, 0)]);
        due.clear();
        w.advance(103, &mut due);
        assert_eq!(due, vec![(1, 0)]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn far_deadlines_come_round_early_and_past_ones_next_tick() {
        let mut w = TimerWheel::new(4, 0);
        w.insert(1000, 1, 7); // clamped to the span: second 3
        w.insert(0, 2, 7); // in the past: next tick
        let mut due = Vec::new();
        w.advance(1, &mut due);
        assert_eq!(due, vec![(2, 7)]);
        due.clear();
        w.advance(3, &mut due);
        assert_eq!(due, vec![(1, 7)]);
    }

    #[test]
    fn slots_give_back_a_burst_once_it_has_passed() {
        let mut w = TimerWheel::new(4, 0);
        for k in 0..10_000 {
            w.insert(1, k, 0);
        }
        assert!(w.capacity() >= 10_000);
        let mut due = Vec::new();
        w.advance(1, &mut due); // the slot keeps room for what it held
        assert_eq!(due.len(), 10_000);
        w.advance(5, &mut due); // its next turn held nothing
        assert_eq!(w.capacity(), 0);
    }

    #[test]
    fn retain_drops_stale_entries_and_their_memory() {
        let mut w = TimerWheel::new(8, 0);
        for k in 0..5_000 {
            w.insert(1 + u64::from(k % 7), k, k % 3);
        }
        w.retain(|k, g| k % 100 == 0 && g == k % 3);
        assert_eq!(w.len(), 50);
        let mut empty = TimerWheel::new(8, 0);
        empty.insert(1, 1, 1);
        empty.retain(|_, _| false);
        assert_eq!((empty.len(), empty.capacity()), (0, 0));
        assert!(w.capacity() <= 8 * 16, "{}", w.capacity());
        let mut due = Vec::new();
        w.advance(8, &mut due);
        due.sort_unstable();
        assert_eq!(
            due,
            (0..50)
                .map(|i| (i * 100, (i * 100) % 3))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_long_stall_visits_every_slot_once() {
        let mut w = TimerWheel::new(4, 0);
        for k in 0..3 {
            w.insert(k + 1, k as u32, 0);
        }
        let mut due = Vec::new();
        w.advance(500, &mut due);
        due.sort();
        assert_eq!(due, vec![(0, 0), (1, 0), (2, 0)]);
        assert_eq!(w.len(), 0);
    }
}
