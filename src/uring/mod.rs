//! The direct io_uring data path's rings: client sockets held as direct descriptors in a ring's registered-file table, received by multishot `recv` into a provided-buffer ring, written by `sendmsg` submissions.
//!
//! A core that runs this path owns one or more [`SockRing`]s besides the
//! runtime's own ring (monoio keeps timers, the inbox and the
//! application's tasks). Each has a sparse registered-file table: a
//! socket accepted into it is a slot, not a process descriptor, so it does
//! not count against `RLIMIT_NOFILE`. The kernel checks a table's size
//! against that limit once, when it is registered, so a core holding more
//! connections than the limit opens another ring when its current one is
//! full. Every ring signals the core's one eventfd when it has
//! completions; the core's driver task waits for that eventfd through the
//! runtime, then collects every ring's completions at once and submits
//! what they produced with one `io_uring_enter` per ring.
//!
//! Completions are dispatched by their user data: an [`Op`], the
//! connection's slab key and the low bits of its generation, so a
//! completion for a slot that has since been reused is recognised and
//! dropped.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, squeue, types, IoUring};

use crate::config::TaskRun;

/// What a submission was for; the low byte of its user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    /// An accept into the table; the key bits hold the accept slot.
    Accept = 1,
    /// A connection's (multishot) receive.
    Recv = 2,
    /// A connection's send.
    Send = 3,
    /// A cancel or a close of a slot: nothing to do on completion.
    Quiet = 4,
    /// A shutdown; the key bits hold the packed [`Slot`].
    Shutdown = 5,
    /// A descriptor installed for a slot ([`DirectIo::install_fd`]), which
    /// its caller waits for; one that completes later is closed.
    Install = 6,
}

/// A submission's user data: `op`, the connection's key and generation.
pub(crate) fn user_data(op: Op, key: u32, gen: u32) -> u64 {
    (u64::from(key) << 32) | (u64::from(gen & 0x00ff_ffff) << 8) | op as u64
}

/// A completion's user data taken apart: (op, key, the generation's low
/// 24 bits).
pub(crate) fn parse_user_data(ud: u64) -> Option<(Op, u32, u32)> {
    let op = match ud & 0xff {
        1 => Op::Accept,
        2 => Op::Recv,
        3 => Op::Send,
        4 => Op::Quiet,
        5 => Op::Shutdown,
        6 => Op::Install,
        _ => return None,
    };
    Some((op, (ud >> 32) as u32, ((ud >> 8) & 0x00ff_ffff) as u32))
}

/// Whether `gen` (a full generation) matches a completion's 24 bits.
pub(crate) fn same_gen(gen: u32, low: u32) -> bool {
    gen & 0x00ff_ffff == low
}

/// A socket held as a direct descriptor: which ring's table, which slot.
/// Packed into the `i32` a connection entry keeps for its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) ring: u8,
    pub(crate) index: u32,
}

impl Slot {
    pub(crate) fn pack(self) -> i32 {
        ((u32::from(self.ring) << 24) | (self.index & 0x00ff_ffff)) as i32
    }
    pub(crate) fn unpack(v: i32) -> Self {
        let v = v as u32;
        Slot {
            ring: (v >> 24) as u8,
            index: v & 0x00ff_ffff,
        }
    }
    fn fixed(self) -> types::Fixed {
        types::Fixed(self.index)
    }
}

/// A provided-buffer ring: `count` buffers of `size` bytes the kernel
/// picks from for every multishot receive of its ring, handed back here
/// as soon as their bytes are decoded.
pub(crate) struct BufRing {
    /// The ring of `count` entries the kernel reads (page aligned).
    entries: *mut types::BufRingEntry,
    entries_layout: std::alloc::Layout,
    /// The buffers, `count * size` bytes: a mapping of their own, so that
    /// their pages can be given back while the ring is idle
    /// ([`release_pages`](Self::release_pages)).
    bufs: *mut u8,
    bufs_len: usize,
    size: u32,
    mask: u16,
    tail: Cell<u16>,
}

impl BufRing {
    /// `count` (a power of two, at most 32,768) buffers of `size` bytes.
    fn new(count: u16, size: u32) -> io::Result<Self> {
        assert!(count.is_power_of_two() && count <= 1 << 15);
        let entries_layout = std::alloc::Layout::from_size_align(usize::from(count) * 16, 4096)
            .map_err(io::Error::other)?;
        let bufs_len = usize::from(count) * size as usize;
        // SAFETY: both layouts have a non-zero size.
        let entries: *mut types::BufRingEntry =
            unsafe { std::alloc::alloc_zeroed(entries_layout) }.cast();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        // SAFETY: a fresh private anonymous mapping, no address hint; the
        // buffers need no initialisation (the kernel writes them before
        // they are read).
        let bufs = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bufs_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if bufs == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: allocated just above with this layout.
            unsafe { std::alloc::dealloc(entries.cast(), entries_layout) };
            return Err(e);
        }
        let r = Self {
            entries,
            entries_layout,
            bufs: bufs.cast(),
            bufs_len,
            size,
            mask: count - 1,
            tail: Cell::new(0),
        };
        for bid in 0..count {
            r.put(bid);
        }
        r.publish();
        Ok(r)
    }

    fn count(&self) -> u16 {
        self.mask + 1
    }

    /// Writes buffer `bid` at the local tail (published by [`publish`]).
    fn put(&self, bid: u16) {
        let tail = self.tail.get();
        // SAFETY: `tail & mask` is within the `count` entries; the kernel
        // reads only entries between its head and the published tail, and
        // this one is past the published tail until `publish`.
        unsafe {
            let e = &mut *self.entries.add(usize::from(tail & self.mask));
            e.set_addr(self.bufs.add(usize::from(bid) * self.size as usize) as u64);
            e.set_len(self.size);
            e.set_bid(bid);
        }
        self.tail.set(tail.wrapping_add(1));
    }

    /// Makes the entries written so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the ring's tail is the u16 at offset 14 of its first
        // entry, which the kernel only reads; a release store orders it
        // after the entries written before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail.get(), Ordering::Release);
        }
    }

    /// Hands buffer `bid` back to the kernel.
    pub(crate) fn recycle(&self, bid: u16) {
        self.put(bid);
        self.publish();
    }

    /// The first `len` bytes of buffer `bid`, which a completion just
    /// handed over.
    ///
    /// # Safety
    /// `bid` came from a completion of this ring with `len` bytes and has
    /// not been recycled since; the slice must be dropped before it is.
    pub(crate) unsafe fn data<'a>(&self, bid: u16, len: usize) -> &'a mut [u8] {
        debug_assert!(bid <= self.mask && len <= self.size as usize);
        std::slice::from_raw_parts_mut(self.bufs.add(usize::from(bid) * self.size as usize), len)
    }
}

