//! The public handle, subscriptions, and the driver task that runs the state machine.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{broadcast, oneshot, watch};

use crate::config::{Config, TokenPlacement};
use crate::conn::{self, End};
use crate::error::{ConfigError, Error};
use crate::metrics::MetricsSnapshot;
use crate::protocol;
use crate::reconnect::{Backoff, Verdict};
use crate::registry::{Event, Position};
use crate::shared::{Ack, AckResult, Delivery, Shared};
use crate::state::{Reason, State, StateChange};
use crate::transport;

/// Stops the driver when the last [`Client`] clone is dropped.
struct Guard(watch::Sender<bool>);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A shardcast client: keeps one connection open (reconnecting as its
/// policy says), and holds the subscriptions and the outgoing queue across
/// connections. Cheap to clone; the client stops when every clone is
/// dropped or [`close`](Self::close) is called.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    guard: Arc<Guard>,
    driver: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.shared.cfg.endpoint.to_string())
            .field("state", &self.state().state)
            .finish()
    }
}

impl Client {
    /// Starts a client: it connects in the background, right away. Must be
    /// called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for settings out of range.
    pub fn start(config: Config) -> Result<Client, ConfigError> {
        Self::start_observed(config).map(|(client, _)| client)
    }

    /// Starts a client as [`start`](Self::start) does and returns with it
    /// every state change from the very first (a receiver taken with
    /// [`state_changes`](Self::state_changes) after `start` may miss the
    /// first attempts, which begin at once).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for settings out of range.
    pub fn start_observed(
        config: Config,
    ) -> Result<(Client, broadcast::Receiver<StateChange>), ConfigError> {
        config.validate()?;
        let initial = StateChange {
            state: State::Disconnected,
            reason: None,
            connections: 0,
            attempt: 0,
            retry_in: None,
        };
        let shared = Arc::new(Shared::new(config, initial));
        let changes = shared.changes_tx.subscribe();
        let (tx, rx) = watch::channel(false);
        let driver = tokio::spawn(drive(shared.clone(), rx));
        let client = Client {
            shared,
            guard: Arc::new(Guard(tx)),
            driver: Arc::new(std::sync::Mutex::new(Some(driver))),
        };
        Ok((client, changes))
    }

    /// The current state and why.
    pub fn state(&self) -> StateChange {
        self.shared.state_tx.borrow().clone()
    }

    /// The state, as a watch: always the latest value (intermediate ones
    /// may be skipped; use [`state_changes`](Self::state_changes) for all).
    pub fn watch_state(&self) -> watch::Receiver<StateChange> {
        self.shared.state_tx.subscribe()
    }

    /// Every state change from now on, in order (the last 256 are kept for
    /// a slow reader).
    pub fn state_changes(&self) -> broadcast::Receiver<StateChange> {
        self.shared.changes_tx.subscribe()
    }

