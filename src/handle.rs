//! [`ServerHandle`]: publish, send, close, query and stop a running server from any thread.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;

use crate::config::{NodeLink, TaskRun};
use crate::conn::ConnId;
use crate::fanout;
use crate::mesh::{CoreMsg, CoreView, Mesh, PublishReport, Tally};
use crate::proto::{CloseCode, PreparedFrame};
use crate::stats::{CoreStats, StatsSnapshot};
use crate::streams::{History, HistoryConfig};

thread_local! {
    /// Set on core threads: blocking calls on the handle would deadlock there.
    static ON_CORE: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as a core thread.
pub(crate) fn mark_core_thread() {
    ON_CORE.with(|s| s.set(true));
}

fn on_core() -> bool {
    ON_CORE.with(Cell::get)
}

/// The io driver a core runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring, readiness path ([`IoPath::Readiness`](crate::config::IoPath::Readiness)).
    IoUring,
    /// io_uring, direct path ([`IoPath::Direct`](crate::config::IoPath::Direct)):
    /// direct descriptors, provided buffers, sends as submissions.
    IoUringDirect,
    /// epoll (monoio's legacy driver).
    Legacy,
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::IoUringDirect => "io_uring-direct",
            DriverKind::Legacy => "epoll",
        })
    }
}

/// Errors of the handle's blocking calls.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Called on a core thread, where waiting would stop the core that
    /// must answer.
    #[error("blocking server call made on a core thread")]
    OnCore,
    /// The server has stopped.
    #[error("server stopped")]
    Stopped,
}

struct HandleInner {
    mesh: Arc<Mesh>,
    /// Which topics keep history (their publishes go to a home core).
    history: Option<HistoryConfig>,
    /// What the kernel's io_uring offers, probed at start.
    uring: crate::uring_probe::UringFeatures,
    local_addr: SocketAddr,
    drivers: Mutex<Vec<(DriverKind, Option<TaskRun>)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// [`Config::node_link`](crate::Config::node_link), handed this
    /// node's publishes made through the handle.
    node_link: OnceLock<Arc<dyn NodeLink>>,
}

/// A handle to a running server, usable from any thread: publish, send to
/// a connection, read stats, shut down.
///
/// # Example
/// ```no_run
/// use shardcast::{Config, Handler, PreparedFrame, Rejection, Server, UpgradeRequest};
///
/// struct App;
/// impl Handler for App {
///     type Data = ();
///     type Local = ();
///     fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
///         Ok(())
///     }
/// }
///
/// let handle = Server::new(Config::new(), App).start()?;
/// let feed = handle.clone();
/// std::thread::spawn(move || loop {
///     // Encoded once, whatever the number of subscribers on every core.
///     feed.publish("ticks", &PreparedFrame::text("tick"));
///     std::thread::sleep(std::time::Duration::from_secs(1));
/// });
/// let stats = handle.stats();
/// println!("{} messages out, {} dropped", stats.messages_out, stats.dropped);
/// handle.join();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<HandleInner>,
}

