//! One lock-free inbox per core and a cheap wake-up for a sleeping core.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::msg::CoreMsg;

/// A core's inbox as seen by senders on any thread.
#[repr(align(128))]
pub(crate) struct Mailbox {
    tx: Sender<CoreMsg>,
    /// Set by the core just before it sleeps on its wake socket; a sender
    /// that swaps it from true rings the wake socket, so one sleep costs at
    /// most one wake-up write however many messages arrive.
    asleep: AtomicBool,
    wake: UnixStream,
    /// Publishes waiting beyond which more are refused.
    capacity: usize,
    /// Publishes refused because the inbox was full: written by every
    /// sender, hence a locked add (rare: only a core far behind its peers).
    refused: AtomicU64,
}

/// The receiving side, owned by the core.
pub(crate) struct Inbox {
    rx: Receiver<CoreMsg>,
    wake: UnixStream,
}

impl Inbox {
    /// The next waiting message, if any.
    pub(crate) fn try_recv(&self) -> Option<CoreMsg> {
        self.rx.try_recv().ok()
    }

    /// The socket senders ring while the core sleeps.
    pub(crate) fn wake_socket(&self) -> &UnixStream {
        &self.wake
    }
}

/// Creates the mailbox of one core and the inbox it reads.
pub(crate) fn mailbox(capacity: usize) -> io::Result<(Mailbox, Inbox)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (wake_tx, wake_rx) = UnixStream::pair()?;
    wake_tx.set_nonblocking(true)?;
    wake_rx.set_nonblocking(true)?;
    Ok((
        Mailbox {
            tx,
            asleep: AtomicBool::new(false),
            wake: wake_tx,
            capacity,
            refused: AtomicU64::new(0),
        },
        Inbox { rx, wake: wake_rx },
    ))
}

impl Mailbox {
    /// Queues a publish unless the inbox already holds `capacity`
    /// messages: a core that falls far behind its peers loses publishes
    /// (counted) rather than memory without bound. Returns whether it was
    /// queued.
    pub(crate) fn send_publish(&self, msg: CoreMsg) -> bool {
        if self.tx.len() >= self.capacity {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.send(msg);
        true
    }

    /// Publishes refused because the inbox was full.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Queues `msg` and wakes the core if it sleeps.
    pub(crate) fn send(&self, msg: CoreMsg) {
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
    pub(crate) fn len(&self) -> usize {
        self.tx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_sleeping_core_is_rung_once_per_sleep() {
        let (mb, inbox) = mailbox(16).unwrap();
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
