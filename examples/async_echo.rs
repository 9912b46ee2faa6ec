//! The websocket-shootout server of `examples/shootout.rs`, written in the
//! async style: every connection is driven by its own task on its core
//! (`while let Some(msg) = s.recv().await { … }`), for comparing what that
//! style costs against the callback style.
//!
//! `{"type":"echo","payload":P}` comes back as sent;
//! `{"type":"broadcast","payload":P}` goes to every client (the sender
//! included) as `{"type":"broadcast","payload":P}`, then the sender gets
//! `{"type":"broadcastResult","payload":P}`.
//!
//! `cargo run --release --example async_echo -- --listen 127.0.0.1:9001`

use shardcast::{
    Handler, OwnedMessage, PreparedFrame, Rejection, Server, Session, UpgradeRequest, Ws,
};
use simd_json::prelude::*;

#[path = "support/args.rs"]
mod args;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALL: &str = "all";

struct AsyncShootout;

impl Handler for AsyncShootout {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let _ = ws.spawn_session(serve);
    }
}

/// One connection's task.
async fn serve(s: Session<AsyncShootout>) {
    let _ = s.subscribe(ALL);
    while let Some(msg) = s.recv().await {
        let OwnedMessage::Text(text) = msg else {
            continue;
        };
        let mut bytes = text.as_bytes().to_vec();
        let Ok(value) = simd_json::to_borrowed_value(&mut bytes) else {
            continue;
        };
        let sent = match value.get_str("type") {
            Some("echo") => s.send_text(&text).await,
            Some("broadcast") => {
                let payload = value
                    .get("payload")
                    .map(|p| p.encode())
                    .unwrap_or_else(|| "null".into());
                let out = format!("{{\"type\":\"broadcast\",\"payload\":{payload}}}");
                s.publish(ALL, &PreparedFrame::text(&out), true);
                s.send_text(&format!(
                    "{{\"type\":\"broadcastResult\",\"payload\":{payload}}}"
                ))
                .await
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
}

fn main() -> std::io::Result<()> {
    shardcast::alloc::purge_freed_memory_promptly();
    let handle = Server::new(args::config_from_args(), AsyncShootout).start()?;
    println!("async shootout server on ws://{}", handle.local_addr());
    handle.join();
    Ok(())
}