impl BufRing {
    /// Gives the buffers' pages back to the system; the next receive into
    /// a buffer faults in a fresh page. For a ring with no receive in
    /// flight: no buffer is being written by the kernel or read by us.
    fn release_pages(&self) {
        // SAFETY: the range is exactly the buffers' own mapping (made in
        // `new`, page aligned). MADV_DONTNEED on private anonymous memory
        // only replaces its contents with zeros on the next touch; the
        // caller guarantees no buffer holds bytes still to be read.
        let rc = unsafe { libc::madvise(self.bufs.cast(), self.bufs_len, libc::MADV_DONTNEED) };
        if rc != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "madvise of idle receive buffers failed");
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated and mapped in `new` with this layout and
        // length; the ring that used them was dropped (or had the buffer
        // ring unregistered) first (field order of `SockRing`, and
        // `DirectIo::trim`).
        unsafe {
            std::alloc::dealloc(self.entries.cast(), self.entries_layout);
            libc::munmap(self.bufs.cast(), self.bufs_len);
        }
    }
}

/// Buffer group id of every ring's buffer ring.
const BGID: u16 = 0;

/// One ring of a core's socket path, with its file table and buffers.
pub(crate) struct SockRing {
    // Dropped before `bufs`: the kernel stops using the buffers when the
    // ring goes.
    ring: IoUring,
    bufs: BufRing,
    /// Slots in the table, and how many hold a socket (or are being
    /// accepted into).
    slots: u32,
    live: Cell<u32>,
    /// Submissions pushed and not yet submitted.
    unsubmitted: Cell<bool>,
    /// Submissions pushed whose last completion has not been reaped: with
    /// none (besides armed accepts) the kernel touches none of the ring's
    /// buffers, and with none at all the ring can be dropped.
    inflight: Cell<u32>,
    /// A receive was armed since the buffers' pages were last given back.
    bufs_touched: Cell<bool>,
    /// Trims in a row that found the ring without a connection.
    idle_trims: Cell<u8>,
    /// Being emptied to be dropped: no accept is armed on it while
    /// another ring has room.
    retiring: Cell<bool>,
}

/// A completion, copied out of its ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    pub(crate) ring: u8,
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    pub(crate) flags: u32,
}

impl Completion {
    /// The provided buffer this completion filled.
    pub(crate) fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
    /// A multishot operation stays armed after it.
    pub(crate) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
}

/// How a core's socket rings are built and sized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingPlan {
    pub(crate) task_run: TaskRun,
    /// Slots per ring's file table (at most the open-file limit).
    pub(crate) slots: u32,
    /// Rings a core may open.
    pub(crate) max_rings: usize,
    /// Provided buffers per ring, and their size.
    pub(crate) buffers: u16,
    pub(crate) buffer_size: u32,
    /// Multishot receive (6.0); otherwise one receive per completion.
    pub(crate) multishot_recv: bool,
}

impl RingPlan {
    /// The plan for this process: a table as large as the open-file limit
    /// allows (the kernel refuses a larger one), enough rings for
    /// `max_connections`.
    pub(crate) fn new(task_run: TaskRun, max_connections: usize, multishot_recv: bool) -> Self {
        let nofile = nofile_limit();
        let slots = nofile.clamp(64, 1 << 20) as u32;
        let max_rings = max_connections.div_ceil(slots as usize).clamp(1, 64);
        Self {
            task_run,
            slots,
            max_rings,
            buffers: 256,
            buffer_size: 4096,
            multishot_recv,
        }
    }
}

/// The soft open-file limit.
fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    r.rlim_cur
}

