//! A connection's session: the `welcome` it starts with, what it leaves when it ends, and resuming — from a kept session, or taken over from a connection still open — through the same join and recovery as a `subscribe`.

use std::borrow::Cow;
use std::sync::Arc;

use shardcast::{CloseCode, ConnId, ServerHandle, Ws};

use super::command::Recover;
use super::protocol::{self, send_welcome, welcome_head};
use super::sessions::{new_secret, session_id, Held, Leave, Resume, Saved, Sessions};
use super::{App, SESSION_RESUMED};

impl App {
    /// Opens the connection's session: resumes the one it asked for, or
    /// starts a fresh one; either way the first frame it gets is the
    /// `welcome` (sent here, or once a resumed session's positions are
    /// known).
    pub(crate) fn start_session(&self, ws: &mut Ws<'_, Self>) {
        let client = ws.data().grant.as_ref().and_then(|g| g.sub.clone());
        ws.data_mut().welcomed = true;
        let Some(sessions) = self.sessions.clone() else {
            return send_welcome(ws, None, client.as_deref());
        };
        if !ws.local().session_sweeper.replace(true) {
            monoio::spawn(super::sessions::sweeper(sessions.clone(), ws.core()));
        }
        let Some(asked) = ws.data_mut().resume.take() else {
            return fresh(ws, client.as_deref());
        };
        let to = ws.id();
        match sessions.resume(&asked, client.as_deref(), to) {
            Resume::Fresh => fresh(ws, client.as_deref()),
            Resume::Kept(saved) => {
                let id: Arc<str> = Arc::from(asked);
                ws.data_mut().session = Some(Held::Resumed(id.clone()));
                self.restore(ws, &id, saved);
            }
            Resume::TakeOver(old) => {
                let id = awaiting(ws, asked);
                Ws::<App>::visit(ws.handle(), old, move |old| {
                    take_over(old, sessions, id, to)
                });
            }
            Resume::Ask(origin) => {
                let id = awaiting(ws, asked);
                let handle = ws.handle().clone();
                Ws::<App>::visit(ws.handle(), origin, move |origin| {
                    ask(origin, &handle, sessions, id, client, to)
                });
            }
        }
    }

    /// The connection ends: its session is kept with what it leaves, or
    /// handed to the connection that took it over meanwhile.
    pub(crate) fn end_session(&self, ws: &mut Ws<'_, Self>, code: CloseCode) {
        let (Some(sessions), Some(id)) = (self.sessions.clone(), held_id(ws)) else {
            return;
        };
        if ws.data().awaiting_handoff {
            // Nothing to leave yet: the handoff finds this connection
            // gone and keeps what the previous one left.
            return;
        }
        // 1000 is the client's (the server never closes with it): it
        // closed cleanly and reads what was sent before its close frame
        // was answered. Otherwise only what its TCP acknowledged counts.
        let saved = save(ws, code == CloseCode::NORMAL);
        let client = ws.data().grant.as_ref().and_then(|g| g.sub.clone());
        leave(ws.handle(), sessions, id, ws.id(), client, saved);
    }

    /// The sessions' gauge and counters; `None` when sessions are off.
    pub(crate) fn session_counts(&self) -> Option<super::metrics::SessionCounts> {
        self.sessions.as_ref().map(|s| s.counts())
    }

    /// A connection that authenticated by message: its session belongs
    /// to that identity from now on.
    pub(crate) fn session_identified(&self, ws: &Ws<'_, Self>) {
        let (Some(sessions), Some(Held::Resumed(id))) = (&self.sessions, &ws.data().session) else {
            // A session its opener holds takes the identity from the
            // connection when it is left or taken over.
            return;
        };
        if let Some(sub) = ws.data().grant.as_ref().and_then(|g| g.sub.as_deref()) {
            sessions.identify(id, ws.id(), sub);
        }
    }

    /// Resumes session `id` on `ws` from `saved`: subscribes again, each
    /// history topic from its saved position, and answers with the
    /// resumed `welcome` (the missed messages follow it, then the live
    /// stream, as after a `subscribe` with `recover`).
    fn restore(&self, ws: &mut Ws<'_, Self>, id: &str, saved: Saved) {
        let client = ws.data().grant.as_ref().and_then(|g| g.sub.clone());
        let head = welcome_head(Some(id), client.as_deref(), true);
        let recover: Vec<(Cow<'_, str>, Recover<'_>)> = saved
            .positions
            .iter()
            .map(|(t, offset, epoch)| {
                (
                    Cow::Borrowed(t.as_str()),
                    Recover::Offset {
                        offset: *offset,
                        epoch: Cow::Borrowed(&**epoch),
                    },
                )
            })
            .collect();
        protocol::subscribe(self, ws, &saved.topics, &recover, None, Some(head));
    }
}

/// A fresh session for `ws`, opened by it, and its `welcome`.
fn fresh(ws: &mut Ws<'_, App>, client: Option<&str>) {
    let secret = new_secret();
    let id = session_id(ws.id(), &secret);
    ws.data_mut().session = Some(Held::Own(secret));
    send_welcome(ws, Some(&id), client);
}

/// `ws` resumes session `id` from another connection: it waits for what
/// that one leaves.
fn awaiting(ws: &mut Ws<'_, App>, id: String) -> Arc<str> {
    let id: Arc<str> = Arc::from(id);
    let d = ws.data_mut();
    d.session = Some(Held::Resumed(id.clone()));
    d.awaiting_handoff = true;
    id
}

/// The id of the session `ws` holds.
fn held_id(ws: &Ws<'_, App>) -> Option<Arc<str>> {
    match ws.data().session.as_ref()? {
        Held::Own(secret) => Some(session_id(ws.id(), secret).into()),
        Held::Resumed(id) => Some(id.clone()),
    }
}

