//! The engine's top: [`Server::start`] binds the listeners and starts one pinned thread per core, each running its runtime and tasks.

mod runtime;
mod settle;
mod tasks;

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use crate::api::Handler;
use crate::config::Config;
use crate::handle::ServerHandle;
use crate::mesh::{self, Mesh};
use crate::pubsub::InterestTable;
use crate::state::Core;

/// A shardcast server: a handler and a configuration, ready to start.
///
/// # Example
/// ```no_run
/// use shardcast::{Config, Handler, Rejection, Server, UpgradeRequest};
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
/// let config = Config::new()
///     .listen("0.0.0.0:9001".parse().unwrap())
///     .cores(4);
/// let handle = Server::new(config, App).start()?;
/// println!("listening on {}", handle.local_addr());
/// // Stops the cores on SIGTERM in a real server; here, at once.
/// handle.shutdown();
/// handle.join();
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server<H: Handler> {
    config: Config,
    handler: H,
}

impl<H: Handler> Server<H> {
    /// A server running `handler` with `config`.
    pub fn new(config: Config, handler: H) -> Self {
        Self { config, handler }
    }

    /// Binds every core's listener, starts the cores and returns once all of
    /// them run.
    ///
    /// # Errors
    /// Binding fails, or a core cannot build its runtime.
    pub fn start(self) -> io::Result<ServerHandle> {
        let config = Arc::new(self.config);
        let handler = Arc::new(self.handler);
        let n = config.effective_cores();
        let cpus = core_affinity::get_core_ids().unwrap_or_default();

        // Bind all listeners up front: errors reach the caller, and port 0
        // resolves to one port that every core then shares.
        let first = runtime::bind_reuseport(config.listen, config.backlog)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..n {
            listeners.push(runtime::bind_reuseport(local_addr, config.backlog)?);
        }

        let mut mailboxes = Vec::with_capacity(n);
        let mut inboxes = Vec::with_capacity(n);
        for _ in 0..n {
            let (mb, ib) = mesh::mailbox(config.inbox_capacity)?;
            mailboxes.push(mb);
            inboxes.push(ib);
        }
        let interest = Arc::new(InterestTable::new(n, config.interest_buckets));
        let deflate = (config.compression != crate::config::Compression::Off)
            .then_some(config.deflate.threshold);
        let mesh = Arc::new(Mesh::new(interest, mailboxes).with_deflate(deflate));
        let uring = crate::uring_probe::probe_bounded();
        tracing::info!(
            features = ?uring.list().iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect::<Vec<_>>(),
            "io_uring features"
        );
        let handle = ServerHandle::new(mesh.clone(), local_addr, config.history.clone(), uring);
        if let Some(link) = &config.node_link {
            handle.set_node_link(link.clone());
        }

        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<io::Result<(usize, runtime::Driver)>>();
        let mut threads = Vec::with_capacity(n);
        for (i, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            let cpu = if config.pin && !cpus.is_empty() {
                Some(cpus[i % cpus.len()])
            } else {
                None
            };
            let task_run = config.task_run;
            let (mesh, handle, handler, config, ready) = (
                mesh.clone(),
                handle.clone(),
                handler.clone(),
                config.clone(),
                ready_tx.clone(),
            );
            let t = std::thread::Builder::new()
                .name(format!("shardcast-core-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        core_affinity::set_for_current(cpu);
                    }
                    crate::handle::mark_core_thread();
                    let (mut rt, mut driver) = match runtime::build(task_run) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let direct = runtime::direct_path(&config, &uring, driver, &listener);
                    if direct.is_some() {
                        driver.kind = crate::handle::DriverKind::IoUringDirect;
                    }
                    tracing::info!(
                        core = i,
                        cpu = ?cpu.map(|c| c.id),
                        driver = %driver.kind,
                        task_run = ?driver.task_run,
                        "core started"
                    );
                    let _ = ready.send(Ok((i, driver)));
                    drop(ready);
                    rt.block_on(async move {
                        let local = handler.local(i);
                        let core = Rc::new(Core::new(i, mesh, handle, handler, config, local));
                        tasks::run_core(core, listener, inbox, direct).await;
                    });
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        handle.set_threads(threads);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok((i, d))) => handle.set_driver(i, d.kind, d.task_run),
                Ok(Err(e)) => {
                    handle.shutdown();
                    handle.join();
                    return Err(e);
                }
                Err(_) => {
                    handle.shutdown();
                    handle.join();
                    return Err(io::Error::other("a core stopped while starting"));
                }
            }
        }
        Ok(handle)
    }

    /// Starts the server and blocks until it shuts down.
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn run(self) -> io::Result<()> {
        let h = self.start()?;
        h.join();
        Ok(())
    }
}