/// The io_uring setup flags of a [`TaskRun`] mode (the runtime's ring and
/// the socket rings alike).
pub(crate) fn ring_builder(mode: TaskRun) -> io_uring::Builder {
    let mut b = IoUring::builder();
    match mode {
        TaskRun::Defer => {
            b.setup_defer_taskrun().setup_single_issuer();
        }
        TaskRun::Coop => {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        TaskRun::Interrupt => {}
    }
    b
}

/// `io_uring_enter` flag: wait for (and, on a deferred ring, post)
/// completions (the crate keeps its constants private).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// Submission queue entries per socket ring; the completion queue is
/// larger (multishot receives post many completions per submission).
const SQ_ENTRIES: u32 = 4096;

impl SockRing {
    fn new(plan: &RingPlan, eventfd: RawFd) -> io::Result<Self> {
        let mut mode = Some(plan.task_run);
        let ring = loop {
            let Some(m) = mode else {
                return Err(io::Error::other("no io_uring setup mode accepted"));
            };
            let mut b = ring_builder(m);
            b.setup_cqsize(SQ_ENTRIES * 4);
            if m == TaskRun::Defer {
                // Work the kernel leaves undone in a reap is flagged (see
                // `reap`); the coop mode sets this flag already.
                b.setup_taskrun_flag();
            }
            match b.build(SQ_ENTRIES) {
                Ok(r) => break r,
                Err(e) if m.fallback().is_some() => {
                    tracing::debug!(error = %e, mode = %m, "socket ring mode refused");
                    mode = m.fallback();
                }
                Err(e) => return Err(e),
            }
        };
        ring.submitter().register_files_sparse(plan.slots)?;
        ring.submitter().register_eventfd(eventfd)?;
        let bufs = BufRing::new(plan.buffers, plan.buffer_size)?;
        // SAFETY: the entries are page aligned and `count` long, and stay
        // allocated as long as the ring (field order).
        unsafe {
            ring.submitter()
                .register_buf_ring(bufs.entries as u64, bufs.count(), BGID)?;
        }
        Ok(Self {
            ring,
            bufs,
            slots: plan.slots,
            live: Cell::new(0),
            unsubmitted: Cell::new(false),
            inflight: Cell::new(0),
            bufs_touched: Cell::new(false),
            idle_trims: Cell::new(0),
            retiring: Cell::new(false),
        })
    }
}

/// Accepts kept armed at once, each with its own address buffer.
pub(crate) const ACCEPTS: usize = 16;

/// Calls a [`reap`](DirectIo::reap) makes on one ring while the kernel
/// flags work or completions it holds back (each call runs at least 20
/// items and moves a completion queue's worth out of the overflow list).
const REAP_ENTERS: usize = 64;

/// Room for one accept's peer address.
struct AcceptAddr {
    addr: libc::sockaddr_storage,
    len: libc::socklen_t,
}

/// A core's socket rings and everything they share.
pub(crate) struct DirectIo {
    plan: RingPlan,
    eventfd: OwnedFd,
    /// By ring number (a [`Slot`]'s `ring`); `None` where a ring that
    /// emptied was dropped ([`trim`](Self::trim)), reused by the next ring
    /// added. Ring 0 is kept.
    rings: RefCell<Vec<Option<SockRing>>>,
    /// The listener the accepts are armed on (owned by the core).
    listener: RawFd,
    /// The ring whose table the accepts fill.
    accepting: Cell<u8>,
    /// Accepts armed, by accept slot (ring, armed).
    armed: RefCell<[Option<u8>; ACCEPTS]>,
    addrs: Box<RefCell<[AcceptAddr; ACCEPTS]>>,
    /// All rings' tables are full: accepts wait until a slot frees.
    full: Cell<bool>,
    /// The core stopped accepting (shutdown, or a listener that cannot
    /// accept).
    stopped: Cell<bool>,
    /// Out of memory or descriptors: accepts wait for [`resume_accepts`](Self::resume_accepts).
    backoff: Cell<bool>,
    /// Slots with shutdowns not yet complete: (how many, whether the slot
    /// is to be closed once they are). See [`shutdown`](Self::shutdown).
    shutting: RefCell<rustc_hash::FxHashMap<i32, (u32, bool)>>,
    /// The kernel installs descriptors for slots (Linux 6.8).
    fd_install: bool,
    /// Installs asked for, numbering their user data.
    installs: Cell<u32>,
    /// Completions taken out of a ring while waiting for an install: the
    /// next [`reap`](Self::reap) hands them out first.
    stash: RefCell<Vec<Completion>>,
}

/// Whether user data `ud` is an install's.
fn is_install(ud: u64) -> bool {
    matches!(parse_user_data(ud), Some((Op::Install, _, _)))
}

/// Closes the descriptor an install completion (`result`) carries, if it
/// carries one.
fn close_installed(result: i32) {
    if result >= 0 {
        // SAFETY: a descriptor the kernel installed for this process,
        // owned by nothing else (its install was given up on).
        drop(unsafe { OwnedFd::from_raw_fd(result) });
    }
}

/// `IORING_OP_FIXED_FD_INSTALL` (Linux 6.8), for which io-uring 0.6 has
/// no builder.
const OP_FIXED_FD_INSTALL: u8 = 54;

/// An `IORING_OP_FIXED_FD_INSTALL` of `slot`'s table index: a process
/// descriptor (close-on-exec) for the socket the slot holds.
fn fixed_fd_install(index: u32) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    // SAFETY: `Entry` is `repr(C)` over the kernel's 64-byte SQE, so it
    // and a byte array of its size convert both ways; every field but
    // the four bytes set here stays zero, as the opcode requires (no
    // offset, address, length or buffer; install flags 0).
    let mut sqe: [u8; 64] = unsafe { std::mem::transmute(io_uring::opcode::Nop::new().build()) };
    sqe[0] = OP_FIXED_FD_INSTALL; // opcode
    sqe[1] = 1; // IOSQE_FIXED_FILE: `fd` is a table index
    sqe[4..8].copy_from_slice(&(index as i32).to_ne_bytes()); // fd
                                                              // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(sqe) }
}

