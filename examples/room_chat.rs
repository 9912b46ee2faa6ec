//! Chat rooms on shardcast in the async style, the "after" of
//! docs/migrating-from-tokio-tungstenite.md (the "before" is
//! `loadgen/peers/tokio/examples/room_chat.rs`): `ws://HOST/ROOM` joins
//! ROOM; everyone in the room, the newcomer included, reads `ADDR joined`;
//! every text message goes to everyone in the room as `ADDR: TEXT`, the
//! sender included; the others read `ADDR left` when a member goes.
//!
//! Rooms are topics: no map, no lock, no writer task; a line is framed
//! once for the whole room, and every member's outbox is bounded.
//! `examples/chat.rs` is the same program with callbacks.
//!
//! `cargo run --release --example room_chat -- --listen 127.0.0.1:9001`

use shardcast::{
    CloseCode, Handler, PreparedFrame, Rejection, Server, Session, UpgradeRequest, Ws,
};

#[path = "support/args.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod args;

/// The application; each connection's data is its room's topic.
pub struct RoomChat;

impl Handler for RoomChat {
    type Data = String;
    type Local = ();

    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<String, Rejection> {
        let room = req.request().path().trim_start_matches('/');
        Ok(format!("room:{room}"))
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let _ = ws.spawn_session(connection);
    }

    fn close(&self, ws: &mut Ws<'_, Self>, _code: CloseCode, _reason: &str) {
        // Also for session connections: the session may be gone already.
        let left = format!("{} left", ws.remote_addr());
        let room = ws.data().clone();
        ws.publish(&room, &PreparedFrame::text(&left), false);
    }
}

async fn connection(s: Session<RoomChat>) {
    let (Some(room), Some(addr)) = (s.with_data(|room| room.clone()), s.remote_addr()) else {
        return;
    };
    if s.subscribe(&room).is_err() {
        return;
    }
    s.publish(&room, &PreparedFrame::text(&format!("{addr} joined")), true);
    while let Some(msg) = s.recv().await {
        if let Some(text) = msg.as_text() {
            let line = format!("{addr}: {text}");
            s.publish(&room, &PreparedFrame::text(&line), true);
        }
    }
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let handle = Server::new(args::config_from_args(), RoomChat).start()?;
    println!("room chat on ws://{}/ROOM", handle.local_addr());
    handle.join();
    Ok(())
}
