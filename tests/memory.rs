//! Verifies that a core gives back the memory of its tables once its connections and topics are gone, and that ids of closed connections stay dead after the connection slab is replaced.

mod common;
use common::{config, connect, read_text, send_text, wait_until};
use shardcast::{
    ConnId, Handler, MemoryGauges, Message, PreparedFrame, Rejection, Server, ServerHandle,
    UpgradeRequest, Ws,
};
use std::sync::{Arc, Mutex};

/// Records every connection's id; `sub:T` subscribes and acknowledges.
struct Ids(Arc<Mutex<Vec<ConnId>>>);

impl Handler for Ids {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        self.0.lock().unwrap().push(ws.id());
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        if let Message::Text(t) = msg {
            if let Some(topic) = t.strip_prefix("sub:") {
                let _ = ws.subscribe(topic);
                ws.send_text("subscribed");
            }
        }
    }
}

fn gauges(h: &ServerHandle) -> MemoryGauges {
    h.core_stats()[0].memory
}

/// The slab index inside a `ConnId`'s debug form `ConnId(core:key#gen)`.
fn key(id: ConnId) -> String {
    let s = format!("{id:?}");
    s[s.find(':').unwrap() + 1..s.find('#').unwrap()].to_string()
}

#[test]
fn tables_shrink_back_and_stale_ids_stay_stale() {
    let ids = Arc::new(Mutex::new(Vec::new()));
    let h = Server::new(
        config(1).listen("127.0.0.1:0".parse().unwrap()),
        Ids(ids.clone()),
    )
    .start()
    .unwrap();
    let addr = h.local_addr();
    let mut clients = Vec::new();
    for i in 0..300 {
        let mut c = connect(addr, "/");
        send_text(&mut c, &format!("sub:t{i}"));
        assert_eq!(read_text(&mut c), "subscribed");
        clients.push(c);
    }
    // The gauges are published once a second.
    wait_until("the gauges to show every subscription", || {
        gauges(&h).subscriptions == 300
    });
    let full = gauges(&h);
    assert!(full.connection_slots >= 300 && full.topic_index_capacity >= 300);
    for mut c in clients {
        let _ = c.close(None);
        let _ = c.flush();
    }
    wait_until("the tables to be given back", || {
        let g = gauges(&h);
        g.connections == 0
            && g.connection_slots == 0
            && g.topics == 0
            && g.topic_index_capacity == 0
            && g.topic_slots == 0
            && g.subscriber_lists == 0
            && g.interest_refs_capacity == 0
            && g.timer_entries == 0
            && g.timer_capacity == 0
    });
    // The fresh slab hands out slot 0 again, which the first closed
    // connection had: its id must not reach the new connection.
    let old: Vec<ConnId> = ids.lock().unwrap().clone();
    let mut c = connect(addr, "/");
    wait_until("the new connection to open", || {
        ids.lock().unwrap().len() == 301
    });
    let new = *ids.lock().unwrap().last().unwrap();
    assert!(
        old.iter().any(|&o| key(o) == key(new)),
        "{new:?} reuses a slot"
    );
    assert!(!old.contains(&new));
    for &o in &old {
        h.send(o, &PreparedFrame::text("stale"));
    }
    h.send(new, &PreparedFrame::text("fresh"));
    assert_eq!(read_text(&mut c), "fresh");
    h.shutdown();
    h.join();
}
