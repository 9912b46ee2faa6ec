//! `fanout --stall`: subscribers that stop reading, as a slow consumer would, and the report of how the server treated them.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shardcast::proto::Limits;

use super::{subscribe, Inbox, Kind, Plan};
use crate::cli::FanoutArgs;
use crate::client::{End, Flow, Outbox, Reader};
use crate::report::Report;
use crate::runtime::{core_wait, phase, Shared};
use crate::sys::now_ns;
use crate::track::Tally;

/// `n` subscriber ids of `0..subscribers`, spread evenly (over topics and cores).
pub fn stalled_ids(n: usize, subscribers: usize) -> Vec<usize> {
    let n = n.min(subscribers);
    (0..n).map(|k| k * subscribers / n).collect()
}

/// What the main thread and the cores share about the stalled subscribers.
#[derive(Debug, Default)]
pub(super) struct Stall {
    /// Set when the stalled subscribers are to stop reading.
    pub(super) now: AtomicBool,
    /// Publishes sent per topic (only when some subscriber stalls): what a
    /// stalled subscriber of that topic should have received.
    pub(super) sent: Vec<AtomicU64>,
    /// One per stalled subscriber, in the order of `Plan::stalled`.
    pub(super) slots: Vec<Slot>,
}

/// One stalled subscriber's record.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// It stopped reading (a message arrived after the stall began).
    stopped: AtomicBool,
    /// Distinct messages it had received when it stopped.
    before: AtomicU64,
    /// Distinct messages, duplicates and late ones over the whole run.
    unique: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    /// When it last received anything (`now_ns`).
    last_rx_ns: AtomicU64,
    /// Its connection ended while the run went on.
    ended: AtomicBool,
    /// How the connection ended, or that it was still open.
    end: Mutex<Option<String>>,
}

impl Slot {
    fn set_end(&self, e: String) {
        *self.end.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// A subscriber that stops reading when `stall.now` is set (after the
/// message that arrives next: a read is already pending) and reads again
/// once publishing has stopped, until the server closes the connection or
/// the run ends. Its deliveries count in its slot, not in the core's
/// totals; it records no latency.
pub(super) async fn stalled_subscriber(
    i: usize,
    mut reader: Reader,
    outbox: Outbox,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    stall: Arc<Stall>,
    k: usize,
) {
    let slot = &stall.slots[k];
    let topic = i % plan.topics;
    if let Err(e) = subscribe(&outbox, topic).await {
        slot.set_end(format!("subscribe: {e}"));
        shared.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut inbox = Inbox::new(&plan, topic);
    let tally = Cell::new(Tally::default());
    let limits = Limits::default();
    let mut on_msg = |msg: &[u8], now: u64| {
        slot.last_rx_ns.store(now, Ordering::Relaxed);
        match inbox.classify(msg) {
            Kind::Delivery(arrival, _) => {
                let mut t = tally.get();
                t.count(arrival);
                tally.set(t);
            }
            Kind::Subscribed => {
                shared.ready.fetch_add(1, Ordering::Relaxed);
            }
            Kind::Misrouted | Kind::Other => {}
        }
    };
    let mut end = reader
        .run(&outbox, &limits, |_, msg, now| {
            on_msg(msg, now);
            if stall.now.load(Ordering::Relaxed) {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .await;
    if matches!(end, End::Stopped) {
        slot.before.store(tally.get().unique, Ordering::Relaxed);
        slot.stopped.store(true, Ordering::Relaxed);
        // Not reading: the socket stays open, unread bytes pile up in the
        // kernel and then in the server's outbox for this connection.
        core_wait(|| shared.phase() >= phase::DRAIN).await;
        end = reader
            .run(&outbox, &limits, |_, msg, now| {
                on_msg(msg, now);
                Flow::Continue
            })
            .await;
    }
    let during_run = shared.phase() != phase::DONE;
    slot.set_end(match end {
        _ if !during_run => "open at the end of the run".into(),
        End::Closed(Some(code)) => format!("close {code}"),
        End::Closed(None) => "closed without a close frame".into(),
        End::Error(e) => e,
        End::Stopped => "stopped".into(),
    });
    slot.ended.store(during_run, Ordering::Relaxed);
    let tally = tally.get();
    slot.unique.store(tally.unique, Ordering::Relaxed);
    slot.duplicated.store(tally.duplicated, Ordering::Relaxed);
    slot.reordered.store(tally.reordered, Ordering::Relaxed);
}

/// Whether every stalled subscriber is done after publishing stopped (at
/// `drain_ns`): its connection ended, or nothing arrived for a second.
pub(super) fn stalled_settled(stall: &Stall, drain_ns: u64) -> bool {
    let now = now_ns();
    stall.slots.iter().all(|s| {
        s.ended.load(Ordering::Relaxed)
            || now.saturating_sub(s.last_rx_ns.load(Ordering::Relaxed).max(drain_ns))
                >= 1_000_000_000
    })
}

/// Adds the stalled subscribers' outcome to `r`.
pub(super) fn report_stalled(r: &mut Report, plan: &Plan, stall: &Stall, a: &FanoutArgs) {
    let n = plan.stalled.len();
    r.set("stalled_subscribers", n);
    r.set("healthy_subscribers", plan.subscribers - n);
    r.num("stall_after_secs", a.stall_after.as_secs_f64(), 3);
    r.set("stall_rcvbuf_bytes", a.stall_rcvbuf);
    let mut closed = 0u64;
    let mut codes = std::collections::BTreeMap::<String, u64>::new();
    let (mut missed, mut dup, mut reord) = (0u64, 0u64, 0u64);
    let mut each = Vec::new();
    for (k, &id) in plan.stalled.iter().enumerate() {
        let s = &stall.slots[k];
        let topic = id % plan.topics;
        let expected = stall.sent[topic].load(Ordering::Relaxed);
        let unique = s.unique.load(Ordering::Relaxed);
        let end = s
            .end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        if s.ended.load(Ordering::Relaxed) {
            closed += 1;
        }
        *codes.entry(end.clone()).or_default() += 1;
        missed += expected.saturating_sub(unique);
        dup += s.duplicated.load(Ordering::Relaxed);
        reord += s.reordered.load(Ordering::Relaxed);
        each.push(serde_json::json!({
            "id": id,
            "topic": format!("t{topic}"),
            "stopped_reading": s.stopped.load(Ordering::Relaxed),
            "received_before_stall": s.before.load(Ordering::Relaxed),
            "received": unique,
            "expected": expected,
            "missed": expected.saturating_sub(unique),
            "duplicated": s.duplicated.load(Ordering::Relaxed),
            "reordered": s.reordered.load(Ordering::Relaxed),
            "end": end,
        }));
    }
    r.set("stalled_closed_by_server", closed);
    r.set(
        "stalled_outcomes",
        codes
            .into_iter()
            .map(|(e, c)| format!("{c} x {e}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    r.set("stalled_missed", missed);
    r.set("stalled_duplicated", dup);
    r.set("stalled_reordered", reord);
    r.set("stalled", each);
}
