//! One core's compressors: the core's own, for messages compressed on their own (direct sends and the first compression of a publish), and one per connection that negotiated context takeover.

use bytes::Bytes;
use rustc_hash::FxHashMap;

use crate::proto::deflate::{split, DeflateConfig, Deflater, SharedDeflate};
use crate::stats::CoreStats;

/// What a connection negotiated, in one byte: the
/// server's window in bits (0 without permessage-deflate) and, in the top
/// bit, context takeover (the connection's messages go through its own
/// compressor, whose window carries over).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ConnDeflate(u8);

impl ConnDeflate {
    const TAKEOVER: u8 = 0x80;

    /// Negotiated with a server window of `bits` (8..=15), with or
    /// without context takeover.
    pub(crate) fn new(bits: u8, takeover: bool) -> Self {
        Self(bits.clamp(8, 15) | if takeover { Self::TAKEOVER } else { 0 })
    }

    fn bits(self) -> u8 {
        self.0 & !Self::TAKEOVER
    }

    fn takeover(self) -> bool {
        self.0 & Self::TAKEOVER != 0
    }
}

/// How one message goes to one connection.
pub(crate) enum Choice {
    /// As it is.
    Plain,
    /// Compressed on its own (the core's compressor, or the publish's
    /// shared compressed frame).
    Alone,
    /// Through the connection's own compressor.
    Dedicated,
}

impl ConnDeflate {
    /// How a message whose frame is `frame` goes to this connection.
    #[inline]
    fn choose(self, frame: &[u8], threshold: usize) -> Choice {
        match split(frame) {
            Some((_, payload)) if payload.len() >= threshold => {
                if self.takeover() {
                    Choice::Dedicated
                } else if crate::proto::deflate::fits_window(payload.len(), self.bits()) {
                    Choice::Alone
                } else {
                    Choice::Plain
                }
            }
            _ => Choice::Plain,
        }
    }
}

/// A core's compressors, what its connections negotiated, and the
/// configuration they follow.
pub(crate) struct CoreDeflate {
    cfg: DeflateConfig,
    /// The connections that negotiated permessage-deflate. A side table,
    /// so that the slab entry of every connection stays as small as it
    /// was, and a server without compression never looks here.
    conns: FxHashMap<u32, ConnDeflate>,
    /// Reset after every message; made on first use.
    alone: Option<Box<Deflater>>,
    /// Connections under context takeover that have had a message
    /// compressed: key → their compressor (zlib's state, about 380 KB at
    /// a 15-bit window: see docs/design.md).
    dedicated: FxHashMap<u32, Box<Deflater>>,
}

impl CoreDeflate {
    pub(crate) fn new(cfg: DeflateConfig) -> Self {
        Self {
            cfg,
            conns: FxHashMap::default(),
            alone: None,
            dedicated: FxHashMap::default(),
        }
    }

    /// Connection `key` negotiated `deflate`.
    pub(crate) fn negotiated(&mut self, key: u32, deflate: ConnDeflate) {
        self.conns.insert(key, deflate);
    }

    /// How a data message `frame` goes to connection `key`.
    #[inline]
    pub(crate) fn choose(&self, key: u32, frame: &[u8]) -> Choice {
        if self.conns.is_empty() {
            return Choice::Plain;
        }
        match self.conns.get(&key) {
            Some(d) => d.choose(frame, self.cfg.threshold),
            None => Choice::Plain,
        }
    }

    fn alone(&mut self) -> &mut Deflater {
        let level = self.cfg.level;
        self.alone
            .get_or_insert_with(|| Box::new(Deflater::new(level, 15, false)))
    }

    /// `frame` compressed on its own, or `None` if that would not make it
    /// smaller.
    pub(crate) fn compress_alone(&mut self, frame: &[u8], stats: &CoreStats) -> Option<Bytes> {
        let z = self.alone().compress_frame(frame);
        count(stats, frame, z.as_ref());
        z
    }

    /// The compressed frame of a publish, made here if no core made it
    /// yet, and whether this call made it.
    pub(crate) fn shared<'a>(
        &mut self,
        cell: &'a SharedDeflate,
        frame: &[u8],
        stats: &CoreStats,
    ) -> (Option<&'a Bytes>, bool) {
        let (z, ran) = cell.get(frame, self.alone());
        if ran {
            count(stats, frame, z);
        }
        (z, ran)
    }

    /// `frame` through connection `key`'s own compressor (made on first
    /// use with the window `deflate` negotiated). Always compressed: the window has taken
    /// the message in, so the client's must too.
    pub(crate) fn compress_dedicated(
        &mut self,
        key: u32,
        frame: &[u8],
        stats: &CoreStats,
    ) -> Option<Bytes> {
        let level = self.cfg.level;
        let bits = self.conns.get(&key).map_or(15, |d| d.bits());
        let d = self
            .dedicated
            .entry(key)
            .or_insert_with(|| Box::new(Deflater::new(level, bits, true)));
        let z = d.compress_frame(frame);
        count(stats, frame, z.as_ref());
        z
    }

    /// Connection `key` is gone: its compressor goes too.
    pub(crate) fn forget(&mut self, key: u32) {
        if self.conns.remove(&key).is_some_and(ConnDeflate::takeover) {
            self.dedicated.remove(&key);
        }
    }

    /// Connections holding a compressor of their own.
    pub(crate) fn dedicated_len(&self) -> usize {
        self.dedicated.len()
    }

    /// Gives back the map's room once it is mostly empty.
    pub(crate) fn trim(&mut self) {
        if self.dedicated.capacity() > 64 && self.dedicated.len() * 4 < self.dedicated.capacity() {
            self.dedicated.shrink_to_fit();
        }
    }
}

fn count(stats: &CoreStats, frame: &[u8], z: Option<&Bytes>) {
    stats.compressions.bump(1);
    stats.compress_in.bump(frame.len() as u64);
    stats
        .compress_out
        .bump(z.map_or(frame.len(), Bytes::len) as u64);
}
