//! HTTP on the WebSocket port: `POST /api/publish`, `GET /healthz`, `GET /metrics`, `GET /` (the status page).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use shardcast::cluster::BrokerState;
use shardcast::proto::handshake::{percent_decode, Request};
use shardcast::{HttpCtx, HttpRequest, HttpResponder, HttpResponse, PreparedFrame};

use super::auth::constant_time_eq;
use super::json::{self, push_str};
use super::metrics::ServerCounters;
use super::protocol::{message_frame, topic_problem};
use super::{App, PubLimit};

/// The status page, embedded in the binary.
const STATUS_PAGE: &str = include_str!("status.html");

const JSON: &str = "application/json";

/// The endpoints this port answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /` and `GET /index.html`.
    StatusPage,
    /// `POST /api/publish`.
    Publish,
    /// `GET /api/history?topic=...`.
    History,
    /// `POST /api/send`.
    Send,
}

/// Which endpoint a method and path name.
///
/// # Errors
///
/// 405 for a known path with another method, 404 for any other path.
pub fn endpoint(method: &str, path: &str) -> Result<Endpoint, HttpError> {
    match (method, path) {
        ("GET", "/healthz") => Ok(Endpoint::Health),
        ("GET", "/metrics") => Ok(Endpoint::Metrics),
        ("GET", "/" | "/index.html") => Ok(Endpoint::StatusPage),
        ("POST", "/api/publish") => Ok(Endpoint::Publish),
        ("GET", "/api/history") => Ok(Endpoint::History),
        ("POST", "/api/send") => Ok(Endpoint::Send),
        (
            _,
            "/healthz" | "/metrics" | "/" | "/index.html" | "/api/publish" | "/api/history"
            | "/api/send",
        ) => Err(HttpError::new(
            405,
            "method_not_allowed",
            "method not allowed",
        )),
        _ => Err(HttpError::new(404, "not_found", "no such endpoint")),
    }
}

/// Answers one plain HTTP request.
pub(crate) fn route(app: &App, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, App>) -> HttpResponse {
    let resp = answer(app, req, ctx);
    if resp.status >= 400 {
        app.counters(ctx.core()).http_refused(resp.status);
    }
    resp
}

fn answer(app: &App, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, App>) -> HttpResponse {
    let r = req.request();
    if app.host_refused(r) {
        return HttpError::new(403, "forbidden", super::HOST_REFUSED.trim_end()).response();
    }
    let endpoint = endpoint(r.method(), r.path());
    let status_endpoint = matches!(
        endpoint,
        Ok(Endpoint::Health | Endpoint::Metrics | Endpoint::StatusPage)
    );
    if status_endpoint && app.settings.protect_status && !key_matches(app, req) {
        return unauthorized();
    }
    match endpoint {
        Ok(Endpoint::Health) => {
            let s = ctx.handle().stats();
            // A node that lost its broker still serves its own clients:
            // 200, "degraded", and the broker's state.
            let (status, broker) = match &app.cluster {
                None => ("ok", String::new()),
                Some(c) => {
                    let b = c.snapshot();
                    let status = if b.state == BrokerState::Connected {
                        "ok"
                    } else {
                        "degraded"
                    };
                    (
                        status,
                        format!(
                            ",\"broker\":{{\"state\":\"{}\",\"reconnects\":{},\"published\":{},\"publish_dropped\":{},\"received\":{},\"gaps\":{},\"queue_depth\":{},\"subscriptions\":{}}}",
                            b.state, b.reconnects, b.published, b.dropped_out, b.received, b.gaps, b.queued, b.subscriptions
                        ),
                    )
                }
            };
            let body = format!(
                "{{\"status\":\"{status}\",\"cores\":{},\"connections\":{}{broker}}}\n",
                ctx.handle().cores(),
                s.active
            );
            HttpResponse::new(200, JSON, body)
        }
        Ok(Endpoint::Metrics) => {
            let handle = ctx.handle();
            let mut body = super::metrics::render(
                &handle.core_stats(),
                &app.counters,
                app.started.elapsed().as_secs_f64(),
            );
            body.push_str(&super::metrics::render_uring_features(
                &handle.io_uring_features(),
            ));
            body.push_str(&super::metrics::render_inboxes(
                &handle.inbox_depths(),
                &handle.inbox_refused(),
            ));
            body.push_str(&super::metrics::render_drivers(
                &handle.drivers(),
                &handle.task_runs(),
            ));
            if let Some(c) = &app.cluster {
                body.push_str(&super::metrics::render_cluster(&c.snapshot()));
            }
            if let Some(c) = app.session_counts() {
                body.push_str(&super::metrics::render_sessions(&c));
            }
            HttpResponse::new(200, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        Ok(Endpoint::StatusPage) => {
            let mut resp = HttpResponse::new(200, "text/html; charset=utf-8", STATUS_PAGE);
            resp.headers
                .push(("Cache-Control".into(), "no-store".into()));
            resp
        }
        Ok(Endpoint::Publish) => publish(app, req, ctx),
        Ok(Endpoint::History) => history(app, req, ctx),
        Ok(Endpoint::Send) => send_to_client(app, req, ctx),
        Err(e) => e.response(),
    }
}

/// A refused request: the status and the `error` object of the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// A 4xx status.
    pub status: u16,
    /// The body's `error.code`, e.g. `bad_request`.
    pub code: &'static str,
    /// The body's `error.message`.
    pub message: String,
}

impl HttpError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// `{"error":{"code":..,"message":..}}` and a newline.
    pub fn body(&self) -> Vec<u8> {
        let mut out = b"{\"error\":{\"code\":".to_vec();
        push_str(&mut out, self.code);
        out.extend_from_slice(b",\"message\":");
        push_str(&mut out, &self.message);
        out.extend_from_slice(b"}}\n");
        out
    }

    fn response(&self) -> HttpResponse {
        HttpResponse::new(self.status, JSON, self.body())
    }
}

