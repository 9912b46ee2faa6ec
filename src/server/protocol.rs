//! The client protocol: JSON text frames in (parsed with simd-json), replies, errors and published messages out. See PROTOCOL.md.

use std::sync::atomic::Ordering;
use std::time::Instant;

use shardcast::proto::OpCode;
use shardcast::{
    CloseCode, Message, PreparedFrame, Since, StatsSnapshot, StreamJoin, StreamPosition, Ws,
};

use super::auth::unix_now;
use super::command::{
    error_json, parse_command, reply_json, topics_reply_json, Command, CommandError, Op, Recover,
};
use super::json::push_str;
use super::{App, PubLimit, SubLimit};

/// The `error` reply as a text frame.
pub(crate) fn error_frame(
    code: &str,
    message: &str,
    id: Option<&[u8]>,
    topics: &[&str],
) -> PreparedFrame {
    PreparedFrame::from_parts(OpCode::Text, &[&error_json(code, message, id, topics)])
}

/// The frame every subscriber receives: built once, `data` spliced in as
/// the publisher wrote it.
pub fn message_frame(topic: &str, data: &[u8]) -> PreparedFrame {
    let mut head = Vec::with_capacity(40 + topic.len());
    head.extend_from_slice(b"{\"type\":\"message\",\"topic\":");
    push_str(&mut head, topic);
    head.extend_from_slice(b",\"data\":");
    PreparedFrame::from_parts(OpCode::Text, &[&head, data, b"}"])
}

/// A history topic's `message` frame completed with its position:
/// `{"type":"message","topic":..,"data":..,"offset":N,"epoch":"E"}`. Made
/// once per publication, on the topic's home core.
pub(crate) fn with_position(
    _topic: &str,
    frame: &PreparedFrame,
    pos: &StreamPosition,
) -> PreparedFrame {
    let payload = frame.payload();
    let Some(body) = payload.strip_suffix(b"}") else {
        return frame.clone();
    };
    let mut tail = Vec::with_capacity(48);
    tail.extend_from_slice(b",\"offset\":");
    tail.extend_from_slice(pos.offset.to_string().as_bytes());
    tail.extend_from_slice(b",\"epoch\":");
    push_str(&mut tail, &pos.epoch);
    tail.push(b'}');
    PreparedFrame::from_parts(OpCode::Text, &[body, &tail])
}

/// The topic and offset of a history topic's `message` payload, as
/// [`with_position`] made it; `None` for anything else (replies, messages
/// of topics without history, a topic name with escapes). The envelope's
/// `offset` and `epoch` are its last fields, after `data`: a `data` value
/// cannot end the payload that way (its own fields would be followed by
/// its closing brace), so reading from the end is exact.
pub(crate) fn read_position(payload: &[u8]) -> Option<(&str, u64)> {
    const HEAD: &[u8] = b"{\"type\":\"message\",\"topic\":\"";
    let rest = payload.strip_prefix(HEAD)?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    let topic = std::str::from_utf8(&rest[..end]).ok()?;
    // ...,"offset":N,"epoch":"E"}
    let body = payload.strip_suffix(b"\"}")?;
    let q = body.iter().rposition(|&b| b == b'"')?;
    let epoch = &body[q + 1..];
    if epoch.contains(&b'\\') {
        return None;
    }
    let body = body[..q].strip_suffix(b",\"epoch\":")?;
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (body, num) = body.split_at(body.len() - digits);
    body.strip_suffix(b",\"offset\":")?;
    let offset = std::str::from_utf8(num).ok()?.parse().ok()?;
    Some((topic, offset))
}

