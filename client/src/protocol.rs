//! The server's JSON control protocol (PROTOCOL.md): the messages this client writes, and parsing what the server sends.

use std::borrow::Cow;

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

/// The subscribe sent after a reconnect, one message for every topic.
///
/// Each topic's last [`Position`] is passed in so that recovery parameters
/// can be added here once the server keeps per-topic history; PROTOCOL.md
/// defines none yet, so they are not sent, and every resubscribe is
/// reported to subscribers as a gap with `recovered: false`.
pub(crate) fn resubscribe<'a>(
    topics: impl IntoIterator<Item = (&'a str, Option<&'a Position>)>,
    id: u64,
) -> String {
    subscribe(topics.into_iter().map(|(t, _position)| t), Some(id))
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
    /// Per-topic position, once the server sends one (not yet).
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(borrow, default)]
    pub epoch: Option<Cow<'a, str>>,
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
}
