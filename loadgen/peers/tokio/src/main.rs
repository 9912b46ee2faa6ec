//! A pub/sub WebSocket server written the way most Rust servers are: tokio's
//! multi-thread runtime, tokio-tungstenite, one task per connection with its
//! writer task fed by an unbounded channel, and one locked map of topics.
//!
//! It speaks what the loadgen scenarios send: shardcast's `subscribe`,
//! `unsubscribe` and `publish` (see PROTOCOL.md) and the websocket-shootout's
//! `echo` and `broadcast`. Anything else is ignored.
//!
//! `peer-tokio --listen 127.0.0.1:9001`

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures_channel::mpsc::{unbounded, UnboundedSender};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Pending connections the kernel keeps for `accept`.
const BACKLOG: u32 = 512;

/// The sending end of one connection's writer task.
type Tx = UnboundedSender<Message>;

/// What every connection task shares.
#[derive(Default)]
struct State {
    /// Subscribers of each topic. A read-write lock because publishes, the
    /// common operation, only read it.
    topics: RwLock<HashMap<String, Vec<(u64, Tx)>>>,
    /// Every open connection: the shootout broadcast goes to all of them.
    clients: RwLock<HashMap<u64, Tx>>,
    next_id: AtomicU64,
}

/// A poisoned lock only means another connection's task panicked; the map
/// itself is still consistent (every change to it is one call).
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Any client message; which fields matter depends on `type`. `data` and
/// `payload` stay raw JSON, so they are passed on byte for byte.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// The answer to `subscribe` and `unsubscribe`.
#[derive(Serialize)]
struct TopicsReply<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    topics: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
}

impl State {
    fn subscribe(&self, id: u64, tx: &Tx, mine: &mut HashSet<String>, topics: &[String]) {
        let mut map = write(&self.topics);
        for t in topics {
            if mine.insert(t.clone()) {
                map.entry(t.clone()).or_default().push((id, tx.clone()));
            }
        }
    }

    fn unsubscribe<'t>(
        &self,
        id: u64,
        mine: &mut HashSet<String>,
        topics: impl IntoIterator<Item = &'t String>,
    ) {
        let mut map = write(&self.topics);
        for t in topics {
            if !mine.remove(t) {
                continue;
            }
            if let Some(subs) = map.get_mut(t) {
                if let Some(i) = subs.iter().position(|(c, _)| *c == id) {
                    subs.swap_remove(i);
                }
                if subs.is_empty() {
                    map.remove(t);
                }
            }
        }
    }

    /// Serialises the delivery once; each subscriber's channel gets a clone
    /// of the same shared bytes.
    fn publish(&self, topic: &str, data: &RawValue) {
        let topic_json = serde_json::to_string(topic).expect("a string serialises");
        let msg = Message::text(format!(
            r#"{{"type":"message","topic":{topic_json},"data":{}}}"#,
            data.get()
        ));
        if let Some(subs) = read(&self.topics).get(topic) {
            for (_, tx) in subs {
                // A closed channel is a connection on its way out; it
                // removes itself from the map.
                let _ = tx.unbounded_send(msg.clone());
            }
        }
    }

    /// The shootout broadcast of `payload` (raw JSON): every client, the
    /// sender included.
    fn broadcast(&self, payload: &str) {
        let msg = Message::text(format!(r#"{{"type":"broadcast","payload":{payload}}}"#));
        for tx in read(&self.clients).values() {
            let _ = tx.unbounded_send(msg.clone());
        }
    }
}

/// Acts on one text message from connection `id`.
fn handle(state: &State, id: u64, tx: &Tx, mine: &mut HashSet<String>, text: &Utf8Bytes) {
    let Ok(req) = serde_json::from_str::<Request<'_>>(text.as_str()) else {
        return;
    };
    match &*req.kind {
        "subscribe" | "unsubscribe" => {
            let kind = if req.kind == "subscribe" {
                state.subscribe(id, tx, mine, &req.topics);
                "subscribed"
            } else {
                state.unsubscribe(id, mine, &req.topics);
                "unsubscribed"
            };
            let reply = TopicsReply {
                kind,
                topics: &req.topics,
                id: req.id,
            };
            let json = serde_json::to_string(&reply).expect("a reply serialises");
            let _ = tx.unbounded_send(Message::text(json));
        }
        "publish" => {
            if let (Some(topic), Some(data)) = (&req.topic, req.data) {
                state.publish(topic, data);
            }
        }
        "echo" => {
            // The same bytes back, without a copy.
            let _ = tx.unbounded_send(Message::Text(text.clone()));
        }
        "broadcast" => {
            let payload = req.payload.map_or("null", RawValue::get);
            state.broadcast(payload);
            let _ = tx.unbounded_send(Message::text(format!(
                r#"{{"type":"broadcastResult","payload":{payload}}}"#
            )));
        }
        _ => {}
    }
}

