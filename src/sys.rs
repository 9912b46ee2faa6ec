//! Non-blocking socket calls made after io_uring (or epoll) reported readiness.
//!
//! Reads go into a per-core scratch buffer only once the socket is readable,
//! so an idle connection holds no buffer; writes gather a connection's queued
//! frames into one `sendmsg`. Both are plain non-blocking syscalls on the
//! core's own thread.

use std::io;
use std::os::fd::RawFd;

/// Most iovecs one `sendmsg` takes (Linux's `UIO_MAXIOV`).
pub(crate) const MAX_IOVECS: usize = 1024;

/// Reads into `buf` without blocking.
///
/// Returns `Ok(0)` at end of stream and `Err(WouldBlock)` when nothing is
/// available. An empty `buf` also reads `Ok(0)`, whatever is pending:
/// callers pass a non-empty buffer.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for
        // the duration of the call, and `recv` writes at most that many.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads into the spare capacity of `buf` without blocking, extending its
/// length by what was read. As with [`recv`], no spare capacity reads
/// `Ok(0)`: callers reserve first.
pub(crate) fn recv_into_vec(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    loop {
        // SAFETY: the spare capacity is allocated and writable for
        // `spare.len()` bytes; `recv` initialises exactly the `n` bytes it
        // reports, and only those are added to the length below.
        let n = unsafe {
            libc::recv(
                fd,
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: `recv` initialised `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes `parts` (each a byte slice that stays alive for the call) in one
/// `sendmsg` without blocking. Returns the number of bytes written. Only
/// the first 64 parts are sent (callers pass one).
pub(crate) fn send_parts(fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
    let mut iov: [libc::iovec; 64] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 64];
    let n = parts.len().min(iov.len());
    for (v, p) in iov.iter_mut().zip(parts) {
        v.iov_base = p.as_ptr() as *mut _;
        v.iov_len = p.len();
    }
    send_iovecs(fd, &iov[..n])
}

/// Writes the given iovecs in one `sendmsg` without blocking.
///
/// The caller guarantees every iovec points to memory that is readable for
/// its length until this call returns (the call is synchronous).
pub(crate) fn send_iovecs(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    debug_assert!(iov.len() <= MAX_IOVECS);
    // SAFETY: a zeroed msghdr is a valid "no address, no control data" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    loop {
        // SAFETY: `msg` points at `iov`, whose entries the caller guarantees
        // are readable for the duration of this synchronous call; the kernel
        // only reads them. MSG_NOSIGNAL turns a closed peer into EPIPE
        // instead of SIGPIPE.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// An iovec for a `Bytes` frame; valid while the frame is kept alive.
#[inline]
pub(crate) fn iovec_of(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut _,
        iov_len: b.len(),
    }
}

/// Shuts down one or both directions so that a task waiting for readiness
/// on the socket wakes up (with end of stream or an error).
pub(crate) fn shutdown(fd: RawFd, how: libc::c_int) {
    // SAFETY: shutdown on any fd is memory safe; errors (e.g. ENOTCONN for a
    // peer that already left) are irrelevant here.
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// A one-shot timer with microsecond resolution as a descriptor
/// (`timerfd`, `CLOCK_MONOTONIC`): armed with [`arm`](Self::arm), it becomes
/// readable when it expires, so a core's driver waits for it as it waits
/// for a socket, processing whatever input arrives meanwhile (the runtime's
/// own timers have a resolution of one millisecond).
pub(crate) struct ShortTimer {
    fd: std::os::fd::OwnedFd,
}

impl ShortTimer {
    /// A disarmed, non-blocking timer.
    pub(crate) fn new() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: timerfd_create has no memory preconditions.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(Self {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor, to wait on for readability.
    pub(crate) fn fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Expires once, `after` from now (at least 1 ns: zero would disarm).
    pub(crate) fn arm(&self, after: std::time::Duration) -> io::Result<()> {
        let after = after.max(std::time::Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec for the duration of the call;
        // a null old-value pointer is allowed.
        let r = unsafe { libc::timerfd_settime(self.fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consumes an expiry, so the descriptor is no longer readable.
    /// Returns whether the timer had expired.
    pub(crate) fn consume(&self) -> bool {
        let mut n = [0u8; 8];
        // SAFETY: `n` is 8 writable bytes, what a timerfd read needs.
        let r = unsafe { libc::read(self.fd(), n.as_mut_ptr().cast(), n.len()) };
        r == 8
    }
}

/// Sets TCP_NODELAY: fanout frames must not wait for Nagle's algorithm.
pub(crate) fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the duration of the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A core's fixed-size byte buffer (its read scratch, its write batch) in
/// an anonymous mapping of its own, not from the allocator.
///
/// Such a buffer lives as long as its core. From the allocator it would sit
/// in a page shared with blocks of its size class, and the tables that grow
/// through that size class with a wave of connections would extend that
/// page and leave it extended, touched, when they shrink back: mimalloc
/// returns a page only once all of its blocks are free. Here the buffer
/// pins nothing, and [`release`](Self::release) gives its own pages back
/// while its core is idle.
pub(crate) struct OwnPages {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl OwnPages {
    /// `len` bytes (rounded up to whole pages by the kernel), zeroed.
    /// Aborts like a failed allocation when the mapping cannot be made.
    pub(crate) fn new(len: usize) -> Self {
        assert!(len > 0);
        // SAFETY: a fresh private anonymous mapping with no address hint;
        // it aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match std::ptr::NonNull::new(p.cast::<u8>()).filter(|_| p != libc::MAP_FAILED) {
            Some(ptr) => Self { ptr, len },
            None => std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(len, 4096).expect("a page-aligned layout"),
            ),
        }
    }

    /// Gives the buffer's pages back to the system: its bytes read as
    /// zeros afterwards, and the next write faults a page in again.
    pub(crate) fn release(&mut self) {
        // SAFETY: the range is exactly this buffer's own mapping; `&mut
        // self` means no slice of it is alive. MADV_DONTNEED on private
        // anonymous memory only drops its contents (zeros on next touch).
        unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, libc::MADV_DONTNEED) };
    }
}

