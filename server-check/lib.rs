//! The standalone server's sources compiled against shardcast's public API only (see Cargo.toml).
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

#[path = "../src/server/mod.rs"]
pub mod server;
