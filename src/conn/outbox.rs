//! A connection's queue of frames to write, and the gathered write that empties it: small frames copied together, large shared ones as iovecs.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use bytes::Bytes;

use crate::sys;

/// Frames at most this large are copied together into one write buffer;
/// larger ones go out as their own iovec, shared with every subscriber.
const COALESCE_MAX: usize = 2048;
/// Bytes one flush of one connection hands the kernel at most.
const WRITE_BATCH: usize = 256 << 10;

/// Frames waiting to be written, oldest first. Admission (the outbox
/// limit and the slow-consumer policy) is the connection table's job; this
/// only keeps the queue and its byte count.
#[derive(Default)]
pub(super) struct Outbox {
    frames: VecDeque<Bytes>,
    /// Bytes of the first frame already written.
    head_written: usize,
    /// Bytes queued (not yet written).
    queued: usize,
}

impl Outbox {
    /// Bytes queued and not yet written.
    pub(super) fn queued(&self) -> usize {
        self.queued
    }

    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub(super) fn push(&mut self, frame: Bytes) {
        self.queued += frame.len();
        self.frames.push_back(frame);
    }

    /// Drops every frame not yet started; a partly written frame stays so
    /// the stream remains well-formed, and so do the first `in_flight`
    /// frames (handed to the kernel by a send not yet complete). Returns
    /// the data frames dropped.
    pub(super) fn discard_unsent(&mut self, in_flight: usize) -> usize {
        let keep = usize::from(self.head_written > 0).max(in_flight);
        let mut dropped = 0;
        while self.frames.len() > keep {
            if let Some(f) = self.frames.pop_back() {
                dropped += usize::from(is_data(&f));
            }
        }
        self.queued = self.frames.iter().map(Bytes::len).sum::<usize>() - self.head_written;
        dropped
    }

    /// Drops everything not completely written, and the queue's memory.
    /// Returns the data frames lost (a partly written one included).
    pub(super) fn clear(&mut self) -> usize {
        let lost = self.frames.iter().filter(|f| is_data(f)).count();
        self.frames = VecDeque::new();
        self.queued = 0;
        self.head_written = 0;
        lost
    }

    /// One `sendmsg` of the head of the queue: small frames copied into
    /// `g`'s buffer, large shared frames by reference. Returns the bytes
    /// written, the frames completed and whether the socket took all that
    /// was offered (if not, it is full: wait until it is writable).
    pub(super) fn write_some(&mut self, fd: RawFd, g: &mut Gather) -> io::Result<Written> {
        g.wlen = 0;
        g.iov.clear();
        g.plan.clear();
        // First pass: copy small frames; remember where each run starts so
        // the iovecs can be built after `wbuf` stops growing.
        let mut total = 0usize;
        for (i, f) in self.frames.iter().enumerate() {
            let bytes: &[u8] = if i == 0 { &f[self.head_written..] } else { f };
            if g.plan.len() >= sys::MAX_IOVECS - 1 || total >= WRITE_BATCH {
                break;
            }
            if bytes.len() <= COALESCE_MAX && g.wlen + bytes.len() <= g.wbuf.len() {
                let start = g.wlen;
                g.wbuf[start..start + bytes.len()].copy_from_slice(bytes);
                g.wlen += bytes.len();
                g.plan.push_copied(start, bytes.len());
            } else {
                g.plan.push_ref(i);
            }
            total += bytes.len();
        }
        for seg in g.plan.segments() {
            match seg {
                Seg::Copied(start, len) => g.iov.push(sys::iovec_of(&g.wbuf[start..start + len])),
                Seg::Ref(i) => {
                    let f = &self.frames[i];
                    let bytes: &[u8] = if i == 0 { &f[self.head_written..] } else { f };
                    g.iov.push(sys::iovec_of(bytes));
                }
            }
        }
        let n = sys::send_iovecs(fd, &g.iov)?;
        let frames = self.advance(n);
        Ok(Written {
            bytes: n,
            frames,
            full: n < total,
        })
    }

