//! Delivery tracking for the connections that ask for it: where each positioned message ends in the connection's output stream, and which of them the peer's TCP has acknowledged (`tcpi_bytes_acked`).
//!
//! The server knows what it queued and wrote, not what the client
//! received. The kernel knows a little more: how many bytes of the stream
//! the peer's TCP acknowledged. A tracked connection logs, per message a
//! [`PositionReader`] recognises (a history topic's message: its topic and
//! offset), the stream position where that message's last byte ends; when
//! asked, the log is compared with `tcpi_bytes_acked` and every message
//! ending at or before it counts as acknowledged. An acknowledged byte is
//! one the client's TCP holds: a client process that survives the cut has
//! it. The log is trimmed whenever it passes a bound that doubles with
//! what stays unacknowledged, so a connection holds one entry per message
//! in flight (those its peer has not acknowledged), amortised one
//! `getsockopt` per bound's worth of messages.
//!
//! Connections that are not tracked pay one hash-set emptiness check per
//! queued frame, and nothing in their slab entry.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Reads a message's position from its payload (a whole unmasked
/// message, as sent): the topic and the offset, or `None` for a message
/// that carries none (replies, messages of topics without history).
/// Called once per message queued for a tracked connection; must be
/// cheap.
pub type PositionReader = fn(&[u8]) -> Option<(&str, u64)>;

/// Trim the log when it passes this many entries (at least): 2 KiB of
/// entries.
const TRIM_AT: usize = 64;

struct Tap {
    fd: RawFd,
    /// The descriptor `fd` is, when it was installed for the tracking (a
    /// direct descriptor's socket): closed with the tap.
    _installed: Option<OwnedFd>,
    reader: PositionReader,
    /// Stream position (in `tcpi_bytes_acked` units) after the last frame
    /// queued.
    end: u64,
    /// (end position, topic, offset) of the positioned messages not known
    /// to be acknowledged, oldest first.
    log: VecDeque<(u64, Arc<str>, u64)>,
    /// Per topic, the offset of the last message known acknowledged.
    acked: FxHashMap<Arc<str>, u64>,
    /// Trim when the log holds this many entries.
    trim_at: usize,
    /// Positions are relative to the outbox's head when tracking began,
    /// until the send then in flight completes ([`AckTaps::sent`]): what
    /// the kernel had taken of it was unknown.
    pending: bool,
    /// Where the stream ended, once the connection did
    /// ([`AckTaps::closing`]).
    closed_at: Option<u64>,
}

impl Tap {
    /// Moves every entry the peer acknowledged (`bytes`) from the log to
    /// the acknowledged offsets.
    fn settle(&mut self, bytes: u64) {
        while let Some((end, _, _)) = self.log.front() {
            if *end > bytes {
                break;
            }
            let (_, topic, offset) = self.log.pop_front().expect("front exists");
            self.acked.insert(topic, offset);
        }
    }

    fn trim(&mut self) {
        if self.pending {
            self.trim_at = (self.log.len() * 2).max(TRIM_AT);
            return;
        }
        if let Ok(bytes) = bytes_acked(self.fd) {
            self.settle(bytes);
        }
        if self.log.is_empty() {
            // A reader that keeps up holds no log between bursts.
            self.log = VecDeque::new();
        }
        self.trim_at = (self.log.len() * 2).max(TRIM_AT);
    }
}

/// The tracked connections of one core.
#[derive(Default)]
pub(crate) struct AckTaps {
    taps: FxHashMap<u32, Tap>,
}

impl AckTaps {
    /// Whether connection `key` is tracked.
    #[inline]
    pub(crate) fn tracks(&self, key: u32) -> bool {
        !self.taps.is_empty() && self.taps.contains_key(&key)
    }

    /// Starts tracking `key` (socket `fd`, `queued` bytes in its outbox
    /// not yet written or in a send not yet complete). Returns false if
    /// the kernel cannot say where the stream is (not TCP, or no
    /// `TCP_INFO` byte counts).
    pub(crate) fn start(
        &mut self,
        key: u32,
        fd: RawFd,
        queued: usize,
        reader: PositionReader,
    ) -> bool {
        self.start_with(key, fd, None, queued, reader)
    }

