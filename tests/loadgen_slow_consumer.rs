//! Verifies that the loadgen's `fanout --stall` makes a subscriber stop reading and reports how the server treated it (closed with 1013, or messages dropped), while the other subscribers are checked as usual and lose nothing; and that `--server-pid` records an RSS timeline.

use std::time::Duration;

use shardcast::{CloseCode, Server, SlowConsumerPolicy};

#[allow(dead_code)]
#[path = "../examples/pubsub.rs"]
mod pubsub_example;

#[path = "loadgen_support.rs"]
mod support;
use support::*;

/// A small outbox, so the stalled subscriber crosses it soon after the
/// kernel's socket buffers are full; a long close timeout, so the close
/// frame is still waiting when the subscriber reads again.
fn config(policy: SlowConsumerPolicy) -> shardcast::Config {
    small_config()
        .outbox_limit(64 << 10)
        .outbox_low_water(16 << 10)
        .close_timeout(Duration::from_secs(60))
        .slow_consumer(policy)
}

/// 10 subscribers on one topic, the first of which stops reading 0.2 s
/// into a 4 s closed-loop measurement. The window is small, so a healthy
/// subscriber never has more than ~45 KiB on its way (below the outbox
/// limit) while the stalled one is sent megabytes.
fn stalled_run(policy: SlowConsumerPolicy, rcvbuf: &str) -> loadgen::report::Report {
    let h = Server::new(config(policy), pubsub_example::PubSub)
        .start()
        .unwrap();
    let url = format!("ws://{}/", h.local_addr());
    let pid = std::process::id().to_string();
    let r = loadgen(&[
        "fanout",
        "--url",
        &url,
        "-s",
        "10",
        "-t",
        "1",
        "--payload",
        "2048",
        "--max-outstanding",
        "200",
        "--warmup",
        "0.1",
        "--duration",
        "4",
        "--stall",
        "1",
        "--stall-after",
        "0.2",
        "--stall-rcvbuf",
        rcvbuf,
        "--drain-timeout",
        "30",
        "--server-pid",
        &pid,
        "--rss-interval",
        "0.25",
        "--cores",
        "1",
        "--no-pin",
        "-q",
    ])
    .expect("the run completes");
    h.shutdown();
    h.join();
    r
}

#[test]
fn stalled_subscriber_is_closed_with_1013_and_the_others_lose_nothing() {
    let r = stalled_run(
        SlowConsumerPolicy::Close(CloseCode::TRY_AGAIN_LATER, "slow consumer".into()),
        "0",
    );
    let j = r.to_json();
    assert_eq!(r.map["correct"], true, "{j}");
    assert_eq!(u(&r, "lost") + u(&r, "duplicated") + u(&r, "reordered"), 0);
    assert_eq!(u(&r, "connections_lost"), 0, "{j}");
    assert_eq!(u(&r, "healthy_subscribers"), 9);
    assert_eq!(u(&r, "stalled_closed_by_server"), 1, "{j}");
    let s = &r.map["stalled"][0];
    assert_eq!(s["end"], "close 1013", "{j}");
    assert_eq!(s["stopped_reading"], true, "{j}");
    assert!(s["missed"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(u(&r, "stalled_duplicated") + u(&r, "stalled_reordered"), 0);
    // The timeline covers the run, with a sample at every phase mark.
    let marks = r.map["server_rss_marks"].as_object().unwrap();
    for m in ["warmup", "measure", "stall", "drain", "done"] {
        assert!(marks.contains_key(m), "{m} missing: {j}");
    }
    assert!(r.map["server_rss_timeline"].as_array().unwrap().len() >= 5);
    assert!(u(&r, "server_rss_measure_max_kib") >= u(&r, "server_rss_measure_start_kib"));
}

#[test]
fn stalled_subscriber_under_the_drop_policy_stays_open_and_misses_messages() {
    // With a small fixed receive buffer on the stalled socket.
    let r = stalled_run(SlowConsumerPolicy::DropMessage, "16384");
    let j = r.to_json();
    assert_eq!(r.map["correct"], true, "{j}");
    assert_eq!(u(&r, "lost") + u(&r, "duplicated") + u(&r, "reordered"), 0);
    assert_eq!(u(&r, "stalled_closed_by_server"), 0, "{j}");
    let s = &r.map["stalled"][0];
    assert_eq!(s["end"], "open at the end of the run", "{j}");
    assert_eq!(u(&r, "stall_rcvbuf_bytes"), 16384);
    // It read its backlog after the stall, with gaps where the server
    // dropped messages, but in order and without duplicates.
    assert!(s["received"].as_u64().unwrap() > s["received_before_stall"].as_u64().unwrap());
    assert!(s["missed"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(u(&r, "stalled_duplicated") + u(&r, "stalled_reordered"), 0);
}

#[test]
fn stall_options_are_checked() {
    let err = loadgen(&[
        "fanout",
        "--url",
        "ws://127.0.0.1:1/",
        "-s",
        "2",
        "--stall",
        "3",
        "-q",
    ])
    .unwrap_err();
    assert!(err.contains("--stall 3"), "{err}");
}
