//! One pinned thread per core, each running its own monoio runtime (io_uring, falling back to epoll), like the server.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

type CoreRuntime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Submission queue entries per core. Thousands of reads are pending at once;
/// monoio queues submissions that do not fit.
const RING_ENTRIES: u32 = 4096;

/// Builds this thread's runtime: io_uring when the kernel offers it and the
/// ring can be created, else epoll. `MONOIO_FORCE_LEGACY_DRIVER=1` forces epoll.
///
/// The ring asks the kernel to post completions only when this thread waits
/// for them (`DEFER_TASKRUN`, Linux 6.1+), else at its next system call
/// (`COOP_TASKRUN`, 5.19+), else with no flags. Without them every
/// completion interrupts the load generator's CPU, and a server's sends pay
/// for waking it: the load generator would charge the server under test
/// for its own setup.
fn build() -> io::Result<(CoreRuntime, &'static str)> {
    if monoio::utils::detect_uring() {
        let flagged: [fn(&mut io_uring::Builder); 3] = [
            |b| {
                b.setup_defer_taskrun().setup_single_issuer();
            },
            |b| {
                b.setup_coop_taskrun().setup_taskrun_flag();
            },
            |_| {},
        ];
        for set in flagged {
            let mut urb = io_uring::IoUring::builder();
            set(&mut urb);
            // On 5.10/5.11 ring memory counts against RLIMIT_MEMLOCK, so
            // creating the ring can fail although the probe passed; an
            // older kernel refuses the newer flags.
            if let Ok(rt) = RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(RING_ENTRIES)
                .uring_builder(urb)
                .enable_timer()
                .build()
            {
                return Ok((rt.into(), "io_uring"));
            }
        }
    }
    let rt = RuntimeBuilder::<LegacyDriver>::new()
        .with_entries(RING_ENTRIES)
        .enable_timer()
        .build()?;
    Ok((rt.into(), "epoll"))
}

/// The driver a runtime built now on this machine would use.
pub fn driver_name() -> &'static str {
    if std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some() || !monoio::utils::detect_uring() {
        "epoll"
    } else {
        "io_uring"
    }
}

/// Starts `cores` threads, pinned to the CPUs of the affinity mask in turn
/// when `pin` is set; thread `i` runs `f(i)` to completion on its runtime.
///
/// # Errors
/// When a thread cannot be spawned.
pub fn spawn_cores<F, Fut, R>(cores: usize, pin: bool, f: F) -> io::Result<Vec<JoinHandle<R>>>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    (0..cores)
        .map(|i| {
            let f = f.clone();
            let cpu = (pin && !ids.is_empty()).then(|| ids[i % ids.len()]);
            std::thread::Builder::new()
                .name(format!("loadgen-core-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        core_affinity::set_for_current(cpu);
                    }
                    let (mut rt, _) = build().expect("building a monoio runtime");
                    rt.block_on(f(i))
                })
        })
        .collect()
}

/// Phases a run goes through; the main thread moves them forward and the
/// cores follow.
pub mod phase {
    /// Opening connections (and subscribing).
    pub const SETUP: u8 = 0;
    /// Traffic flows, nothing is recorded.
    pub const WARMUP: u8 = 1;
    /// Traffic flows and is recorded.
    pub const MEASURE: u8 = 2;
    /// Senders stop; receivers collect what is still on the way.
    pub const DRAIN: u8 = 3;
    /// Everything stops; cores close their connections and return.
    pub const DONE: u8 = 4;
}

/// Counters and the phase the cores share with the main thread. Each core
/// updates them once per batch (per read), not per message.
#[derive(Debug, Default)]
pub struct Shared {
    /// The current [`phase`].
    pub phase: AtomicU8,
    /// Connections open (and subscribed, where the scenario subscribes).
    pub ready: AtomicU64,
    /// Connections that failed to open.
    pub failed: AtomicU64,
    /// Messages sent.
    pub sent: AtomicU64,
    /// Deliveries expected from what was sent.
    pub expected: AtomicU64,
    /// Measured messages received.
    pub received: AtomicU64,
    /// Connections the server closed or that failed after opening.
    pub lost_conns: AtomicU64,
    /// A generation counter for step-wise scenarios.
    pub step: AtomicU64,
}

impl Shared {
    /// The current phase.
    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    /// Moves to phase `p`.
    pub fn set_phase(&self, p: u8) {
        self.phase.store(p, Ordering::Release);
    }
}

/// Waits on a core until `cond` holds, checking every millisecond (monoio's
/// timer granularity). For coordination with the main thread, not the hot path.
pub async fn core_wait(mut cond: impl FnMut() -> bool) {
    while !cond() {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits on the main thread until `cond` holds or `timeout` passes, calling
/// `tick` every 100 ms (progress display). Returns whether `cond` held.
pub fn main_wait(
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    mut tick: impl FnMut(),
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut last = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        if last.elapsed() >= Duration::from_millis(100) {
            tick();
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