/// The API key a request presents: `X-API-Key`, else an
/// `Authorization: Bearer` token, trimmed.
pub fn presented_key<'a>(r: &Request<'a>) -> Option<&'a str> {
    r.header_str("x-api-key")
        .or_else(|| {
            r.header_str("authorization").and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
        })
        .map(str::trim)
}

/// Whether the request carries a valid API key, or the API is open.
fn authorized(app: &App, req: &HttpRequest<'_>) -> bool {
    if app.settings.api_keys.is_empty() {
        return app.settings.anonymous();
    }
    key_matches(app, req)
}

/// Whether the request presents one of the API keys.
fn key_matches(app: &App, req: &HttpRequest<'_>) -> bool {
    let keys = &app.settings.api_keys;
    presented_key(req.request()).is_some_and(|g| {
        !g.is_empty()
            && keys
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), g.as_bytes()))
    })
}

/// Whether a `Content-Type` names JSON (`application/json`, any
/// parameters). Required on the publish API: a page elsewhere can make a
/// browser send a `text/plain` body without asking the server (a "simple"
/// request), but not a JSON one.
pub(crate) fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(JSON))
    })
}

/// 401 with its `WWW-Authenticate` challenge.
fn unauthorized() -> HttpResponse {
    let mut r = HttpError::new(401, "unauthorized", "missing or invalid API key").response();
    r.headers.push(("WWW-Authenticate".into(), "Bearer".into()));
    r
}

/// One message of a publish request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishItem<'a> {
    /// The topic, unescaped.
    pub topic: String,
    /// The `data` value exactly as written in the body (borrowed), or
    /// re-encoded from the parsed value when `data` is repeated (owned).
    pub data: Cow<'a, [u8]>,
}

/// A `POST /api/publish` body, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishBody<'a> {
    /// The messages, in order.
    pub items: Vec<PublishItem<'a>>,
    /// Whether the body was an array (the answer then lists `results`).
    pub batch: bool,
}