impl ServerHandle {
    pub(crate) fn new(
        mesh: Arc<Mesh>,
        local_addr: SocketAddr,
        history: Option<HistoryConfig>,
        uring: crate::uring_probe::UringFeatures,
    ) -> Self {
        let n = mesh.cores();
        Self {
            inner: Arc::new(HandleInner {
                mesh,
                history,
                uring,
                local_addr,
                drivers: Mutex::new(vec![(DriverKind::Legacy, None); n]),
                threads: Mutex::new(Vec::new()),
                node_link: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn set_driver(&self, core: usize, driver: DriverKind, task_run: Option<TaskRun>) {
        if let Ok(mut d) = self.inner.drivers.lock() {
            d[core] = (driver, task_run);
        }
    }

    pub(crate) fn set_node_link(&self, link: Arc<dyn NodeLink>) {
        let _ = self.inner.node_link.set(link);
    }

    pub(crate) fn set_threads(&self, threads: Vec<JoinHandle<()>>) {
        *self.inner.threads.lock().unwrap_or_else(|e| e.into_inner()) = threads;
    }

    /// The io_uring features this kernel offers beyond the 5.10 baseline
    /// (direct descriptors, multishot accept and receive, buffer rings,
    /// zero-copy send), probed once at start; all `false` on the epoll
    /// driver.
    pub fn io_uring_features(&self) -> crate::uring_probe::UringFeatures {
        self.inner.uring
    }

    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.inner.mesh.cores()
    }

    /// The io driver each core runs.
    pub fn drivers(&self) -> Vec<DriverKind> {
        self.inner
            .drivers
            .lock()
            .map(|d| d.iter().map(|(k, _)| *k).collect())
            .unwrap_or_default()
    }

    /// How each core's io_uring ring is told of completions (the mode the
    /// kernel accepted, see [`Config::task_run`](crate::Config::task_run));
    /// `None` for a core on the epoll driver.
    pub fn task_runs(&self) -> Vec<Option<TaskRun>> {
        self.inner
            .drivers
            .lock()
            .map(|d| d.iter().map(|(_, t)| *t).collect())
            .unwrap_or_default()
    }

    /// Publishes `frame` to every subscriber of `topic` on every core, from
    /// any thread. Messages published from one thread to one topic arrive in
    /// order. Returns the number of cores it was sent to.
    pub fn publish(&self, topic: &str, frame: &PreparedFrame) -> usize {
        if let Some(link) = self.inner.node_link.get() {
            link.publish(topic, frame.as_bytes());
        }
        self.publish_from_node(topic, frame.as_bytes())
    }

    /// Publishes a frame that came from another node to this node's
    /// subscribers, like [`ServerHandle::publish`] but without handing it
    /// back to the [`NodeLink`]. Returns the number of cores it was sent
    /// to.
    pub(crate) fn publish_from_node(&self, topic: &str, frame: &Bytes) -> usize {
        if self.has_history(topic) {
            self.stream_publish(topic, frame, None);
            return 1;
        }
        let mesh = &self.inner.mesh;
        let cores = fanout::interested_cores(mesh, topic, None);
        if !cores.is_empty() {
            let p = mesh.publication(frame.clone());
            fanout::to_cores(mesh, &cores, topic, &p, None, None);
        }
        cores.len()
    }

    /// Publishes a text message; see [`ServerHandle::publish`].
    pub fn publish_text(&self, topic: &str, text: &str) -> usize {
        self.publish(topic, &PreparedFrame::text(text))
    }

    /// Publishes a binary message; see [`ServerHandle::publish`].
    pub fn publish_binary(&self, topic: &str, data: &[u8]) -> usize {
        self.publish(topic, &PreparedFrame::binary(data))
    }

    /// Publishes and waits until every core has queued it, returning how
    /// many subscribers it reached.
    ///
    /// # Errors
    /// [`HandleError::OnCore`] on a core thread (use the callback's
    /// `publish_counted` there); [`HandleError::Stopped`] if the server
    /// stopped.
    pub fn publish_counted(
        &self,
        topic: &str,
        frame: &PreparedFrame,
    ) -> Result<PublishReport, HandleError> {
        if on_core() {
            return Err(HandleError::OnCore);
        }
        if let Some(link) = self.inner.node_link.get() {
            link.publish(topic, frame.as_bytes());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let done: crate::mesh::Completion = Box::new(move |r| {
            let _ = tx.send(r);
        });
        if self.has_history(topic) {
            self.stream_publish(topic, frame.as_bytes(), Some(done));
        } else {
            let mesh = &self.inner.mesh;
            let cores = fanout::interested_cores(mesh, topic, None);
            if cores.is_empty() {
                return Ok(PublishReport::default());
            }
            let tally = Tally::new(cores.len(), done);
            let p = mesh.publication(frame.as_bytes().clone());
            fanout::to_cores(mesh, &cores, topic, &p, None, Some(&tally));
        }
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| HandleError::Stopped)
    }

    /// Whether `topic` keeps history.
    fn has_history(&self, topic: &str) -> bool {
        self.inner
            .history
            .as_ref()
            .is_some_and(|h| h.policy(topic).is_some())
    }

    /// A publish to a history topic goes to its home core (see
    /// [`crate::streams`]).
    fn stream_publish(&self, topic: &str, frame: &Bytes, done: Option<crate::mesh::Completion>) {
        let mesh = &self.inner.mesh;
        mesh.send(
            crate::streams::home_core(topic, mesh.cores()),
            CoreMsg::StreamPublish {
                topic: Arc::from(topic),
                frame: frame.clone(),
                exclude: None,
                done,
            },
        );
    }

    /// Sends `frame` to every open connection of the server, on every
    /// core, except `exclude`, from any thread. Encoded once; one inbox
    /// message per core (refused and counted like a publish when the inbox
    /// is full). Returns the number of cores it was queued for.
    pub fn broadcast(&self, frame: &PreparedFrame, exclude: Option<ConnId>) -> usize {
        let mesh = &self.inner.mesh;
        let p = mesh.publication(frame.as_bytes().clone());
        fanout::broadcast_to_cores(mesh, None, &p, exclude)
    }

    /// The position of history topic `topic` and the publications its
    /// home core keeps (offset and frame, oldest first); `None` if the
    /// topic keeps no history or has no stream yet.
    ///
    /// # Errors
    /// [`HandleError::OnCore`] on a core thread (use
    /// [`ServerHandle::run_on`] with [`CoreView::history`] there);
    /// [`HandleError::Stopped`] if the home core did not answer within 10 s.
    pub fn history(&self, topic: &str) -> Result<Option<History>, HandleError> {
        if on_core() {
            return Err(HandleError::OnCore);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let t = topic.to_owned();
        self.run_on(self.history_home(topic), move |core| {
            let _ = tx.send(core.history(&t));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| HandleError::Stopped)
    }

    /// The home core of `topic`, the one that keeps its history.
    pub fn history_home(&self, topic: &str) -> usize {
        crate::streams::home_core(topic, self.cores())
    }

    /// Runs `job` on core `core` with a view of its state, without
    /// waiting: from any thread, a core's included (e.g. to read a
    /// history and answer a deferred HTTP request from there).
    pub fn run_on(&self, core: usize, job: impl FnOnce(&dyn CoreView) + Send + 'static) {
        self.inner.mesh.send(core, CoreMsg::Run(Box::new(job)));
    }

    /// Sends `frame` to every open connection of client `id`
    /// ([`Ws::set_client_id`](crate::Ws::set_client_id)), on every core,
    /// from any thread. Returns how many connections it was sent to.
    pub fn send_to_client(&self, id: &str, frame: &PreparedFrame) -> usize {
        let conns = self.inner.mesh.client_connections(id);
        for &c in &conns {
            self.send(c, frame);
        }
        conns.len()
    }

    /// How many open connections client `id` has.
    pub fn client_connections(&self, id: &str) -> usize {
        self.inner.mesh.client_connections(id).len()
    }

    /// Sends a frame to one connection, from any thread. A stale id (the
    /// connection closed) is ignored.
    pub fn send(&self, to: ConnId, frame: &PreparedFrame) {
        self.inner.mesh.send(
            to.core(),
            CoreMsg::Send {
                to,
                frame: frame.as_bytes().clone(),
            },
        );
    }

    /// Answers a deferred HTTP request with a serialised response and
    /// half-closes its connection.
    pub(crate) fn http_reply(&self, to: ConnId, response: Bytes) {
        self.inner
            .mesh
            .send(to.core(), CoreMsg::HttpReply { to, response });
    }

    /// Closes one connection with `code` and `reason`, from any thread.
    pub fn close(&self, to: ConnId, code: CloseCode, reason: &str) {
        self.inner.mesh.send(
            to.core(),
            CoreMsg::Close {
                to,
                code,
                reason: reason.to_owned(),
            },
        );
    }

    /// Runs `f` on every core and collects the results, in core order.
    ///
    /// # Errors
    /// [`HandleError::OnCore`] on a core thread; [`HandleError::Stopped`]
    /// if a core did not answer within 10 s.
    pub fn query<R: Send + 'static>(
        &self,
        f: impl Fn(&dyn CoreView) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, HandleError> {
        if on_core() {
            return Err(HandleError::OnCore);
        }
        let f = Arc::new(f);
        let (tx, rx) = std::sync::mpsc::channel();
        let n = self.cores();
        for i in 0..n {
            let f = f.clone();
            let tx = tx.clone();
            self.inner.mesh.send(
                i,
                CoreMsg::Run(Box::new(move |core: &dyn CoreView| {
                    let _ = tx.send((i, f(core)));
                })),
            );
        }
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        for _ in 0..n {
            let (i, r) = rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| HandleError::Stopped)?;
            out[i] = Some(r);
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every core answered"))
            .collect())
    }

    /// Subscribers of `topic` over all cores.
    ///
    /// # Errors
    /// As [`ServerHandle::query`].
    pub fn subscriber_count(&self, topic: &str) -> Result<usize, HandleError> {
        let t = topic.to_owned();
        Ok(self
            .query(move |c| c.subscriber_count(&t))?
            .into_iter()
            .sum())
    }

    /// Messages waiting in each core's inbox (a core that falls behind its
    /// peers shows here first).
    pub fn inbox_depths(&self) -> Vec<usize> {
        self.inner.mesh.inbox_depths()
    }

    /// Publishes each core's inbox refused because it already held
    /// [`Config::inbox_capacity`](crate::Config::inbox_capacity) messages.
    pub fn inbox_refused(&self) -> Vec<u64> {
        self.inner.mesh.inbox_refused()
    }

    /// Counters of each core.
    pub fn core_stats(&self) -> Vec<StatsSnapshot> {
        self.inner
            .mesh
            .all_stats()
            .iter()
            .map(CoreStats::snapshot)
            .collect()
    }

    /// Counters summed over all cores.
    pub fn stats(&self) -> StatsSnapshot {
        let mut total = StatsSnapshot::default();
        for s in self.core_stats() {
            total.add(&s);
        }
        total
    }

    /// Starts a graceful shutdown: every core stops accepting, sends close
    /// 1001 to its connections, waits for their close handshakes (at most
    /// [`Config::shutdown_timeout`](crate::Config::shutdown_timeout)) and
    /// stops. Returns at once; see [`ServerHandle::join`].
    pub fn shutdown(&self) {
        for i in 0..self.cores() {
            self.inner.mesh.send(i, CoreMsg::Shutdown);
        }
    }

    /// Waits until every core has stopped.
    pub fn join(&self) {
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}