impl std::ops::Deref for OwnPages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` mapped, readable bytes (zeros until written), valid
        // until drop; shared borrows of `self` only.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for OwnPages {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only
        // borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for OwnPages {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no slice of it
        // outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pages_are_zeroed_writable_and_released() {
        let mut b = OwnPages::new(64 << 10);
        assert_eq!(b.len(), 64 << 10);
        assert!(b.iter().all(|&x| x == 0));
        b[..5].copy_from_slice(b"hello");
        b[(64 << 10) - 1] = 7;
        assert_eq!(&b[..5], b"hello");
        b.release();
        assert!(b.iter().all(|&x| x == 0));
        b[0] = 1; // writable again
        assert_eq!(b[0], 1);
    }
    use bytes::Bytes;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn recv_reports_would_block_then_data_then_eof() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 16];
        let e = recv(a.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        b.write_all(b"hello").unwrap();
        assert_eq!(recv(a.as_raw_fd(), &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        drop(b);
        assert_eq!(recv(a.as_raw_fd(), &mut buf).unwrap(), 0);
    }

    #[test]
    fn recv_into_vec_appends_to_spare_capacity() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"abcdef").unwrap();
        let mut v = Vec::with_capacity(4);
        v.extend_from_slice(b"xy");
        assert_eq!(recv_into_vec(a.as_raw_fd(), &mut v).unwrap(), 2);
        assert_eq!(v, b"xyab");
        v.reserve(16);
        assert_eq!(recv_into_vec(a.as_raw_fd(), &mut v).unwrap(), 4);
        assert_eq!(v, b"xyabcdef");
    }

    #[test]
    fn send_iovecs_gathers_frames_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let frames = [
            Bytes::from_static(b"one "),
            Bytes::from(vec![b't'; 3]),
            Bytes::from_static(b" three"),
        ];
        let iov: Vec<_> = frames.iter().map(|f| iovec_of(f)).collect();
        let n = send_iovecs(a.as_raw_fd(), &iov).unwrap();
        assert_eq!(n, frames.iter().map(Bytes::len).sum::<usize>());
        let mut got = vec![0u8; n];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, b"one ttt three");
        assert_eq!(send_parts(a.as_raw_fd(), &[b"x", b"yz"]).unwrap(), 3);
    }

    #[test]
    fn send_to_a_full_socket_would_block_and_a_closed_one_is_epipe() {
        let (a, b) = UnixStream::pair().unwrap();
        let big = vec![0u8; 1 << 20];
        let mut total = 0;
        let err = loop {
            match send_parts(a.as_raw_fd(), &[&big]) {
                Ok(n) => total += n,
                Err(e) => break e,
            }
            assert!(total < 1 << 30, "socket never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(b);
        let err = send_parts(a.as_raw_fd(), &[b"x"]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    }

    /// Fills the socket's send buffer so the next write would block.
    fn fill(fd: RawFd) {
        let big = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            match send_parts(fd, &[&big]) {
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("{e}"),
            }
            assert!(total < 1 << 30, "socket never filled");
        }
    }

    #[test]
    fn recv_into_vec_on_an_empty_socket_would_block_and_keeps_the_vec() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(b"ab");
        let e = recv_into_vec(a.as_raw_fd(), &mut v).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(v, b"ab");
    }

    #[test]
    fn zero_length_buffers_read_and_write_nothing() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"pending").unwrap();
        assert_eq!(recv(a.as_raw_fd(), &mut []).unwrap(), 0);
        let mut full = Vec::with_capacity(2);
        full.extend_from_slice(b"xy");
        assert_eq!(recv_into_vec(a.as_raw_fd(), &mut full).unwrap(), 0);
        assert_eq!(full, b"xy");
        // What was pending is still there.
        let mut buf = [0u8; 16];
        assert_eq!(recv(a.as_raw_fd(), &mut buf).unwrap(), 7);
        assert_eq!(send_iovecs(b.as_raw_fd(), &[]).unwrap(), 0);
        let parts: [&[u8]; 4] = [b"", b"ab", b"", b"c"];
        assert_eq!(send_parts(b.as_raw_fd(), &parts).unwrap(), 3);
        assert_eq!(recv(a.as_raw_fd(), &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
    }

    #[test]
    fn a_partial_gathered_write_sends_a_prefix_of_the_frames_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        // Four distinct 256 KiB frames: more than the socket buffer takes.
        let frames: Vec<Vec<u8>> = (0..4u8)
            .map(|k| (0..256 * 1024).map(|i| (i as u8) ^ (k * 61)).collect())
            .collect();
        let iov: Vec<_> = frames.iter().map(|f| iovec_of(f)).collect();
        let total: usize = frames.iter().map(Vec::len).sum();
        let n = send_iovecs(a.as_raw_fd(), &iov).unwrap();
        assert!(
            n > 0 && n < total,
            "expected a partial write, wrote {n} of {total}"
        );
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, frames.concat()[..n]);
    }

    #[test]
    fn a_write_to_a_full_socket_would_block_and_sends_nothing() {
        let (a, b) = UnixStream::pair().unwrap();
        fill(a.as_raw_fd());
        let e = send_iovecs(a.as_raw_fd(), &[iovec_of(b"late")]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        let mut got = Vec::new();
        (&b).read_to_end(&mut got).unwrap();
        assert!(!got.windows(4).any(|w| w == b"late"));
    }

    #[test]
    fn max_iovecs_gather_in_one_call_and_one_more_is_refused() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let bytes: Vec<u8> = (0..=MAX_IOVECS).map(|i| (i % 251) as u8).collect();
        let iov: Vec<_> = bytes.chunks(1).map(iovec_of).collect();
        assert_eq!(iov.len(), MAX_IOVECS + 1);
        let n = send_iovecs(a.as_raw_fd(), &iov[..MAX_IOVECS]).unwrap();
        assert_eq!(n, MAX_IOVECS);
        let mut got = vec![0u8; n];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, bytes[..MAX_IOVECS]);
        // The kernel's limit is the constant's: one more is EMSGSIZE. (The
        // debug assertion guards the same bound, so call sendmsg directly.)
        // SAFETY: a zeroed msghdr is valid; `iov` is alive and readable.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = iov.len() as _;
            libc::sendmsg(a.as_raw_fd(), &msg, libc::MSG_DONTWAIT)
        };
        assert_eq!(sent, -1);
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::EMSGSIZE)
        );
    }

    #[test]
    fn send_parts_sends_only_the_first_64_parts() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let parts: Vec<&[u8]> = vec![b"x"; 70];
        assert_eq!(send_parts(a.as_raw_fd(), &parts).unwrap(), 64);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 64);
    }

    #[test]
    fn a_short_timer_expires_once_after_its_delay() {
        let t = ShortTimer::new().unwrap();
        assert!(!t.consume(), "a new timer is disarmed");
        let start = std::time::Instant::now();
        t.arm(std::time::Duration::from_micros(300)).unwrap();
        let mut pfd = libc::pollfd {
            fd: t.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
        assert_eq!(n, 1, "readable within a second");
        assert!(start.elapsed() >= std::time::Duration::from_micros(300));
        assert!(t.consume());
        assert!(!t.consume(), "one expiry, consumed");
    }

    #[test]
    fn shutdown_write_gives_the_peer_end_of_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        send_parts(a.as_raw_fd(), &[b"bye"]).unwrap();
        shutdown(a.as_raw_fd(), libc::SHUT_WR);
        let mut buf = [0u8; 8];
        assert_eq!(recv(b.as_raw_fd(), &mut buf).unwrap(), 3);
        assert_eq!(recv(b.as_raw_fd(), &mut buf).unwrap(), 0);
        // Shutting down a socket twice, or a closed peer's, is harmless.
        shutdown(a.as_raw_fd(), libc::SHUT_RDWR);
        shutdown(a.as_raw_fd(), libc::SHUT_RDWR);
    }
}