/// Whether `ws` holds session `id`.
fn holds(ws: &Ws<'_, App>, id: &str) -> bool {
    match &ws.data().session {
        Some(Held::Own(secret)) => session_id(ws.id(), secret) == id,
        Some(Held::Resumed(held)) => **held == *id,
        None => false,
    }
}

/// Runs on the core of `origin`, the connection session `id` names as its
/// opener, for connection `to` (of identity `client`) resuming it with no
/// record found: if `origin` holds it still (the secret matches) and
/// `client` may have it, `to` takes it over; if not, the records decide
/// (its close, run before this on this core, recorded what it left).
fn ask(
    origin: Option<&mut Ws<'_, App>>,
    handle: &ServerHandle,
    sessions: Arc<Sessions>,
    id: Arc<str>,
    client: Option<String>,
    to: ConnId,
) {
    if let Some(ws) = origin {
        if holds(ws, &id) && matches!(ws.data().session, Some(Held::Own(_))) {
            let owner = ws.data().grant.as_ref().and_then(|g| g.sub.clone());
            if owner.is_some() && owner != client {
                return start_fresh(handle, to);
            }
            if sessions.claim(&id, owner.as_deref(), to) {
                return take_over(Some(ws), sessions, id, to);
            }
        }
    }
    match sessions.resume_recorded(&id, client.as_deref(), to) {
        Resume::Kept(saved) => hand_off(handle, sessions, id, to, saved),
        Resume::TakeOver(old) => {
            Ws::<App>::visit(handle, old, move |old| take_over(old, sessions, id, to))
        }
        Resume::Fresh | Resume::Ask(_) => start_fresh(handle, to),
    }
}

/// What connection `ws` leaves to its session: its topics (those still
/// waiting for a join included) and, per history topic, the later of
/// where its stream began and the last message its client's TCP
/// acknowledged (written, after a `clean` close).
fn save(ws: &Ws<'_, App>, clean: bool) -> Saved {
    let mut topics = ws.topics();
    for p in &ws.data().pending_subs {
        for t in &p.topics {
            if !topics.contains(t) {
                topics.push(t.clone());
            }
        }
    }
    let acked = if clean {
        ws.written_positions()
    } else {
        ws.acked_positions()
    }
    .unwrap_or_default();
    let positions = ws
        .data()
        .bases
        .iter()
        .filter(|(t, _, _)| topics.contains(t))
        .map(|(t, base, epoch)| {
            let got = acked
                .iter()
                .find(|(k, _)| **k == **t)
                .map_or(0, |(_, o)| *o);
            (t.clone(), (*base).max(got), epoch.clone())
        })
        .collect();
    Saved { topics, positions }
}

/// Keeps session `id` with `saved` as connection `conn` leaves it, or
/// hands `saved` to the connection that took the session over.
fn leave(
    handle: &ServerHandle,
    sessions: Arc<Sessions>,
    id: Arc<str>,
    conn: ConnId,
    client: Option<String>,
    saved: Saved,
) {
    if let Leave::HandOff(to) = sessions.leave(&id, conn, client.as_deref(), saved.clone()) {
        hand_off(handle, sessions, id, to, saved);
    }
}

/// Runs on the core of `old`, the connection that held session `id` when
/// connection `to` asked for it: its state is read now (what its client
/// acknowledged up to this moment), it is closed with 4001, and `to`
/// resumes from that state. If `old` is already gone, its close did the
/// handoff.
fn take_over(old: Option<&mut Ws<'_, App>>, sessions: Arc<Sessions>, id: Arc<str>, to: ConnId) {
    let Some(ws) = old else {
        return;
    };
    if !holds(ws, &id) || ws.data().awaiting_handoff {
        // Itself still waiting for the state of the one before: that
        // handoff finds it closing and hands the state on to `to`.
        ws.close(SESSION_RESUMED, "session resumed");
        return;
    }
    let saved = save(ws, false);
    // Its close must neither keep the session nor hand it off again.
    ws.data_mut().session = None;
    // What it had not started writing goes to the new connection anyway.
    ws.close_discarding(SESSION_RESUMED, "session resumed");
    hand_off(ws.handle(), sessions, id, to, saved);
}

/// Resumes session `id` on connection `to` from `saved`, on `to`'s core;
/// if `to` is gone by then, the session is kept with `saved` (or handed
/// on to whoever took it over since).
fn hand_off(
    handle: &ServerHandle,
    sessions: Arc<Sessions>,
    id: Arc<str>,
    to: ConnId,
    saved: Saved,
) {
    let h = handle.clone();
    Ws::<App>::visit(handle, to, move |ws| match ws {
        Some(ws) if ws.data().awaiting_handoff && ws.is_open() => {
            ws.data_mut().awaiting_handoff = false;
            let app = ws.handler();
            app.restore(ws, &id, saved);
        }
        // Gone or closing (taken over again while it waited): the
        // session is kept with the state, or handed on to whoever holds
        // it now.
        _ => leave(&h, sessions, id, to, None, saved),
    });
}

/// Connection `to`, which asked for a session no connection or record
/// holds, starts a fresh one (if it is still open and waiting).
fn start_fresh(handle: &ServerHandle, to: ConnId) {
    Ws::<App>::visit(handle, to, |ws| {
        if let Some(ws) = ws.filter(|ws| ws.data().awaiting_handoff && ws.is_open()) {
            ws.data_mut().awaiting_handoff = false;
            let client = ws.data().grant.as_ref().and_then(|g| g.sub.clone());
            fresh(ws, client.as_deref());
        }
    });
}
