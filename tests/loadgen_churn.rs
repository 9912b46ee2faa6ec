//! Verifies that the loadgen's `churn` check passes against the shardcast server (connections, topics and subscriptions back to 0, table capacities back to baseline after every round) and fails against a server that leaks its subscription bookkeeping.

use shardcast::server::metrics::{render, ServerCounters};
use shardcast::server::{self, Settings};
use shardcast::{
    Handler, HttpCtx, HttpRequest, HttpResponse, Message, Rejection, Server, UpgradeRequest, Ws,
};

#[path = "loadgen_support.rs"]
mod support;
use support::*;

fn churn(url: &str, rounds: &str, cleanup: &str) -> loadgen::report::Report {
    loadgen(&[
        "churn",
        "--url",
        url,
        "-n",
        "40",
        "--rounds",
        rounds,
        "--cores",
        "1",
        "--no-pin",
        "--settle",
        "0",
        "--cleanup-timeout",
        cleanup,
        "--connect-timeout",
        "10",
        "--seed",
        "7",
        "-q",
    ])
    .unwrap()
}

fn rounds(r: &loadgen::report::Report) -> Vec<serde_json::Value> {
    r.map["rounds_detail"].as_array().expect("rounds").clone()
}

#[test]
fn the_server_returns_to_baseline_after_every_round() {
    let mut s = Settings::default();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.cores = Some(2);
    s.pin = false;
    s.stats_interval_ms = 0;
    s.max_connections_per_ip = 0;
    s.shutdown_timeout_secs = 1;
    let mut running = server::start(s).unwrap();
    let url = format!("ws://{}/", running.local_addr());
    let r = churn(&url, "2", "10");
    running.shutdown();
    running.join();
    assert_eq!(r.map["pass"], true, "{}", r.to_json());
    assert_eq!(u(&r, "connections"), 40);
    let rows = rounds(&r);
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["subscribed"], 40, "{row}");
        let expected = row["expected_subscriptions"].as_u64().unwrap();
        assert!((40..=320).contains(&expected), "{row}");
        assert_eq!(
            row["peak_registry_subscriptions"].as_u64(),
            Some(expected),
            "{row}"
        );
        for k in [
            "registry_subscriptions",
            "registry_topics",
            "slab_connections",
            "app_subscriptions",
            "timer_entries",
        ] {
            assert_eq!(row[k], 0, "{k}: {row}");
        }
        let resets = (0..40)
            .filter(|&i| loadgen::scenario::churn::resets(i, 0.1))
            .count();
        assert_eq!(row["resets"], resets, "{row}");
        assert_eq!(row["clean_closes"], 40 - resets, "{row}");
    }
}

/// A pub/sub server that answers subscribes like shardcast but forgets to
/// decrement its subscription count when a connection closes.
struct Leaky {
    counters: Vec<ServerCounters>,
}

impl Handler for Leaky {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let Message::Text(t) = msg else { return };
        let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
        let topics = v["topics"].as_array().cloned().unwrap_or_default();
        for topic in &topics {
            if ws.subscribe(topic.as_str().unwrap_or("")) == Ok(true) {
                self.counters[ws.core()]
                    .subscriptions
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let ack = serde_json::json!({"type": "subscribed", "topics": topics, "id": v["id"]});
        ws.send_text(&ack.to_string());
    }

    fn http(&self, _req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, Self>) -> HttpResponse {
        HttpResponse::new(
            200,
            "text/plain",
            render(&ctx.handle().core_stats(), &self.counters, 0.0),
        )
    }
}

#[test]
fn the_check_fails_against_a_server_that_leaks() {
    let leaky = Leaky {
        counters: (0..1).map(|_| ServerCounters::default()).collect(),
    };
    let h = Server::new(small_config(), leaky).start().unwrap();
    let url = format!("ws://{}/", h.local_addr());
    let r = churn(&url, "1", "3");
    h.shutdown();
    h.join();
    assert_eq!(r.map["pass"], false, "{}", r.to_json());
    let row = &rounds(&r)[0];
    // The engine's own tables are clean; the handler's count is not.
    assert_eq!(row["registry_subscriptions"], 0, "{row}");
    assert!(row["app_subscriptions"].as_u64().unwrap() > 0, "{row}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("shardcast_subscriptions")),
        "{:?}",
        r.warnings
    );
}
