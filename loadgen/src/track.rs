//! Per-sender sequence tracking: which messages arrived, which twice, which late.

/// What [`SeqTrack::observe`] concluded about one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next sequence number, or a later one (earlier ones may still come).
    InOrder,
    /// Arrived after a higher sequence number from the same sender.
    Reordered,
    /// Already seen.
    Duplicate,
}

/// The state for one (receiver, sender) pair: the highest sequence number
/// seen plus one, and a 64-bit window of which numbers below it arrived.
/// 16 bytes; allocated once per pair before the run, never per message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTrack {
    next: u64,
    /// Bit k set: `next - 1 - k` arrived.
    seen: u64,
}

impl SeqTrack {
    /// Records the arrival of `seq`.
    ///
    /// An arrival more than 64 numbers behind the highest is counted as
    /// reordered (the window cannot tell it from a duplicate).
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq - self.next + 1;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.next = seq + 1;
            return Arrival::InOrder;
        }
        let k = self.next - 1 - seq;
        if k >= 64 {
            return Arrival::Reordered;
        }
        if self.seen & (1 << k) != 0 {
            return Arrival::Duplicate;
        }
        self.seen |= 1 << k;
        Arrival::Reordered
    }
}

/// Totals of a receiver's arrivals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Distinct messages received.
    pub unique: u64,
    /// Messages received again.
    pub duplicated: u64,
    /// Messages received after a later one from the same sender.
    pub reordered: u64,
}

impl Tally {
    /// Counts one arrival.
    #[inline]
    pub fn count(&mut self, a: Arrival) {
        match a {
            Arrival::InOrder => self.unique += 1,
            Arrival::Reordered => {
                self.unique += 1;
                self.reordered += 1;
            }
            Arrival::Duplicate => self.duplicated += 1,
        }
    }

    /// Adds another tally.
    pub fn add(&mut self, o: &Tally) {
        self.unique += o.unique;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> Tally {
        let mut t = SeqTrack::default();
        let mut tally = Tally::default();
        for &s in seqs {
            tally.count(t.observe(s));
        }
        tally
    }

    #[test]
    fn in_order_is_clean() {
        assert_eq!(
            run(&[0, 1, 2, 3]),
            Tally {
                unique: 4,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn finds_swaps_gaps_and_duplicates() {
        // 2 and 3 swapped, 5 lost, 6 twice.
        let t = run(&[0, 1, 3, 2, 4, 6, 6]);
        assert_eq!(t.unique, 6);
        assert_eq!(t.reordered, 1);
        assert_eq!(t.duplicated, 1);
        // A duplicate of something long past the window counts as reordered.
        let t = run(&[0, 100, 0]);
        assert_eq!((t.unique, t.duplicated, t.reordered), (3, 0, 1));
        let t = run(&[0, 100, 99, 99, 37]);
        assert_eq!((t.unique, t.duplicated, t.reordered), (4, 1, 2));
    }
}