    /// As [`start`](Self::start), on a descriptor installed for the
    /// tracking, which the tracking keeps and closes. With `in_flight`, a
    /// send of the outbox's head is in flight: how much of it the kernel
    /// took is known only at its completion, so positions count from the
    /// outbox's head until [`sent`](Self::sent) places them.
    pub(crate) fn start_installed(
        &mut self,
        key: u32,
        fd: OwnedFd,
        queued: usize,
        in_flight: bool,
        reader: PositionReader,
    ) -> bool {
        if !in_flight {
            return self.start_with(key, fd.as_raw_fd(), Some(fd), queued, reader);
        }
        if bytes_acked(fd.as_raw_fd()).is_err() {
            return false;
        }
        self.taps.insert(
            key,
            Tap {
                fd: fd.as_raw_fd(),
                _installed: Some(fd),
                reader,
                end: queued as u64,
                log: VecDeque::new(),
                acked: FxHashMap::default(),
                trim_at: TRIM_AT,
                pending: true,
                closed_at: None,
            },
        );
        true
    }

    /// `key` ended with `queued` bytes in its outbox, which are dropped
    /// but for the first `in_flight` (a write handed to the kernel and not
    /// complete: they go out): its stream ends there.
    pub(crate) fn closing(&mut self, key: u32, queued: usize, in_flight: usize) {
        if self.taps.is_empty() {
            return;
        }
        if let Some(t) = self.taps.get_mut(&key) {
            t.closed_at = Some(t.end.saturating_sub(queued as u64) + in_flight as u64);
        }
    }

    /// `key`'s send completed and `advanced` bytes left its outbox's head;
    /// no other send of it is in flight. A tracking that began during
    /// that send learns where its positions start: the kernel has taken
    /// every byte before the head now, the bytes it took of that send
    /// included.
    pub(crate) fn sent(&mut self, key: u32, advanced: usize) {
        if self.taps.is_empty() {
            return;
        }
        let Some(t) = self.taps.get_mut(&key) else {
            return;
        };
        if !t.pending {
            return;
        }
        // The send queue first: see `start_with`.
        let (Ok(outq), Ok(acked)) = (send_queue(t.fd), bytes_acked(t.fd)) else {
            return;
        };
        let base = (acked + outq as u64).saturating_sub(advanced as u64);
        t.end += base;
        for e in &mut t.log {
            e.0 += base;
        }
        t.pending = false;
    }

    fn start_with(
        &mut self,
        key: u32,
        fd: RawFd,
        installed: Option<OwnedFd>,
        queued: usize,
        reader: PositionReader,
    ) -> bool {
        // The send queue first, then the acknowledged bytes: an ACK that
        // lands between the two calls makes the sum too large, which only
        // holds messages for unacknowledged a little longer (never the
        // other way round).
        let Ok(outq) = send_queue(fd) else {
            return false;
        };
        let Ok(acked) = bytes_acked(fd) else {
            return false;
        };
        self.taps.insert(
            key,
            Tap {
                fd,
                _installed: installed,
                reader,
                end: acked + outq as u64 + queued as u64,
                log: VecDeque::new(),
                acked: FxHashMap::default(),
                trim_at: TRIM_AT,
                pending: false,
                closed_at: None,
            },
        );
        true
    }

    /// `n` bytes were queued for `key` (every frame, whatever it is).
    #[inline]
    pub(crate) fn on_queued(&mut self, key: u32, n: usize) {
        if self.taps.is_empty() {
            return;
        }
        if let Some(t) = self.taps.get_mut(&key) {
            t.end += n as u64;
        }
    }