    /// Lays the head of the queue out in `f` for a send submitted to the
    /// kernel (the direct path): small frames copied into its buffer,
    /// large ones by reference, each kept alive by `f` until the send
    /// completes, whatever happens to the queue meanwhile. Returns the
    /// bytes offered.
    pub(super) fn prepare(&self, f: &mut InFlight) -> usize {
        f.reset();
        let mut total = 0usize;
        for (i, fr) in self.frames.iter().enumerate() {
            let skip = if i == 0 { self.head_written } else { 0 };
            let len = fr.len() - skip;
            if f.plan.len() >= sys::MAX_IOVECS - 1 || total >= WRITE_BATCH {
                break;
            }
            if len <= COALESCE_MAX {
                let start = f.copy.len();
                f.copy.extend_from_slice(&fr[skip..]);
                f.plan.push_copied(start, len);
            } else {
                f.plan.push_ref(f.refs.len());
                f.refs.push(fr.slice(skip..));
            }
            f.frames += 1;
            total += len;
        }
        for seg in f.plan.segments() {
            let v = match seg {
                Seg::Copied(start, len) => sys::iovec_of(&f.copy[start..start + len]),
                Seg::Ref(i) => sys::iovec_of(&f.refs[i]),
            };
            f.iov.push(v);
        }
        // SAFETY: a zeroed msghdr is valid; only the iovec fields are set,
        // to `f.iov`, which `f` keeps (boxed, not moved) until completion.
        f.hdr = unsafe { std::mem::zeroed() };
        f.hdr.msg_iov = f.iov.as_mut_ptr();
        f.hdr.msg_iovlen = f.iov.len() as _;
        f.bytes = total;
        total
    }

    /// Moves past `n` written bytes; returns the frames completed.
    pub(super) fn advance(&mut self, n: usize) -> usize {
        let mut completed = 0;
        let mut left = n;
        while left > 0 {
            let f = self
                .frames
                .front()
                .expect("written bytes belong to queued frames");
            let rem = f.len() - self.head_written;
            if left >= rem {
                left -= rem;
                self.frames.pop_front();
                self.head_written = 0;
                completed += 1;
            } else {
                self.head_written += left;
                left = 0;
            }
        }
        self.queued -= n;
        if self.frames.is_empty() {
            // An idle connection keeps no queue memory.
            self.frames = VecDeque::new();
        }
        completed
    }
}

/// What one write took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Written {
    /// Bytes.
    pub(super) bytes: usize,
    /// Frames completed by it.
    pub(super) frames: usize,
    /// The socket took less than offered: it is full.
    pub(super) full: bool,
}

/// Whether a queued frame is a data message (a whole text or binary frame,
/// the only kind the engine sends), as opposed to a control frame or the
/// bytes of an HTTP response: what the drop counters count.
fn is_data(frame: &[u8]) -> bool {
    frame
        .first()
        .is_some_and(|&b| matches!(b & 0x8f, 0x81 | 0x82))
}

/// A core's scratch for gathered writes, reused by every connection.
pub(super) struct Gather {
    /// Small frames copied together, `wlen` bytes of it used.
    wbuf: sys::OwnPages,
    wlen: usize,
    iov: Vec<libc::iovec>,
    plan: Plan,
}

impl Gather {
    pub(super) fn new() -> Self {
        Self {
            wbuf: sys::OwnPages::new(WRITE_BATCH),
            wlen: 0,
            iov: Vec::with_capacity(sys::MAX_IOVECS),
            plan: Plan::default(),
        }
    }

    /// Gives the copy buffer's pages back (its core has no connection).
    pub(super) fn release(&mut self) {
        self.wlen = 0;
        self.wbuf.release();
    }
}

/// A send handed to the kernel and not yet complete (the direct path):
/// its message header, iovecs and the bytes they point to. Boxed so that
/// its address stays put while the kernel holds it.
pub(crate) struct InFlight {
    pub(super) hdr: libc::msghdr,
    iov: Vec<libc::iovec>,
    copy: Vec<u8>,
    refs: Vec<Bytes>,
    plan: Plan,
    /// Queued frames it covers (in whole or in part).
    pub(super) frames: usize,
    /// Bytes it offers.
    pub(super) bytes: usize,
}

