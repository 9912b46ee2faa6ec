//! The server's JSON control protocol (PROTOCOL.md): the messages this client writes, and parsing what the server sends.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::registry::Position;

fn push_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a str always serialises"));
}

fn push_topics<'a>(out: &mut String, topics: impl IntoIterator<Item = &'a str>) {
    out.push('[');
    for (i, t) in topics.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, t);
    }
    out.push(']');
}

fn push_id(out: &mut String, id: Option<u64>) {
    if let Some(id) = id {
        out.push_str(&format!(",\"id\":{id}"));
    }
    out.push('}');
}

/// `{"type":"subscribe","topics":[...],"id":N}`.
pub(crate) fn subscribe<'a>(topics: impl IntoIterator<Item = &'a str>, id: Option<u64>) -> String {
    let mut out = String::from("{\"type\":\"subscribe\",\"topics\":");
    push_topics(&mut out, topics);
    push_id(&mut out, id);
    out
}

/// The subscribe sent after a reconnect, one message for every topic: each
/// topic with a [`Position`] (a history topic with messages or a
/// `subscribed` reply seen) is asked for recovery from it,
/// `"recover":{"t":{"offset":N,"epoch":"E"}}`, so that the server replays what
/// was published after it (PROTOCOL.md, "History topics, positions and
/// recovery").
pub(crate) fn resubscribe<'a>(
    topics: impl IntoIterator<Item = (&'a str, Option<&'a Position>)> + Clone,
    id: u64,
) -> String {
    let mut out = String::from("{\"type\":\"subscribe\",\"topics\":");
    push_topics(&mut out, topics.clone().into_iter().map(|(t, _)| t));
    let mut first = true;
    for (t, p) in topics {
        let Some(p) = p else { continue };
        out.push_str(if first { ",\"recover\":{" } else { "," });
        first = false;
        push_str(&mut out, t);
        out.push_str(&format!(":{{\"offset\":{},\"epoch\":", p.offset));
        push_str(&mut out, &p.epoch);
        out.push('}');
    }
    if !first {
        out.push('}');
    }
    push_id(&mut out, Some(id));
    out
}

/// Bytes a topic adds to a resubscribe message (its name, and its position
/// when it is recovered), within a few bytes.
pub(crate) fn resubscribe_size(topic: &str, position: Option<&Position>) -> usize {
    topic.len() + 3 + position.map_or(0, |p| topic.len() + p.epoch.len() + 40)
}

/// `{"type":"unsubscribe","topics":[...],"id":N}`.
pub(crate) fn unsubscribe(topic: &str, id: Option<u64>) -> String {
    let mut out = String::from("{\"type\":\"unsubscribe\",\"topics\":");
    push_topics(&mut out, [topic]);
    push_id(&mut out, id);
    out
}

/// `{"type":"publish","topic":T,"data":D,"id":N}`; `data` must be valid JSON.
pub(crate) fn publish(topic: &str, data: &str, id: Option<u64>) -> String {
    let mut out = String::with_capacity(40 + topic.len() + data.len());
    out.push_str("{\"type\":\"publish\",\"topic\":");
    push_str(&mut out, topic);
    out.push_str(",\"data\":");
    out.push_str(data);
    push_id(&mut out, id);
    out
}

/// `{"type":"auth","token":T,"id":N}`.
pub(crate) fn auth(token: &str, id: Option<u64>) -> String {
    let mut out = String::from("{\"type\":\"auth\",\"token\":");
    push_str(&mut out, token);
    push_id(&mut out, id);
    out
}

/// `{"type":"ping","id":N}`.
pub(crate) fn ping(id: u64) -> String {
    format!("{{\"type\":\"ping\",\"id\":{id}}}")
}

/// A message from the server, borrowing the frame it came in.
#[derive(Debug, Deserialize)]
pub(crate) struct ServerMsg<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
    /// Ids this client sent are numbers; anything else is not its own.
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(default)]
    pub delivered: Option<u64>,
    /// The token's subject, in `authenticated`.
    #[serde(borrow, default)]
    pub sub: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub message: Option<Cow<'a, str>>,
    /// A history topic's message position (PROTOCOL.md, "History topics").
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(borrow, default)]
    pub epoch: Option<Cow<'a, str>>,
    /// The topics a `subscribed` reply accepted.
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// A `subscribed` reply's positions of its history topics.
    #[serde(default)]
    pub streams: Option<HashMap<String, Stream>>,
}

