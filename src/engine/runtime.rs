//! Building a core's runtime (io_uring, or epoll when io_uring is unavailable) and its listener.

use std::io;
use std::net::SocketAddr;

use crate::config::TaskRun;
use crate::handle::DriverKind;
use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

/// A core's runtime, on either driver.
pub(crate) type CoreRuntime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Submission queue entries per core ring. Small enough that the ring's
/// memory fits the default locked-memory limit of kernels before 5.12.
const RING_ENTRIES: u32 = 1024;

/// What a core runs: its driver and, on io_uring, how completions reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Driver {
    pub(crate) kind: DriverKind,
    pub(crate) task_run: Option<TaskRun>,
}

/// Builds a runtime for the current thread: io_uring when the kernel
/// offers it and the ring can be created, with the most wanted
/// [`TaskRun`] mode the kernel accepts (an older kernel refuses the
/// newer setup flags with `EINVAL`), otherwise the legacy driver.
/// `MONOIO_FORCE_LEGACY_DRIVER=1` forces the legacy driver.
///
/// The ring must be built on the thread that runs it: with
/// [`TaskRun::Defer`] only that thread may submit.
pub(crate) fn build(wanted: TaskRun) -> io::Result<(CoreRuntime, Driver)> {
    if monoio::utils::detect_uring() {
        let mut mode = Some(wanted);
        while let Some(m) = mode {
            match RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(RING_ENTRIES)
                .uring_builder(crate::uring::ring_builder(m))
                .enable_timer()
                .build()
            {
                Ok(rt) => {
                    let driver = Driver {
                        kind: DriverKind::IoUring,
                        task_run: Some(m),
                    };
                    return Ok((rt.into(), driver));
                }
                Err(e) => {
                    let next = m.fallback();
                    match next {
                        Some(n) => {
                            tracing::debug!(error = %e, mode = %m, next = %n, "io_uring mode refused")
                        }
                        // On 5.10/5.11 ring memory counts against
                        // RLIMIT_MEMLOCK and creating the ring can fail
                        // although the probe passed.
                        None => {
                            tracing::warn!(error = %e, "io_uring ring unavailable, using epoll")
                        }
                    }
                    mode = next;
                }
            }
        }
    }
    let rt = RuntimeBuilder::<LegacyDriver>::new()
        .with_entries(RING_ENTRIES)
        .enable_timer()
        .build()?;
    let driver = Driver {
        kind: DriverKind::Legacy,
        task_run: None,
    };
    Ok((rt.into(), driver))
}

/// The direct data path for this core, when it is wanted
/// ([`Config::io_path`](crate::Config::io_path)), the core runs io_uring and
/// the kernel has what the path needs; `None` (the readiness path) otherwise,
/// with the reason logged.
pub(crate) fn direct_path(
    config: &crate::config::Config,
    features: &crate::uring_probe::UringFeatures,
    driver: Driver,
    listener: &std::net::TcpListener,
) -> Option<crate::uring::DirectIo> {
    use std::os::fd::AsRawFd;
    if config.io_path.effective() != crate::config::IoPath::Direct {
        return None;
    }
    if driver.kind != DriverKind::IoUring {
        tracing::info!("direct io path wanted, but the core runs epoll: readiness path");
        return None;
    }
    if !(features.sparse_files && features.accept_direct && features.buffer_ring) {
        tracing::info!(
            ?features,
            "direct io path wanted, but the kernel lacks direct accept or buffer rings: readiness path"
        );
        return None;
    }
    let plan = crate::uring::RingPlan::new(
        config.task_run,
        config.max_connections,
        features.recv_multishot,
    );
    // Accepted sockets inherit TCP_NODELAY from the listener (a direct
    // descriptor cannot be given options by setsockopt).
    crate::sys::set_nodelay(listener.as_raw_fd());
    match crate::uring::DirectIo::new(plan, listener.as_raw_fd()) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up the direct io path: readiness path");
            None
        }
    }
}

/// A listening socket with SO_REUSEPORT, so each core accepts its own share
/// of connections from the kernel without a shared accept queue.
pub(crate) fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}
