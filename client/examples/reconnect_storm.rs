//! Simulates 10,000 clients dropped at the same instant by a server restart and prints when their reconnect attempts land, using the client's own backoff policy with real jitter.
//!
//! `cargo run --release -p shardcast-client --example reconnect_storm -- [clients] [downtime_ms]`
//!
//! Each client retries on the default schedule (full jitter: the nth wait is
//! uniform in [0, min(10 s, 100 ms × 2ⁿ))); attempts before the server is
//! back fail at once. Prints a histogram of attempts per 250 ms while the
//! server is down and after, and the distribution of the moment each client
//! is connected again. No sockets: the policy alone decides the schedule.

use std::time::Duration;

use shardcast_client::{Backoff, BackoffPolicy};

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(10_000, |s| s.parse().unwrap());
    let downtime = Duration::from_millis(args.next().map_or(2_000, |s| s.parse().unwrap()));
    let policy = BackoffPolicy::default();
    let mut rng = fastrand::Rng::new();
    let bucket = Duration::from_millis(250);
    let mut attempts_per_bucket = vec![0u32; 80];
    let mut connected_at = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut b = Backoff::new(policy.clone());
        let mut t = Duration::ZERO;
        loop {
            t += b.next_delay(&mut rng).expect("unlimited attempts");
            let i = (t.as_nanos() / bucket.as_nanos()) as usize;
            if let Some(slot) = attempts_per_bucket.get_mut(i) {
                *slot += 1;
            }
            if t >= downtime {
                connected_at.push(t);
                break;
            }
        }
    }
    connected_at.sort();
    let pct = |p: f64| connected_at[((connected_at.len() - 1) as f64 * p) as usize];
    println!(
        "{clients} clients, server down for {downtime:?}, policy base {:?} factor {} max {:?}",
        policy.base, policy.factor, policy.max
    );
    println!(
        "reconnected after the restart: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(0.5) - downtime,
        pct(0.9) - downtime,
        pct(0.99) - downtime,
        *connected_at.last().unwrap() - downtime
    );
    let last = attempts_per_bucket
        .iter()
        .rposition(|&n| n > 0)
        .unwrap_or(0);
    let peak = *attempts_per_bucket.iter().max().unwrap_or(&1) as f64;
    println!("attempts per 250 ms (server back at {downtime:?}):");
    for (i, n) in attempts_per_bucket[..=last].iter().enumerate() {
        let from = i as u64 * 250;
        let bar = "#".repeat((60.0 * *n as f64 / peak).round() as usize);
        let mark = if Duration::from_millis(from) >= downtime {
            "up  "
        } else {
            "down"
        };
        println!("{from:>6} ms {mark} {n:>6} {bar}");
    }
}