/// One history topic's entry in a `subscribed` reply's `streams`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct Stream {
    pub offset: u64,
    pub epoch: String,
    /// Present when the subscribe asked to recover the topic.
    #[serde(default)]
    pub recovered: Option<bool>,
}

impl Stream {
    pub fn position(&self) -> Position {
        Position {
            offset: self.offset,
            epoch: self.epoch.clone(),
        }
    }
}

impl ServerMsg<'_> {
    pub fn parse(text: &str) -> Option<ServerMsg<'_>> {
        serde_json::from_str(text).ok()
    }

    /// The id, when it is one of this client's numeric ids.
    pub fn own_id(&self) -> Option<u64> {
        self.id.and_then(|raw| raw.get().parse().ok())
    }

    pub fn position(&self) -> Option<Position> {
        Some(Position {
            offset: self.offset?,
            epoch: self.epoch.as_deref()?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_documented_messages() {
        assert_eq!(
            subscribe(["a", "b\"c"], Some(7)),
            r#"{"type":"subscribe","topics":["a","b\"c"],"id":7}"#
        );
        assert_eq!(
            unsubscribe("news", None),
            r#"{"type":"unsubscribe","topics":["news"]}"#
        );
        assert_eq!(
            publish("news", r#"{"x": 1}"#, Some(9)),
            r#"{"type":"publish","topic":"news","data":{"x": 1},"id":9}"#
        );
        assert_eq!(ping(3), r#"{"type":"ping","id":3}"#);
        assert_eq!(
            auth("a\"b", Some(4)),
            r#"{"type":"auth","token":"a\"b","id":4}"#
        );
        assert_eq!(auth("t", None), r#"{"type":"auth","token":"t"}"#);
    }

    #[test]
    fn keeps_data_byte_for_byte() {
        let m =
            ServerMsg::parse(r#"{"type":"message","topic":"t","data":{ "a" : 1.50 }}"#).unwrap();
        assert_eq!(m.kind, "message");
        assert_eq!(m.data.unwrap().get(), r#"{ "a" : 1.50 }"#);
        let e = ServerMsg::parse(r#"{"type":"error","code":"forbidden","message":"no","id":"x"}"#)
            .unwrap();
        assert_eq!(e.own_id(), None);
        assert_eq!(e.code.as_deref(), Some("forbidden"));
        let p = ServerMsg::parse(r#"{"type":"published","id":12,"delivered":3}"#).unwrap();
        assert_eq!((p.own_id(), p.delivered), (Some(12), Some(3)));
        assert!(p.position().is_none());
    }

    #[test]
    fn asks_to_recover_the_topics_with_a_position() {
        let p = Position {
            offset: 41,
            epoch: "x3\"f".into(),
        };
        assert_eq!(
            resubscribe([("chat.1", Some(&p)), ("news", None)], 5),
            r#"{"type":"subscribe","topics":["chat.1","news"],"recover":{"chat.1":{"offset":41,"epoch":"x3\"f"}},"id":5}"#
        );
        assert_eq!(
            resubscribe([("news", None)], 6),
            r#"{"type":"subscribe","topics":["news"],"id":6}"#
        );
        let text = resubscribe([("chat.1", Some(&p))], 7);
        // The estimate covers the topic's part of the message.
        let size = resubscribe_size("chat.1", Some(&p));
        let bare = r#"{"type":"subscribe","topics":[],"recover":{},"id":7}"#.len();
        assert!(text.len() <= bare + size, "{} {size}", text.len());
    }

    #[test]
    fn reads_positions_from_messages_and_replies() {
        let m = ServerMsg::parse(
            r#"{"type":"message","topic":"chat.1","data":1,"offset":42,"epoch":"e"}"#,
        )
        .unwrap();
        assert_eq!(
            m.position(),
            Some(Position {
                offset: 42,
                epoch: "e".into()
            })
        );
        let r = ServerMsg::parse(
            r#"{"type":"subscribed","topics":["chat.1","news"],"id":1,"streams":{"chat.1":{"offset":45,"epoch":"e","recovered":true}}}"#,
        )
        .unwrap();
        assert_eq!(
            r.topics.as_deref(),
            Some(&["chat.1".to_owned(), "news".to_owned()][..])
        );
        let s = &r.streams.as_ref().unwrap()["chat.1"];
        assert_eq!(
            (s.offset, s.epoch.as_str(), s.recovered),
            (45, "e", Some(true))
        );
    }
}
