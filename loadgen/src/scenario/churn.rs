//! `churn`: rounds of N connections that each subscribe to random topics, are confirmed registered by the server, and close (most with the closing handshake, a fraction reset); after every round the server must be back to its baseline.
//!
//! The server's side is read from its Prometheus `/metrics` (shardcast's
//! per-core table gauges) and, with `--server-pid`, its RSS. After each
//! round:
//! - connections, topics and subscriptions are exactly 0 (engine gauges,
//!   and the server's own `shardcast_subscriptions` where it has one);
//! - the capacities of its tables (connection slab, topic index and slots,
//!   subscriber lists, interest refs) are back to their values before the
//!   first connection;
//! - its RSS is within `--rss-tolerance` of its RSS after round 1. Round 1
//!   is the reference rather than the fresh process because the first
//!   round also pays one-time costs that are not leaks (the allocator's
//!   own metadata and thread caches, lazily built runtime state); both
//!   values are reported.
//!
//! Connections are opened in one process, so `--connections` is bounded by
//! this process's open-file limit (about 19,900 here).

mod conn;
mod server;

pub use conn::reset_on_close;
pub use server::{fetch_metrics, parse_metrics, status_kib, Metrics};

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::ChurnArgs;
use crate::client::{self, source_for};
use crate::report::Report;
use crate::runtime::{core_wait, spawn_cores};
use crate::scenario::{pool, share, FirstError};
use crate::sys;
use conn::open_and_subscribe;
use server::{get, poll_metrics};

/// Engine gauges that must read 0 after a round (summed over cores).
/// (`shardcast_sockets_open` is not one: it counts the socket of the
/// metrics request reading it.)
pub const ZERO_AFTER_ROUND: [&str; 5] = [
    "shardcast_slab_connections",
    "shardcast_registry_topics",
    "shardcast_registry_subscriptions",
    "shardcast_connections_active",
    "shardcast_timer_entries",
];

/// Table capacities that must return to their value before the first
/// connection (summed over cores).
pub const CAPACITIES: [&str; 7] = [
    "shardcast_slab_capacity",
    "shardcast_registry_index_capacity",
    "shardcast_registry_topic_slots",
    "shardcast_registry_subscriber_lists",
    "shardcast_interest_refs_capacity",
    "shardcast_timer_capacity",
    "shardcast_flush_list_capacity",
];

/// The server's application-level subscription count (shardcast server).
const APP_SUBSCRIPTIONS: &str = "shardcast_subscriptions";

/// Reported, not checked: the socket of the metrics request itself.
const REPORTED: [&str; 1] = ["shardcast_sockets_open"];

#[derive(Debug, Default)]
struct Counters {
    /// Round whose connections the cores may open (1-based; 0: none yet).
    open_round: AtomicU64,
    /// Round whose connections the cores may close.
    close_round: AtomicU64,
    opened: AtomicU64,
    subscribed: AtomicU64,
    open_failed: AtomicU64,
    expected_subs: AtomicU64,
    closed_clean: AtomicU64,
    closed_reset: AtomicU64,
    close_failed: AtomicU64,
    done: AtomicU64,
    error: FirstError,
}

