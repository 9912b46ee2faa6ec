//! `loadgen`: the benchmark client for shardcast.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    eprintln!("loadgen: no scenarios are built yet");
    std::process::exit(2);
}
