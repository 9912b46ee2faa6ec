//! The `shardcast` server binary; see `shardcast --help` and the README.

fn main() -> anyhow::Result<()> {
    shardcast::server::cli::main()
}