/// Reads one `{"topic":..,"data":..}` whose text starts at `start`.
fn item<'a>(
    raw: &'a [u8],
    start: usize,
    v: &Value<'_>,
    max_topic_length: usize,
) -> Result<PublishItem<'a>, String> {
    let topic = v
        .get("topic")
        .and_then(|t| t.as_str())
        .ok_or("\"topic\" must be a string")?;
    if let Some(m) = topic_problem(topic, max_topic_length) {
        return Err(m);
    }
    if topic.starts_with('$') {
        return Err("topics starting with '$' are reserved for the server".into());
    }
    let (spans, _) = json::object_spans(raw, start);
    let data = match spans.data {
        Some(r) => Cow::Borrowed(&raw[r]),
        None => match v.get("data") {
            Some(d) => Cow::Owned(d.encode().into_bytes()),
            None => return Err("missing \"data\"".into()),
        },
    };
    Ok(PublishItem {
        topic: topic.to_owned(),
        data,
    })
}

/// Parses a `POST /api/publish` body: one `{"topic","data"}` object or an
/// array of them. Topic names are checked against `max_topic_length`.
///
/// # Errors
///
/// The 400 answer for invalid JSON, a body of another shape, or the first
/// invalid message (its index in the message for an array).
pub fn parse_publish_body(
    raw: &[u8],
    max_topic_length: usize,
) -> Result<PublishBody<'_>, HttpError> {
    let mut buf = raw.to_vec();
    let v = simd_json::to_borrowed_value(&mut buf)
        .map_err(|e| HttpError::bad_request(format!("invalid JSON: {e}")))?;
    match &v {
        Value::Array(arr) => {
            let starts = json::array_elements(raw, 0);
            if starts.len() != arr.len() {
                return Err(HttpError::bad_request("cannot read the array"));
            }
            let mut items = Vec::with_capacity(arr.len());
            for (i, (e, &s)) in arr.iter().zip(&starts).enumerate() {
                match item(raw, s, e, max_topic_length) {
                    Ok(it) => items.push(it),
                    Err(m) => return Err(HttpError::bad_request(format!("message {i}: {m}"))),
                }
            }
            Ok(PublishBody { items, batch: true })
        }
        Value::Object(_) => match item(raw, 0, &v, max_topic_length) {
            Ok(it) => Ok(PublishBody {
                items: vec![it],
                batch: false,
            }),
            Err(m) => Err(HttpError::bad_request(m)),
        },
        _ => Err(HttpError::bad_request(
            "expected {\"topic\":..,\"data\":..} or an array of them",
        )),
    }
}

/// What the callbacks of one publish request share: the last to finish
/// answers.
struct Pending {
    started: Instant,
    counters: Arc<[ServerCounters]>,
    /// The core that took the request, whose counters these are.
    core: usize,
    left: AtomicUsize,
    delivered: Box<[AtomicUsize]>,
    batch: bool,
    responder: Mutex<Option<HttpResponder>>,
}

impl Pending {
    fn done(&self, i: usize, delivered: usize) {
        self.counters[self.core]
            .fanout_latency
            .observe(self.started.elapsed());
        self.delivered[i].store(delivered, Ordering::Relaxed);
        if self.left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let counts: Vec<usize> = self
            .delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect();
        let total: usize = counts.iter().sum();
        let body = if self.batch {
            let list: Vec<String> = counts.iter().map(usize::to_string).collect();
            format!(
                "{{\"delivered\":{total},\"results\":[{}]}}\n",
                list.join(",")
            )
        } else {
            format!("{{\"delivered\":{total}}}\n")
        };
        if let Some(r) = self.responder.lock().ok().and_then(|mut g| g.take()) {
            r.respond(HttpResponse::new(200, JSON, body));
        }
    }
}

/// Frames one turn of the core's loop queues for a batch at most; the rest
/// follows in the next turns, after the core has written what it queued,
/// so a batch larger than a reader's outbox reaches a reader that keeps
/// up instead of closing it as a slow consumer.
const STEP_BYTES: usize = 64 << 10;
/// Messages of a batch one turn publishes at most.
const STEP_ITEMS: usize = 1024;
/// How often a batch looks whether its readers have taken the step before
/// last.
const STEP_POLL: Duration = Duration::from_millis(1);
/// The longest a batch waits for its readers at one step; past it, a
/// reader is not keeping up (the slow-consumer policy is for it), and the
/// rest of the batch goes one step per turn without waiting.
const STEP_PATIENCE: Duration = Duration::from_secs(1);