/// The start of a `welcome`: `{"type":"welcome","session":..,"client":..,"resumed":..`,
/// without its closing brace.
pub(crate) fn welcome_head(session: Option<&str>, client: Option<&str>, resumed: bool) -> Vec<u8> {
    let mut out = b"{\"type\":\"welcome\",\"session\":".to_vec();
    match session {
        Some(s) => push_str(&mut out, s),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"client\":");
    match client {
        Some(c) => push_str(&mut out, c),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(if resumed {
        b",\"resumed\":true"
    } else {
        b",\"resumed\":false"
    });
    out
}

/// Sends a `welcome` (a fresh session, or none).
pub(crate) fn send_welcome(ws: &mut Ws<'_, App>, session: Option<&str>, client: Option<&str>) {
    let mut out = welcome_head(session, client, false);
    out.push(b'}');
    send_json(ws, &out);
}

/// Why a topic name is refused, if it is.
pub(crate) fn topic_problem(topic: &str, max: usize) -> Option<String> {
    if topic.is_empty() {
        Some("empty topic".into())
    } else if topic.len() > max {
        Some(format!("topic longer than {max} bytes"))
    } else if topic.chars().any(char::is_control) {
        Some("topic contains control characters".into())
    } else {
        None
    }
}

fn send_error(app: &App, ws: &mut Ws<'_, App>, code: &str, msg: &str, id: Option<&[u8]>) {
    send_error_topics(app, ws, code, msg, id, &[]);
}

fn send_error_topics(
    app: &App,
    ws: &mut Ws<'_, App>,
    code: &str,
    msg: &str,
    id: Option<&[u8]>,
    topics: &[&str],
) {
    app.counters(ws.core()).error(code);
    ws.send_prepared(&error_frame(code, msg, id, topics));
}

fn send_command_error(app: &App, ws: &mut Ws<'_, App>, e: &CommandError<'_>) {
    app.counters(ws.core()).error(e.code);
    ws.send_prepared(&PreparedFrame::from_parts(OpCode::Text, &[&e.to_json()]));
}

fn send_json(ws: &mut Ws<'_, App>, out: &[u8]) {
    ws.send_prepared(&PreparedFrame::from_parts(OpCode::Text, &[out]));
}

/// Handles one client message. Every message gets an answer or an error,
/// except `publish` without an `id`, whose answer is the delivery itself.
pub(crate) fn on_message(app: &App, ws: &mut Ws<'_, App>, msg: Message<'_>) {
    let text = match msg {
        Message::Text(t) => t,
        Message::Binary(_) => {
            return send_error(
                app,
                ws,
                "bad_request",
                "binary messages are not supported; send JSON text",
                None,
            );
        }
    };
    let local = ws.local();
    let mut buf = local.scratch.borrow_mut();
    match parse_command(text.as_bytes(), &mut buf, app.settings.max_topic_length) {
        Ok(cmd) => dispatch(app, ws, cmd),
        Err(e) => {
            if !e.needs_grant || granted(app, ws, e.id) {
                send_command_error(app, ws, &e);
            }
        }
    }
}

/// Whether the connection holds a live grant; if not, answers so (and
/// closes on an expired token).
fn granted(app: &App, ws: &mut Ws<'_, App>, id: Option<&[u8]>) -> bool {
    let Some(grant) = &ws.data().grant else {
        send_error(
            app,
            ws,
            "unauthorized",
            "authenticate first: send {\"type\":\"auth\",\"token\":...}",
            id,
        );
        return false;
    };
    if grant.expired(unix_now()) {
        app.counters(ws.core())
            .auth_failed
            .fetch_add(1, Ordering::Relaxed);
        send_error(app, ws, "unauthorized", "token expired", id);
        ws.close(CloseCode::POLICY_VIOLATION, "token expired");
        return false;
    }
    true
}

fn dispatch(app: &App, ws: &mut Ws<'_, App>, cmd: Command<'_>) {
    let id = cmd.id;
    match cmd.op {
        Op::Ping => send_json(ws, &reply_json("pong", id)),
        Op::Auth { token } => auth(app, ws, &token, id),
        _ if !granted(app, ws, id) => {}
        Op::Subscribe { topics, recover } => subscribe(app, ws, &topics, &recover, id, None),
        Op::Unsubscribe { topics } => unsubscribe(app, ws, &topics, id),
        Op::Publish { topic, data } => publish(app, ws, &topic, &data, id),
    }
}

fn auth(app: &App, ws: &mut Ws<'_, App>, token: &str, id: Option<&[u8]>) {
    let counters = app.counters(ws.core());
    let grant = match &app.verifier {
        None => app.anonymous.clone(),
        Some(verifier) => match verifier.verify(token) {
            Ok(g) => std::sync::Arc::new(g),
            Err(e) => {
                tracing::debug!(peer = %ws.remote_addr(), error = %e, "auth message refused");
                counters.auth_failed.fetch_add(1, Ordering::Relaxed);
                send_error(app, ws, "unauthorized", &e.to_string(), id);
                return ws.close(CloseCode::POLICY_VIOLATION, "unauthorized");
            }
        },
    };
    if app.verifier.is_some() {
        counters.auth_ok.fetch_add(1, Ordering::Relaxed);
    }
    let mut out = b"{\"type\":\"authenticated\"".to_vec();
    if let Some(sub) = &grant.sub {
        out.extend_from_slice(b",\"sub\":");
        push_str(&mut out, sub);
    }
    super::command::push_id(&mut out, id);
    out.push(b'}');
    let deadlines = &ws.local().deadlines;
    deadlines.authenticated(ws.id());
    if let Some(exp) = grant.exp {
        // A token sent before the old one expired extends the connection.
        deadlines.watch_expiry(ws.handle(), ws.id(), exp);
    }
    ws.data_mut().grant = Some(grant);
    if !app.identify(ws) {
        return;
    }
    app.session_identified(ws);
    send_json(ws, &out);
}

/// Subscribes to `topics` from the positions in `recover`, answering with
/// `subscribed` — or, for a resumed session, with `welcome` (its head in
/// `welcome`), which is then sent even if every topic was refused.
pub(crate) fn subscribe<S: AsRef<str>>(
    app: &App,
    ws: &mut Ws<'_, App>,
    topics: &[S],
    recover: &[(std::borrow::Cow<'_, str>, Recover<'_>)],
    id: Option<&[u8]>,
    welcome: Option<Vec<u8>>,
) {
    let s = &app.settings;
    let mut ok: Vec<&str> = Vec::with_capacity(topics.len());
    let (mut invalid, mut forbidden) = (Vec::new(), Vec::new());
    // Refused by each limit, in the order of `SubLimit`.
    let mut over: [Vec<&str>; 4] = Default::default();
    let mut count = ws.subscription_count() + ws.data().pending_gated;
    let mut added = 0i64;
    // History topics: where each subscription starts.
    let mut joins: Vec<(&str, Since)> = Vec::new();
    let mut gated = 0;
    // A resumed session's topics without history: reserved now, and
    // subscribed once the history topics' positions are known, so that
    // nothing reaches the client before its welcome.
    let mut later: Vec<(String, bool)> = Vec::new();
    // A topic listed more than once is handled (and answered) once.
    let mut seen = rustc_hash::FxHashSet::default();
    for t in topics.iter().map(AsRef::as_ref) {
        if !seen.insert(t) {
            continue;
        }
        let since = app.settings.history_policy(t).map(|_| {
            match recover.iter().find(|(r, _)| r == t).map(|(_, r)| r) {
                Some(Recover::Offset { offset, epoch }) => Since::Offset {
                    offset: *offset,
                    epoch: epoch.to_string(),
                },
                Some(Recover::Latest) => Since::Latest,
                None => Since::Now,
            }
        });
        // A history topic is subscribed by its join once the home core
        // answered, so the reply with the position comes before any
        // message (a topic already subscribed from now on only asks its
        // position).
        let deferred = since.is_some();
        if topic_problem(t, s.max_topic_length).is_some() {
            invalid.push(t);
        } else if !ws.data().grant.as_ref().is_some_and(|g| g.read.allows(t)) {
            forbidden.push(t);
        } else if ws.is_subscribed(t) {
            ok.push(t);
            if let Some(since) = since {
                // Re-joined from a position: out of the registry meanwhile.
                gated += usize::from(since != Since::Now);
                joins.push((t, since));
            }
        } else if count >= s.max_subscriptions {
            over[SubLimit::Connection as usize].push(t);
        } else {
            match app.reserve_subscription(ws, t) {
                Err(limit) => over[limit as usize].push(t),
                Ok(_) if deferred => {
                    count += 1;
                    added += 1;
                    gated += 1;
                    ok.push(t);
                    joins.push((t, since.expect("deferred means history")));
                }
                Ok(creates) if welcome.is_some() => {
                    count += 1;
                    added += 1;
                    ok.push(t);
                    later.push((t.to_owned(), creates));
                }
                Ok(_) if ws.subscribe(t) == Ok(true) => {
                    count += 1;
                    added += 1;
                    ok.push(t);
                }
                // Closing: nothing was added.
                Ok(creates) => app.release_subscription(ws, 1, usize::from(creates)),
            }
        }
    }
    let counters = app.counters(ws.core());
    counters.subscriptions.fetch_add(added, Ordering::Relaxed);
    for (limit, refused) in over.iter().enumerate() {
        counters.subscriptions_refused[limit].fetch_add(refused.len() as u64, Ordering::Relaxed);
    }
    let none_over = over.iter().all(Vec::is_empty);
    // The join's token, when the reply waits for positions.
    let mut token = 0;
    if joins.is_empty() {
        subscribe_later(app, ws, later);
        later = Vec::new();
    }
    if !joins.is_empty() {
        // The reply waits for the positions (`joined`), and the history
        // it replays follows the reply.
        token = {
            let d = ws.data_mut();
            d.next_join += 1;
            d.next_join
        };
        gated += later.len();
        // A session tracks what its peer acknowledged from its first
        // history topic on (before anything of it is queued): a connection
        // without one pays nothing for it.
        if ws.data().session.is_some() && ws.acked_entries() == 0 && ws.acked_positions().is_none()
        {
            ws.track_acks(read_position);
        }
        if ws.join(&joins, token).is_ok() {
            let d = ws.data_mut();
            d.pending_gated += gated;
            d.pending_subs.push(super::PendingSub {
                token,
                id: id.map(<[u8]>::to_vec),
                topics: ok.iter().map(|t| (*t).to_owned()).collect(),
                recovering: joins
                    .iter()
                    .filter(|(_, s)| *s != Since::Now)
                    .map(|(t, _)| (*t).to_owned())
                    .collect(),
                gated,
                after: Vec::new(),
                welcome,
                later,
            });
        }
    } else if let Some(mut head) = welcome {
        head.extend_from_slice(b",\"topics\":");
        super::json::push_str_array(&mut head, &ok);
        head.push(b'}');
        send_json(ws, &head);
    } else if !ok.is_empty() || (invalid.is_empty() && forbidden.is_empty() && none_over) {
        send_json(ws, &topics_reply_json("subscribed", &ok, id));
    }
    let mut errors: Vec<(&str, String, Vec<&str>)> = Vec::new();
    if !invalid.is_empty() {
        let m = format!(
            "invalid topic names (1 to {} bytes, no control characters)",
            s.max_topic_length
        );
        errors.push(("bad_request", m, invalid));
    }
    if !forbidden.is_empty() {
        let m = "not allowed to subscribe to these topics".to_owned();
        errors.push(("forbidden", m, forbidden));
    }
    for (limit, refused) in over.iter().enumerate() {
        if refused.is_empty() {
            continue;
        }
        let m = match limit {
            0 => format!(
                "at most {} subscriptions per connection",
                s.max_subscriptions
            ),
            1 => format!(
                "at most {} subscriptions per address",
                s.max_subscriptions_per_ip
            ),
            2 => format!(
                "the server holds its limit of {} subscriptions",
                s.max_total_subscriptions
            ),
            _ => format!("the server holds its limit of {} topics", s.max_topics),
        };
        errors.push(("too_many_subscriptions", m, refused.clone()));
    }
    for (code, m, topics) in &errors {
        app.counters(ws.core()).error(code);
        let frame = error_frame(code, m, id, topics);
        // After the `subscribed` reply, which waits for the positions.
        match ws.data_mut().pending_subs.last_mut() {
            Some(p) if p.token == token => p.after.push(frame),
            _ => {
                ws.send_prepared(&frame);
            }
        }
    }
}

/// Subscribes the topics a resumed session reserved (see `subscribe`).
fn subscribe_later(app: &App, ws: &mut Ws<'_, App>, later: Vec<(String, bool)>) {
    for (t, creates) in later {
        if ws.subscribe(&t) != Ok(true) {
            // Closing: nothing was added.
            app.release_subscription(ws, 1, usize::from(creates));
            app.counters(ws.core())
                .subscriptions
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The positions of a subscribe's history topics arrived: the
/// `subscribed` reply, with `streams`; the replayed publications follow.
pub(crate) fn joined(ws: &mut Ws<'_, App>, token: u64, joins: &[StreamJoin]) {
    let d = ws.data_mut();
    let Some(i) = d.pending_subs.iter().position(|p| p.token == token) else {
        return;
    };
    let p = d.pending_subs.swap_remove(i);
    d.pending_gated -= p.gated;
    // Where each topic's stream stands for this client: what follows on
    // this connection (replayed or live) is tracked from here.
    for j in joins {
        let base = j.position.offset.saturating_sub(j.replayed as u64);
        let entry = (j.topic.clone(), base, j.position.epoch.clone());
        match d.bases.iter_mut().find(|(t, _, _)| *t == j.topic) {
            Some(b) => *b = entry,
            None => d.bases.push(entry),
        }
    }
    let app = ws.handler();
    subscribe_later(app, ws, p.later);
    let mut out = match p.welcome {
        Some(mut head) => {
            head.extend_from_slice(b",\"topics\":");
            super::json::push_str_array(&mut head, &p.topics);
            head.push(b'}');
            head
        }
        None => topics_reply_json("subscribed", &p.topics, p.id.as_deref()),
    };
    out.pop();
    out.extend_from_slice(b",\"streams\":{");
    for (k, j) in joins.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        push_str(&mut out, &j.topic);
        out.extend_from_slice(b":{\"offset\":");
        out.extend_from_slice(j.position.offset.to_string().as_bytes());
        out.extend_from_slice(b",\"epoch\":");
        push_str(&mut out, &j.position.epoch);
        if p.recovering.contains(&j.topic) {
            out.extend_from_slice(if j.recovered {
                b",\"recovered\":true"
            } else {
                b",\"recovered\":false"
            });
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    send_json(ws, &out);
    for frame in &p.after {
        ws.send_prepared(frame);
    }
}

fn unsubscribe<S: AsRef<str>>(app: &App, ws: &mut Ws<'_, App>, topics: &[S], id: Option<&[u8]>) {
    let (mut removed, mut emptied) = (0usize, 0usize);
    for t in topics {
        if ws.unsubscribe(t.as_ref()) {
            removed += 1;
            if app.settings.max_topics > 0 && ws.local_subscriber_count(t.as_ref()) == 0 {
                emptied += 1;
            }
        }
    }
    app.release_subscription(ws, removed, emptied);
    app.counters(ws.core())
        .subscriptions
        .fetch_sub(removed as i64, Ordering::Relaxed);
    send_json(ws, &topics_reply_json("unsubscribed", topics, id));
}

/// Takes one token from the connection's publish bucket.
fn take_token(app: &App, ws: &mut Ws<'_, App>) -> bool {
    let rate = app.settings.publish_rate;
    if rate <= 0.0 {
        return true;
    }
    let burst = f64::from(app.settings.publish_burst.max(1));
    let c = ws.data_mut();
    let now = Instant::now();
    let elapsed = now.duration_since(c.filled).as_secs_f64();
    c.filled = now;
    c.tokens = (c.tokens + elapsed * rate).min(burst);
    if c.tokens >= 1.0 {
        c.tokens -= 1.0;
        true
    } else {
        false
    }
}

fn publish(app: &App, ws: &mut Ws<'_, App>, topic: &str, data: &[u8], id: Option<&[u8]>) {
    let allowed = !topic.starts_with('$')
        && ws
            .data()
            .grant
            .as_ref()
            .is_some_and(|g| g.write.allows(topic));
    if !allowed {
        let m = "not allowed to publish to this topic";
        return send_error_topics(app, ws, "forbidden", m, id, &[topic]);
    }
    let refused = if take_token(app, ws) {
        let local = ws.local();
        app.take_publishes(local, ws.data().per_ip.as_deref(), 1)
            .err()
            .map(|(limit, _)| limit)
    } else {
        Some(PubLimit::Connection)
    };
    if let Some(limit) = refused {
        app.counters(ws.core()).publishes_refused[limit as usize].fetch_add(1, Ordering::Relaxed);
        let s = &app.settings;
        let m = match limit {
            PubLimit::Address => format!(
                "publish rate of this address over {} per second (burst {})",
                s.publish_rate_per_ip, s.publish_burst_per_ip
            ),
            PubLimit::Server => format!(
                "the server's publish rate is over {} per second (burst {})",
                s.server_publish_rate, s.server_publish_burst
            ),
            _ => format!(
                "publish rate over {} per second (burst {})",
                s.publish_rate, s.publish_burst
            ),
        };
        return send_error(app, ws, "rate_limited", &m, id);
    }
    app.counters(ws.core())
        .ws_publishes
        .fetch_add(1, Ordering::Relaxed);
    let frame = message_frame(topic, data);
    match id {
        None => {
            ws.publish(topic, &frame, true);
        }
        Some(id) => {
            // The ack carries the count over every core: the last core to
            // queue the frame sends it through the publisher's inbox.
            let mut ack = b"{\"type\":\"published\",\"id\":".to_vec();
            ack.extend_from_slice(id);
            ack.extend_from_slice(b",\"delivered\":");
            let handle = ws.handle().clone();
            let me = ws.id();
            let app_counters = app.counters_arc();
            let core = ws.core();
            let started = Instant::now();
            ws.publish_counted(topic, &frame, true, move |report| {
                app_counters[core.min(app_counters.len() - 1)]
                    .fanout_latency
                    .observe(started.elapsed());
                ack.extend_from_slice(report.delivered.to_string().as_bytes());
                ack.push(b'}');
                handle.send(me, &PreparedFrame::from_parts(OpCode::Text, &[&ack]));
            });
        }
    }
}

/// The `data` of a `$sys.stats` message: totals and per-core rates over
/// the last interval.
pub(crate) fn stats_json(
    prev: &[StatsSnapshot],
    cur: &[StatsSnapshot],
    dt: f64,
    uptime: f64,
) -> String {
    use std::fmt::Write;
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / dt;
    let mut cores = String::new();
    let (mut conns, mut msgs, mut dels, mut pubs, mut bytes) = (0u64, 0.0, 0.0, 0.0, 0.0);
    for (i, (p, c)) in prev.iter().zip(cur).enumerate() {
        let (m, d, pb, b) = (
            rate(p.messages_in, c.messages_in),
            rate(p.deliveries, c.deliveries),
            rate(p.publishes, c.publishes),
            rate(p.write_bytes, c.write_bytes),
        );
        conns += c.active;
        msgs += m;
        dels += d;
        pubs += pb;
        bytes += b;
        if i > 0 {
            cores.push(',');
        }
        let _ = write!(
            cores,
            "{{\"core\":{i},\"connections\":{},\"messages_in_per_s\":{m:.1},\"deliveries_per_s\":{d:.1},\"publishes_per_s\":{pb:.1},\"bytes_out_per_s\":{b:.0}}}",
            c.active
        );
    }
    format!(
        "{{\"uptime_s\":{uptime:.0},\"connections\":{conns},\"messages_in_per_s\":{msgs:.1},\"deliveries_per_s\":{dels:.1},\"publishes_per_s\":{pubs:.1},\"bytes_out_per_s\":{bytes:.0},\"cores\":[{cores}]}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn positioned(topic: &str, data: &[u8], offset: u64) -> Vec<u8> {
        let pos = StreamPosition {
            offset,
            epoch: Arc::from("x3f9a01c"),
        };
        with_position(topic, &message_frame(topic, data), &pos)
            .payload()
            .to_vec()
    }

    #[test]
    fn a_history_message_gives_its_topic_and_offset_back() {
        let p = positioned("chat.1", br#"{"offset":3,"epoch":"y"}"#, 42);
        assert_eq!(read_position(&p), Some(("chat.1", 42)));
        assert_eq!(
            read_position(&positioned("t", b"\"a,\\\"offset\\\":9\"", 7)),
            Some(("t", 7))
        );
        // A topic with an escape is not read (its message is then resent
        // on a resume, never lost).
        assert_eq!(read_position(&positioned("a\"b", b"1", 5)), None);
    }

    #[test]
    fn other_frames_give_no_position() {
        // A message without history whose data ends like a position.
        let plain = message_frame("t", br#"{"offset":3,"epoch":"y"}"#);
        assert_eq!(read_position(plain.payload()), None);
        let plain = message_frame("t", br#"{"a":1,"offset":3}"#);
        assert_eq!(read_position(plain.payload()), None);
        for reply in [
            &br#"{"type":"pong","id":1}"#[..],
            br#"{"type":"subscribed","topics":["t"],"streams":{"t":{"offset":4,"epoch":"e"}}}"#,
            b"",
        ] {
            assert_eq!(read_position(reply), None);
        }
    }
}
