//! A game server: players of a match exchange moves (small JSON) and
//! snapshots (binary, up to 1 MiB) through the match's topic; the server
//! pings every connection that was silent for 5 s and drops a player whose
//! connection stays silent for 15 s (three pings unanswered).
//!
//! Connect to `ws://HOST/match/{id}?player=NAME`, then send:
//!
//! - a text `{"x":1,"y":2}`: every player of the match, the sender
//!   included, gets `{"type":"moved","player":NAME,"x":1,"y":2}`, all in
//!   one order (a bad move is answered `{"type":"error",…}`);
//! - a binary message of at most 1 MiB (a snapshot, a replay chunk): the
//!   other players of the match get it as it was, without a copy per
//!   player; a larger one closes the sender's connection with 1009.
//!
//! On joining, a player gets `{"type":"welcome","match":ID,"players":N}`
//! (N: players of the match on this core) and the others
//! `{"type":"joined","player":NAME}`.
//!
//! `cargo run --release --example game -- --listen 127.0.0.1:9001`

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shardcast::{Config, Handler, Message, PreparedFrame, Rejection, Server, UpgradeRequest, Ws};

#[path = "support/args.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod args;

/// The largest message a player may send (a snapshot).
pub const MAX_MESSAGE: usize = 1 << 20;
/// Silence after which the server pings a connection.
pub const PING_EVERY: Duration = Duration::from_secs(5);

/// The application.
pub struct Game;

/// A player: the match's topic and the player's name.
pub struct Player {
    topic: String,
    name: String,
}

#[derive(Deserialize)]
struct Move {
    x: i32,
    y: i32,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    Welcome { r#match: &'a str, players: usize },
    Joined { player: &'a str },
    Moved { player: &'a str, x: i32, y: i32 },
    Error { error: String },
}

/// The engine's settings for this game on top of `base`: 1 MiB messages
/// (in frames of up to 1 MiB), a ping after 5 s of silence, a player
/// dropped after 15 s, and room for a few snapshots in each outbox.
pub fn configure(base: Config) -> Config {
    base.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .ping_interval(PING_EVERY)
        .idle_timeout(3 * PING_EVERY)
        .outbox_limit(4 * MAX_MESSAGE)
}

impl Handler for Game {
    type Data = Player;
    type Local = ();

    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<Player, Rejection> {
        let r = req.request();
        let id = r
            .path()
            .strip_prefix("/match/")
            .filter(|id| !id.is_empty() && id.len() <= 64)
            .ok_or_else(|| Rejection::new(404, "join a match at /match/{id}?player=NAME"))?;
        let name = r
            .query_param("player")
            .filter(|n| !n.is_empty() && n.len() <= 32)
            .ok_or_else(|| Rejection::new(400, "?player=NAME (1-32 bytes) required"))?;
        Ok(Player {
            topic: format!("match:{id}"),
            name: name.to_owned(),
        })
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let topic = ws.data().topic.clone();
        if ws.subscribe(&topic).is_err() {
            ws.close(shardcast::CloseCode::TRY_AGAIN_LATER, "match full");
            return;
        }
        let players = ws.local_subscriber_count(&topic);
        let id = topic.trim_start_matches("match:").to_owned();
        let _ = ws.send_json(&Event::Welcome {
            r#match: &id,
            players,
        });
        let name = ws.data().name.clone();
        let _ = ws.publish_json(&topic, &Event::Joined { player: &name });
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let topic = ws.data().topic.clone();
        match msg {
            // A snapshot: framed once, shared by every other player.
            Message::Binary(b) => {
                ws.publish(&topic, &PreparedFrame::binary(b), false);
            }
            Message::Text(_) => match msg.json::<Move>() {
                Ok(m) => {
                    let name = ws.data().name.clone();
                    let moved = Event::Moved {
                        player: &name,
                        x: m.x,
                        y: m.y,
                    };
                    if let Ok(frame) = shardcast::json_frame(&moved) {
                        ws.publish(&topic, &frame, true);
                    }
                }
                Err(e) => {
                    let _ = ws.send_json(&Event::Error {
                        error: e.to_string(),
                    });
                }
            },
        }
    }
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let handle = Server::new(configure(args::config_from_args()), Game).start()?;
    println!(
        "game server on ws://{}/match/{{id}}?player=NAME",
        handle.local_addr()
    );
    handle.join();
    Ok(())
}
