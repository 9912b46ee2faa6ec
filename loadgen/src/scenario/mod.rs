//! The scenarios, and the helpers they share: a bounded pool of concurrent openers, and opening upgraded connections.

pub mod broadcast;
pub mod churn;
pub mod connections;
pub mod echo;
pub mod fanout;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::task::JoinHandle;

use crate::client::{self, Target};

/// Runs `f(0..n)` on this core with at most `concurrency` calls in flight
/// (so a burst of connects cannot overflow the server's accept backlog) and
/// returns the results in index order.
pub async fn pool<T, F, Fut>(n: usize, concurrency: usize, f: F) -> Vec<T>
where
    T: 'static,
    F: Fn(usize) -> Fut + 'static,
    Fut: Future<Output = T> + 'static,
{
    let next = Rc::new(Cell::new(0usize));
    let out: Rc<RefCell<Vec<Option<T>>>> = Rc::new(RefCell::new((0..n).map(|_| None).collect()));
    let f = Rc::new(f);
    let workers: Vec<_> = (0..concurrency.clamp(1, n.max(1)))
        .map(|_| {
            let (next, out, f) = (next.clone(), out.clone(), f.clone());
            monoio::spawn(async move {
                loop {
                    let i = next.get();
                    if i >= n {
                        break;
                    }
                    next.set(i + 1);
                    let v = f(i).await;
                    out.borrow_mut()[i] = Some(v);
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    let out = std::mem::take(&mut *out.borrow_mut());
    out.into_iter()
        .map(|v| v.expect("every index was run"))
        .collect()
}

/// Connects and upgrades one WebSocket connection.
///
/// # Errors
/// The connect or handshake error, as text.
pub async fn open(target: &Target, src: Option<IpAddr>) -> Result<(TcpStream, Vec<u8>), String> {
    open_with_rcvbuf(target, src, None).await
}

/// [`open`], with the socket's receive buffer fixed at `rcvbuf` bytes when
/// given (see [`client::connect_with_rcvbuf`]).
///
/// # Errors
/// The connect or handshake error, as text.
pub async fn open_with_rcvbuf(
    target: &Target,
    src: Option<IpAddr>,
    rcvbuf: Option<usize>,
) -> Result<(TcpStream, Vec<u8>), String> {
    let mut s = client::connect_with_rcvbuf(target.addr, src, rcvbuf)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    let rest = client::handshake(&mut s, target)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok((s, rest))
}

/// Keeps the first error message seen by any core.
#[derive(Debug, Default)]
pub struct FirstError(Mutex<Option<String>>);

impl FirstError {
    /// Records `e` unless an error was recorded before.
    pub fn set(&self, e: String) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }

    /// The first error, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Spawns a core's flusher: calls `flush` (which moves the core's count of
/// received messages to the shared counter) once a millisecond rather than
/// once a message, until `done()`.
pub fn spawn_flusher(
    flush: impl Fn() + 'static,
    done: impl Fn() -> bool + 'static,
) -> JoinHandle<()> {
    monoio::spawn(async move {
        while !done() {
            flush();
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

/// Ends a core's run: shuts its sockets down so every read loop returns,
/// waits for the connection tasks and the flusher, then flushes what the
/// tasks counted last.
pub async fn wind_down(
    fds: &[RawFd],
    tasks: Vec<JoinHandle<()>>,
    flusher: JoinHandle<()>,
    flush: impl Fn(),
) {
    for &fd in fds {
        client::shutdown(fd);
    }
    for t in tasks {
        t.await;
    }
    flusher.await;
    flush();
}

/// The indices of `0..n` core `core` of `cores` handles (round robin).
pub fn share(n: usize, core: usize, cores: usize) -> Vec<usize> {
    (core..n).step_by(cores.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        let mut all: Vec<usize> = (0..3).flat_map(|c| share(10, c, 3)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
}
