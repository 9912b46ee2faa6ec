//! The `shardcast` server binary; see `shardcast --help` and the README.

// The allocator the engine is measured with (see the README's benchmarks);
// glibc's malloc keeps freed memory of many small per-connection
// allocations in its arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    shardcast::alloc::purge_freed_memory_promptly();
    shardcast::server::cli::main()
}
