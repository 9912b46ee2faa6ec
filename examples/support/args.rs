// Shared by the examples: `--listen ADDR`, `--cores N`, `--task-run MODE`, `--flush-gather-us N`, `--compression MODE`, `--compression-threshold BYTES`.

use std::net::SocketAddr;

/// Reads `--listen ADDR` (default 127.0.0.1:9001) and `--cores N`
/// (default: the CPUs of the affinity mask) and `--task-run defer|coop|interrupt`
/// (default: defer, with the engine's fallback) and `--flush-gather-us N`
/// (default 0: off) and `--compression off|shared|dedicated` (default off)
/// and `--compression-threshold BYTES` (default 128) into a config.
pub fn config_from_args() -> shardcast::Config {
    let mut config = shardcast::Config::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                let v = args.next().unwrap_or_default();
                config = config.listen(v.parse::<SocketAddr>().unwrap_or_else(|e| {
                    eprintln!("--listen {v}: {e}");
                    std::process::exit(2)
                }));
            }
            "--cores" => {
                let v = args.next().unwrap_or_default();
                config = config.cores(v.parse().unwrap_or_else(|e| {
                    eprintln!("--cores {v}: {e}");
                    std::process::exit(2)
                }));
            }
            "--task-run" => {
                let v = args.next().unwrap_or_default();
                config = config.task_run(v.parse().unwrap_or_else(|e| {
                    eprintln!("--task-run: {e}");
                    std::process::exit(2)
                }));
            }
            "--flush-gather-us" => {
                let v = args.next().unwrap_or_default();
                let us: u64 = v.parse().unwrap_or_else(|e| {
                    eprintln!("--flush-gather-us {v}: {e}");
                    std::process::exit(2)
                });
                config = config.flush_gather(std::time::Duration::from_micros(us));
            }
            "--compression" => {
                let v = args.next().unwrap_or_default();
                config = config.compression(v.parse().unwrap_or_else(|e| {
                    eprintln!("--compression: {e}");
                    std::process::exit(2)
                }));
            }
            "--compression-threshold" => {
                let v = args.next().unwrap_or_default();
                let n: usize = v.parse().unwrap_or_else(|e| {
                    eprintln!("--compression-threshold {v}: {e}");
                    std::process::exit(2)
                });
                let d = config.deflate.with_threshold(n);
                config = config.deflate(d);
            }
            "-h" | "--help" => {
                println!("usage: [--listen ADDR] [--cores N] [--task-run defer|coop|interrupt] [--flush-gather-us N] [--compression off|shared|dedicated] [--compression-threshold BYTES]");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other}; usage: [--listen ADDR] [--cores N] [--task-run defer|coop|interrupt] [--flush-gather-us N] [--compression off|shared|dedicated] [--compression-threshold BYTES]");
                std::process::exit(2);
            }
        }
    }
    config
}
