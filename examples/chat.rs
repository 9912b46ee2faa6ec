//! Chat rooms as topics: `ws://HOST/ROOM` joins ROOM; every text message is
//! published to everyone in the room, the sender included.
//!
//! `cargo run --release --example chat -- --listen 127.0.0.1:9001`

use shardcast::{Handler, Message, PreparedFrame, Rejection, Server, UpgradeRequest, Ws};

#[path = "support/args.rs"]
mod args;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Chat;

/// Per connection: the room it joined.
struct Member {
    room: String,
}

impl Handler for Chat {
    type Data = Member;
    type Local = ();

    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<Member, Rejection> {
        let room = req.request().path().trim_start_matches('/');
        if room.is_empty() || room.len() > 64 {
            return Err(Rejection::new(404, "connect to /ROOM"));
        }
        Ok(Member {
            room: format!("room:{room}"),
        })
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let room = ws.data().room.clone();
        let _ = ws.subscribe(&room);
        let who = ws.remote_addr();
        ws.publish(&room, &PreparedFrame::text(&format!("{who} joined")), true);
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        if let Message::Text(text) = msg {
            let room = ws.data().room.clone();
            let line = format!("{}: {text}", ws.remote_addr());
            ws.publish(&room, &PreparedFrame::text(&line), true);
        }
    }

    fn close(&self, ws: &mut Ws<'_, Self>, _code: shardcast::CloseCode, _reason: &str) {
        let room = ws.data().room.clone();
        let who = ws.remote_addr();
        ws.publish(&room, &PreparedFrame::text(&format!("{who} left")), false);
    }
}

fn main() -> std::io::Result<()> {
    shardcast::alloc::purge_freed_memory_promptly();
    let handle = Server::new(args::config_from_args(), Chat).start()?;
    println!("chat on ws://{}/ROOM", handle.local_addr());
    handle.join();
    Ok(())
}