impl InFlight {
    pub(super) fn new() -> Box<Self> {
        Box::new(Self {
            // SAFETY: a zeroed msghdr is valid (no name, no iovecs).
            hdr: unsafe { std::mem::zeroed() },
            iov: Vec::new(),
            copy: Vec::new(),
            refs: Vec::new(),
            plan: Plan::default(),
            frames: 0,
            bytes: 0,
        })
    }

    fn reset(&mut self) {
        self.iov.clear();
        self.copy.clear();
        self.refs.clear();
        self.plan.clear();
        self.frames = 0;
        self.bytes = 0;
    }

    /// Drops the frames it held, keeping modest buffers for reuse.
    pub(super) fn recycle(&mut self) {
        self.reset();
        if self.copy.capacity() > 64 << 10 {
            self.copy = Vec::new();
        }
        if self.iov.capacity() > 64 {
            self.iov = Vec::new();
        }
    }
}

/// One segment of a gathered write.
#[derive(Clone, Copy)]
enum Seg {
    /// A run of bytes copied into the write buffer: (start, length).
    Copied(usize, usize),
    /// A queued frame by index, sent from its own memory.
    Ref(usize),
}

/// The layout of one gathered write: runs of copied bytes and references to
/// queued frames, merged where adjacent.
#[derive(Default)]
struct Plan {
    segs: Vec<Seg>,
}

impl Plan {
    fn len(&self) -> usize {
        self.segs.len()
    }
    fn clear(&mut self) {
        self.segs.clear();
    }
    fn push_copied(&mut self, start: usize, len: usize) {
        if let Some(Seg::Copied(s, l)) = self.segs.last_mut() {
            if *s + *l == start {
                *l += len;
                return;
            }
        }
        self.segs.push(Seg::Copied(start, len));
    }
    fn push_ref(&mut self, i: usize) {
        self.segs.push(Seg::Ref(i));
    }
    fn segments(&self) -> impl Iterator<Item = Seg> + '_ {
        self.segs.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        let mut f = vec![0x81u8, 0];
        f.resize(len, b'x');
        Bytes::from(f)
    }

    /// Frames a send in flight covers stay queued through a discard, and
    /// the byte count keeps matching the queue, so the send's completion
    /// moves past exactly what the kernel wrote.
    #[test]
    fn a_discard_keeps_the_frames_in_flight_and_counts_them() {
        let mut o = Outbox::default();
        for len in [3000, 100, 200, 300] {
            o.push(frame(len));
        }
        let mut f = InFlight::new();
        let offered = o.prepare(&mut f);
        assert_eq!((offered, f.frames), (3600, 4));
        assert_eq!(o.advance(1000), 0);
        assert_eq!(o.discard_unsent(2), 2);
        assert_eq!(o.queued(), 2000 + 100);
        assert_eq!(o.advance(2100), 2);
        assert!(o.is_empty());
        assert_eq!(o.queued(), 0);
    }

    /// A prepared send lays out every queued byte once, in order: small
    /// frames copied together, large ones by reference.
    #[test]
    fn a_prepared_send_covers_the_queue_in_order() {
        let mut o = Outbox::default();
        let frames: Vec<Bytes> = [10, 5000, 20, 30].into_iter().map(frame).collect();
        for f in &frames {
            o.push(f.clone());
        }
        o.advance(4);
        let mut f = InFlight::new();
        o.prepare(&mut f);
        let mut sent = Vec::new();
        for v in &f.iov {
            // SAFETY: the iovecs point into `f`'s buffers and frames,
            // alive here.
            sent.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len)
            });
        }
        let want: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).skip(4).collect();
        assert_eq!(sent, want);
        assert_eq!(f.iov.len(), 3, "copied, referenced, copied");
    }
}
