//! Real-time chat with rooms, in the async style: each connection is a task
//! (`Session`) that reads typed JSON commands with `recv_json` and answers
//! with `send_json`, while messages of the rooms it joined reach it as
//! publishes.
//!
//! Connect to `ws://HOST/chat?nick=NAME`, then send:
//!
//! | command                                      | effect                                                                 |
//! |----------------------------------------------|------------------------------------------------------------------------|
//! | `{"type":"join","room":"lobby"}`             | joins topic `room:lobby`; answers `{"type":"joined","room":"lobby"}`; the room's others get `{"type":"presence","room","nick","present":true}` |
//! | `{"type":"leave","room":"lobby"}`            | leaves it; answers `{"type":"left","room":"lobby"}`; the others get `presence` with `present: false` |
//! | `{"type":"say","room":"lobby","text":"hi"}`  | every member, the sender included, gets `{"type":"said","room","from","text"}` in one order |
//!
//! A command that is not one of these, or a `say` to a room not joined, is
//! answered with `{"type":"error","error":"…"}`. A nickname is 1 to 32
//! characters, a room name 1 to 64.
//!
//! `cargo run --release --example chat_rooms -- --listen 127.0.0.1:9001`

use serde::{Deserialize, Serialize};
use shardcast::{Handler, Rejection, Server, Session, UpgradeRequest, Ws};

#[path = "support/args.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod args;

/// The application: a nickname per connection, nothing per core.
pub struct ChatRooms;

/// What a client sends.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Command {
    Join { room: String },
    Leave { room: String },
    Say { room: String, text: String },
}

/// What a client receives.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    Joined {
        room: &'a str,
    },
    Left {
        room: &'a str,
    },
    Presence {
        room: &'a str,
        nick: &'a str,
        present: bool,
    },
    Said {
        room: &'a str,
        from: &'a str,
        text: &'a str,
    },
    Error {
        error: String,
    },
}

fn topic(room: &str) -> String {
    format!("room:{room}")
}

impl Handler for ChatRooms {
    /// The nickname.
    type Data = String;
    type Local = ();

    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<String, Rejection> {
        match req.request().query_param("nick") {
            Some(n) if !n.is_empty() && n.chars().count() <= 32 => Ok(n.to_owned()),
            _ => Err(Rejection::new(
                400,
                "connect with ?nick=NAME (1-32 characters)",
            )),
        }
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let _ = ws.spawn_session(member);
    }
}

/// One member's task: commands in, answers out, until the connection ends.
async fn member(s: Session<ChatRooms>) {
    let Some(nick) = s.with_data(|n| n.clone()) else {
        return;
    };
    while let Some(cmd) = s.recv_json::<Command>().await {
        let reply = match cmd {
            Err(e) => Event::Error {
                error: e.to_string(),
            },
            Ok(Command::Join { room }) if room.is_empty() || room.len() > 64 => Event::Error {
                error: "a room name is 1 to 64 bytes".into(),
            },
            Ok(Command::Join { room }) => match s.subscribe(&topic(&room)) {
                Ok(_) => {
                    let presence = Event::Presence {
                        room: &room,
                        nick: &nick,
                        present: true,
                    };
                    let _ = s.publish_json(&topic(&room), &presence);
                    Event::Joined { room: &room }.owned_send(&s).await;
                    continue;
                }
                Err(e) => Event::Error {
                    error: e.to_string(),
                },
            },
            Ok(Command::Leave { room }) => {
                if s.unsubscribe(&topic(&room)) {
                    let presence = Event::Presence {
                        room: &room,
                        nick: &nick,
                        present: false,
                    };
                    let _ = s.publish_json(&topic(&room), &presence);
                }
                Event::Left { room: &room }.owned_send(&s).await;
                continue;
            }
            Ok(Command::Say { room, text }) => {
                let t = topic(&room);
                if s.with_ws(|ws| ws.is_subscribed(&t)) != Some(true) {
                    Event::Error {
                        error: format!("not in room {room}"),
                    }
                } else {
                    // Serialised once for every member on every core; the
                    // sender gets it as a member, in the room's order.
                    let said = Event::Said {
                        room: &room,
                        from: &nick,
                        text: &text,
                    };
                    if let Ok(frame) = shardcast::json_frame(&said) {
                        s.publish(&t, &frame, true);
                    }
                    continue;
                }
            }
        };
        if s.send_json(&reply).await.is_err() {
            return;
        }
    }
}

impl Event<'_> {
    /// Sends this event to the session's client (errors end nothing here:
    /// the next `recv` sees a closed connection).
    async fn owned_send(self, s: &Session<ChatRooms>) {
        let _ = s.send_json(&self).await;
    }
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let handle = Server::new(args::config_from_args(), ChatRooms).start()?;
    println!("chat rooms on ws://{}/chat?nick=NAME", handle.local_addr());
    handle.join();
    Ok(())
}
