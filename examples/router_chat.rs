//! A JSON chat protocol on the router by message type: every message is
//! `{"type": T, "data": …}`, and each T has a handler with its typed payload.
//!
//! | type         | data                         | effect and reply                                                        |
//! |--------------|------------------------------|-------------------------------------------------------------------------|
//! | `join_room`  | `{"room": "lobby"}`          | joins topic `room:lobby`; `{"type":"joined","data":{"room","core"}}`, or an `error` `room_full` past `max_subscribers_per_topic` |
//! | `leave_room` | `{"room": "lobby"}`          | leaves it; `{"type":"left","data":{"room","was_member"}}`               |
//! | `chat`       | `{"room": "lobby", "text"}`  | publishes `{"type":"chat","data":{"room","from","text"}}` to the room's other members; `{"type":"sent","data":{"room"}}`, or an `error` `not_in_room` |
//! | `broadcast`  | `{"text"}`                   | publishes `{"type":"broadcast","data":{"from","text"}}` to every other connection; `{"type":"sent","data":{"room":null}}` |
//! | `echo`       | any JSON                     | `{"type":"echo","data":<the same>}`                                     |
//! | `status`     | none                         | `{"type":"status","data":{"core","rooms"}}`                             |
//!
//! Anything else is answered with the router's default error reply, e.g.
//! `{"type":"error","error":"unknown_type","for":"nope","detail":"…"}`.
//!
//! `cargo run --release --example router_chat -- 127.0.0.1:9001`

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use shardcast::router::{Ctx, Router};
use shardcast::{Config, Handler, Message, Rejection, Server, UpgradeRequest, Ws};

/// The topic every connection joins, for `broadcast`.
const EVERYONE: &str = "everyone";

/// The application: its router, shared with whoever reads its counters.
pub struct ChatApp {
    router: Arc<Router<ChatApp>>,
}

#[derive(Deserialize)]
struct Room {
    room: String,
}

#[derive(Deserialize, Serialize)]
struct Chat {
    room: String,
    text: String,
}

#[derive(Deserialize)]
struct Broadcast {
    text: String,
}

fn topic(room: &str) -> String {
    format!("room:{room}")
}

impl ChatApp {
    /// The app with its routes.
    pub fn new() -> Self {
        let router = Router::new()
            .on("join_room", |ctx: &mut Ctx<'_, '_, ChatApp>, r: Room| {
                if let Err(e) = ctx.join(&topic(&r.room)) {
                    let detail = e.to_string();
                    let _ = ctx.send_json(&json!({
                        "type": "error", "error": "room_full", "for": "join_room", "detail": detail,
                    }));
                    return;
                }
                let core = ctx.core();
                let _ = ctx.reply("joined", &json!({"room": r.room, "core": core}));
            })
            .on("leave_room", |ctx: &mut Ctx<'_, '_, ChatApp>, r: Room| {
                let was_member = ctx.leave(&topic(&r.room));
                let _ = ctx.reply("left", &json!({"room": r.room, "was_member": was_member}));
            })
            .on("chat", |ctx: &mut Ctx<'_, '_, ChatApp>, c: Chat| {
                let t = topic(&c.room);
                if !ctx.is_subscribed(&t) {
                    let _ = ctx.send_json(&json!({
                        "type": "error", "error": "not_in_room", "for": "chat", "detail": c.room,
                    }));
                    return;
                }
                let from = ctx.remote_addr().to_string();
                let msg = json!({"room": c.room, "from": from, "text": c.text});
                let _ = ctx.publish(&t, "chat", &msg);
                let _ = ctx.reply("sent", &json!({"room": c.room}));
            })
            .on(
                "broadcast",
                |ctx: &mut Ctx<'_, '_, ChatApp>, b: Broadcast| {
                    let from = ctx.remote_addr().to_string();
                    let _ = ctx.publish(
                        EVERYONE,
                        "broadcast",
                        &json!({"from": from, "text": b.text}),
                    );
                    let _ = ctx.reply("sent", &json!({"room": null}));
                },
            )
            .on(
                "echo",
                |ctx: &mut Ctx<'_, '_, ChatApp>, v: serde_json::Value| {
                    let _ = ctx.reply("echo", &v);
                },
            )
            .on("status", |ctx: &mut Ctx<'_, '_, ChatApp>, (): ()| {
                let mut rooms: Vec<String> = ctx
                    .topics()
                    .into_iter()
                    .filter_map(|t| t.strip_prefix("room:").map(str::to_owned))
                    .collect();
                rooms.sort();
                let core = ctx.core();
                let _ = ctx.reply("status", &json!({"core": core, "rooms": rooms}));
            });
        Self {
            router: Arc::new(router),
        }
    }

    /// The router, e.g. to read its refusal counters.
    pub fn router(&self) -> Arc<Router<ChatApp>> {
        self.router.clone()
    }
}

impl Default for ChatApp {
    fn default() -> Self {
        Self::new()
    }
}

impl Handler for ChatApp {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let _ = ws.subscribe(EVERYONE);
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        self.router.dispatch(ws, msg);
    }
}

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let listen = listen
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let handle = Server::new(Config::new().listen(listen), ChatApp::new()).start()?;
    println!("router chat on ws://{}", handle.local_addr());
    handle.join();
    Ok(())
}
