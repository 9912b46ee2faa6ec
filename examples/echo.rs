//! Echo server: every text or binary message comes back as it was sent.
//!
//! `cargo run --release --example echo -- --listen 127.0.0.1:9001 --cores 2`

use shardcast::{Handler, Message, Rejection, Server, UpgradeRequest, Ws};

#[path = "support/args.rs"]
mod args;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Echo;

impl Handler for Echo {
    type Data = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        match msg {
            Message::Text(t) => ws.send_text(t),
            Message::Binary(b) => ws.send_binary(b),
        };
    }
}

fn main() -> std::io::Result<()> {
    shardcast::alloc::purge_freed_memory_promptly();
    let config = args::config_from_args();
    let handle = Server::new(config, Echo).start()?;
    println!(
        "echo listening on ws://{} with {} cores ({:?})",
        handle.local_addr(),
        handle.cores(),
        handle.drivers()
    );
    handle.join();
    Ok(())
}
