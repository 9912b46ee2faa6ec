//! Verifies broadcast to every connection of the server with one excluded: from a callback (the sender excluded) and from `ServerHandle` (any one connection, or none), across cores.

mod common;
use common::*;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use shardcast::{
    ConnId, Handler, Message, PreparedFrame, Rejection, Server, ServerHandle, UpgradeRequest, Ws,
};
use tungstenite::stream::MaybeTlsStream;

/// Records each connection's id by its client's address; `bcast:P`
/// broadcasts P to everyone but the sender and answers `sent:<delivered
/// here>:<remote cores>`; `core` answers the core; anything else is echoed.
struct Bcast {
    ids: Arc<Mutex<HashMap<SocketAddr, ConnId>>>,
}

impl Handler for Bcast {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        self.ids.lock().unwrap().insert(ws.remote_addr(), ws.id());
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        if let Some(p) = text.strip_prefix("bcast:") {
            let me = ws.id();
            let r = ws.broadcast(&PreparedFrame::text(p), Some(me));
            ws.send_text(&format!("sent:{}:{}", r.delivered, r.remote_cores));
        } else if text == "core" {
            ws.send_text(&ws.core().to_string());
        } else {
            ws.send_text(text);
        }
    }
}

fn start_bcast(cores: usize) -> (ServerHandle, Arc<Mutex<HashMap<SocketAddr, ConnId>>>) {
    let ids = Arc::new(Mutex::new(HashMap::new()));
    let h = Server::new(
        config(cores).listen("127.0.0.1:0".parse().unwrap()),
        Bcast { ids: ids.clone() },
    )
    .start()
    .expect("server starts");
    (h, ids)
}

/// At least `n` connections and at least one on each core, with the core
/// of each. All are kept open, so each core's count of open connections
/// is known.
fn clients(addr: SocketAddr, cores: usize, n: usize) -> Vec<(usize, Client)> {
    let mut all: Vec<(usize, Client)> = Vec::new();
    for _ in 0..200 {
        let covered = (0..cores).all(|k| all.iter().any(|(c, _)| *c == k));
        if covered && all.len() >= n {
            return all;
        }
        let mut c = connect(addr, "/");
        send_text(&mut c, "core");
        let core = read_text(&mut c).parse().unwrap();
        all.push((core, c));
    }
    panic!("200 connections did not reach every core");
}

fn id_of(ids: &Mutex<HashMap<SocketAddr, ConnId>>, c: &Client) -> ConnId {
    let MaybeTlsStream::Plain(s) = c.get_ref() else {
        panic!("plain TCP")
    };
    ids.lock().unwrap()[&s.local_addr().unwrap()]
}

#[test]
fn from_a_callback_every_connection_but_the_sender() {
    let cores = 2;
    let (h, _) = start_bcast(cores);
    let mut cs = clients(h.local_addr(), cores, 6);
    let sender_core = cs[0].0;
    let here = cs.iter().filter(|(c, _)| *c == sender_core).count() - 1;
    let sender = &mut cs[0].1;
    send_text(sender, "bcast:hello");
    // Had the sender been included, "hello" would have been queued before
    // the answer.
    assert_eq!(read_text(sender), format!("sent:{here}:{}", cores - 1));
    for (_, c) in cs.iter_mut().skip(1) {
        assert_eq!(read_text(c), "hello");
    }
    stop(h);
}

#[test]
fn from_the_handle_with_one_connection_excluded_or_none() {
    let cores = 2;
    let (h, ids) = start_bcast(cores);
    let mut cs = clients(h.local_addr(), cores, 5);
    let excluded = id_of(&ids, &cs[2].1);
    assert_eq!(
        h.broadcast(&PreparedFrame::text("first"), Some(excluded)),
        cores
    );
    for (i, (_, c)) in cs.iter_mut().enumerate() {
        if i != 2 {
            assert_eq!(read_text(c), "first");
        }
    }
    // Sent after the first from the same thread, so it arrives after it:
    // the excluded connection's next message shows it never got the first.
    assert_eq!(h.broadcast(&PreparedFrame::text("second"), None), cores);
    for (_, c) in cs.iter_mut() {
        assert_eq!(read_text(c), "second");
    }
    stop(h);
}
