//! One core's auth deadlines and token expiries, enforced by one sweeper task per core rather than a timer per connection.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use shardcast::{CloseCode, ConnId, ServerHandle};

use super::auth::unix_now;
use super::protocol::error_frame;

/// How often the sweeper looks: the resolution of both deadlines.
const SWEEP: Duration = Duration::from_millis(250);

/// A core's deadlines (part of the server's per-core state).
#[derive(Default)]
pub(crate) struct Deadlines {
    inner: Rc<RefCell<Inner>>,
    /// Whether this core's sweeper runs.
    sweeper: Cell<bool>,
}

#[derive(Default)]
struct Inner {
    /// Connections that still owe an `auth` message, in deadline order
    /// (every connection gets the same timeout)...
    auth: VecDeque<(ConnId, Instant)>,
    /// ...and the set of those still waiting, so that authenticating or
    /// leaving costs O(1) and the sweeper skips those.
    waiting: FxHashSet<ConnId>,
    /// Token expiries in time order: (exp, id as u64) → id.
    expiries: BTreeMap<(u64, u64), ConnId>,
    /// Each connection's current expiry; a refreshed token replaces it,
    /// so the older queue entry no longer matches and is skipped.
    expiry_of: FxHashMap<ConnId, u64>,
}

impl Deadlines {
    /// `id` must authenticate by `deadline` or be closed with 1008.
    pub(crate) fn await_auth(&self, handle: &ServerHandle, id: ConnId, deadline: Instant) {
        {
            let mut d = self.inner.borrow_mut();
            d.auth.push_back((id, deadline));
            d.waiting.insert(id);
        }
        self.ensure_sweeper(handle);
    }

    /// `id` authenticated: its auth deadline no longer applies.
    pub(crate) fn authenticated(&self, id: ConnId) {
        self.inner.borrow_mut().waiting.remove(&id);
    }

    /// `id`'s token expires at `exp` (seconds since the epoch): then it is
    /// closed with 1008, unless a newer token replaced it first.
    pub(crate) fn watch_expiry(&self, handle: &ServerHandle, id: ConnId, exp: u64) {
        {
            let mut d = self.inner.borrow_mut();
            d.expiry_of.insert(id, exp);
            d.expiries.insert((exp, id.as_u64()), id);
        }
        self.ensure_sweeper(handle);
    }

    /// `id` is gone.
    pub(crate) fn forget(&self, id: ConnId) {
        let mut d = self.inner.borrow_mut();
        d.waiting.remove(&id);
        d.expiry_of.remove(&id);
    }

    fn ensure_sweeper(&self, handle: &ServerHandle) {
        if !self.sweeper.replace(true) {
            monoio::spawn(sweeper(handle.clone(), self.inner.clone()));
        }
    }
}

/// Closes this core's connections that missed their auth deadline or
/// whose token expired.
async fn sweeper(handle: ServerHandle, inner: Rc<RefCell<Inner>>) {
    let timeout = error_frame("unauthorized", "authentication timeout", None, &[]);
    let expired_frame = error_frame("unauthorized", "token expired", None, &[]);
    loop {
        monoio::time::sleep(SWEEP).await;
        let (now, unix) = (Instant::now(), unix_now());
        let (mut late, mut expired) = (Vec::new(), Vec::new());
        {
            let mut d = inner.borrow_mut();
            while d.auth.front().is_some_and(|(_, t)| *t <= now) {
                let (id, _) = d.auth.pop_front().expect("front exists");
                if d.waiting.remove(&id) {
                    late.push(id);
                }
            }
            while let Some((&(exp, key), &id)) = d.expiries.first_key_value() {
                if exp > unix {
                    break;
                }
                d.expiries.remove(&(exp, key));
                if d.expiry_of.get(&id) == Some(&exp) {
                    d.expiry_of.remove(&id);
                    expired.push(id);
                }
            }
        }
        for id in late {
            tracing::debug!(conn = ?id, "authentication deadline passed");
            handle.send(id, &timeout);
            handle.close(id, CloseCode::POLICY_VIOLATION, "authentication timeout");
        }
        for id in expired {
            tracing::debug!(conn = ?id, "token expired");
            handle.send(id, &expired_frame);
            handle.close(id, CloseCode::POLICY_VIOLATION, "token expired");
        }
    }
}
