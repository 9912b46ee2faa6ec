//! Fanout: a frame queued for a core's local subscribers, and the one function that hands it to the other interested cores.

use std::sync::Arc;

pub(crate) use crate::conn::Publication;
use crate::conn::{ConnId, ConnTable, SendStatus};
use crate::mesh::{CoreMsg, Mesh, Tally};
use crate::pubsub::CoreSet;

/// What a publish reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishResult {
    /// Local subscribers the frame was queued for.
    pub delivered: usize,
    /// Local subscribers skipped by the slow-consumer policy.
    pub dropped: usize,
    /// Other cores the frame was forwarded to (their counts arrive there).
    pub remote_cores: usize,
}

/// The cores other than `here` with interest in `topic`'s bucket.
pub(crate) fn interested_cores(mesh: &Mesh, topic: &str, here: Option<usize>) -> CoreSet {
    let interest = mesh.interest();
    let mut set = interest.snapshot(interest.bucket(topic));
    if let Some(c) = here {
        set.remove(c);
    }
    set
}

/// Hands `frame` to each core of `cores`, once per core whatever its
/// number of subscribers; each adds its counts to `tally` if given.
pub(crate) fn to_cores(
    mesh: &Mesh,
    cores: &CoreSet,
    topic: &str,
    frame: &Publication,
    exclude: Option<ConnId>,
    tally: Option<&Arc<Tally>>,
) {
    if cores.is_empty() {
        return;
    }
    let topic: Arc<str> = Arc::from(topic);
    for c in cores.iter() {
        let queued = mesh.send_publish(
            c,
            CoreMsg::Publish {
                topic: topic.clone(),
                frame: frame.clone(),
                exclude,
                tally: tally.cloned(),
            },
        );
        if !queued {
            // That core will not answer: complete its part of the count.
            if let Some(t) = tally {
                t.add(0, 0);
            }
        }
    }
}

/// Hands a broadcast `frame` to every core but `here`, once per core;
/// returns how many cores it was queued for (a full inbox refuses it, as
/// it refuses a publish).
pub(crate) fn broadcast_to_cores(
    mesh: &Mesh,
    here: Option<usize>,
    frame: &Publication,
    exclude: Option<ConnId>,
) -> usize {
    (0..mesh.cores())
        .filter(|&c| Some(c) != here)
        .filter(|&c| {
            mesh.send_publish(
                c,
                CoreMsg::Broadcast {
                    frame: frame.clone(),
                    exclude,
                },
            )
        })
        .count()
}

/// Queues `p` for each of `subs` but `exclude`: (delivered, dropped).
pub(crate) fn deliver<D>(
    conns: &mut ConnTable<D>,
    subs: &[u32],
    p: &Publication,
    exclude: Option<u32>,
) -> (usize, usize) {
    let (mut delivered, mut dropped, mut bytes) = (0, 0, 0);
    // This core's copy of the compressed frame, once a subscriber needs it.
    let mut local = None;
    for &s in subs {
        if Some(s) == exclude {
            continue;
        }
        match conns.deliver(s, p, &mut local) {
            (SendStatus::Dropped, _) => dropped += 1,
            (_, n) => {
                delivered += 1;
                bytes += n;
            }
        }
    }
    let st = conns.stats();
    st.deliveries.bump(delivered as u64);
    st.bytes_out.bump(bytes as u64);
    (delivered, dropped)
}
