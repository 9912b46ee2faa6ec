//! One connection: its slab entry, its outbox and its read task.

pub(crate) mod read;
pub mod sys;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;

use bytes::Bytes;
use monoio::net::TcpStream;

/// Identifies one connection across the whole server: its core, its slab
/// index there and a generation, so an id kept after the connection closed
/// can never reach the connection that reuses the slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) shard: u16,
    pub(crate) key: u32,
    pub(crate) gen: u32,
}

impl ConnId {
    /// The core serving this connection.
    pub fn shard(self) -> usize {
        self.shard as usize
    }

    /// A 64-bit form (shard 16 bits, generation 16 low bits, slab index 32).
    /// Suitable as an opaque client id; not unique across slot reuse beyond
    /// 65,536 generations, unlike the `ConnId` itself.
    pub fn as_u64(self) -> u64 {
        (self.shard as u64) << 48 | ((self.gen as u64) & 0xffff) << 32 | self.key as u64
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}:{}#{})", self.shard, self.key, self.gen)
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
    /// A close frame was queued (by us or as an echo); nothing else may be
    /// sent, and the read task waits for the peer to finish.
    Closing,
}

/// A connection's slab entry: everything other tasks on the core may touch.
/// The decoder and any partial frame live in the read task.
pub(crate) struct Conn<D> {
    pub gen: u32,
    pub fd: RawFd,
    pub stream: Rc<TcpStream>,
    pub state: State,
    /// Frames waiting to be written, oldest first.
    pub outbox: VecDeque<Bytes>,
    /// Bytes of the first frame already written.
    pub head_written: usize,
    /// Bytes queued (not yet written).
    pub queued: usize,
    /// Listed in the core's dirty list for the next flush.
    pub dirty: bool,
    /// A write hit a full socket; a task waits for writability.
    pub waiting_writable: bool,
    /// Reported backpressure; `drain` fires below the low-water mark.
    pub backpressured: bool,
    /// After the outbox empties, shut down our sending side (close sent).
    pub fin_after_flush: bool,
    /// The `close` callback has run (it runs exactly once).
    pub close_notified: bool,
    /// A ping is out and unanswered.
    pub ping_outstanding: bool,
    /// Core clock second of the last byte received.
    pub last_rx: u64,
    /// Core clock second when closing started.
    pub closing_since: u64,
    /// The first close code sent or received, reported to `close`.
    /// Boxed: rare, and kept out of every idle connection's entry.
    pub close_code: Option<Box<(crate::proto::CloseCode, Box<str>)>>,
    /// The application's data; taken out while a callback runs.
    pub data: Option<D>,
}

impl<D> Conn<D> {
    pub fn new(gen: u32, stream: Rc<TcpStream>, fd: RawFd, now: u64) -> Self {
        Self {
            gen,
            fd,
            stream,
            state: State::Handshake,
            outbox: VecDeque::new(),
            head_written: 0,
            queued: 0,
            dirty: false,
            waiting_writable: false,
            backpressured: false,
            fin_after_flush: false,
            close_notified: false,
            ping_outstanding: false,
            last_rx: now,
            closing_since: 0,
            close_code: None,
            data: None,
        }
    }
}

/// The peer address of `stream` (cached by the runtime after the first call).
pub(crate) fn peer_of(stream: &TcpStream) -> SocketAddr {
    stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slab entry is most of what an idle connection costs in user
    /// space; keep it from growing unnoticed.
    #[test]
    fn slab_entry_stays_small() {
        let size = std::mem::size_of::<Conn<()>>();
        assert!(size <= 112, "Conn<()> is {size} bytes");
        eprintln!(
            "Conn<()>: {size} bytes, TcpStream: {}",
            std::mem::size_of::<TcpStream>()
        );
    }
}
