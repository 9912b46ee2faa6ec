//! A published frame as the fanout carries it to every core, and the one copy a core makes of a frame from another core.

use std::sync::Arc;

use bytes::Bytes;

use crate::proto::deflate::{split, SharedDeflate};

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
