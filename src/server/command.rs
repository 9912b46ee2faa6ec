//! One client message parsed into a [`Command`], or the error the server answers it with; no I/O, no connection state.
//!
//! The server's message path and the `ws_command` fuzz target both call
//! [`parse_command`], so what is fuzzed is what runs.

use std::borrow::Cow;

use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::json::{self, push_str, push_str_array};
use super::protocol::topic_problem;

/// A well-formed client message.
#[derive(Debug, Clone, PartialEq)]
pub struct Command<'a> {
    /// The raw text of the `id` member, echoed as written in every reply;
    /// `None` also when `id` is repeated.
    pub id: Option<&'a [u8]>,
    /// What the message asks for.
    pub op: Op<'a>,
}

/// What a [`Command`] asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Op<'a> {
    /// `{"type":"ping"}`.
    Ping,
    /// `{"type":"auth","token":..}`.
    Auth {
        /// The token, unescaped.
        token: Cow<'a, str>,
    },
    /// `{"type":"subscribe","topics":[..]}`, with an optional `recover`
    /// object: per topic, `{"offset":N,"epoch":"E"}` or `{"latest":true}`.
    /// Topic names are not checked here: a bad name fails alone, not the
    /// whole message.
    Subscribe {
        /// The topics, unescaped, as listed.
        topics: Vec<Cow<'a, str>>,
        /// Where to start, per topic named in `recover`.
        recover: Vec<(Cow<'a, str>, Recover<'a>)>,
    },
    /// `{"type":"unsubscribe","topics":[..]}`.
    Unsubscribe {
        /// The topics, unescaped, as listed.
        topics: Vec<Cow<'a, str>>,
    },
    /// `{"type":"publish","topic":..,"data":..}` with a valid topic name.
    Publish {
        /// The topic, unescaped.
        topic: Cow<'a, str>,
        /// The `data` value exactly as written in the message (borrowed),
        /// or re-encoded from the parsed value when `data` is repeated
        /// (owned).
        data: Cow<'a, [u8]>,
    },
}

/// Where a subscription to a history topic starts (`recover` in `subscribe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recover<'a> {
    /// After `offset` of `epoch`: what was missed since.
    Offset {
        /// The last offset the client has.
        offset: u64,
        /// Its epoch.
        epoch: Cow<'a, str>,
    },
    /// With the topic's last publication.
    Latest,
}

/// Why a message is refused: the `error` reply's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError<'a> {
    /// The reply's `code`, e.g. `bad_request`.
    pub code: &'static str,
    /// The reply's `message`.
    pub message: Cow<'static, str>,
    /// The raw `id`, when the message was an object that had one.
    pub id: Option<&'a [u8]>,
    /// The offending topic, listed in the reply's `topics`.
    pub topic: Option<Cow<'a, str>>,
    /// Whether the server answers `unauthorized` instead when the client
    /// has not authenticated: only `ping` and `auth` are looked at before
    /// the auth check, so a client learns nothing else before it.
    pub needs_grant: bool,
}

impl CommandError<'_> {
    /// The `error` reply's JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        let topics: Vec<&str> = self.topic.as_deref().into_iter().collect();
        error_json(self.code, &self.message, self.id, &topics)
    }
}

/// `{"type":"error","code":..,"message":..[,"topics":[..]][,"id":..]}`.
pub fn error_json(code: &str, message: &str, id: Option<&[u8]>, topics: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + message.len());
    out.extend_from_slice(b"{\"type\":\"error\",\"code\":");
    push_str(&mut out, code);
    out.extend_from_slice(b",\"message\":");
    push_str(&mut out, message);
    if !topics.is_empty() {
        out.extend_from_slice(b",\"topics\":");
        push_str_array(&mut out, topics);
    }
    push_id(&mut out, id);
    out.push(b'}');
    out
}

/// A reply without topics, e.g. `{"type":"pong","id":7}`.
pub fn reply_json(kind: &str, id: Option<&[u8]>) -> Vec<u8> {
    let mut out = b"{\"type\":".to_vec();
    push_str(&mut out, kind);
    push_id(&mut out, id);
    out.push(b'}');
    out
}

/// A reply listing topics, e.g. `{"type":"subscribed","topics":["a"],"id":7}`.
pub fn topics_reply_json<S: AsRef<str>>(kind: &str, topics: &[S], id: Option<&[u8]>) -> Vec<u8> {
    let mut out = b"{\"type\":".to_vec();
    push_str(&mut out, kind);
    out.extend_from_slice(b",\"topics\":");
    push_str_array(&mut out, topics);
    push_id(&mut out, id);
    out.push(b'}');
    out
}

pub(crate) fn push_id(out: &mut Vec<u8>, id: Option<&[u8]>) {
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id);
    }
}

