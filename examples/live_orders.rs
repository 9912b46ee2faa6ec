//! Live updates on `order:{id}` topics: a browser watching an order
//! connects to `ws://HOST/orders/{id}` and receives every update of that
//! order as JSON, pushed by the backend either over HTTP or from a thread
//! of the same process.
//!
//! - `POST /api/publish` with `{"order": 42, "status": "shipped", …}`
//!   publishes the body to `order:42`'s watchers on every core and answers
//!   `{"delivered": N}` once every core has counted (400 for a body that
//!   is not an object with a numeric `order`).
//! - [`OrderFeed::update`] does the same from any thread through
//!   [`ServerHandle::publish_json`]: `main` runs a demo feed thread that
//!   moves order 1 through its states every two seconds.
//!
//! The update frame is serialised once per publish, whatever the number
//! of watchers. Each watcher gets `{"type":"update","order":ID,"data":…}`.
//!
//! `cargo run --release --example live_orders -- --listen 127.0.0.1:9001`,
//! then `websocat ws://127.0.0.1:9001/orders/1` and
//! `curl -d '{"order":1,"status":"packed"}' localhost:9001/api/publish`.

use serde::Serialize;
use serde_json::Value;
use shardcast::{
    Handler, HttpCtx, HttpRequest, HttpResponse, PreparedFrame, Rejection, Server, ServerHandle,
    UpgradeRequest, Ws,
};

#[path = "support/args.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod args;

/// The application: connections watch one order each.
pub struct LiveOrders;

/// What a watcher receives.
#[derive(Serialize)]
struct Update<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    order: u64,
    data: &'a Value,
}

/// The topic of order `id`.
pub fn order_topic(id: u64) -> String {
    format!("order:{id}")
}

fn update_frame(order: u64, data: &Value) -> Option<PreparedFrame> {
    shardcast::json_frame(&Update {
        ty: "update",
        order,
        data,
    })
    .ok()
}

impl Handler for LiveOrders {
    /// The order watched.
    type Data = u64;
    type Local = ();

    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<u64, Rejection> {
        req.request()
            .path()
            .strip_prefix("/orders/")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| Rejection::new(404, "watch an order at /orders/{id}"))
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let topic = order_topic(*ws.data());
        if ws.subscribe(&topic).is_err() {
            ws.close(shardcast::CloseCode::TRY_AGAIN_LATER, "too many watchers");
        }
    }

    fn http(&self, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, Self>) -> HttpResponse {
        let r = req.request();
        if r.method() != "POST" || r.path() != "/api/publish" {
            return HttpResponse::text(404, "POST /api/publish, or upgrade at /orders/{id}\n");
        }
        let body: Value = match serde_json::from_slice(req.body()) {
            Ok(v) => v,
            Err(e) => return HttpResponse::text(400, format!("invalid JSON: {e}\n")),
        };
        let Some(order) = body.get("order").and_then(Value::as_u64) else {
            return HttpResponse::text(400, "the body needs a numeric \"order\"\n");
        };
        let Some(frame) = update_frame(order, &body) else {
            return HttpResponse::text(500, "cannot encode the update\n");
        };
        // Answered once every core has queued the update.
        let responder = ctx.defer();
        ctx.publish_counted(&order_topic(order), &frame, move |report| {
            responder.respond(HttpResponse::new(
                200,
                "application/json",
                format!("{{\"delivered\":{}}}", report.delivered),
            ));
        });
        HttpResponse::text(202, "")
    }
}

/// Publishes order updates from any thread of the process.
#[derive(Clone)]
pub struct OrderFeed {
    handle: ServerHandle,
}

impl OrderFeed {
    /// A feed publishing through `handle`.
    pub fn new(handle: ServerHandle) -> Self {
        Self { handle }
    }

    /// Sends `data` to every watcher of `order`; returns the number of
    /// cores it was sent to.
    pub fn update(&self, order: u64, data: &Value) -> usize {
        match update_frame(order, data) {
            Some(frame) => self.handle.publish(&order_topic(order), &frame),
            None => 0,
        }
    }
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let handle = Server::new(args::config_from_args(), LiveOrders).start()?;
    println!(
        "live orders on ws://{}/orders/{{id}}, POST /api/publish",
        handle.local_addr()
    );
    // A backend thread moving order 1 along.
    let feed = OrderFeed::new(handle.clone());
    std::thread::spawn(move || {
        let states = ["placed", "paid", "packed", "shipped", "delivered"];
        for state in states.iter().cycle() {
            feed.update(1, &serde_json::json!({ "status": state }));
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
    });
    handle.join();
    Ok(())
}
