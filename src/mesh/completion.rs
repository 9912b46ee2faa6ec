//! Counted publishes: every core adds what it queued, and the last one to finish calls the one completion.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a counted publish reached over all cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishReport {
    /// Subscribers the frame was queued for.
    pub delivered: usize,
    /// Subscribers skipped by the slow-consumer policy.
    pub dropped: usize,
}

/// The completion of a counted publish: called once with the totals, on
/// the thread of the last core to finish. It must not block.
pub(crate) type Completion = Box<dyn FnOnce(PublishReport) + Send>;

/// A counted publish in flight: each core adds what it delivered, and the
/// last one to finish calls the completion.
pub(crate) struct Tally {
    delivered: AtomicUsize,
    dropped: AtomicUsize,
    pending: AtomicUsize,
    /// Locked once, by the last core: the completion path, not the fanout
    /// path.
    done: Mutex<Option<Completion>>,
}

impl Tally {
    /// A tally that completes after `pending` calls of [`Tally::add`].
    pub(crate) fn new(pending: usize, done: Completion) -> Arc<Self> {
        Arc::new(Self {
            delivered: 0.into(),
            dropped: 0.into(),
            pending: pending.into(),
            done: Mutex::new(Some(done)),
        })
    }

    /// Adds one core's counts; the last of the expected calls completes.
    pub(crate) fn add(&self, delivered: usize, dropped: usize) {
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let done = self.done.lock().ok().and_then(|mut g| g.take());
            if let Some(f) = done {
                let report = PublishReport {
                    delivered: self.delivered.load(Ordering::Relaxed),
                    dropped: self.dropped.load(Ordering::Relaxed),
                };
                // The completion is application code running on a core:
                // its panic must not unwind through the core's fanout.
                if catch_unwind(AssertUnwindSafe(|| f(report))).is_err() {
                    tracing::error!("a counted publish's completion panicked");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_core_completes_with_the_totals() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = Tally::new(3, Box::new(move |r| tx.send(r).unwrap()));
        t.add(2, 0);
        t.add(0, 1);
        assert!(rx.try_recv().is_err(), "two of three cores answered");
        t.add(5, 0);
        assert_eq!(
            rx.try_recv().unwrap(),
            PublishReport {
                delivered: 7,
                dropped: 1
            }
        );
    }
}