fn bad_request<'a>(
    message: impl Into<Cow<'static, str>>,
    id: Option<&'a [u8]>,
) -> CommandError<'a> {
    CommandError {
        code: "bad_request",
        message: message.into(),
        id,
        topic: None,
        needs_grant: false,
    }
}

/// Parses one text message. `scratch` is the copy simd-json parses in place
/// (reused by the caller so a message costs no allocation); topics and
/// tokens may borrow from it. Topic names of `publish` are checked against
/// `max_topic_length`.
///
/// # Errors
///
/// The reply the server sends, in the order it checks: invalid JSON, not an
/// object, no string `type`, then per type (bad `token`, bad `topics`, bad
/// or invalid `topic`, missing `data`, unknown type).
pub fn parse_command<'a>(
    raw: &'a [u8],
    scratch: &'a mut Vec<u8>,
    max_topic_length: usize,
) -> Result<Command<'a>, CommandError<'a>> {
    scratch.clear();
    scratch.extend_from_slice(raw);
    let v = match simd_json::to_borrowed_value(scratch) {
        Ok(v) => v,
        Err(e) => return Err(bad_request(format!("invalid JSON: {e}"), None)),
    };
    // Members are read with `get`, never taken out: with repeated keys the
    // parsed object holds every copy, and removing one would reorder them.
    let Value::Object(obj) = &v else {
        return Err(bad_request("a message is a JSON object", None));
    };
    let (spans, _) = json::object_spans(raw, 0);
    let id = spans.id.map(|r| &raw[r]);
    let kind = match obj.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => return Err(bad_request("missing \"type\"", id)),
    };
    let after_auth = |message: Cow<'static, str>, topic: Option<Cow<'a, str>>| CommandError {
        needs_grant: true,
        topic,
        ..bad_request(message, id)
    };
    let op = match &*kind {
        "ping" => Op::Ping,
        "auth" => match obj.get("token") {
            Some(Value::String(token)) => Op::Auth {
                token: token.clone(),
            },
            _ => return Err(bad_request("\"token\" must be a string", id)),
        },
        "subscribe" | "unsubscribe" => {
            let Some(topics) = obj.get("topics").and_then(strings) else {
                return Err(after_auth(
                    "\"topics\" must be an array of strings".into(),
                    None,
                ));
            };
            if &*kind == "subscribe" {
                let recover = match obj.get("recover") {
                    None => Vec::new(),
                    Some(r) => recover(r).ok_or_else(|| {
                        after_auth(
                            "\"recover\" maps topics to {\"offset\":N,\"epoch\":\"...\"} or {\"latest\":true}"
                                .into(),
                            None,
                        )
                    })?,
                };
                Op::Subscribe { topics, recover }
            } else {
                Op::Unsubscribe { topics }
            }
        }
        "publish" => {
            let Some(Value::String(topic)) = obj.get("topic") else {
                return Err(after_auth("\"topic\" must be a string".into(), None));
            };
            let topic = topic.clone();
            if let Some(m) = topic_problem(&topic, max_topic_length) {
                return Err(after_auth(m.into(), Some(topic)));
            }
            let data = match spans.data {
                Some(r) => Cow::Borrowed(&raw[r]),
                // Only when "data" is repeated: the parser's pick.
                None => match obj.get("data") {
                    Some(d) => Cow::Owned(d.encode().into_bytes()),
                    None => return Err(after_auth("missing \"data\"".into(), None)),
                },
            };
            Op::Publish { topic, data }
        }
        other => {
            return Err(after_auth(
                format!("unknown message type {other:?}").into(),
                None,
            ))
        }
    };
    Ok(Command { id, op })
}

/// The `recover` object, or `None` if it is malformed.
fn recover<'a>(v: &Value<'a>) -> Option<Vec<(Cow<'a, str>, Recover<'a>)>> {
    let Value::Object(map) = v else {
        return None;
    };
    map.iter()
        .map(|(topic, pos)| {
            let Value::Object(_) = pos else {
                return None;
            };
            if pos.get("latest").and_then(ValueAsScalar::as_bool) == Some(true) {
                return Some((topic.clone(), Recover::Latest));
            }
            let offset = pos.get("offset").and_then(ValueAsScalar::as_u64)?;
            let Some(Value::String(epoch)) = pos.get("epoch") else {
                return None;
            };
            Some((
                topic.clone(),
                Recover::Offset {
                    offset,
                    epoch: epoch.clone(),
                },
            ))
        })
        .collect()
}

