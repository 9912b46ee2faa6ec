//! A server for the websocket-shootout benchmark protocol, on any path:
//! `{"type":"echo","payload":P}` comes back as sent;
//! `{"type":"broadcast","payload":P}` goes to every client (the sender
//! included) as `{"type":"broadcast","payload":P}`, then the sender gets
//! `{"type":"broadcastResult","payload":P}`.
//!
//! `cargo run --release --example shootout -- --listen 127.0.0.1:9001`

use shardcast::{Handler, Message, PreparedFrame, Rejection, Server, UpgradeRequest, Ws};
use simd_json::prelude::*;

#[path = "support/args.rs"]
mod args;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALL: &str = "all";

struct Shootout;

impl Handler for Shootout {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let _ = ws.subscribe(ALL);
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let mut bytes = text.as_bytes().to_vec();
        let Ok(value) = simd_json::to_borrowed_value(&mut bytes) else {
            return;
        };
        let Some(kind) = value.get_str("type") else {
            return;
        };
        match kind {
            "echo" => {
                ws.send_text(text);
            }
            "broadcast" => {
                let payload = value
                    .get("payload")
                    .map(|p| p.encode())
                    .unwrap_or_else(|| "null".into());
                let out = format!("{{\"type\":\"broadcast\",\"payload\":{payload}}}");
                ws.publish(ALL, &PreparedFrame::text(&out), true);
                ws.send_text(&format!(
                    "{{\"type\":\"broadcastResult\",\"payload\":{payload}}}"
                ));
            }
            _ => {}
        }
    }
}

fn main() -> std::io::Result<()> {
    shardcast::alloc::purge_freed_memory_promptly();
    let handle = Server::new(args::config_from_args(), Shootout).start()?;
    println!("shootout server on ws://{}", handle.local_addr());
    handle.join();
    Ok(())
}