impl DirectIo {
    /// A core's first socket ring, accepting from `listener`.
    pub(crate) fn new(plan: RingPlan, listener: RawFd) -> io::Result<Self> {
        // SAFETY: eventfd has no memory effects; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nothing else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        let first = SockRing::new(&plan, eventfd.as_raw_fd())?;
        let mut probe = io_uring::Probe::new();
        let fd_install = first.ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(OP_FIXED_FD_INSTALL);
        // SAFETY: an all-zero sockaddr_storage is a valid value.
        let zero = || AcceptAddr {
            addr: unsafe { std::mem::zeroed() },
            len: 0,
        };
        Ok(Self {
            plan,
            eventfd,
            rings: RefCell::new(vec![Some(first)]),
            listener,
            accepting: Cell::new(0),
            armed: RefCell::new([None; ACCEPTS]),
            addrs: Box::new(RefCell::new(std::array::from_fn(|_| zero()))),
            full: Cell::new(false),
            stopped: Cell::new(false),
            backoff: Cell::new(false),
            shutting: RefCell::new(rustc_hash::FxHashMap::default()),
            fd_install,
            installs: Cell::new(0),
            stash: RefCell::new(Vec::new()),
        })
    }

    /// A process descriptor for the socket in `slot`, for what only a
    /// descriptor can ask (`getsockopt(TCP_INFO)`); `None` where the
    /// kernel cannot install one (before 6.8) or did not. The socket then
    /// stays open until both the slot and the descriptor are closed.
    ///
    /// Waits (at most 10 ms) for the install, which the kernel does
    /// inline; other completions met meanwhile go to the next
    /// [`reap`](Self::reap), and the eventfd is rung so it comes.
    pub(crate) fn install_fd(&self, slot: Slot) -> Option<OwnedFd> {
        if !self.fd_install {
            return None;
        }
        // Numbered, so a late completion of an earlier install is never
        // taken for this one's.
        let n = self.installs.get().wrapping_add(1);
        self.installs.set(n);
        let ud = user_data(Op::Install, n, 0);
        let entry = fixed_fd_install(slot.index).user_data(ud);
        // SAFETY: refers to no memory.
        unsafe { self.push(slot.ring, &entry) };
        let mut rings = self.rings.borrow_mut();
        // A ring with a connection in it is never dropped.
        let r = rings[usize::from(slot.ring)].as_mut()?;
        r.unsubmitted.set(false);
        let mut stash = self.stash.borrow_mut();
        let stashed = stash.len();
        let mut got = None;
        for wait in [false, true] {
            let done = if wait {
                let ts = types::Timespec::new().nsec(10_000_000);
                let args = types::SubmitArgs::new().timespec(&ts);
                r.ring.submitter().submit_with_args(1, &args)
            } else {
                r.ring.submit()
            };
            if let Err(e) = done {
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) {
                    tracing::warn!(error = %e, "socket ring submit failed");
                }
            }
            let mut done = 0;
            for cqe in r.ring.completion() {
                // Counted as the reap counts them (stashed ones included:
                // the reap hands them out without counting them again).
                done += u32::from(!cqueue::more(cqe.flags()));
                if cqe.user_data() == ud {
                    got = Some(cqe.result());
                } else if is_install(cqe.user_data()) {
                    close_installed(cqe.result());
                } else {
                    stash.push(Completion {
                        ring: slot.ring,
                        user_data: cqe.user_data(),
                        result: cqe.result(),
                        flags: cqe.flags(),
                    });
                }
            }
            r.inflight.set(r.inflight.get().saturating_sub(done));
            if got.is_some() {
                break;
            }
        }
        if stash.len() > stashed {
            self.ring_eventfd();
        }
        // SAFETY: a descriptor the kernel installed for this process,
        // owned by nothing else.
        got.filter(|fd| *fd >= 0)
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Makes the eventfd readable, so the driver reaps.
    fn ring_eventfd(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from `one` to a nonblocking eventfd.
        unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// The descriptor that becomes readable when a ring has completions.
    pub(crate) fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Queues `entry` on ring `ring`; a full submission queue is submitted
    /// first.
    ///
    /// # Safety
    /// Whatever memory `entry` points to stays valid until its completion.
    unsafe fn push(&self, ring: u8, entry: &squeue::Entry) {
        let mut rings = self.rings.borrow_mut();
        let Some(r) = rings[usize::from(ring)].as_mut() else {
            // Only rings without a connection or an operation are dropped,
            // so nothing refers to one.
            tracing::error!(ring, "operation for a dropped socket ring; lost");
            return;
        };
        r.unsubmitted.set(true);
        if r.ring.submission().push(entry).is_ok() {
            r.inflight.set(r.inflight.get() + 1);
            return;
        }
        if let Err(e) = r.ring.submit() {
            tracing::warn!(error = %e, "socket ring submit failed");
        }
        if r.ring.submission().push(entry).is_err() {
            tracing::error!("socket ring submission queue stays full; an operation is lost");
        } else {
            r.inflight.set(r.inflight.get() + 1);
        }
    }

    /// Submits what every ring has queued: one `io_uring_enter` per ring
    /// with something to submit.
    pub(crate) fn submit(&self) {
        let mut rings = self.rings.borrow_mut();
        for r in rings.iter_mut().flatten() {
            if r.unsubmitted.replace(false) {
                if let Err(e) = r.ring.submit() {
                    tracing::warn!(error = %e, "socket ring submit failed");
                }
            }
        }
    }

    /// Collects every ring's completions into `out`: empties the eventfd
    /// first, then has each ring submit what is queued and post what the
    /// kernel holds for it, and copies the completions out. In that order:
    /// on a ring in deferred mode the kernel rings the eventfd when it
    /// queues work onto an empty list and does the work only when asked
    /// (here), so work queued after the eventfd was emptied rings it again,
    /// and work queued before is done by the calls that follow.
    ///
    /// One call does not always do it all. Since Linux 6.13 a call runs at
    /// most 20 queued items (sockets woken, accepts retried) and keeps the
    /// rest, flagging them with `IORING_SQ_TASKRUN` but ringing nothing;
    /// and completions that found the completion queue full (a write to
    /// each of 19,000 connections posts 19,000) wait in the kernel's
    /// overflow list, flagged with `IORING_SQ_CQ_OVERFLOW`, until the next
    /// call. Left there, either would wait for unrelated work to ring the
    /// eventfd: in a websocket-shootout broadcast to 19,000 connections
    /// that held some round trips for 25–27 s. So a ring is
    /// entered again while either flag is up, at most [`REAP_ENTERS`]
    /// times; past that the eventfd is rung, and the driver comes back once
    /// it has handled this batch.
    pub(crate) fn reap(&self, out: &mut Vec<Completion>) {
        let mut v = 0u64;
        // SAFETY: reads at most 8 bytes into `v`; a nonblocking eventfd.
        unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
        out.append(&mut self.stash.borrow_mut());
        let mut rings = self.rings.borrow_mut();
        for (i, r) in rings.iter_mut().enumerate() {
            let Some(r) = r else {
                continue;
            };
            r.unsubmitted.set(false);
            let mut to_submit = {
                let mut sq = r.ring.submission();
                sq.sync();
                sq.len() as u32
            };
            let mut left = true;
            for _ in 0..REAP_ENTERS {
                // SAFETY: no argument is passed.
                let res = unsafe {
                    r.ring.submitter().enter::<libc::sigset_t>(
                        to_submit,
                        0,
                        IORING_ENTER_GETEVENTS,
                        None,
                    )
                };
                to_submit = 0;
                if let Err(e) = res {
                    if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) {
                        tracing::warn!(error = %e, "socket ring enter failed");
                    }
                }
                let mut done = 0;
                for cqe in r.ring.completion() {
                    // A multishot receive's completions but its last say
                    // more are coming; every other submission has one.
                    done += u32::from(!cqueue::more(cqe.flags()));
                    if is_install(cqe.user_data()) {
                        // An install its caller gave up waiting for.
                        close_installed(cqe.result());
                        continue;
                    }
                    out.push(Completion {
                        ring: i as u8,
                        user_data: cqe.user_data(),
                        result: cqe.result(),
                        flags: cqe.flags(),
                    });
                }
                r.inflight.set(r.inflight.get().saturating_sub(done));
                let sq = r.ring.submission();
                if !(sq.taskrun() || sq.cq_overflow()) {
                    left = false;
                    break;
                }
            }
            if left {
                self.ring_eventfd();
            }
        }
    }

