//! Verifies that partly received messages cannot hold memory without bound: a message must complete within the message timeout whatever the idle timeout (1008 otherwise), a core's partial messages stay within its reassembly budget (the connection that would exceed it gets 1013), and nobody else notices.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// A 200 KiB text frame, masked, as a client sends it.
fn big_frame() -> Vec<u8> {
    masked_frame(true, 0, 1, &vec![b'x'; 200 << 10])
}

#[test]
fn a_trickled_message_is_closed_at_its_deadline_not_kept_alive_by_each_byte() {
    let cfg = config(1)
        .message_timeout(Duration::from_secs(2))
        .idle_timeout(Duration::from_secs(60))
        .ping_interval(Duration::ZERO);
    let (h, _) = start(cfg);
    let mut bystander = connect(h.local_addr(), "/");
    let mut r = Raw::connect(h.local_addr());
    let frame = big_frame();
    r.send_raw(&frame[..64]);
    let t = Instant::now();
    // One byte every 200 ms: the idle clock restarts each time, the
    // message deadline does not.
    let mut sent = 64;
    r.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let code = loop {
        assert!(t.elapsed() < TIMEOUT, "still open after {:?}", t.elapsed());
        use std::io::Write;
        if r.stream.write_all(&frame[sent..sent + 1]).is_err() {
            break None;
        }
        sent += 1;
        let mut b = [0u8; 256];
        use std::io::Read;
        match r.stream.read(&mut b) {
            Ok(0) => break None,
            Ok(n) => {
                r.buf.extend_from_slice(&b[..n]);
                r.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                break r.expect_close();
            }
            Err(_) => continue,
        }
    };
    let took = t.elapsed();
    assert_eq!(code, Some(1008), "closed with a policy violation");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "closed after {took:?}, deadline 2 s (1 s timer granularity)"
    );
    assert_eq!(h.stats().message_timeouts, 1);
    send_text(&mut bystander, "unaffected");
    assert_eq!(read_text(&mut bystander), "unaffected");
    stop(h);
}

#[test]
fn a_core_refuses_partial_messages_past_its_budget_and_keeps_the_rest() {
    let cfg = config(1)
        .max_reassembly_per_core(300 << 10)
        .message_timeout(Duration::from_secs(30));
    let (h, _) = start(cfg);
    let addr = h.local_addr();
    let mut bystander = connect(addr, "/");
    let frame = big_frame();

    // The first partial 200 KiB message fits in the 300 KiB budget.
    let mut first = Raw::connect(addr);
    first.send_raw(&frame[..1000]);
    send_text(&mut bystander, "sync");
    assert_eq!(read_text(&mut bystander), "sync");
    // A second one would take the core past it: that connection goes.
    let mut second = Raw::connect(addr);
    second.send_raw(&frame[..1000]);
    assert_eq!(second.expect_close(), Some(1013));
    assert_eq!(h.stats().reassembly_refused, 1);

    // The first completes and is answered; the bystander never noticed.
    first.send_raw(&frame[1000..]);
    let (_, op, payload) = first.read_frame().expect("echo");
    assert_eq!((op, payload.len()), (1, 200 << 10));
    send_text(&mut bystander, "unaffected");
    assert_eq!(read_text(&mut bystander), "unaffected");

    // Its bytes were given back: another 200 KiB message fits again.
    let mut third = Raw::connect(addr);
    third.send_raw(&frame);
    let (_, op, payload) = third.read_frame().expect("echo");
    assert_eq!((op, payload.len()), (1, 200 << 10));
    stop(h);
}