    /// The message whose plain frame is `frame` was just queued for `key`
    /// (after [`on_queued`](Self::on_queued) for its bytes on the wire).
    pub(crate) fn on_message(&mut self, key: u32, frame: &[u8]) {
        let Some(t) = self.taps.get_mut(&key) else {
            return;
        };
        let Some((_, payload)) = crate::proto::deflate::split(frame) else {
            return;
        };
        let Some((topic, offset)) = (t.reader)(payload) else {
            return;
        };
        // One `Arc` per topic, shared by its entries.
        let topic = match t.acked.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => match t.log.iter().rev().find(|(_, k, _)| &**k == topic) {
                Some((_, k, _)) => k.clone(),
                None => Arc::from(topic),
            },
        };
        t.log.push_back((t.end, topic, offset));
        if t.log.len() >= t.trim_at {
            t.trim();
        }
    }

    /// Per topic, the offset of the last message of `key` whose every
    /// byte the peer acknowledged, read from the kernel now; `None` if
    /// `key` is not tracked. If the kernel cannot say (the socket is
    /// gone), what was known at the last trim.
    pub(crate) fn acked(&mut self, key: u32) -> Option<Vec<(Arc<str>, u64)>> {
        let t = self.taps.get_mut(&key)?;
        if !t.pending {
            if let Ok(bytes) = bytes_acked(t.fd) {
                t.settle(bytes);
            }
        }
        Some(t.acked.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }

    /// Like [`acked`](Self::acked), counting every message written
    /// rather than only the acknowledged ones: for a connection whose
    /// peer closed cleanly, which reads what was sent before the close
    /// frame. Once the connection ended ([`closing`](Self::closing)),
    /// that is every message up to the end of its last write; before, every
    /// message handed to the kernel (acknowledged or in its send queue).
    pub(crate) fn written(&mut self, key: u32) -> Option<Vec<(Arc<str>, u64)>> {
        let t = self.taps.get_mut(&key)?;
        if let Some(at) = t.closed_at {
            t.settle(at);
        } else if !t.pending {
            // The send queue first: see `start`.
            let bytes = send_queue(t.fd)
                .and_then(|q| Ok(bytes_acked(t.fd)? + q as u64))
                .or_else(|_| bytes_acked(t.fd));
            if let Ok(bytes) = bytes {
                t.settle(bytes);
            }
        }
        Some(t.acked.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }

    /// Entries held for `key` (acknowledged topics and log), for tests
    /// and the memory figures.
    pub(crate) fn held(&self, key: u32) -> usize {
        self.taps
            .get(&key)
            .map_or(0, |t| t.log.len() + t.acked.len())
    }

    /// `key` is gone.
    pub(crate) fn forget(&mut self, key: u32) {
        if !self.taps.is_empty() {
            self.taps.remove(&key);
        }
    }
}

/// `tcpi_bytes_acked` of TCP socket `fd`: the bytes of its stream the
/// peer acknowledged (Linux 4.1 and later). Counts data bytes only (not
/// the SYN): see the test below.
///
/// # Errors
/// The socket is not TCP, or the kernel's `tcp_info` is too old to have
/// the field.
pub(crate) fn bytes_acked(fd: RawFd) -> io::Result<u64> {
    // SAFETY: `tcp_info` is a plain C struct for which all zeroes is a
    // valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes and the kernel writes at
    // most `len` bytes, reporting how many in `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let need = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + 8;
    if (len as usize) < need {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    Ok(info.tcpi_bytes_acked)
}

/// Bytes handed to the kernel for `fd` and not yet acknowledged by the
/// peer (sent or not): `SIOCOUTQ`.
fn send_queue(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (= SIOCOUTQ) writes one c_int through the pointer,
    // which points at `n`.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (s, c)
    }

    fn wait_acked(fd: RawFd, want: u64) -> u64 {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let got = bytes_acked(fd).unwrap();
            if got >= want || Instant::now() > until {
                return got;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `tcpi_bytes_acked` counts exactly the data bytes the peer
    /// acknowledged: 0 after the handshake (the SYN is not counted), then
    /// every byte written and read, e.g. a 101 response of 129 bytes.
    #[test]
    fn bytes_acked_counts_data_bytes_only() {
        let (mut s, mut c) = pair();
        assert_eq!(bytes_acked(s.as_raw_fd()).unwrap(), 0);
        assert_eq!(send_queue(s.as_raw_fd()).unwrap(), 0);
        s.write_all(&[7u8; 129]).unwrap();
        let mut buf = [0u8; 129];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(wait_acked(s.as_raw_fd(), 129), 129);
        assert_eq!(send_queue(s.as_raw_fd()).unwrap(), 0);
    }

    fn reader(p: &[u8]) -> Option<(&str, u64)> {
        let s = std::str::from_utf8(p).ok()?;
        let (t, o) = s.split_once(':')?;
        Some((t, o.parse().ok()?))
    }

    fn frame(text: &str) -> Vec<u8> {
        crate::proto::PreparedFrame::text(text).as_bytes().to_vec()
    }

    /// Messages the peer acknowledged count; those it has not (it stopped
    /// reading: the bytes wait in the kernel's buffers) do not.
    #[test]
    fn only_acknowledged_messages_count() {
        let (s, mut c) = pair();
        let fd = s.as_raw_fd();
        let mut taps = AckTaps::default();
        assert!(taps.start(1, fd, 0, reader));
        let send = |taps: &mut AckTaps, text: &str| {
            let f = frame(text);
            (&s).write_all(&f).unwrap();
            taps.on_queued(1, f.len());
            taps.on_message(1, &f);
        };
        send(&mut taps, "a:1");
        send(&mut taps, "a:2");
        send(&mut taps, "b:7");
        let mut buf = vec![0u8; 15];
        c.read_exact(&mut buf).unwrap();
        wait_acked(fd, 15);
        let mut got = taps.acked(1).unwrap();
        got.sort();
        assert_eq!(got, vec![(Arc::from("a"), 2), (Arc::from("b"), 7)]);
        // Not acknowledged yet: the peer's receive window is closed by a
        // peer that does not read; fill it, then one more.
        s.set_nonblocking(true).unwrap();
        let big = vec![0u8; 1 << 16];
        let until = Instant::now() + Duration::from_secs(5);
        let mut blocked = 0;
        while blocked < 3 {
            match (&s).write(&big) {
                Ok(n) => {
                    taps.on_queued(1, n);
                    blocked = 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    blocked += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < until, "the window never closed");
        }
        let f = frame("a:3");
        taps.on_queued(1, f.len());
        taps.on_message(1, &f);
        let got = taps.acked(1).unwrap();
        assert!(got.contains(&(Arc::from("a"), 2)), "{got:?}");
        assert_eq!(taps.held(1), 3);
        taps.forget(1);
        assert!(!taps.tracks(1));
    }

    /// A tracking begun while a send of the outbox's head was in flight
    /// (the direct path) counts from the head until that send completes,
    /// then knows its place; an ended connection's stream ends with its
    /// last write.
    #[test]
    fn a_tracking_begun_during_a_send_is_placed_when_it_completes() {
        let (s, mut c) = pair();
        let fd = OwnedFd::from(s.try_clone().unwrap());
        let raw = s.as_raw_fd();
        // 100 bytes went before (a handshake answer, say), then a send of
        // 20 bytes is in flight: the kernel has taken 100 + 20.
        (&s).write_all(&[b'x'; 120]).unwrap();
        let mut taps = AckTaps::default();
        assert!(taps.start_installed(1, fd, 20, true, reader));
        let f1 = frame("a:1");
        taps.on_queued(1, f1.len());
        taps.on_message(1, &f1);
        let mut buf = vec![0u8; 120];
        c.read_exact(&mut buf).unwrap();
        wait_acked(raw, 120);
        // Not placed yet: nothing is known acknowledged or written.
        assert_eq!(taps.acked(1).unwrap(), vec![]);
        // The send completes having taken its 20 bytes; `a:1` follows.
        taps.sent(1, 20);
        (&s).write_all(&f1).unwrap();
        c.read_exact(&mut buf[..f1.len()]).unwrap();
        wait_acked(raw, 120 + f1.len() as u64);
        assert_eq!(taps.acked(1).unwrap(), vec![(Arc::from("a"), 1)]);
        // Two more queued; the first is in a write in flight when the
        // connection ends, the second is dropped: only the first counts as
        // written.
        let (f2, f3) = (frame("a:2"), frame("a:3"));
        for f in [&f2, &f3] {
            taps.on_queued(1, f.len());
            taps.on_message(1, f);
        }
        taps.closing(1, f2.len() + f3.len(), f2.len());
        assert_eq!(taps.written(1).unwrap(), vec![(Arc::from("a"), 2)]);
    }
}
