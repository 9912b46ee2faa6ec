//! HTTP on the WebSocket port: `POST /api/publish`, `GET /healthz`, `GET /metrics`, `GET /` (the status page).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use crate::handler::{HttpCtx, HttpRequest, HttpResponder, HttpResponse};
use crate::PreparedFrame;

use super::auth::constant_time_eq;
use super::json::{self, push_str};
use super::metrics::ServerCounters;
use super::protocol::{message_frame, topic_problem};
use super::App;

/// The status page, embedded in the binary.
const STATUS_PAGE: &str = include_str!("status.html");

const JSON: &str = "application/json";

/// Answers one plain HTTP request.
pub(crate) fn route(app: &App, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_>) -> HttpResponse {
    let r = req.request();
    match (r.method(), r.path()) {
        ("GET", "/healthz") => {
            let s = ctx.handle().stats();
            let body = format!(
                "{{\"status\":\"ok\",\"cores\":{},\"connections\":{}}}\n",
                ctx.handle().cores(),
                s.active
            );
            HttpResponse::new(200, JSON, body)
        }
        ("GET", "/metrics") => {
            let body = super::metrics::render(
                &ctx.handle().core_stats(),
                &app.counters,
                app.started.elapsed().as_secs_f64(),
            );
            HttpResponse::new(200, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        ("GET", "/" | "/index.html") => {
            let mut resp = HttpResponse::new(200, "text/html; charset=utf-8", STATUS_PAGE);
            resp.headers
                .push(("Cache-Control".into(), "no-store".into()));
            resp
        }
        ("POST", "/api/publish") => publish(app, req, ctx),
        (_, "/healthz" | "/metrics" | "/" | "/index.html" | "/api/publish") => {
            error(405, "method_not_allowed", "method not allowed")
        }
        _ => error(404, "not_found", "no such endpoint"),
    }
}

/// `{"error":{"code":..,"message":..}}` with `status`.
fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    let mut out = b"{\"error\":{\"code\":".to_vec();
    push_str(&mut out, code);
    out.extend_from_slice(b",\"message\":");
    push_str(&mut out, message);
    out.extend_from_slice(b"}}\n");
    HttpResponse::new(status, JSON, out)
}

/// Whether the request carries a valid API key (`Authorization: Bearer`
/// or `X-API-Key`), or the API is open.
fn authorized(app: &App, req: &HttpRequest<'_>) -> bool {
    let keys = &app.settings.api_keys;
    if keys.is_empty() {
        return app.settings.anonymous();
    }
    let r = req.request();
    let given = r
        .header_str("x-api-key")
        .or_else(|| {
            r.header_str("authorization").and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
        })
        .map(str::trim);
    given.is_some_and(|g| {
        keys.iter()
            .any(|k| constant_time_eq(k.as_bytes(), g.as_bytes()))
    })
}

/// One message of a publish request, validated.
struct Item {
    topic: String,
    frame: PreparedFrame,
}

/// Reads one `{"topic":..,"data":..}` whose text starts at `start`.
fn item(app: &App, raw: &[u8], start: usize, v: &Value<'_>) -> Result<Item, String> {
    let topic = v
        .get("topic")
        .and_then(|t| t.as_str())
        .ok_or("\"topic\" must be a string")?;
    if let Some(m) = topic_problem(topic, app.settings.max_topic_length) {
        return Err(m);
    }
    if topic.starts_with('$') {
        return Err("topics starting with '$' are reserved for the server".into());
    }
    let (spans, _) = json::object_spans(raw, start);
    let frame = match spans.data {
        Some(r) => message_frame(topic, &raw[r]),
        None => match v.get("data") {
            Some(d) => message_frame(topic, d.encode().as_bytes()),
            None => return Err("missing \"data\"".into()),
        },
    };
    Ok(Item {
        topic: topic.to_owned(),
        frame,
    })
}

/// What the callbacks of one publish request share: the last to finish
/// answers.
struct Pending {
    started: Instant,
    counters: Arc<[ServerCounters]>,
    left: AtomicUsize,
    delivered: Box<[AtomicUsize]>,
    batch: bool,
    responder: Mutex<Option<HttpResponder>>,
}

impl Pending {
    fn done(&self, i: usize, delivered: usize) {
        self.counters[0]
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

/// `POST /api/publish`: one `{"topic","data"}` object or an array of them;
/// answers `{"delivered":N}` (and `"results"` per message for an array)
/// once every core has queued the messages.
fn publish(app: &App, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_>) -> HttpResponse {
    if !authorized(app, req) {
        let mut r = error(401, "unauthorized", "missing or invalid API key");
        r.headers.push(("WWW-Authenticate".into(), "Bearer".into()));
        return r;
    }
    let raw = req.body();
    let mut buf = raw.to_vec();
    let v = match simd_json::to_borrowed_value(&mut buf) {
        Ok(v) => v,
        Err(e) => return error(400, "bad_request", &format!("invalid JSON: {e}")),
    };
    let (items, batch) = match &v {
        Value::Array(arr) => {
            let starts = json::array_elements(raw, 0);
            if starts.len() != arr.len() {
                return error(400, "bad_request", "cannot read the array");
            }
            let mut items = Vec::with_capacity(arr.len());
            for (i, (e, &s)) in arr.iter().zip(&starts).enumerate() {
                match item(app, raw, s, e) {
                    Ok(it) => items.push(it),
                    Err(m) => return error(400, "bad_request", &format!("message {i}: {m}")),
                }
            }
            (items, true)
        }
        Value::Object(_) => match item(app, raw, 0, &v) {
            Ok(it) => (vec![it], false),
            Err(m) => return error(400, "bad_request", &m),
        },
        _ => {
            return error(
                400,
                "bad_request",
                "expected {\"topic\":..,\"data\":..} or an array of them",
            )
        }
    };
    if items.is_empty() {
        return HttpResponse::new(200, JSON, "{\"delivered\":0,\"results\":[]}\n");
    }
    let n = items.len();
    // The HTTP hook does not know its core; the counters are atomic, so
    // core 0's slot takes these.
    app.counters(0)
        .http_publishes
        .fetch_add(n as u64, Ordering::Relaxed);
    let pending = Arc::new(Pending {
        started: Instant::now(),
        counters: app.counters_arc(),
        left: AtomicUsize::new(n),
        delivered: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        batch,
        responder: Mutex::new(Some(ctx.defer())),
    });
    for (i, it) in items.into_iter().enumerate() {
        let p = pending.clone();
        ctx.publish_counted(&it.topic, &it.frame, move |r| p.done(i, r.delivered));
    }
    // Ignored: the answer goes out when the last core has counted.
    HttpResponse::text(202, "")
}
