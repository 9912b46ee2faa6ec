//! The mesh between cores: one lock-free inbox per core and a cheap wake-up for a sleeping core.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::conn::ConnId;
use crate::proto::CloseCode;
use crate::shard::PublishReport;

/// What completes a counted publish.
pub(crate) enum Done {
    /// Wake a thread blocked in [`ServerHandle::publish_counted`](crate::ServerHandle::publish_counted).
    Signal(std::sync::mpsc::Sender<()>),
    /// Call back with the totals, on the thread of the last core to finish
    /// (a callback's counted publish, which must not block its core).
    Call(Box<dyn FnOnce(PublishReport) + Send>),
}

/// A counted publish: each core adds what it delivered, and the last one
/// to finish completes it.
pub struct Tally {
    pub(crate) delivered: std::sync::atomic::AtomicUsize,
    pub(crate) dropped: std::sync::atomic::AtomicUsize,
    pub(crate) pending: std::sync::atomic::AtomicUsize,
    pub(crate) done: std::sync::Mutex<Option<Done>>,
}

impl Tally {
    pub(crate) fn new(pending: usize, done: std::sync::mpsc::Sender<()>) -> Arc<Self> {
        Self::with(pending, Done::Signal(done))
    }

    pub(crate) fn with(pending: usize, done: Done) -> Arc<Self> {
        Arc::new(Self {
            delivered: 0.into(),
            dropped: 0.into(),
            pending: pending.into(),
            done: std::sync::Mutex::new(Some(done)),
        })
    }

    pub(crate) fn add(&self, delivered: usize, dropped: usize) {
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The completion path of a counted publish, not the fanout path.
            match self.done.lock().ok().and_then(|mut g| g.take()) {
                Some(Done::Signal(tx)) => {
                    let _ = tx.send(());
                }
                Some(Done::Call(f)) => f(PublishReport {
                    delivered: self.delivered.load(Ordering::Relaxed),
                    dropped: self.dropped.load(Ordering::Relaxed),
                }),
                None => {}
            }
        }
    }
}

/// A job run on a core with access to its state (stats, queries, tests).
pub type CoreJob = Box<dyn FnOnce(&dyn crate::shard::CoreView) + Send>;

/// What one core sends another.
pub enum CoreMsg {
    /// Deliver a frame to the local subscribers of a topic.
    Publish {
        /// The topic.
        topic: Arc<str>,
        /// The frame, encoded once by the publisher.
        frame: Bytes,
        /// A connection not to deliver to (the publisher).
        exclude: Option<ConnId>,
        /// Where to add the counts, for a counted publish.
        tally: Option<Arc<Tally>>,
    },
    /// Send a frame to one connection.
    Send {
        /// The connection; a stale id is ignored.
        to: ConnId,
        /// The frame.
        frame: Bytes,
    },
    /// Close one connection.
    Close {
        /// The connection; a stale id is ignored.
        to: ConnId,
        /// Close code.
        code: CloseCode,
        /// Close reason.
        reason: String,
    },
    /// Answer a plain HTTP request whose response was deferred, then
    /// half-close the connection.
    HttpReply {
        /// The connection; a stale id is ignored.
        to: ConnId,
        /// The whole response: status line, headers, body.
        response: Bytes,
    },
    /// Run a closure on the core.
    Run(CoreJob),
    /// Stop accepting, close every connection with 1001 and stop.
    Shutdown,
}

/// A core's inbox as seen by senders on any thread.
#[repr(align(128))]
pub struct Mailbox {
    tx: Sender<CoreMsg>,
    /// Set by the core just before it sleeps on its wake socket; a sender
    /// that swaps it from true rings the wake socket, so one sleep costs at
    /// most one wake-up write however many messages arrive.
    asleep: AtomicBool,
    wake: UnixStream,
}

/// The receiving side, owned by the core.
pub struct Inbox {
    pub(crate) rx: Receiver<CoreMsg>,
    pub(crate) wake: UnixStream,
}

/// Creates the mailbox of one core and the inbox it reads.
pub fn mailbox() -> io::Result<(Mailbox, Inbox)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (wake_tx, wake_rx) = UnixStream::pair()?;
    wake_tx.set_nonblocking(true)?;
    wake_rx.set_nonblocking(true)?;
    Ok((
        Mailbox {
            tx,
            asleep: AtomicBool::new(false),
            wake: wake_tx,
        },
        Inbox { rx, wake: wake_rx },
    ))
}

impl Mailbox {
    /// Queues `msg` and wakes the core if it sleeps.
    pub fn send(&self, msg: CoreMsg) {
        if self.tx.send(msg).is_err() {
            return; // the core has stopped
        }
        // Pairs with the fence in `Mailbox::sleep`: either the core sees the
        // message before sleeping, or we see it asleep and ring.
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::AcqRel) {
            // A full wake socket already holds a pending wake-up.
            let _ = (&self.wake).write(&[1]);
        }
    }

    /// Called by the core: marks it asleep. Returns false (and stays awake)
    /// when messages are already waiting.
    pub(crate) fn sleep(&self, inbox: &Inbox) -> bool {
        self.asleep.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !inbox.rx.is_empty() {
            self.asleep.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Called by the core after it woke up.
    pub(crate) fn awake(&self) {
        self.asleep.store(false, Ordering::Relaxed);
    }

    /// Messages waiting in the inbox.
    pub fn len(&self) -> usize {
        self.tx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_sleeping_core_is_rung_once_per_sleep() {
        let (mb, inbox) = mailbox().unwrap();
        // Awake: no ring.
        mb.send(CoreMsg::Shutdown);
        let mut buf = [0u8; 8];
        assert!((&inbox.wake).read(&mut buf).is_err());
        // Messages waiting: refuses to sleep.
        assert!(!mb.sleep(&inbox));
        while inbox.rx.try_recv().is_ok() {}
        assert!(mb.sleep(&inbox));
        for _ in 0..3 {
            mb.send(CoreMsg::Shutdown);
        }
        assert_eq!(
            (&inbox.wake).read(&mut buf).unwrap(),
            1,
            "one ring for three sends"
        );
        mb.awake();
        assert_eq!(inbox.rx.len(), 3);
    }
}
