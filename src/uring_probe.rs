//! What this kernel's io_uring offers beyond the 5.10 baseline, found by trying each feature on a small ring of its own once at start.
//!
//! Kernel versions say little (distributions backport, containers filter),
//! so each feature is tried the way it would be used: an opcode through the
//! probe, a registration by registering, a flag by submitting an operation
//! with it and seeing whether the kernel refuses it (`EINVAL`) or takes it
//! (it is then cancelled).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring, Probe};

/// The io_uring features the kernel has, each `false` where it was refused
/// or could not be tried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UringFeatures {
    /// An io_uring could be set up at all.
    pub ring: bool,
    /// A sparse registered-file table (Linux 5.19): room for direct
    /// descriptors, which do not count against `RLIMIT_NOFILE`.
    pub sparse_files: bool,
    /// Accept into a registered-file slot (5.15).
    pub accept_direct: bool,
    /// Multishot accept (5.19): one submission, a completion per connection.
    pub accept_multishot: bool,
    /// Provided-buffer rings (5.19): receive into buffers the kernel picks.
    pub buffer_ring: bool,
    /// Multishot receive (6.0): one submission per connection, a completion
    /// per read, with a buffer ring.
    pub recv_multishot: bool,
    /// Zero-copy send, `IORING_OP_SEND_ZC` (6.0).
    pub send_zc: bool,
}

