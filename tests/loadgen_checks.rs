//! Verifies that the loadgen's delivery checks catch a server that loses, duplicates and reorders messages, and pass a correct one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use shardcast::proto::OpCode;
use shardcast::{Handler, Message, PreparedFrame, Rejection, Server, UpgradeRequest, Ws};

#[allow(dead_code)]
#[path = "../examples/pubsub.rs"]
mod pubsub_example;

#[path = "loadgen_support.rs"]
mod support;
use support::*;

/// The pub/sub protocol with faults: of every 10 publishes (counted over
/// the whole server) the 5th is held back and sent after the 6th, the 8th is
/// sent twice and the 10th is dropped.
struct Faulty {
    n: AtomicU64,
    held: Mutex<Option<(String, PreparedFrame)>>,
}

impl Handler for Faulty {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let raw = |k: &[u8]| pubsub_example::raw_member(text.as_bytes(), k);
        let Some(kind) = raw(b"type") else { return };
        if kind == b"\"subscribe\"" {
            let topics = raw(b"topics").unwrap_or(b"[]");
            let t = std::str::from_utf8(topics).unwrap();
            let _ = ws.subscribe(t.trim_matches(|c| matches!(c, '[' | ']' | '"')));
            ws.send_text(&format!("{{\"type\":\"subscribed\",\"topics\":{t}}}"));
            return;
        }
        let (Some(topic), Some(data)) = (raw(b"topic"), raw(b"data")) else {
            return;
        };
        let name = std::str::from_utf8(topic)
            .unwrap()
            .trim_matches('"')
            .to_string();
        let frame = PreparedFrame::from_parts(
            OpCode::Text,
            &[
                b"{\"type\":\"message\",\"topic\":",
                topic,
                b",\"data\":",
                data,
                b"}",
            ],
        );
        match self.n.fetch_add(1, Ordering::SeqCst) % 10 {
            4 => *self.held.lock().unwrap() = Some((name, frame)),
            5 => {
                ws.publish(&name, &frame, true);
                if let Some((t, f)) = self.held.lock().unwrap().take() {
                    ws.publish(&t, &f, true);
                }
            }
            7 => {
                ws.publish(&name, &frame, true);
                ws.publish(&name, &frame, true);
            }
            9 => {}
            _ => {
                ws.publish(&name, &frame, true);
            }
        }
    }
}

fn fanout(url: &str) -> loadgen::report::Report {
    loadgen(&[
        "fanout",
        "--url",
        url,
        "-s",
        "20",
        "-t",
        "1",
        "-p",
        "1",
        "--rate",
        "300",
        "--warmup",
        "0.1",
        "--duration",
        "0.5",
        "--drain-timeout",
        "1",
        "--cores",
        "1",
        "--no-pin",
        "-q",
    ])
    .expect("the run completes")
}

#[test]
fn faulty_server_fails_every_check() {
    let h = Server::new(
        small_config(),
        Faulty {
            n: AtomicU64::new(0),
            held: Mutex::new(None),
        },
    )
    .start()
    .unwrap();
    let r = fanout(&format!("ws://{}/", h.local_addr()));
    h.shutdown();
    h.join();
    assert!(u(&r, "lost") > 0, "{}", r.to_json());
    assert!(u(&r, "duplicated") > 0, "{}", r.to_json());
    assert!(u(&r, "reordered") > 0, "{}", r.to_json());
    assert_eq!(r.map["correct"], false);
    assert!(r
        .warnings
        .iter()
        .any(|w| w.contains("DELIVERY CHECK FAILED")));
}

#[test]
fn pubsub_example_passes_every_check() {
    let h = Server::new(small_config(), pubsub_example::PubSub)
        .start()
        .unwrap();
    let r = fanout(&format!("ws://{}/", h.local_addr()));
    h.shutdown();
    h.join();
    assert_eq!(r.map["correct"], true, "{}", r.to_json());
    assert_eq!(u(&r, "lost") + u(&r, "duplicated") + u(&r, "reordered"), 0);
    assert!(u(&r, "deliveries_received") >= 20 * 100, "{}", r.to_json());
    assert!(u(&r, "latency_samples") > 0);
}
