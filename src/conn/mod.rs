//! One core's connections: ids, the table of entries with each connection's lifecycle and deadlines, the outbox and its gathered writes.
//!
//! Everything that changes a connection (its state, its deadlines, its
//! outbox) goes through [`ConnTable`]: frames enter an outbox only through
//! [`ConnTable::push`], which applies admission, and a connection enters
//! closing only through one function that also arms its deadline.

pub(crate) mod acked;
mod deflate;
mod notify;
mod outbox;
mod publication;
mod session;
mod table;
mod timer;

use std::fmt;

pub use acked::PositionReader;
pub(crate) use deflate::ConnDeflate;
pub(crate) use notify::{yield_now, LocalNotify};
pub(crate) use publication::Publication;
pub use session::OwnedMessage;
pub(crate) use session::SessionLink;
pub(crate) use table::{ConnTable, FlushSchedule, Kind};

/// Identifies one connection across the whole server: its core, its slab
/// index there and a generation, so an id kept after the connection closed
/// can never reach the connection that reuses the slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    core: u16,
    key: u32,
    gen: u32,
}

impl ConnId {
    pub(crate) fn new(core: usize, key: u32, gen: u32) -> Self {
        Self {
            core: core as u16,
            key,
            gen,
        }
    }

    /// The core serving this connection.
    pub fn core(self) -> usize {
        self.core as usize
    }

    /// The slab key on its core.
    pub(crate) fn key(self) -> u32 {
        self.key
    }

    /// The generation of the slab slot.
    pub(crate) fn gen(self) -> u32 {
        self.gen
    }

    /// A 64-bit form (core 16 bits, generation 16 low bits, slab index 32).
    /// Suitable as an opaque client id; not unique across slot reuse beyond
    /// 65,536 generations, unlike the `ConnId` itself.
    pub fn as_u64(self) -> u64 {
        (self.core as u64) << 48 | ((self.gen as u64) & 0xffff) << 32 | self.key as u64
    }

    /// Every bit of the id (core, generation, slab index) as one number,
    /// for keeping it outside the process; [`ConnId::from_bits`] reads it
    /// back. Unlike [`ConnId::as_u64`] it is unique across slot reuse.
    pub fn to_bits(self) -> u128 {
        (self.core as u128) << 64 | (self.gen as u128) << 32 | self.key as u128
    }

    /// The id [`ConnId::to_bits`] gave, or `None` if `bits` is not one.
    /// An id read back may name a connection long gone: reaching it
    /// through a [`ServerHandle`](crate::ServerHandle) then finds nothing.
    pub fn from_bits(bits: u128) -> Option<Self> {
        let core = u16::try_from(bits >> 64).ok()?;
        Some(Self {
            core,
            gen: (bits >> 32) as u32,
            key: bits as u32,
        })
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}:{}#{})", self.core, self.key, self.gen)
    }
}

/// The outcome of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Queued below the low-water mark: goes out with this loop turn's write.
    Sent,
    /// Queued above the low-water mark: the client reads slower than we
    /// send. `drain` fires when the queue is back under the mark.
    Backpressure,
    /// Not queued: the connection is closing, or the outbox limit was hit
    /// and the slow-consumer policy applied.
    Dropped,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Reading the HTTP request.
    Handshake,
    /// Upgraded; messages flow.
    Open,
    /// A close frame or an HTTP answer was queued (by us or as an echo);
    /// nothing else may be sent, and the read task waits for the peer to
    /// finish.
    Closing,
}

/// Whole seconds in `d`, rounded up: the timer wheel's unit.
pub(crate) fn secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Makes room in `v` for `len` elements, growing by an eighth (at least 64)
/// instead of doubling: the per-connection tables are most of an idle
/// connection's memory, and doubling would leave up to half of them unused
/// (copying a table once per eighth of growth costs little beside the
/// accepts that grow it).
pub(crate) fn reserve_gently<T>(v: &mut Vec<T>, len: usize) {
    if len > v.capacity() {
        let step = (v.capacity() / 8).max(64);
        v.reserve_exact((len - v.len()).max(v.capacity() + step - v.len()));
    }
}

#[cfg(test)]
mod growth_tests {
    #[test]
    fn tables_grow_by_an_eighth() {
        let mut v: Vec<u64> = Vec::new();
        for i in 0..100_000 {
            super::reserve_gently(&mut v, i + 1);
            v.push(i as u64);
            assert!(
                v.capacity() <= (v.len() * 9 / 8).max(64) + 64,
                "{} of {}",
                v.len(),
                v.capacity()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ConnId;

    #[test]
    fn bits_round_trip_and_reject_what_is_not_an_id() {
        for id in [
            ConnId::new(0, 0, 0),
            ConnId::new(3, 17, 9),
            ConnId::new(65_535, u32::MAX, u32::MAX),
        ] {
            assert_eq!(ConnId::from_bits(id.to_bits()), Some(id));
        }
        assert_ne!(
            ConnId::new(1, 2, 3).to_bits(),
            ConnId::new(1, 2, 4).to_bits()
        );
        assert_eq!(ConnId::from_bits(1 << 80), None);
    }
}
