//! Fuzzes plain HTTP on the WebSocket port as the server reads it: the
//! request head (`parse_request`), the body's framing (`Request::body_end`),
//! routing, the API key headers and the `POST /api/publish` body, each the
//! function the server runs.
//!
//! Checked beyond "no panic": every refusal is a 4xx with a JSON body; the
//! body handed on is exactly `Content-Length` bytes; a batch has one item
//! per array element and no more items than its bytes can hold; each item's
//! `data` is a slice of the body (byte-for-byte passthrough) meaning the
//! value the body gave, and the frame subscribers get is JSON.
//!
//! Input: one selector byte, then either a whole request (even selector) or
//! a publish body that gets a valid `POST /api/publish` head with its exact
//! `Content-Length` (odd selector), so the fuzzer spends its time on
//! bodies without first rediscovering HTTP.

#![no_main]

mod common;

use common::{is_slice_of, json, same, same_opt};
use libfuzzer_sys::fuzz_target;
use shardcast::server::fuzzing::{
    endpoint, message_frame, parse_publish_body, presented_key, Endpoint, HttpError,
};
use shardcast::proto::handshake::{parse_request, BodyError, HandshakeLimits, Parsed, Request};
use simd_json::prelude::*;
use simd_json::OwnedValue;

/// Small limits so the fuzzer reaches the 413 and topic-length paths.
const MAX_BODY: usize = 4096;
const MAX_TOPIC: usize = 24;
/// The shortest publish item, `{"topic":"a","data":0}`.
const MIN_ITEM: usize = 22;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    let built;
    let data = if selector & 1 == 0 {
        rest
    } else {
        built = [
            format!(
                "POST /api/publish HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer k\r\n\
                 Content-Length: {}\r\n\r\n",
                rest.len()
            )
            .as_bytes(),
            rest,
        ]
        .concat();
        &built[..]
    };
    let limits = HandshakeLimits::default();
    let (req, head_len) = match parse_request(data, &limits) {
        Ok(Parsed::Complete { value, consumed }) => (value, consumed),
        Ok(Parsed::Incomplete) => return,
        Err(e) => return assert!((400..500).contains(&e.status()), "{e:?}"),
    };
    // Upgrades are the handshake target's ground.
    if req.is_websocket_upgrade() {
        return;
    }
    if let Some(status) = answer(&req, head_len, data) {
        assert!((200..500).contains(&status), "status {status}");
    }
});

/// The status the server answers with, `None` while it waits for the body.
fn answer(req: &Request<'_>, head_len: usize, data: &[u8]) -> Option<u16> {
    let declared = req.content_length();
    let end = match req.body_end(head_len, MAX_BODY) {
        Ok(end) => end,
        Err(e) => {
            match e {
                BodyError::InvalidLength => assert!(declared.is_err()),
                BodyError::TooLarge => assert!(declared.unwrap().unwrap() > MAX_BODY as u64),
                BodyError::TransferCoding => assert!(req.header("transfer-encoding").is_some()),
            }
            return Some(e.status());
        }
    };
    let declared = declared.expect("a framed body has a valid length");
    assert_eq!((end - head_len) as u64, declared.unwrap_or(0));
    if data.len() < end {
        return None;
    }
    let body = &data[head_len..end];
    let status = match endpoint(req.method(), req.path()) {
        Err(e) => {
            assert!(e.status == 404 || e.status == 405);
            check_error(&e)
        }
        Ok(Endpoint::Publish) => {
            if let Some(key) = presented_key(req) {
                assert_eq!(key.trim(), key);
                assert!(!key.contains(['\r', '\n']));
            }
            // Past the key check whatever the key, so bodies get fuzzed.
            publish(body)
        }
        Ok(_) => 200,
    };
    Some(status)
}

fn check_error(e: &HttpError) -> u16 {
    let out = e.body();
    assert!(std::str::from_utf8(&out).is_ok());
    let back = json(&out).expect("the error body is JSON");
    assert_eq!(back["error"]["code"].as_str(), Some(e.code));
    assert_eq!(back["error"]["message"].as_str(), Some(&*e.message));
    e.status
}

fn publish(body: &[u8]) -> u16 {
    let parsed = match parse_publish_body(body, MAX_TOPIC) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!((e.status, e.code), (400, "bad_request"));
            return check_error(&e);
        }
    };
    let value = json(body).expect("an accepted body is JSON");
    let elements: Vec<&OwnedValue> = if parsed.batch {
        value
            .as_array()
            .expect("a batch is an array")
            .iter()
            .collect()
    } else {
        assert!(value.is_object());
        vec![&value]
    };
    assert_eq!(parsed.items.len(), elements.len());
    assert!(parsed.items.len() * MIN_ITEM <= body.len());
    for (it, e) in parsed.items.iter().zip(elements) {
        assert_eq!(e.get("topic").and_then(|t| t.as_str()), Some(&*it.topic));
        assert!(!it.topic.is_empty() && it.topic.len() <= MAX_TOPIC);
        assert!(!it.topic.starts_with('$'));
        if let std::borrow::Cow::Borrowed(d) = &it.data {
            assert!(is_slice_of(d, body), "data is passed through");
        }
        let data = json(&it.data).expect("data is a JSON value on its own");
        assert!(
            same_opt(Some(&data), e.get("data")),
            "the data passed on means what the body said: {:?}",
            String::from_utf8_lossy(&it.data)
        );
        let frame = message_frame(&it.topic, &it.data);
        let delivered = json(frame.payload()).expect("the delivered message is JSON");
        assert!(same(&delivered["data"], &data));
    }
    200
}