/// A batch being published a step at a time.
struct Batch {
    frames: Vec<(String, PreparedFrame)>,
    next: usize,
    pending: Arc<Pending>,
    /// The step before the last one: the next step waits until its frames
    /// are written (each reader then holds at most two steps, and the
    /// sockets never run dry between them).
    older: Range<usize>,
    last: Range<usize>,
    /// Since when the batch has been waiting for `older`, if it is.
    waiting: Option<Instant>,
    /// Whether it still waits for its readers at all.
    paced: bool,
}

impl Batch {
    /// Whether every copy of the frames of the step before last has been
    /// written to its socket or discarded: only the batch holds them.
    fn older_written(&self) -> bool {
        self.frames[self.older.clone()]
            .iter()
            .all(|(_, f)| f.as_bytes().is_unique())
    }
}

/// Publishes the next step of `batch` once its readers have taken the step
/// before last, and asks for another turn while messages are left.
fn publish_step(ctx: &mut HttpCtx<'_, App>, mut batch: Batch) {
    if batch.paced && !batch.older_written() {
        let since = *batch.waiting.get_or_insert_with(Instant::now);
        if since.elapsed() < STEP_PATIENCE {
            return ctx.later(STEP_POLL, move |ctx| publish_step(ctx, batch));
        }
        batch.paced = false;
    }
    batch.waiting = None;
    let (start, mut bytes) = (batch.next, 0);
    while batch.next < batch.frames.len() && batch.next - start < STEP_ITEMS && bytes < STEP_BYTES {
        let i = batch.next;
        let (topic, frame) = &batch.frames[i];
        let p = batch.pending.clone();
        ctx.publish_counted(topic, frame, move |r| p.done(i, r.delivered));
        bytes += frame.len();
        batch.next += 1;
    }
    batch.older = std::mem::replace(&mut batch.last, start..batch.next);
    if batch.next < batch.frames.len() {
        ctx.later(Duration::ZERO, move |ctx| publish_step(ctx, batch));
    }
}

/// `POST /api/publish`: one `{"topic","data"}` object or an array of them;
/// answers `{"delivered":N}` (and `"results"` per message for an array)
/// once every core has queued the messages. A large batch is published in
/// steps of [`STEP_BYTES`], one per turn of the core's loop, in order.
/// `POST /api/send` with `{"client":ID,"data":..}`: `{"type":"direct",
/// "data":..}` (`data` byte for byte) to every open connection of that
/// client identity, on every core; answered `{"sent":N}`.
fn send_to_client(app: &App, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, App>) -> HttpResponse {
    if !authorized(app, req) {
        return unauthorized();
    }
    if !is_json(req.request().header_str("content-type")) {
        let m = "send the body as Content-Type: application/json";
        return HttpError::new(415, "unsupported_media_type", m).response();
    }
    let raw = req.body();
    let mut buf = raw.to_vec();
    let Ok(v) = simd_json::to_borrowed_value(&mut buf) else {
        return HttpError::bad_request("invalid JSON").response();
    };
    let Some(Value::String(client)) = v.get("client") else {
        return HttpError::bad_request("\"client\" must be a string").response();
    };
    let (spans, _) = json::object_spans(raw, 0);
    let Some(data) = spans.data.map(|r| &raw[r]) else {
        return HttpError::bad_request("missing \"data\" (exactly once)").response();
    };
    let frame = PreparedFrame::from_parts(
        shardcast::proto::OpCode::Text,
        &[b"{\"type\":\"direct\",\"data\":", data, b"}"],
    );
    let sent = ctx.handle().send_to_client(client, &frame);
    HttpResponse::new(200, JSON, format!("{{\"sent\":{sent}}}\n"))
}