    /// The bytes a receive completion handed over in buffer `bid`.
    ///
    /// # Safety
    /// As [`BufRing::data`]; the ring (and so the buffers) outlives the
    /// slice: a ring is dropped only by [`trim`](Self::trim), which runs
    /// from its own task (never while a completion is being handled) and
    /// only once the ring has no operation in flight, so no buffer of it
    /// is held.
    pub(crate) unsafe fn data(&self, ring: u8, bid: u16, len: usize) -> &'static mut [u8] {
        let rings = self.rings.borrow();
        let r = rings[usize::from(ring)]
            .as_ref()
            .expect("a completion's ring is not dropped");
        let b: *const BufRing = &r.bufs;
        (*b).data(bid, len)
    }

    /// Hands a receive buffer back.
    pub(crate) fn recycle(&self, ring: u8, bid: u16) {
        if let Some(r) = &self.rings.borrow()[usize::from(ring)] {
            r.bufs.recycle(bid);
        }
    }

    // ----- accepting -----

    /// Arms every accept slot that is not armed.
    pub(crate) fn arm_accepts(&self) {
        if self.full.get() || self.stopped.get() || self.backoff.get() {
            return;
        }
        let mut armed = self.armed.borrow_mut();
        let mut addrs = self.addrs.borrow_mut();
        for i in 0..ACCEPTS {
            if armed[i].is_some() {
                continue;
            }
            let Some(ring) = self.ring_with_room(&armed[..]) else {
                // Every table is full and no ring may be added: accepting
                // resumes when a slot is released.
                self.full.set(true);
                return;
            };
            armed[i] = Some(ring);
            let slot = &mut addrs[i];
            slot.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let e = io_uring::opcode::Accept::new(
                types::Fd(self.listener),
                (&mut slot.addr as *mut libc::sockaddr_storage).cast(),
                &mut slot.len,
            )
            // No SOCK_CLOEXEC: a direct descriptor is not in the process's
            // table (the kernel refuses the flag with it).
            .file_index(Some(types::DestinationSlot::auto_target()))
            .build()
            .user_data(user_data(Op::Accept, i as u32, 0));
            // SAFETY: the address buffers are boxed in `self`, which lives
            // as long as the core; an accept slot is re-armed only after
            // its completion.
            unsafe { self.push(ring, &e) };
        }
    }

    /// A ring whose table has a slot for one more accept, counting the
    /// accepts already armed on it (an accept the kernel completes into a
    /// full table has taken the connection off the listen queue and can
    /// only close it): the accepting ring, another one with room, or a
    /// new one while the plan allows.
    fn ring_with_room(&self, armed: &[Option<u8>]) -> Option<u8> {
        {
            let rings = self.rings.borrow();
            // A ring being retired takes accepts only when no other can.
            let room = |i: usize, retiring: bool| {
                rings[i].as_ref().is_some_and(|r| {
                    let on = armed.iter().filter(|a| **a == Some(i as u8)).count() as u32;
                    r.retiring.get() == retiring && r.live.get() + on < r.slots
                })
            };
            let cur = usize::from(self.accepting.get());
            if room(cur, false) {
                return Some(cur as u8);
            }
            for retiring in [false, true] {
                if let Some(i) = (0..rings.len()).find(|&i| room(i, retiring)) {
                    if let Some(r) = &rings[i] {
                        r.retiring.set(false);
                    }
                    self.accepting.set(i as u8);
                    return Some(i as u8);
                }
            }
        }
        let mut rings = self.rings.borrow_mut();
        if rings.iter().flatten().count() >= self.plan.max_rings {
            return None;
        }
        match SockRing::new(&self.plan, self.eventfd.as_raw_fd()) {
            Ok(r) => {
                let i = match rings.iter().position(Option::is_none) {
                    Some(i) => {
                        rings[i] = Some(r);
                        i
                    }
                    None => {
                        rings.push(Some(r));
                        rings.len() - 1
                    }
                };
                self.accepting.set(i as u8);
                tracing::info!(rings = rings.iter().flatten().count(), "socket ring added");
                Some(i as u8)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot add a socket ring");
                None
            }
        }
    }

    /// Whether accepts wait for resources ([`resume_accepts`](Self::resume_accepts)).
    pub(crate) fn backing_off(&self) -> bool {
        self.backoff.get()
    }

    /// Arms the accepts again after a back-off.
    pub(crate) fn resume_accepts(&self) {
        self.backoff.set(false);
        self.arm_accepts();
        self.submit();
    }

    /// Accepts no more (the listener is being shut): the accepts armed
    /// fail and are not armed again.
    pub(crate) fn stop_accepting(&self) {
        self.stopped.set(true);
    }

    /// An accept completed: the socket's slot and peer address, or `None`
    /// (the error is handled: a full table moves accepting to another
    /// ring).
    pub(crate) fn accepted(&self, c: &Completion) -> Option<(Slot, std::net::SocketAddr)> {
        let i = (c.user_data >> 32) as usize;
        let ring = self.armed.borrow_mut().get_mut(i).and_then(Option::take)?;
        if c.result < 0 {
            match -c.result {
                libc::ENFILE => self.table_full(ring),
                // Out of resources: the next accept would fail too.
                libc::EMFILE | libc::ENOBUFS | libc::ENOMEM => self.backoff.set(true),
                // The listener cannot accept (shut down, or not a
                // listening socket): accepting stops.
                libc::EINVAL | libc::EBADF | libc::ENOTSOCK | libc::EOPNOTSUPP
                    if !self.stopped.replace(true) =>
                {
                    tracing::error!(error = c.result, "accept refused; the core stops accepting");
                }
                // A connection that failed between SYN and accept costs
                // only itself.
                _ => {}
            }
            return None;
        }
        let addr = {
            let addrs = self.addrs.borrow();
            sockaddr_to_std(&addrs[i].addr, addrs[i].len)
        };
        if let Some(r) = &self.rings.borrow()[usize::from(ring)] {
            r.live.set(r.live.get() + 1);
        }
        Some((
            Slot {
                ring,
                index: c.result as u32,
            },
            addr.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
        ))
    }

    /// Ring `ring`'s table turned out full (an accept failed with
    /// `ENFILE`): counted full, so the next accepts go elsewhere.
    fn table_full(&self, ring: u8) {
        if let Some(r) = &self.rings.borrow()[usize::from(ring)] {
            r.live.set(r.slots);
        }
    }

    // ----- per connection -----

    /// Arms the receive of the socket in `slot`.
    pub(crate) fn arm_recv(&self, slot: Slot, key: u32, gen: u32) {
        if let Some(r) = &self.rings.borrow()[usize::from(slot.ring)] {
            r.bufs_touched.set(true);
        }
        let ud = user_data(Op::Recv, key, gen);
        let e = if self.plan.multishot_recv {
            io_uring::opcode::RecvMulti::new(slot.fixed(), BGID)
                .build()
                .user_data(ud)
        } else {
            io_uring::opcode::Recv::new(slot.fixed(), std::ptr::null_mut(), self.plan.buffer_size)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(ud)
        };
        // SAFETY: no memory of ours: the kernel picks a provided buffer.
        unsafe { self.push(slot.ring, &e) };
    }

    /// Cancels `key`'s receive (its completion comes with `ECANCELED`).
    pub(crate) fn cancel_recv(&self, key: u32, gen: u32, slot: Option<Slot>) {
        let Some(slot) = slot else {
            return;
        };
        let e = io_uring::opcode::AsyncCancel::new(user_data(Op::Recv, key, gen))
            .build()
            .user_data(user_data(Op::Quiet, 0, 0));
        // SAFETY: refers to no memory.
        unsafe { self.push(slot.ring, &e) };
    }

    /// Queues a send of what `msg` points to on `slot`: a plain `send` when
    /// it is one buffer (the kernel then copies and imports no msghdr and
    /// no iovec: the usual case, small frames gathered into one buffer),
    /// a `sendmsg` otherwise. Both complete with the bytes written.
    ///
    /// # Safety
    /// `msg`, its iovecs and the memory they point to stay valid and
    /// unchanged until the send's completion.
    pub(crate) unsafe fn send(&self, slot: Slot, key: u32, gen: u32, msg: *const libc::msghdr) {
        // SAFETY: the caller keeps `msg` and its iovecs valid (above).
        let one = unsafe { ((*msg).msg_iovlen == 1).then(|| *(*msg).msg_iov) };
        let one = one.and_then(|v| Some((v.iov_base, u32::try_from(v.iov_len).ok()?)));
        let e = match one {
            Some((buf, len)) => io_uring::opcode::Send::new(slot.fixed(), buf as *const u8, len)
                .flags(libc::MSG_NOSIGNAL)
                .build(),
            None => io_uring::opcode::SendMsg::new(slot.fixed(), msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build(),
        };
        self.push(slot.ring, &e.user_data(user_data(Op::Send, key, gen)));
    }

    /// Queues a shutdown of `slot`'s socket.
    ///
    /// The kernel runs a shutdown on its io-wq, where it looks the slot up
    /// only then: a close of the slot meanwhile, and an accept into the
    /// freed slot, would make it shut the next connection's socket. So a
    /// slot with a shutdown in flight is closed only once the shutdown
    /// completes ([`shutdown_done`](Self::shutdown_done)).
    pub(crate) fn shutdown(&self, slot: Slot, how: i32) {
        self.shutting
            .borrow_mut()
            .entry(slot.pack())
            .or_insert((0, false))
            .0 += 1;
        let e = io_uring::opcode::Shutdown::new(slot.fixed(), how)
            .build()
            .user_data(user_data(Op::Shutdown, slot.pack() as u32, 0));
        // SAFETY: refers to no memory.
        unsafe { self.push(slot.ring, &e) };
    }

    /// A shutdown completed: the slot is closed now if its connection
    /// ended meanwhile.
    pub(crate) fn shutdown_done(&self, c: &Completion) {
        let packed = (c.user_data >> 32) as u32 as i32;
        let close = {
            let mut shutting = self.shutting.borrow_mut();
            match shutting.get_mut(&packed) {
                Some(e) if e.0 > 1 => {
                    e.0 -= 1;
                    false
                }
                Some(_) => shutting.remove(&packed).is_some_and(|(_, close)| close),
                None => false,
            }
        };
        if close {
            self.release(Slot::unpack(packed));
        }
    }

    /// Ends connection `key`'s use of `slot`: cancels its receive and any
    /// send in flight, then releases the slot, all done in submission
    /// order without a worker thread (a shutdown would be: the kernel runs
    /// it on its io-wq, after the close). The socket closes when the last
    /// of them lets go of it, as `close(2)` would (FIN, or RST when the
    /// peer's bytes were left unread).
    pub(crate) fn close(&self, slot: Slot, key: u32, gen: u32) {
        for op in [Op::Recv, Op::Send] {
            let e = io_uring::opcode::AsyncCancel::new(user_data(op, key, gen))
                .build()
                .user_data(user_data(Op::Quiet, 0, 0));
            // SAFETY: refers to no memory.
            unsafe { self.push(slot.ring, &e) };
        }
        if let Some(e) = self.shutting.borrow_mut().get_mut(&slot.pack()) {
            e.1 = true; // closed when its shutdowns complete
            return;
        }
        self.release(slot);
    }

    /// Closes `slot`: it is free for the next accept.
    fn release(&self, slot: Slot) {
        let e = io_uring::opcode::Close::new(slot.fixed())
            .build()
            .user_data(user_data(Op::Quiet, 0, 0));
        // SAFETY: refers to no memory.
        unsafe { self.push(slot.ring, &e) };
        if let Some(r) = &self.rings.borrow()[usize::from(slot.ring)] {
            r.live.set(r.live.get().saturating_sub(1));
        }
        if self.full.replace(false) {
            // Slots are free again: accept into the ring that has one.
            self.accepting.set(slot.ring);
            self.arm_accepts();
        }
    }

    // ----- memory -----

    /// Gives back what idle rings hold; called once a second, never on a
    /// connection's path. Returns whether anything went back.
    ///
    /// A ring without a connection and without an operation in flight
    /// besides armed accepts has its receive buffers' pages given back
    /// (they fault in again at the next receive). A ring other than ring 0
    /// found without a connection at two trims in a row is retired: its
    /// armed accepts are cancelled and go to a ring with room, and once
    /// nothing is in flight on it, it is dropped with its buffers, its
    /// queues and its file table. The one-trim wait keeps a core whose
    /// connections hover around a table's size from opening and dropping
    /// a ring every second.
    pub(crate) fn trim(&self) -> bool {
        if self.stopped.get() {
            return false;
        }
        let armed = *self.armed.borrow();
        let accepts_on = |i: usize| armed.iter().filter(|a| **a == Some(i as u8)).count() as u32;
        let mut gave_back = false;
        let mut cancel = Vec::new();
        {
            let mut rings = self.rings.borrow_mut();
            for i in 0..rings.len() {
                let Some(r) = &rings[i] else {
                    continue;
                };
                let on = accepts_on(i);
                if r.live.get() > 0 || r.inflight.get() > on {
                    r.idle_trims.set(0);
                    continue;
                }
                if r.bufs_touched.replace(false) {
                    r.bufs.release_pages();
                    gave_back = true;
                }
                if i == 0 {
                    continue;
                }
                r.idle_trims.set(r.idle_trims.get().saturating_add(1));
                if r.idle_trims.get() < 2 {
                    continue;
                }
                if r.inflight.get() == 0 {
                    // Nothing of the kernel's refers to the ring's buffers
                    // any more; unregistered first all the same, so that
                    // its teardown, which the kernel finishes later, cannot
                    // reach them.
                    if let Err(e) = r.ring.submitter().unregister_buf_ring(BGID) {
                        tracing::debug!(error = %e, "unregistering a socket ring's buffers failed");
                    }
                    rings[i] = None;
                    gave_back = true;
                    tracing::info!(
                        rings = rings.iter().flatten().count(),
                        "socket ring dropped (no connection left on it)"
                    );
                    continue;
                }
                let elsewhere = (0..rings.len()).any(|j| {
                    j != i
                        && rings[j].as_ref().is_some_and(|o| {
                            !o.retiring.get()
                                && o.live.get() + accepts_on(j) + ACCEPTS as u32 <= o.slots
                        })
                });
                if elsewhere && !r.retiring.replace(true) {
                    cancel.push(i);
                }
            }
        }
        for i in cancel {
            if usize::from(self.accepting.get()) == i {
                self.accepting.set(0);
            }
            for (a, on) in armed.iter().enumerate() {
                if *on == Some(i as u8) {
                    // The accept completes with ECANCELED and is armed
                    // again on a ring that is not retiring (or, when one
                    // got in first, the connection keeps the ring until it
                    // closes).
                    let e = io_uring::opcode::AsyncCancel::new(user_data(Op::Accept, a as u32, 0))
                        .build()
                        .user_data(user_data(Op::Quiet, 0, 0));
                    // SAFETY: refers to no memory.
                    unsafe { self.push(i as u8, &e) };
                }
            }
        }
        self.submit();
        gave_back
    }
}

