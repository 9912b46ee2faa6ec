//! Echo server: every text or binary message comes back as it was sent.
//!
//! `cargo run --release --example echo -- --listen 127.0.0.1:9001 --cores 2`

use shardcast::Server;

#[path = "support/args.rs"]
mod args;
#[path = "support/echo.rs"]
mod echo;
use echo::Echo;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
