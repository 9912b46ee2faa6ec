//! Fanout: a frame queued for a core's local subscribers, and the one function that hands it to the other interested cores.

use std::sync::Arc;

use bytes::Bytes;

use crate::conn::{ConnId, ConnTable, SendStatus};
use crate::mesh::{CoreMsg, Mesh, Tally};
use crate::proto::deflate::{split, SharedDeflate};
use crate::pubsub::CoreSet;

/// A published frame as the fanout carries it to every core: the plain
/// frame, encoded once, and — when compression is on and the message is
/// long enough — the cell its compressed frame is made in, once, by the
/// first core with a subscriber that negotiated permessage-deflate.
#[derive(Clone, Debug)]
pub(crate) struct Publication {
    pub(crate) frame: Bytes,
    pub(crate) deflated: Option<Arc<SharedDeflate>>,
}

impl Publication {
    /// `frame` (a whole final server frame); with compression on
    /// (`threshold`), a Text or Binary message at least that long gets the
    /// cell for its compressed frame.
    pub(crate) fn new(frame: Bytes, threshold: Option<usize>) -> Self {
        let deflated = threshold
            .filter(|&t| split(&frame).is_some_and(|(_, p)| p.len() >= t))
            .map(|_| Arc::new(SharedDeflate::new()));
        Self { frame, deflated }
    }

    /// This publication with its plain frame copied into this core's
    /// memory when it has several subscribers here (see [`localize`]).
    pub(crate) fn localize(self, subscribers: usize) -> Self {
        Self {
            frame: localize(self.frame, subscribers),
            deflated: self.deflated,
        }
    }
}

/// Frames up to this size that arrive from another core are copied once
/// into core-local memory before the per-subscriber clones.
const LOCAL_COPY_MAX: usize = 64 << 10;

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

/// A frame that arrived from another core, ready for `subscribers` local
/// clones. Every clone bumps the frame's reference count; shared with
/// other cores, that count's cache line would bounce between them once per
/// subscriber, so the frame is first copied once into core-local memory
/// (unless it has one subscriber here, or is large and has few).
pub(crate) fn localize(frame: Bytes, subscribers: usize) -> Bytes {
    if subscribers > 1 && (frame.len() <= LOCAL_COPY_MAX || subscribers >= 16) {
        Bytes::copy_from_slice(&frame)
    } else {
        frame
    }
}