/// A kernel socket address as a std one.
fn sockaddr_to_std(
    addr: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    match i32::from(addr.ss_family) {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for (op, key, gen) in [
            (Op::Recv, 0, 1),
            (Op::Send, u32::MAX, 0x0123_4567),
            (Op::Accept, 15, 0),
        ] {
            let (o, k, g) = parse_user_data(user_data(op, key, gen)).unwrap();
            assert_eq!((o, k), (op, key));
            assert!(same_gen(gen, g));
        }
        assert!(parse_user_data(0).is_none());
    }

    #[test]
    fn slots_pack_into_a_descriptor_field() {
        for s in [
            Slot { ring: 0, index: 0 },
            Slot {
                ring: 63,
                index: 0x00ff_ffff,
            },
        ] {
            assert_eq!(Slot::unpack(s.pack()), s);
        }
    }

    /// More queued work than one `io_uring_enter` runs (20 items since
    /// Linux 6.13) is all collected by one reap: 64 sockets receive at
    /// once, and one reap hands out all 64 receives (before, 20 came out
    /// and the rest waited for an unrelated wake of the eventfd).
    #[test]
    fn one_reap_runs_all_queued_work() {
        use std::io::Write;
        let f = crate::uring_probe::probe();
        if !(f.sparse_files && f.accept_direct && f.buffer_ring && f.recv_multishot) {
            eprintln!("skipped: the kernel lacks what the direct path needs");
            return;
        }
        const N: usize = 64;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let plan = RingPlan::new(crate::config::TaskRun::Defer, 1024, true);
        let io = DirectIo::new(plan, listener.as_raw_fd()).unwrap();
        io.arm_accepts();
        io.submit();
        let mut clients: Vec<_> = (0..N)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut batch = Vec::new();
        let mut accepted = 0;
        while accepted < N {
            assert!(
                std::time::Instant::now() < deadline,
                "only {accepted} accepted"
            );
            io.reap(&mut batch);
            for c in batch.drain(..) {
                if let Some((Op::Accept, _, _)) = parse_user_data(c.user_data) {
                    let (slot, _) = io.accepted(&c).expect("accepted");
                    io.arm_recv(slot, accepted as u32, 1);
                    accepted += 1;
                }
            }
            io.arm_accepts();
            io.submit();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Every receive armed and waiting before any data comes.
        io.reap(&mut batch);
        batch.clear();
        for c in &mut clients {
            c.write_all(b"x").unwrap();
        }
        // Loopback delivers at once; the receives' work is queued by now.
        std::thread::sleep(std::time::Duration::from_millis(100));
        io.reap(&mut batch);
        let received = batch
            .iter()
            .filter(|c| matches!(parse_user_data(c.user_data), Some((Op::Recv, _, _))))
            .filter(|c| c.result == 1)
            .count();
        assert_eq!(received, N, "one reap collected {received} of {N} receives");
    }

    /// Completions that overflowed the completion queue come out of the
    /// same reap: 5 × 4,096 no-ops posted without a reap between them
    /// (the queue holds 16,384) are all handed out by one reap.
    #[test]
    fn one_reap_takes_overflowed_completions() {
        let f = crate::uring_probe::probe();
        if !(f.sparse_files && f.accept_direct && f.buffer_ring) {
            eprintln!("skipped: the kernel lacks what the direct path needs");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plan = RingPlan::new(crate::config::TaskRun::Defer, 1024, f.recv_multishot);
        let io = DirectIo::new(plan, listener.as_raw_fd()).unwrap();
        let total = 5 * SQ_ENTRIES as usize;
        for _ in 0..5 {
            for _ in 0..SQ_ENTRIES {
                let e = io_uring::opcode::Nop::new()
                    .build()
                    .user_data(user_data(Op::Quiet, 0, 0));
                // SAFETY: refers to no memory.
                unsafe { io.push(0, &e) };
            }
            io.submit();
        }
        let mut batch = Vec::new();
        io.reap(&mut batch);
        let quiet = batch
            .iter()
            .filter(|c| matches!(parse_user_data(c.user_data), Some((Op::Quiet, _, _))))
            .count();
        assert_eq!(
            quiet, total,
            "one reap collected {quiet} of {total} completions"
        );
    }
}