impl UringFeatures {
    /// Every feature by name, for logs and metrics.
    pub fn list(&self) -> [(&'static str, bool); 7] {
        [
            ("ring", self.ring),
            ("sparse_files", self.sparse_files),
            ("accept_direct", self.accept_direct),
            ("accept_multishot", self.accept_multishot),
            ("buffer_ring", self.buffer_ring),
            ("recv_multishot", self.recv_multishot),
            ("send_zc", self.send_zc),
        ]
    }
}

/// [`probe`] on a thread of its own, given at most two seconds: a kernel
/// that never completes a cancelled operation must not hold up the start
/// (the features it did not answer for count as missing).
pub(crate) fn probe_bounded() -> UringFeatures {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("shardcast-probe".into())
        .spawn(move || {
            let _ = tx.send(probe());
        });
    match spawned {
        Ok(_) => rx
            .recv_timeout(std::time::Duration::from_secs(2))
            .unwrap_or_default(),
        Err(_) => UringFeatures::default(),
    }
}

/// Tries every feature; an error setting up the ring (or the sockets the
/// tries need) leaves the rest `false`.
pub(crate) fn probe() -> UringFeatures {
    let mut f = UringFeatures::default();
    if std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some() {
        return f;
    }
    let Ok(mut ring) = IoUring::new(8) else {
        return f;
    };
    f.ring = true;
    let mut p = Probe::new();
    if ring.submitter().register_probe(&mut p).is_ok() {
        f.send_zc = p.is_supported(opcode::SendZc::CODE);
    }
    f.sparse_files = ring.submitter().register_files_sparse(4).is_ok();
    let _ = try_accepts(&mut ring, &mut f);
    let _ = try_buffer_ring(&mut ring, &mut f);
    f
}

/// Whether the kernel refused the operation `entry` (EINVAL); otherwise it
/// is cancelled and taken as supported.
fn refused(ring: &mut IoUring, entry: io_uring::squeue::Entry) -> io::Result<bool> {
    const TRY: u64 = 1;
    const CANCEL: u64 = 2;
    // SAFETY: the entry's resources (sockets, buffer ring) outlive the
    // ring's use of them: the caller keeps them until this returns, and
    // this returns only once the operation completed (answered or
    // cancelled).
    unsafe {
        ring.submission()
            .push(&entry.user_data(TRY))
            .map_err(|_| io::Error::other("submission queue full"))?;
    }
    ring.submit()?;
    let cancel = opcode::AsyncCancel::new(TRY).build().user_data(CANCEL);
    // SAFETY: a cancel refers to no memory.
    unsafe {
        ring.submission()
            .push(&cancel)
            .map_err(|_| io::Error::other("submission queue full"))?;
    }
    let mut refused = None;
    let mut pending = 2;
    while pending > 0 {
        ring.submit_and_wait(1)?;
        for cqe in ring.completion() {
            if cqe.user_data() == TRY {
                refused.get_or_insert(cqe.result() == -libc::EINVAL);
                if !io_uring::cqueue::more(cqe.flags()) {
                    pending -= 1;
                }
            } else {
                pending -= 1;
            }
        }
    }
    Ok(refused.unwrap_or(true))
}

fn try_accepts(ring: &mut IoUring, f: &mut UringFeatures) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let fd = types::Fd(listener.as_raw_fd());
    f.accept_multishot = !refused(ring, opcode::AcceptMulti::new(fd).build())?;
    if f.sparse_files {
        // A pending connection, accepted straight into slot 0.
        let _client = TcpStream::connect(listener.local_addr()?)?;
        let slot = types::DestinationSlot::try_from_slot_target(0)
            .map_err(|_| io::Error::other("slot 0"))?;
        let accept = opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
            .file_index(Some(slot))
            .build()
            .user_data(3);
        // SAFETY: no memory is passed (null address pointers).
        unsafe {
            ring.submission()
                .push(&accept)
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        ring.submit_and_wait(1)?;
        if let Some(cqe) = ring.completion().next() {
            f.accept_direct = cqe.result() >= 0;
        }
    }
    Ok(())
}

/// A page-aligned, zeroed allocation for a buffer ring of `entries`.
struct RingMemory {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl RingMemory {
    fn new(entries: usize) -> Option<Self> {
        let layout = std::alloc::Layout::from_size_align(entries * 16, 4096).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Self { ptr, layout })
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

fn try_buffer_ring(ring: &mut IoUring, f: &mut UringFeatures) -> io::Result<()> {
    const BGID: u16 = 7;
    let mem = RingMemory::new(8).ok_or_else(|| io::Error::other("alloc"))?;
    // SAFETY: `mem` is page-aligned, zeroed room for 8 entries, and stays
    // allocated until after the buffer group is unregistered below.
    f.buffer_ring = unsafe {
        ring.submitter()
            .register_buf_ring(mem.ptr as u64, 8, BGID)
            .is_ok()
    };
    if f.buffer_ring {
        let (a, _b) = std::os::unix::net::UnixStream::pair()?;
        a.set_nonblocking(true)?;
        let recv = opcode::RecvMulti::new(types::Fd(a.as_raw_fd()), BGID).build();
        f.recv_multishot = !refused(ring, recv)?;
        ring.submitter().unregister_buf_ring(BGID)?;
    }
    drop(mem);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation the kernel refuses is told from one it takes.
    #[test]
    fn a_refused_operation_is_told_apart() {
        let Ok(mut ring) = IoUring::new(8) else {
            return;
        };
        // accept(2) on a socket that does not listen: EINVAL.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let fd = types::Fd(s.as_raw_fd());
        assert!(refused(
            &mut ring,
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut()).build()
        )
        .unwrap());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let fd = types::Fd(l.as_raw_fd());
        assert!(!refused(
            &mut ring,
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut()).build()
        )
        .unwrap());
    }

    /// The probe runs to the end on this machine and agrees with itself;
    /// on the kernel CI runs (6.x) every feature is there.
    #[test]
    fn the_probe_finds_what_this_kernel_has() {
        let f = probe();
        eprintln!("{f:?}");
        assert_eq!(f, probe());
        if f.ring {
            // Each depends on an older one it needs.
            assert!(!f.recv_multishot || f.buffer_ring);
            assert!(!f.accept_direct || f.sparse_files);
        }
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let major: u32 = release
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major >= 6 && f.ring {
            assert!(f.list().iter().all(|(_, on)| *on), "{release}: {f:?}");
        }
    }
}