impl Counters {
    fn reset_round(&self) {
        for c in [
            &self.opened,
            &self.subscribed,
            &self.open_failed,
            &self.expected_subs,
            &self.closed_clean,
            &self.closed_reset,
            &self.close_failed,
            &self.done,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The topics connection `index` of `round` subscribes to: between `min`
/// and `max` distinct names out of `space`, the same for the same seed.
pub fn topics_for(
    seed: u64,
    round: u64,
    index: usize,
    min: usize,
    max: usize,
    space: usize,
) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(
        seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64) << 20,
    );
    let space = space.max(1) as u64;
    let k = rng
        .usize(min.max(1)..=max.max(min).max(1))
        .min(space as usize);
    let mut out = Vec::with_capacity(k);
    while out.len() < k {
        let t = rng.u64(..space);
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Whether connection `index` closes with a reset instead of the closing
/// handshake: a `fraction` of them, spread evenly.
pub fn resets(index: usize, fraction: f64) -> bool {
    let per_mille = (fraction.clamp(0.0, 1.0) * 1000.0).round() as usize;
    (index * 389) % 1000 < per_mille
}

/// Runs the scenario. The report's `pass` says whether every round came
/// back to the baseline; `rounds` has one object per round.
///
/// # Errors
/// A bad URL, a server whose metrics cannot be read, or cores that cannot
/// be started.
pub fn run(a: &ChurnArgs) -> Result<Report, String> {
    if a.common.deflate {
        return Err("churn does not speak permessage-deflate; run it without --deflate".into());
    }
    let target = a.common.target()?;
    sys::raise_fd_limit();
    let n = a.connections;
    let cores = a.common.cores();
    let pid = a.common.server_pid;
    let seed = a.seed.unwrap_or_else(|| fastrand::u64(..));
    let metrics_addr = target.addr;
    let path = a.metrics_path.clone();
    let mut r = Report::new("churn");
    r.set("target", a.common.url.as_str());
    r.set("connections", n);
    r.set("rounds", a.rounds);
    r.set(
        "topics_per_connection",
        format!("{}-{}", a.min_topics, a.max_topics),
    );
    r.set("topic_space", a.topic_space);
    r.set("reset_fraction", a.reset_fraction);
    r.set("seed", seed);
    r.set("driver", crate::runtime::driver_name());

    // The baseline: the server idle before the first connection. A tick
    // (1 s) may publish gauges while our own /metrics request is open, so
    // wait for two equal pages with no connection in them.
    let mut last: Option<Metrics> = None;
    let (base, _) = poll_metrics(metrics_addr, &path, a.cleanup_timeout, |m| {
        let caps: Vec<u64> = CAPACITIES.iter().map(|k| get(m, k)).collect();
        let same = last
            .as_ref()
            .is_some_and(|l| CAPACITIES.iter().map(|k| get(l, k)).collect::<Vec<_>>() == caps);
        last = Some(m.clone());
        same && get(m, "shardcast_slab_connections") == 0
    })?;
    if !base.contains_key("shardcast_registry_subscriptions") {
        return Err(format!(
            "{metrics_addr}{path} has no shardcast_registry_subscriptions gauge: churn needs a server that reports its registry"
        ));
    }
    let base_caps: BTreeMap<&str, u64> = CAPACITIES.iter().map(|&k| (k, get(&base, k))).collect();
    let rss_before = pid.and_then(sys::rss_bytes).map(|b| b / 1024);
    r.set("baseline_capacities", json!(base_caps));
    if let Some(v) = rss_before {
        r.set("rss_before_kib", v);
    }
    if let Some(p) = pid {
        if let (Some(a), Some(f)) = (status_kib(p, "RssAnon"), status_kib(p, "RssFile")) {
            r.set("rss_before_anon_kib", a);
            r.set("rss_before_file_kib", f);
        }
    }

    let c = Arc::new(Counters::default());
    let sources = Arc::new(target.sources(n, a.source_base.unwrap_or_else(client::source_base)));
    let target = Arc::new(target);
    let (cc, rounds, conc) = (c.clone(), a.rounds as u64, a.common.concurrency);
    let (min, max, space, frac) = (a.min_topics, a.max_topics, a.topic_space, a.reset_fraction);
    let timeout = a.common.connect_timeout;
    let threads = spawn_cores(cores, !a.common.no_pin, move |core| {
        let (c, target, sources) = (cc.clone(), target.clone(), sources.clone());
        async move {
            let mine = Rc::new(share(n, core, cores));
            for round in 1..=rounds {
                core_wait(|| c.open_round.load(Ordering::Acquire) >= round).await;
                let conns = pool(mine.len(), conc, {
                    let (c, target, sources, mine) =
                        (c.clone(), target.clone(), sources.clone(), mine.clone());
                    move |k| {
                        let (c, target, sources) = (c.clone(), target.clone(), sources.clone());
                        let gi = mine[k];
                        async move {
                            let topics = topics_for(seed, round, gi, min, max, space);
                            let opened = monoio::time::timeout(
                                timeout,
                                open_and_subscribe(&target, source_for(&sources, gi), &topics),
                            )
                            .await
                            .unwrap_or_else(|_| Err("no subscribe acknowledgement in time".into()));
                            match opened {
                                Ok(conn) => {
                                    c.expected_subs
                                        .fetch_add(topics.len() as u64, Ordering::Relaxed);
                                    c.subscribed.fetch_add(1, Ordering::Relaxed);
                                    Some(conn)
                                }
                                Err(e) => {
                                    c.error.set(e);
                                    c.open_failed.fetch_add(1, Ordering::Relaxed);
                                    None
                                }
                            }
                        }
                    }
                })
                .await;
                c.opened
                    .fetch_add(conns.iter().flatten().count() as u64, Ordering::Relaxed);
                core_wait(|| c.close_round.load(Ordering::Acquire) >= round).await;
                let slots = Rc::new(RefCell::new(conns));
                let len = slots.borrow().len();
                pool(len, conc.max(256), {
                    let (c, slots, mine) = (c.clone(), slots.clone(), mine.clone());
                    move |k| {
                        let (c, slots) = (c.clone(), slots.clone());
                        let gi = mine[k];
                        async move {
                            let Some(conn) = slots.borrow_mut()[k].take() else {
                                return;
                            };
                            if resets(gi, frac) {
                                match reset_on_close(conn.stream.as_raw_fd()) {
                                    Ok(()) => c.closed_reset.fetch_add(1, Ordering::Relaxed),
                                    Err(e) => {
                                        c.error.set(format!("SO_LINGER: {e}"));
                                        c.close_failed.fetch_add(1, Ordering::Relaxed)
                                    }
                                };
                                drop(conn);
                            } else {
                                match monoio::time::timeout(timeout, conn.close()).await {
                                    Ok(Ok(())) => c.closed_clean.fetch_add(1, Ordering::Relaxed),
                                    Ok(Err(e)) => {
                                        c.error.set(e);
                                        c.close_failed.fetch_add(1, Ordering::Relaxed)
                                    }
                                    Err(_) => {
                                        c.error.set(
                                            "no FIN after the closing handshake in time".into(),
                                        );
                                        c.close_failed.fetch_add(1, Ordering::Relaxed)
                                    }
                                };
                            }
                        }
                    }
                })
                .await;
                // Let the runtime close the dropped sockets before reporting.
                monoio::time::sleep(Duration::from_millis(1)).await;
                c.done.fetch_add(1, Ordering::Release);
            }
        }
    })
    .map_err(|e| format!("spawning core threads: {e}"))?;

    let mut rows = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut rss_ref: Option<u64> = None;
    let t_all = Instant::now();
    for round in 1..=rounds {
        let t0 = Instant::now();
        c.reset_round();
        c.open_round.store(round, Ordering::Release);
        crate::runtime::main_wait(
            timeout * 2,
            || {
                c.subscribed.load(Ordering::Relaxed) + c.open_failed.load(Ordering::Relaxed)
                    >= n as u64
            },
            || {},
        );
        let open_secs = t0.elapsed().as_secs_f64();
        let subscribed = c.subscribed.load(Ordering::Relaxed);
        let expected = c.expected_subs.load(Ordering::Relaxed);
        let mut row_fail: Vec<String> = Vec::new();
        if subscribed < n as u64 {
            row_fail.push(format!(
                "{} of {n} connections subscribed ({})",
                subscribed,
                c.error.get().unwrap_or_default()
            ));
        }
        // Confirmed by the server: its registries hold every subscription.
        let (peak, registered) = poll_metrics(metrics_addr, &path, Duration::from_secs(5), |m| {
            get(m, "shardcast_registry_subscriptions") == expected
        })?;
        if !registered {
            row_fail.push(format!(
                "the server's registries held {} subscriptions, expected {expected}",
                get(&peak, "shardcast_registry_subscriptions")
            ));
        }
        let rss_peak = pid.and_then(sys::rss_bytes).map(|b| b / 1024);

        let t1 = Instant::now();
        c.close_round.store(round, Ordering::Release);
        crate::runtime::main_wait(
            timeout * 2,
            || c.done.load(Ordering::Acquire) >= cores as u64,
            || {},
        );
        let close_secs = t1.elapsed().as_secs_f64();
        let (after, clean) = poll_metrics(metrics_addr, &path, a.cleanup_timeout, |m| {
            ZERO_AFTER_ROUND.iter().all(|k| get(m, k) == 0)
                && get(m, APP_SUBSCRIPTIONS) == 0
                && CAPACITIES.iter().all(|k| get(m, k) == base_caps[k])
        })?;
        let cleanup_secs = t1.elapsed().as_secs_f64();
        if !clean {
            for k in ZERO_AFTER_ROUND.iter().chain([&APP_SUBSCRIPTIONS]) {
                if get(&after, k) != 0 {
                    row_fail.push(format!("{k} = {} after the round, not 0", get(&after, k)));
                }
            }
            for k in CAPACITIES {
                if get(&after, k) != base_caps[k] {
                    row_fail.push(format!(
                        "{k} = {} after the round, baseline {}",
                        get(&after, k),
                        base_caps[k]
                    ));
                }
            }
        }
        std::thread::sleep(a.settle);
        let rss = pid.and_then(sys::rss_bytes).map(|b| b / 1024);
        // Heap and stacks vs pages of the binary and libraries, which the
        // kernel maps in as code paths first run.
        let anon = pid.and_then(|p| status_kib(p, "RssAnon"));
        let file = pid.and_then(|p| status_kib(p, "RssFile"));
        if let Some(v) = rss {
            match rss_ref {
                None => rss_ref = Some(v),
                Some(base) => {
                    let dev = v as f64 / base as f64 - 1.0;
                    if dev.abs() > a.rss_tolerance {
                        row_fail.push(format!(
                            "RSS {v} KiB is {:+.1}% from {base} KiB after round 1 (tolerance ±{:.0}%)",
                            dev * 100.0,
                            a.rss_tolerance * 100.0
                        ));
                    }
                }
            }
        }
        let mut row = json!({
            "round": round,
            "subscribed": subscribed,
            "open_failed": c.open_failed.load(Ordering::Relaxed),
            "expected_subscriptions": expected,
            "peak_registry_topics": get(&peak, "shardcast_registry_topics"),
            "peak_registry_subscriptions": get(&peak, "shardcast_registry_subscriptions"),
            "peak_slab_capacity": get(&peak, "shardcast_slab_capacity"),
            "peak_index_capacity": get(&peak, "shardcast_registry_index_capacity"),
            "clean_closes": c.closed_clean.load(Ordering::Relaxed),
            "resets": c.closed_reset.load(Ordering::Relaxed),
            "close_failed": c.close_failed.load(Ordering::Relaxed),
            "open_secs": (open_secs * 1000.0).round() / 1000.0,
            "close_secs": (close_secs * 1000.0).round() / 1000.0,
            "cleanup_secs": (cleanup_secs * 1000.0).round() / 1000.0,
            "round_secs": (t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        });
        let o = row.as_object_mut().expect("an object");
        if let Some(v) = rss_peak {
            o.insert("rss_peak_kib".into(), v.into());
        }
        if let Some(v) = rss {
            o.insert("rss_kib".into(), v.into());
        }
        if let (Some(a), Some(f)) = (anon, file) {
            o.insert("rss_anon_kib".into(), a.into());
            o.insert("rss_file_kib".into(), f.into());
        }
        for k in ZERO_AFTER_ROUND
            .iter()
            .chain(CAPACITIES.iter())
            .chain(REPORTED.iter())
        {
            o.insert(
                k.trim_start_matches("shardcast_").to_string(),
                get(&after, k).into(),
            );
        }
        o.insert(
            "app_subscriptions".into(),
            get(&after, APP_SUBSCRIPTIONS).into(),
        );
        o.insert("pass".into(), row_fail.is_empty().into());
        if !row_fail.is_empty() {
            o.insert("failures".into(), json!(row_fail));
            failures.extend(row_fail.iter().map(|f| format!("round {round}: {f}")));
        }
        if !a.common.quiet {
            eprintln!("{}", round_line(&row));
        }
        rows.push(row);
    }
    for t in threads {
        let _ = t.join();
    }
    r.num("total_secs", t_all.elapsed().as_secs_f64(), 3);
    if let (Some(before), Some(after1)) = (rss_before, rss_ref) {
        r.set("rss_after_round1_kib", after1);
        r.num("rss_warmup_kib", after1 as f64 - before as f64, 0);
    }
    r.set("pass", failures.is_empty());
    r.set("rounds_detail", Value::Array(rows));
    for f in failures {
        r.warn(f);
    }
    Ok(r)
}

/// One line of the per-round table on stderr.
fn round_line(row: &Value) -> String {
    let g = |k: &str| row.get(k).map_or_else(|| "-".into(), |v| v.to_string());
    format!(
        "round {:>2}: {} subscribed, {} subs (peak topics {}), rss peak {} -> {} KiB, after: conns {} topics {} subs {} slab cap {} index cap {}, {} s {}",
        g("round"),
        g("subscribed"),
        g("expected_subscriptions"),
        g("peak_registry_topics"),
        g("rss_peak_kib"),
        g("rss_kib"),
        g("slab_connections"),
        g("registry_topics"),
        g("registry_subscriptions"),
        g("slab_capacity"),
        g("registry_index_capacity"),
        g("round_secs"),
        if row["pass"] == Value::Bool(true) { "ok" } else { "FAIL" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_distinct_in_range_and_reproducible() {
        for i in 0..500 {
            let t = topics_for(7, 3, i, 1, 8, 100_000);
            assert!((1..=8).contains(&t.len()));
            let mut d = t.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), t.len());
            assert!(t.iter().all(|&x| x < 100_000));
            assert_eq!(t, topics_for(7, 3, i, 1, 8, 100_000));
        }
        assert_eq!(
            topics_for(1, 1, 0, 5, 8, 3).len(),
            3,
            "capped by the topic space"
        );
        assert_ne!(
            topics_for(7, 1, 0, 8, 8, 100_000),
            topics_for(7, 2, 0, 8, 8, 100_000)
        );
    }

    #[test]
    fn the_reset_fraction_is_spread_evenly() {
        let n = (0..10_000).filter(|&i| resets(i, 0.1)).count();
        assert_eq!(n, 1_000);
        assert_eq!((0..100).filter(|&i| resets(i, 0.0)).count(), 0);
        assert_eq!((0..100).filter(|&i| resets(i, 1.0)).count(), 100);
    }
}