/// One connection, from the upgrade to the cleanup.
async fn serve(state: Arc<State>, stream: TcpStream) {
    // Deliveries are small frames; do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let ws = match tokio_tungstenite::accept_async(stream).await {
        Ok(ws) => ws,
        Err(_) => return,
    };
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = unbounded();
    write(&state.clients).insert(id, tx.clone());
    let (sink, mut incoming) = ws.split();
    // `forward` writes each frame and flushes whenever the channel is empty,
    // so frames queued together leave in one write.
    let writer = tokio::spawn(rx.map(Ok).forward(sink));
    let mut mine = HashSet::new();
    while let Ok(Some(msg)) = incoming.try_next().await {
        match msg {
            Message::Text(t) => handle(&state, id, &tx, &mut mine, &t),
            Message::Close(_) => break,
            _ => {}
        }
    }
    write(&state.clients).remove(&id);
    let topics: Vec<String> = mine.iter().cloned().collect();
    state.unsubscribe(id, &mut mine, &topics);
    // The last sender gone, the writer sends what is queued and closes.
    drop(tx);
    let _ = writer.await;
}

fn listen_addr() -> SocketAddr {
    let usage = "usage: peer-tokio [--listen ADDR]   (default 127.0.0.1:9001)";
    let mut addr = SocketAddr::from(([127, 0, 0, 1], 9001));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                let v = args.next().unwrap_or_default();
                addr = v.parse().unwrap_or_else(|e| {
                    eprintln!("--listen {v}: {e}");
                    std::process::exit(2)
                });
            }
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other}; {usage}");
                std::process::exit(2);
            }
        }
    }
    addr
}

fn main() -> std::io::Result<()> {
    let addr = listen_addr();
    // One worker per CPU of the affinity mask (available_parallelism reads it).
    let workers = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // TcpListener::bind listens with a backlog of 128, which a burst of
        // connects overflows; Node and Bun listen with 511 and 512.
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(BACKLOG)?;
        eprintln!("peer-tokio on ws://{addr}/ with {workers} worker threads");
        let state = Arc::new(State::default());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(state.clone(), stream));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some
                    // connections to close instead of spinning.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_channel::mpsc::UnboundedReceiver;

    struct Client {
        id: u64,
        tx: Tx,
        rx: UnboundedReceiver<Message>,
        mine: HashSet<String>,
    }

    fn connect(state: &State) -> Client {
        let id = state.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = unbounded();
        write(&state.clients).insert(id, tx.clone());
        Client {
            id,
            tx,
            rx,
            mine: HashSet::new(),
        }
    }

    fn send(state: &State, c: &mut Client, text: &str) {
        handle(state, c.id, &c.tx, &mut c.mine, &Utf8Bytes::from(text));
    }

    fn received(c: &mut Client) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = c.rx.try_recv() {
            out.push(m.into_text().expect("text frames only").to_string());
        }
        out
    }

    #[test]
    fn publishes_reach_subscribers_with_data_byte_for_byte() {
        let state = State::default();
        let (mut sub, mut other, mut publisher) =
            (connect(&state), connect(&state), connect(&state));
        send(
            &state,
            &mut sub,
            r#"{"type":"subscribe","topics":["t1"],"id":7}"#,
        );
        send(
            &state,
            &mut other,
            r#"{"type":"subscribe","topics":["t2"]}"#,
        );
        assert_eq!(
            received(&mut sub),
            [r#"{"type":"subscribed","topics":["t1"],"id":7}"#]
        );
        assert_eq!(
            received(&mut other),
            [r#"{"type":"subscribed","topics":["t2"]}"#]
        );
        send(
            &state,
            &mut publisher,
            r#"{"type":"publish","topic":"t1","data":{"n": 1.50, "s":"\u0041"}}"#,
        );
        assert_eq!(
            received(&mut sub),
            [r#"{"type":"message","topic":"t1","data":{"n": 1.50, "s":"\u0041"}}"#]
        );
        assert!(received(&mut other).is_empty());
        assert!(received(&mut publisher).is_empty());
        send(
            &state,
            &mut sub,
            r#"{"type":"unsubscribe","topics":["t1"]}"#,
        );
        assert_eq!(
            received(&mut sub),
            [r#"{"type":"unsubscribed","topics":["t1"]}"#]
        );
        assert!(read(&state.topics).get("t1").is_none());
        send(
            &state,
            &mut publisher,
            r#"{"type":"publish","topic":"t1","data":1}"#,
        );
        assert!(received(&mut sub).is_empty());
    }

    #[test]
    fn shootout_echo_and_broadcast() {
        let state = State::default();
        let (mut a, mut b) = (connect(&state), connect(&state));
        let echo = r#"{"type":"echo","payload":"E0000"}"#;
        send(&state, &mut a, echo);
        assert_eq!(received(&mut a), [echo]);
        send(&state, &mut a, r#"{"type":"broadcast","payload":"B1"}"#);
        assert_eq!(
            received(&mut a),
            [
                r#"{"type":"broadcast","payload":"B1"}"#,
                r#"{"type":"broadcastResult","payload":"B1"}"#
            ]
        );
        assert_eq!(received(&mut b), [r#"{"type":"broadcast","payload":"B1"}"#]);
    }

    #[test]
    fn ignores_what_it_does_not_speak() {
        let state = State::default();
        let mut a = connect(&state);
        for text in [
            "not json",
            "[1]",
            r#"{"type":"nope"}"#,
            r#"{"type":"publish"}"#,
        ] {
            send(&state, &mut a, text);
        }
        assert!(received(&mut a).is_empty());
    }
}
