//! A publisher: its lanes taken in turn, paced by the window of outstanding deliveries or by a fixed rate.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardcast::proto::Limits;

use super::stall::Stall;
use super::{lost, Plan, BATCH};
use crate::client::{Flow, Outbox, Reader};
use crate::runtime::{core_wait, phase, Shared};
use crate::scenario::FirstError;
use crate::stamp::Stamp;
use crate::sys::now_ns;

/// One lane of a publisher: its topic, what a publish to it costs in
/// deliveries, and its sequence.
struct Lane<'a> {
    id: u32,
    prefix: Vec<u8>,
    /// Deliveries one publish makes to subscribers that read.
    healthy: u64,
    /// Publishes to the topic, counted for its stalled subscribers.
    topic_sent: Option<&'a AtomicU64>,
    seq: u64,
}

/// Deliveries sent and not yet received.
fn outstanding(shared: &Shared) -> u64 {
    shared
        .expected
        .load(Ordering::Relaxed)
        .saturating_sub(shared.received.load(Ordering::Relaxed))
}

/// How many publishes to queue now; 0: wait a millisecond.
fn due(plan: &Plan, shared: &Shared, next: &Lane<'_>, widest: u64, sched: &Schedule) -> u64 {
    if plan.rate > 0 {
        return sched.due().min(4 * BATCH);
    }
    let free = plan.max_outstanding.saturating_sub(outstanding(shared));
    match plan.min_free {
        // One publish, once both the threshold and this publish fit.
        Some(n) => u64::from(free >= n.max(next.healthy.max(1))),
        // Wait until half the window is free, then send what fits, so a
        // big topic's publishes reach the server in batches (as they would
        // from many publishers) instead of one per freed slot.
        None => {
            let room = (free / widest).min(BATCH);
            let min_send = (plan.max_outstanding / widest / 2).clamp(1, BATCH);
            if room >= min_send {
                room
            } else {
                0
            }
        }
    }
}

/// A fixed-rate publisher's timetable: its k-th publish is due at
/// (k + j/P) / (rate / P), so the publishers are spread evenly over each
/// interval instead of all publishing in the same instant.
struct Schedule {
    start: Instant,
    per_pub: f64,
    phase: f64,
    sent: u64,
}

impl Schedule {
    fn due(&self) -> u64 {
        let x = self.start.elapsed().as_secs_f64() * self.per_pub - self.phase;
        let due = if x < 0.0 { 0 } else { x as u64 + 1 };
        due.saturating_sub(self.sent)
    }
}

pub(super) async fn publisher(
    j: usize,
    mut reader: Reader,
    outbox: Outbox,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    errors: Arc<FirstError>,
    stall: Arc<Stall>,
) {
    let outbox = Rc::new(outbox);
    // The read side only answers pings and notices a close.
    let rd = {
        let (outbox, shared, errors) = (outbox.clone(), shared.clone(), errors.clone());
        monoio::spawn(async move {
            let end = reader
                .run(&outbox, &Limits::default(), |_, _, _| Flow::Continue)
                .await;
            lost(&shared, &errors, end, "publisher");
        })
    };
    shared.ready.fetch_add(1, Ordering::Relaxed);
    core_wait(|| shared.phase() >= phase::WARMUP).await;
    let mut lanes: Vec<Lane<'_>> = (j..plan.lanes)
        .step_by(plan.publishers)
        .map(|l| {
            let topic = l % plan.topics;
            // Stalled subscribers are accounted apart (`stall.sent`).
            let healthy = plan.on_topic(plan.subscribers, topic) - plan.stalled_on_topic(topic);
            Lane {
                id: l as u32,
                prefix: format!("{{\"type\":\"publish\",\"topic\":\"t{topic}\",\"data\":\"")
                    .into_bytes(),
                healthy,
                topic_sent: stall.sent.get(topic),
                seq: 0,
            }
        })
        .collect();
    let widest = lanes.iter().map(|l| l.healthy).max().unwrap_or(1).max(1);
    let mut sched = Schedule {
        start: Instant::now(),
        per_pub: plan.rate as f64 / plan.publishers as f64,
        phase: j as f64 / plan.publishers as f64,
        sent: 0,
    };
    let (mut turn, count) = (0usize, lanes.len());
    while shared.phase() < phase::DRAIN && !lanes.is_empty() {
        let n = due(&plan, &shared, &lanes[turn], widest, &sched);
        if n == 0 {
            monoio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for _ in 0..n {
            let lane = &mut lanes[turn];
            turn = (turn + 1) % count;
            shared.expected.fetch_add(lane.healthy, Ordering::Relaxed);
            if let Some(c) = lane.topic_sent {
                c.fetch_add(1, Ordering::Relaxed);
            }
            outbox.push_text_with(|b| {
                b.extend_from_slice(&lane.prefix);
                Stamp {
                    kind: b'P',
                    sender: lane.id,
                    seq: lane.seq,
                    sent_ns: now_ns(),
                }
                .write(b, plan.payload);
                b.extend_from_slice(b"\"}");
            });
            lane.seq += 1;
        }
        sched.sent += n;
        shared.sent.fetch_add(n, Ordering::Relaxed);
        if let Err(e) = outbox.flush().await {
            errors.set(format!("publish: {e}"));
            break;
        }
    }
    rd.await;
}