/// The strings of an array, or `None` if it is not an array of strings.
fn strings<'a>(v: &Value<'a>) -> Option<Vec<Cow<'a, str>>> {
    let Value::Array(items) = v else {
        return None;
    };
    items
        .iter()
        .map(|t| match t {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'a>(scratch: &'a mut Vec<u8>, s: &'a str) -> Result<Command<'a>, CommandError<'a>> {
        parse_command(s.as_bytes(), scratch, 16)
    }

    #[test]
    fn publish_passes_data_through_as_written() {
        let sc = &mut Vec::new();
        let c = parse(
            sc,
            r#"{"type":"publish","topic":"a","data": {"x" : 1.50},"id":"q"}"#,
        )
        .unwrap();
        assert_eq!(c.id, Some(&br#""q""#[..]));
        assert_eq!(
            c.op,
            Op::Publish {
                topic: "a".into(),
                data: Cow::Borrowed(br#"{"x" : 1.50}"#),
            }
        );
    }

    #[test]
    fn errors_before_the_type_carry_no_id_and_no_grant_check() {
        let sc = &mut Vec::new();
        let e = parse(sc, "[1]").unwrap_err();
        assert_eq!((e.code, e.id, e.needs_grant), ("bad_request", None, false));
        let e = parse(sc, r#"{"id":3}"#).unwrap_err();
        assert_eq!(e.message, "missing \"type\"");
        assert_eq!((e.id, e.needs_grant), (Some(&b"3"[..]), false));
    }

    #[test]
    fn errors_after_the_type_wait_for_the_grant_check() {
        let sc = &mut Vec::new();
        for msg in [
            r#"{"type":"nope"}"#,
            r#"{"type":"subscribe","topics":[1]}"#,
            r#"{"type":"publish","topic":"a"}"#,
            r#"{"type":"publish","topic":""}"#,
        ] {
            assert!(parse(sc, msg).unwrap_err().needs_grant, "{msg}");
        }
        assert!(!parse(sc, r#"{"type":"auth"}"#).unwrap_err().needs_grant);
    }

    #[test]
    fn an_invalid_topic_is_listed_in_the_error() {
        let sc = &mut Vec::new();
        let e = parse(
            sc,
            r#"{"type":"publish","topic":"a\u0001","data":1,"id":1}"#,
        )
        .unwrap_err();
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"type":"error","code":"bad_request","message":"topic contains control characters","topics":["a\u0001"],"id":1}"#
        );
    }

    /// Found by the `ws_command` fuzz target: the raw scanner echoed the
    /// last `id` while the parsed object (and so everything else) used the
    /// first.
    #[test]
    fn a_repeated_id_is_not_echoed() {
        let sc = &mut Vec::new();
        let msg = r#"{"type":"th","tkoen":"eyJhbG0.x","id":"aauth","tkoen":"eyJhbG0.x","id":"a"}"#;
        let e = parse(sc, msg).unwrap_err();
        assert_eq!(e.message, r#"unknown message type "th""#);
        assert_eq!(e.id, None);
    }

    #[test]
    fn a_repeated_data_is_the_value_the_parser_kept() {
        let sc = &mut Vec::new();
        let c = parse(sc, r#"{"type":"publish","topic":"a","data":1,"data":[2]}"#).unwrap();
        let Op::Publish { data, .. } = c.op else {
            panic!("{c:?}")
        };
        let mut kept = br#"{"data":1,"data":[2]}"#.to_vec();
        let kept = simd_json::to_borrowed_value(&mut kept).unwrap();
        assert_eq!(*data, *kept.get("data").unwrap().encode().as_bytes());
    }

    #[test]
    fn an_escaped_data_key_still_passes_data_through() {
        let sc = &mut Vec::new();
        let c = parse(sc, r#"{"type":"publish","topic":"a","d\u0061ta": [1, 2] }"#).unwrap();
        let Op::Publish { data, .. } = c.op else {
            panic!("{c:?}")
        };
        assert!(matches!(data, Cow::Borrowed(b"[1, 2]")));
    }

    #[test]
    fn repeated_members_read_as_the_parser_reads_them() {
        let sc = &mut Vec::new();
        // Taking `type` out of the parsed object would move the last member
        // into its place and make the second `topic` the one found.
        let c = parse(sc, r#"{"type":"publish","topic":"a","data":0,"topic":"b"}"#).unwrap();
        let Op::Publish { topic, .. } = c.op else {
            panic!("{c:?}")
        };
        assert_eq!(topic, "a");
    }

    #[test]
    fn repeated_keys_inside_data_pass_through_as_written() {
        let sc = &mut Vec::new();
        let msg = r#"{"type":"publish","topic":"a","data":{"k":1,"k":2}}"#;
        let Op::Publish { data, .. } = parse(sc, msg).unwrap().op else {
            panic!("not a publish")
        };
        assert!(matches!(data, Cow::Borrowed(br#"{"k":1,"k":2}"#)));
    }
}