    /// Waits until the state satisfies `pred`, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the time ran out first.
    pub async fn wait_for(
        &self,
        limit: Duration,
        mut pred: impl FnMut(&StateChange) -> bool,
    ) -> Result<StateChange, Error> {
        let mut rx = self.watch_state();
        let found = tokio::time::timeout(limit, async {
            rx.wait_for(|s| pred(s)).await.map(|s| s.clone())
        })
        .await;
        match found {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Waits until connected, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`]; [`Error::Closed`] if the client stopped.
    pub async fn connected(&self, limit: Duration) -> Result<(), Error> {
        let s = self
            .wait_for(limit, |s| {
                s.state == State::Connected
                    || s.state == State::Failed
                    || s.reason.is_some() && s.state.is_terminal()
            })
            .await?;
        if s.state == State::Connected {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Publishes `data` (JSON text) to `topic` without asking for an
    /// acknowledgement. Returns once the message is queued.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJson`] if `data` is not JSON; [`Error::NotConnected`]
    /// for [`Delivery::Now`] while not connected; [`Error::QueueFull`];
    /// [`Error::Closed`] after the client stopped.
    pub fn publish(&self, topic: &str, data: &str, delivery: Delivery) -> Result<(), Error> {
        check_json(data)?;
        self.shared
            .enqueue(delivery, false, |_| protocol::publish(topic, data, None))
            .map(|_| ())
    }

    /// Publishes and waits for the server's acknowledgement: the number of
    /// subscribers it was queued for.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish); then [`Error::Server`] for a refusal
    /// (`forbidden`, `rate_limited`, ...), [`Error::ConnectionLost`] if the
    /// connection was lost after the message was written (it may have been
    /// delivered).
    pub async fn publish_acked(
        &self,
        topic: &str,
        data: &str,
        delivery: Delivery,
    ) -> Result<u64, Error> {
        check_json(data)?;
        let rx = self
            .shared
            .enqueue(delivery, true, |id| protocol::publish(topic, data, id))?;
        match wait(rx).await? {
            Ack::Published(n) => Ok(n),
            Ack::Done | Ack::Authenticated(_) => Ok(0),
        }
    }

    /// Subscribes to `topic`. The subscription lives in the client's
    /// registry: it is sent again after every reconnect, asking the server
    /// to recover what was published meanwhile when the topic has history
    /// (see [`Event::Gap`]).
    ///
    /// While connected, waits for the server's answer. While not, returns
    /// at once; the topic is subscribed on the next connection, and a
    /// refusal then arrives on the stream as [`Event::Refused`].
    ///
    /// # Errors
    ///
    /// [`Error::Server`] if the server refuses the topic (the subscription
    /// is then removed); [`Error::QueueFull`]; [`Error::Closed`].
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, Error> {
        let (key, id, rx, new, connected) = {
            let mut g = self.shared.lock();
            if g.stopped {
                return Err(Error::Closed);
            }
            let connected = g.connected;
            let (key, id, rx, new) = g.registry.add(topic, connected);
            (key, id, rx, new, g.connected)
        };
        let sub = Subscription {
            topic: key,
            id,
            rx,
            shared: self.shared.clone(),
            live: true,
        };
        if new && connected {
            let acked = self
                .shared
                .enqueue(Delivery::Queue, true, |id| protocol::subscribe([topic], id));
            match acked {
                Ok(rx) => match wait(rx).await {
                    Ok(_) | Err(Error::ConnectionLost) => {}
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        Ok(sub)
    }

    /// Presents `token` on the open connection (an `auth` message: the server
    /// replaces the connection's grant, e.g. before the old token expires)
    /// and on every later connection, in the configured
    /// [`TokenPlacement`] ([`TokenPlacement::Message`] when none was
    /// configured). Returns the token's subject (`sub`) from the server's
    /// answer.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`] if `token` holds CR, LF or NUL;
    /// [`Error::NotConnected`]; [`Error::Server`] (`unauthorized`) when the
    /// server refuses it, after which it closes the connection with 1008
    /// and the client turns [`State::Failed`]; as
    /// [`publish_acked`](Self::publish_acked) otherwise.
    pub async fn authenticate(&self, token: &str) -> Result<String, Error> {
        if token.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
            return Err(Error::InvalidToken);
        }
        let rx = self
            .shared
            .enqueue(Delivery::Now, true, |id| protocol::auth(token, id))?;
        {
            let mut g = self.shared.lock();
            let placement = g.token.as_ref().map_or(TokenPlacement::Message, |t| t.1);
            g.token = Some((token.to_owned(), placement));
        }
        match wait(rx).await? {
            Ack::Authenticated(sub) => Ok(sub),
            _ => Ok(String::new()),
        }
    }

    /// Sends an application-level `ping` and returns the round-trip time.
    ///
    /// # Errors
    ///
    /// As [`publish_acked`](Self::publish_acked) with [`Delivery::Now`].
    pub async fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        let rx = self
            .shared
            .enqueue(Delivery::Now, true, |id| protocol::ping(id.unwrap_or(0)))?;
        wait(rx).await?;
        Ok(start.elapsed())
    }

    /// The topics subscribed, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.shared.lock().registry.topics()
    }

    /// Where a subscribed history topic's stream stands for this client:
    /// its last message's position, or the one the server gave when the
    /// topic was subscribed. A reconnect recovers from it. `None` for a
    /// topic without history, or not subscribed, or not yet answered.
    pub fn position(&self, topic: &str) -> Option<Position> {
        self.shared.lock().registry.position(topic)
    }

    /// The counters, now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let (depth, bytes) = {
            let g = self.shared.lock();
            (g.queue.len(), g.queue.bytes())
        };
        self.shared.metrics.snapshot(depth, bytes)
    }

    /// Closes the connection with 1000 (waiting up to 1 s for the server's
    /// Close), stops reconnecting and ends every subscription stream. The
    /// state turns [`State::Disconnected`].
    ///
    /// Returns the messages that were still queued and were not written, in
    /// order, as the JSON text they would have been sent as (e.g. to keep
    /// them for a later client), so that none is dropped unseen; their
    /// acknowledgements, if any, resolve with [`Error::Closed`]. A clone
    /// that calls `close` after another gets an empty list.
    pub async fn close(&self) -> Vec<String> {
        let _ = self.guard.0.send(true);
        let driver = self.driver.lock().expect("driver lock").take();
        let Some(d) = driver else {
            return Vec::new();
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), d).await;
        let mut g = self.shared.lock();
        std::iter::from_fn(|| g.queue.pop().map(|m| m.text)).collect()
    }
}

fn check_json(data: &str) -> Result<(), Error> {
    serde_json::from_str::<&serde_json::value::RawValue>(data)
        .map(|_| ())
        .map_err(|_| Error::InvalidJson)
}

