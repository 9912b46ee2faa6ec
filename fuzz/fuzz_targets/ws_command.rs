//! Fuzzes the server's JSON control protocol: arbitrary bytes as one text
//! message through `parse_command`, the function the server's message path
//! calls, then through the reply writers.
//!
//! Checked beyond "no panic": a parsed message is a JSON object and every
//! field of the command equals the member an independent parse finds; a
//! publish's `data` is a slice of the input (byte-for-byte passthrough)
//! unless its key was escaped, and means the same value; every reply and
//! error the server would send is UTF-8 JSON that reads back to what was
//! put in (the raw `id` included).

#![no_main]

mod common;

use common::{is_slice_of, json, same, same_opt};
use libfuzzer_sys::fuzz_target;
use shardcast::server::fuzzing::{
    message_frame, parse_command, reply_json, topics_reply_json, Command, Op, CommandError,
};
use simd_json::prelude::*;
use simd_json::OwnedValue;

/// The server's default `max_topic_length` is larger; a small one lets the
/// fuzzer reach the length check.
const MAX_TOPIC: usize = 24;

fuzz_target!(|data: &[u8]| {
    let mut scratch = Vec::new();
    match parse_command(data, &mut scratch, MAX_TOPIC) {
        Ok(cmd) => check_command(data, &cmd),
        Err(e) => check_error(data, &e),
    }
});

fn check_id(input: &[u8], id: Option<&[u8]>, parsed: Option<&OwnedValue>) {
    let Some(id) = id else { return };
    assert!(is_slice_of(id, input));
    let member = parsed.and_then(|v| v.get("id"));
    assert!(
        same_opt(json(id).as_ref(), member),
        "id {:?}",
        String::from_utf8_lossy(id)
    );
}

fn check_command(input: &[u8], cmd: &Command<'_>) {
    let parsed = json(input).expect("a parsed command is JSON");
    assert!(parsed.is_object());
    check_id(input, cmd.id, Some(&parsed));
    let str_of = |k: &str| parsed.get(k).and_then(|v| v.as_str());
    let reply = match &cmd.op {
        Op::Ping => {
            assert_eq!(str_of("type"), Some("ping"));
            reply_json("pong", cmd.id)
        }
        Op::Auth { token } => {
            assert_eq!(str_of("token"), Some(&**token));
            reply_json("authenticated", cmd.id)
        }
        Op::Subscribe { topics, .. } | Op::Unsubscribe { topics } => {
            let listed: Vec<&str> = parsed["topics"]
                .as_array()
                .expect("topics is an array")
                .iter()
                .map(|t| t.as_str().expect("of strings"))
                .collect();
            let ours: Vec<&str> = topics.iter().map(|t| &**t).collect();
            assert_eq!(listed, ours);
            let out = topics_reply_json("subscribed", topics, cmd.id);
            let back = json(&out).expect("the reply is JSON");
            let echoed: Vec<&str> = back["topics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert_eq!(echoed, ours, "topics survive the reply");
            out
        }
        Op::Publish { topic, data } => {
            assert_eq!(str_of("type"), Some("publish"));
            assert_eq!(str_of("topic"), Some(&**topic));
            assert!(!topic.is_empty() && topic.len() <= MAX_TOPIC);
            assert!(!topic.chars().any(char::is_control));
            if let std::borrow::Cow::Borrowed(d) = data {
                assert!(is_slice_of(d, input), "data is passed through");
            }
            let value = json(data).expect("data is a JSON value on its own");
            assert!(
                same_opt(Some(&value), parsed.get("data")),
                "the data passed on means what the message said: {:?}",
                String::from_utf8_lossy(data)
            );
            let frame = message_frame(topic, data);
            let delivered = json(frame.payload()).expect("the delivered message is JSON");
            assert_eq!(delivered["type"].as_str(), Some("message"));
            assert_eq!(delivered["topic"].as_str(), Some(&**topic));
            assert!(same(&delivered["data"], &value));
            reply_json("published", cmd.id)
        }
    };
    let back = json(&reply).expect("the reply is JSON");
    assert!(same_opt(
        back.get("id"),
        parsed.get("id").filter(|_| cmd.id.is_some())
    ));
}

fn check_error(input: &[u8], e: &CommandError<'_>) {
    let out = e.to_json();
    let text = std::str::from_utf8(&out).expect("the error frame is UTF-8");
    let back = json(&out).unwrap_or_else(|| panic!("the error frame is JSON: {text}"));
    assert_eq!(back["type"].as_str(), Some("error"));
    assert_eq!(back["code"].as_str(), Some(e.code));
    assert_eq!(back["message"].as_str(), Some(&*e.message));
    match &e.topic {
        Some(t) => assert_eq!(back["topics"][0].as_str(), Some(&**t)),
        None => assert!(back.get("topics").is_none()),
    }
    let parsed = json(input);
    if e.id.is_some() {
        assert!(parsed.as_ref().is_some_and(|p| p.is_object()));
        check_id(input, e.id, parsed.as_ref());
        assert!(same_opt(
            back.get("id"),
            parsed.as_ref().and_then(|p| p.get("id"))
        ));
    }
    if e.message.starts_with("invalid JSON") {
        assert!(parsed.is_none(), "refused JSON that parses");
    }
}
