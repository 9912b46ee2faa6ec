//! Building a core's runtime (io_uring, or epoll when io_uring is unavailable) and its listener.

use std::io;
use std::net::SocketAddr;

use crate::handle::DriverKind;
use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

/// A core's runtime, on either driver.
pub(crate) type CoreRuntime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Submission queue entries per core ring. Small enough that the ring's
/// memory fits the default locked-memory limit of kernels before 5.12.
const RING_ENTRIES: u32 = 1024;

/// Builds a runtime for the current thread: io_uring when the kernel
/// offers it and the ring can be created, otherwise the legacy driver.
/// `MONOIO_FORCE_LEGACY_DRIVER=1` forces the legacy driver.
pub(crate) fn build() -> io::Result<(CoreRuntime, DriverKind)> {
    if monoio::utils::detect_uring() {
        match RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .enable_timer()
            .build()
        {
            Ok(rt) => return Ok((rt.into(), DriverKind::IoUring)),
            // On 5.10/5.11 ring memory counts against RLIMIT_MEMLOCK and
            // creating the ring can fail although the probe passed.
            Err(e) => tracing::warn!(error = %e, "io_uring ring unavailable, using epoll"),
        }
    }
    let rt = RuntimeBuilder::<LegacyDriver>::new()
        .with_entries(RING_ENTRIES)
        .enable_timer()
        .build()?;
    Ok((rt.into(), DriverKind::Legacy))
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
