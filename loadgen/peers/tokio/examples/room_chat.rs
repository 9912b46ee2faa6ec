//! Chat rooms the tokio + tokio-tungstenite way, the "before" of
//! docs/migrating-from-tokio-tungstenite.md (the "after" is shardcast's
//! `examples/room_chat.rs`): `ws://HOST/ROOM` joins ROOM; everyone in the
//! room, the newcomer included, reads `ADDR joined`; every text message
//! goes to everyone in the room as `ADDR: TEXT`, the sender included; the
//! others read `ADDR left` when a member goes.
//!
//! The shape of tokio-tungstenite's own chat example: one task per
//! connection, a writer fed by an unbounded channel, one locked map of
//! rooms.
//!
//! `cargo run -p peer-tokio --example room_chat -- 127.0.0.1:9001`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_channel::mpsc::{unbounded, UnboundedSender};
use futures_util::{future, pin_mut, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

type Tx = UnboundedSender<Message>;
/// Room name → its members' writers, by address.
type Rooms = Arc<Mutex<HashMap<String, HashMap<SocketAddr, Tx>>>>;

/// Sends `text` to every member of `room` but `except`.
fn say(rooms: &Rooms, room: &str, text: &str, except: Option<SocketAddr>) {
    let rooms = rooms.lock().unwrap_or_else(|p| p.into_inner());
    for (addr, tx) in rooms.get(room).into_iter().flatten() {
        if Some(*addr) != except {
            // An unbounded queue: a slow reader grows it without limit.
            let _ = tx.unbounded_send(Message::text(text));
        }
    }
}

// The handshake callback's error type is tungstenite's, large or not.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, addr: SocketAddr, rooms: Rooms) {
    let mut room = String::new();
    let pick_room = |req: &Request, resp: Response| {
        room = req.uri().path().trim_start_matches('/').to_owned();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, pick_room).await else {
        return;
    };
    let (tx, rx) = unbounded();
    rooms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(room.clone())
        .or_default()
        .insert(addr, tx);
    say(&rooms, &room, &format!("{addr} joined"), None);

    let (write, read) = ws.split();
    let incoming = read.try_for_each(|msg| {
        if let Message::Text(text) = msg {
            say(&rooms, &room, &format!("{addr}: {text}"), None);
        }
        future::ok(())
    });
    let outgoing = rx.map(Ok).forward(write);
    pin_mut!(incoming, outgoing);
    future::select(incoming, outgoing).await;

    if let Some(members) = rooms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(&room)
    {
        members.remove(&addr);
    }
    say(&rooms, &room, &format!("{addr} left"), Some(addr));
}

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(&listen).await?;
        println!("room chat on ws://{}/ROOM", listener.local_addr()?);
        let rooms = Rooms::default();
        loop {
            let (stream, addr) = listener.accept().await?;
            tokio::spawn(connection(stream, addr, rooms.clone()));
        }
    })
}