/// `GET /api/history?topic=T`: the topic's position and the messages its
/// home core keeps, oldest first, read there (the request waits one inbox
/// hop): `{"topic":..,"offset":N,"epoch":"E","messages":[...]}`.
fn history(app: &App, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, App>) -> HttpResponse {
    if !authorized(app, req) {
        return unauthorized();
    }
    let Some(raw) = req.request().query_param("topic") else {
        return HttpError::new(400, "bad_request", "name the topic: ?topic=...").response();
    };
    let topic = match percent_decode(raw) {
        Some(t) if topic_problem(&t, app.settings.max_topic_length).is_none() => t.into_owned(),
        _ => return HttpError::new(400, "bad_request", "invalid topic").response(),
    };
    if app.settings.history_policy(&topic).is_none() {
        return HttpError::new(404, "not_found", "that topic keeps no history").response();
    }
    let home = ctx.handle().history_home(&topic);
    let responder = ctx.defer();
    ctx.handle().run_on(home, move |core| {
        let mut out = b"{\"topic\":".to_vec();
        push_str(&mut out, &topic);
        match core.history(&topic) {
            Some((pos, log)) => {
                out.extend_from_slice(format!(",\"offset\":{},\"epoch\":", pos.offset).as_bytes());
                push_str(&mut out, &pos.epoch);
                out.extend_from_slice(b",\"messages\":[");
                for (k, (_, frame)) in log.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    if let Some((_, payload)) = shardcast::proto::deflate::split(frame) {
                        out.extend_from_slice(payload);
                    }
                }
                out.push(b']');
            }
            // Nothing published or joined yet.
            None => out.extend_from_slice(b",\"offset\":0,\"epoch\":null,\"messages\":[]"),
        }
        out.extend_from_slice(b"}\n");
        responder.respond(HttpResponse::new(200, JSON, out));
    });
    HttpResponse::text(500, "deferred\n")
}

fn publish(app: &App, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, App>) -> HttpResponse {
    if !authorized(app, req) {
        return unauthorized();
    }
    if !is_json(req.request().header_str("content-type")) {
        let m = "send the body as Content-Type: application/json";
        return HttpError::new(415, "unsupported_media_type", m).response();
    }
    let (items, batch) = match parse_publish_body(req.body(), app.settings.max_topic_length) {
        Ok(b) => (b.items, b.batch),
        Err(e) => return e.response(),
    };
    if items.is_empty() {
        return HttpResponse::new(200, JSON, "{\"delivered\":0,\"results\":[]}\n");
    }
    let n = items.len();
    let max = app.settings.max_batch_items;
    if n > max {
        let m = format!("at most {max} messages per request; send {n} in several");
        return HttpError::new(413, "too_large", m).response();
    }
    let client = match presented_key(req.request()) {
        Some(k) if !k.is_empty() => format!("key:{k}"),
        _ => format!("ip:{}", req.peer().ip()),
    };
    let refused = match app.http_buckets.take(&client, n as f64) {
        Err(wait) => Some((PubLimit::HttpClient, wait)),
        Ok(()) => app.take_publishes(ctx.local(), None, n as u64).err(),
    };
    if let Some((limit, wait)) = refused {
        app.counters(ctx.core()).publishes_refused[limit as usize]
            .fetch_add(n as u64, Ordering::Relaxed);
        let s = &app.settings;
        let m = match limit {
            PubLimit::Server => format!(
                "the server's publish rate is over {} messages per second (burst {})",
                s.server_publish_rate, s.server_publish_burst
            ),
            _ => format!(
                "HTTP publish rate over {} messages per second (burst {})",
                s.http_publish_rate, s.http_publish_burst
            ),
        };
        let mut r = HttpError::new(429, "rate_limited", m).response();
        r.headers.push((
            "Retry-After".into(),
            wait.as_secs_f64().ceil().max(1.0).to_string(),
        ));
        return r;
    }
    app.counters(ctx.core())
        .http_publishes
        .fetch_add(n as u64, Ordering::Relaxed);
    let pending = Arc::new(Pending {
        started: Instant::now(),
        counters: app.counters_arc(),
        core: ctx.core(),
        left: AtomicUsize::new(n),
        delivered: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        batch,
        responder: Mutex::new(Some(ctx.defer())),
    });
    let frames = items
        .into_iter()
        .map(|it| {
            let frame = message_frame(&it.topic, &it.data);
            (it.topic, frame)
        })
        .collect();
    let batch = Batch {
        frames,
        next: 0,
        pending,
        older: 0..0,
        last: 0..0,
        waiting: None,
        paced: true,
    };
    publish_step(ctx, batch);
    // Ignored: the answer goes out when the last core has counted.
    HttpResponse::text(202, "")
}
