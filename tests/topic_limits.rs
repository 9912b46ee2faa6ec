//! Verifies `max_subscribers_per_topic`: a subscribe beyond it is refused with a clear error, counted per core, and a freed place can be taken again.

mod common;
use common::*;

#[test]
fn a_subscribe_beyond_the_limit_is_refused() {
    let (h, _) = start(config(1).max_subscribers_per_topic(2));
    let addr = h.local_addr();
    let mut c: Vec<_> = (0..3).map(|_| connect(addr, "/")).collect();
    send_text(&mut c[0], "sub:t");
    assert_eq!(read_text(&mut c[0]), "subscribed:t:0");
    send_text(&mut c[1], "sub:t");
    assert_eq!(read_text(&mut c[1]), "subscribed:t:0");
    send_text(&mut c[2], "sub:t");
    assert_eq!(
        read_text(&mut c[2]),
        "refused:t:the topic has its maximum of 2 subscribers on this core"
    );
    // Subscribing again to a full topic one already has is not refused.
    send_text(&mut c[1], "sub:t");
    assert_eq!(read_text(&mut c[1]), "subscribed:t:0");
    // Other topics are not affected.
    send_text(&mut c[2], "sub:u");
    assert_eq!(read_text(&mut c[2]), "subscribed:u:0");
    assert_eq!(h.subscriber_count("t").unwrap(), 2);

    // A place freed by an unsubscribe can be taken.
    send_text(&mut c[0], "unsub:t");
    assert_eq!(read_text(&mut c[0]), "unsubscribed:t");
    send_text(&mut c[2], "sub:t");
    assert_eq!(read_text(&mut c[2]), "subscribed:t:0");
    h.publish_text("t", "hello");
    assert_eq!(read_text(&mut c[1]), "hello");
    assert_eq!(read_text(&mut c[2]), "hello");
    assert_eq!(h.subscriber_count("t").unwrap(), 2);
    stop(h);
}

#[test]
fn the_limit_counts_per_core() {
    let cores = 2;
    let (h, _) = start(config(cores).max_subscribers_per_topic(1));
    let addr = h.local_addr();
    let mut subs = one_per_core(addr, cores);
    for (core, c) in subs.iter_mut() {
        send_text(c, "sub:t");
        assert_eq!(read_text(c), format!("subscribed:t:{core}"));
    }
    // The topic has one subscriber on each core: two over the server.
    assert_eq!(h.subscriber_count("t").unwrap(), cores);
    // A second connection on either core is refused.
    let mut extra = connect(addr, "/");
    send_text(&mut extra, "sub:t");
    let reply = read_text(&mut extra);
    assert!(reply.starts_with("refused:t:"), "{reply}");
    assert_eq!(h.subscriber_count("t").unwrap(), cores);
    stop(h);
}