async fn wait(rx: Option<oneshot::Receiver<AckResult>>) -> Result<Ack, Error> {
    match rx {
        Some(rx) => rx.await.unwrap_or(Err(Error::Closed)),
        None => Ok(Ack::Done),
    }
}

/// One subscriber's stream of a topic's [`Event`]s; ends when the client
/// stops. Dropping it unsubscribes (the server is told when it was the
/// topic's last local subscriber).
///
/// Events are buffered without bound until read: a subscriber that stops
/// reading holds its backlog in memory rather than lose messages.
pub struct Subscription {
    topic: Arc<str>,
    id: u64,
    rx: UnboundedReceiver<Event>,
    shared: Arc<Shared>,
    live: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's position ([`Client::position`]).
    pub fn position(&self) -> Option<Position> {
        self.shared.lock().registry.position(&self.topic)
    }

    /// The next event; `None` once the client stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Unsubscribes and waits for the server's answer when this was the
    /// topic's last local subscriber and the client is connected.
    ///
    /// # Errors
    ///
    /// As [`Client::publish_acked`].
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        self.live = false;
        if let Some(rx) = self.leave(true)? {
            wait(Some(rx)).await?;
        }
        Ok(())
    }

    fn leave(&self, ack: bool) -> Result<Option<oneshot::Receiver<AckResult>>, Error> {
        let last = self.shared.lock().registry.remove(&self.topic, self.id);
        if !last {
            return Ok(None);
        }
        match self.shared.enqueue(Delivery::Now, ack, |id| {
            protocol::unsubscribe(&self.topic, id)
        }) {
            Ok(rx) => Ok(rx),
            // Not connected: the next connection simply does not subscribe it.
            Err(Error::NotConnected | Error::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.live {
            let _ = self.leave(false);
        }
    }
}

impl futures_core::Stream for Subscription {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// The state machine: connect, run, decide, wait, again.
async fn drive(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let cfg = &shared.cfg;
    let mut backoff = Backoff::new(cfg.backoff.clone());
    let mut rng = cfg
        .jitter_seed
        .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
    let mut connections = 0u64;
    let mut reason: Option<Reason> = None;
    let change = |state, reason: Option<Reason>, connections, attempt| StateChange {
        state,
        reason,
        connections,
        attempt,
        retry_in: None,
    };
    let waiting = |connections: u64| {
        if connections == 0 {
            State::Connecting
        } else {
            State::Reconnecting
        }
    };
    let final_state = 'run: loop {
        shared.set_state(change(
            waiting(connections),
            reason.clone(),
            connections,
            backoff.attempt(),
        ));
        let token = shared.lock().token.clone();
        let attempt = tokio::select! {
            r = tokio::time::timeout(cfg.connect_timeout, transport::open(cfg, token)) => r,
            _ = shutdown.wait_for(|s| *s) => break 'run (State::Disconnected, Reason::ClientClosed),
        };
        let failure = match attempt {
            Ok(Ok(opened)) => {
                connections += 1;
                if connections > 1 {
                    shared
                        .metrics
                        .reconnects
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let started = Instant::now();
                let first = shared.on_connected();
                shared.set_state(change(
                    State::Connected,
                    None,
                    connections,
                    backoff.attempt(),
                ));
                let end = conn::run(opened, &shared, first, &mut shutdown).await;
                shared.on_disconnected();
                backoff.connection_ended(started.elapsed());
                match end {
                    End::ClientClosed => break 'run (State::Disconnected, Reason::ClientClosed),
                    End::ServerClosed { code, text } => {
                        let r = Reason::ServerClosed { code, text };
                        if cfg.close_policy.verdict(code) == Verdict::Stop {
                            break 'run (State::Failed, r);
                        }
                        r
                    }
                    End::Failed(e) => {
                        shared.metrics.error();
                        Reason::Connection(Arc::new(e))
                    }
                }
            }
            Ok(Err(e)) => {
                shared.metrics.error();
                let retry = e.is_retryable();
                let r = Reason::Connect(Arc::new(e));
                if !retry {
                    break 'run (State::Failed, r);
                }
                r
            }
            Err(_) => {
                shared.metrics.error();
                Reason::Connect(Arc::new(crate::error::ConnectError::Timeout(
                    cfg.connect_timeout,
                )))
            }
        };
        let Some(delay) = backoff.next_delay(&mut rng) else {
            break 'run (State::Failed, Reason::AttemptsExhausted(Box::new(failure)));
        };
        reason = Some(failure);
        shared.set_state(StateChange {
            retry_in: Some(delay),
            ..change(
                waiting(connections),
                reason.clone(),
                connections,
                backoff.attempt(),
            )
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => break 'run (State::Disconnected, Reason::ClientClosed),
        }
    };
    shared.on_stopped();
    shared.set_state(change(
        final_state.0,
        Some(final_state.1),
        connections,
        backoff.attempt(),
    ));
}
