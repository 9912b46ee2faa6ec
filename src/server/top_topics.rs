//! The busiest topics by subscriber count, published to `$sys.topics` next to `$sys.stats` for the status page.
//!
//! Nothing is recorded on the subscribe path. Each stats tick asks whether
//! anyone watches [`TOPICS_TOPIC`] and, if so, asks every core for its
//! [`PER_CORE`] topics with the most local subscribers (one pass over that
//! core's topics, on that core). The stats thread sums the
//! counts by name and publishes the top [`TOP`]. A topic that is among
//! the busiest on some cores but not others is ranked by the cores that
//! listed it, so with more than [`PER_CORE`] busy topics per core the
//! counts near the bottom of the ranking can be low; the top of it is
//! exact. Topics starting with `$` (the server's own) are left out.

use std::collections::HashMap;
use std::sync::Arc;

use shardcast::ServerHandle;

use super::json::push_str;
use super::protocol::message_frame;

/// The topic the ranking is published to.
pub const TOPICS_TOPIC: &str = "$sys.topics";

/// How many topics a ranking lists.
pub const TOP: usize = 10;

/// How many of its busiest topics each core reports per tick.
pub const PER_CORE: usize = 64;

/// The ranking as `(topic, subscribers)`, most subscribed first (ties by
/// name), or `None` when no core has a subscriber of [`TOPICS_TOPIC`].
pub fn ranking(handle: &ServerHandle) -> Option<Vec<(String, usize)>> {
    // First the cheap question, so that nobody watching costs nothing.
    if handle.subscriber_count(TOPICS_TOPIC).ok()? == 0 {
        return None;
    }
    let per_core = handle
        .query(|core| {
            // A few more than PER_CORE: the server's own `$` topics are
            // among them and are left out.
            let mut busiest = core.busiest_topics(PER_CORE + 4);
            busiest.retain(|(t, _)| !t.starts_with('$'));
            busiest.truncate(PER_CORE);
            busiest
        })
        .ok()?;
    let mut sums: HashMap<Arc<str>, usize> = HashMap::new();
    for (t, c) in per_core.into_iter().flatten() {
        *sums.entry(t).or_default() += c;
    }
    let mut counts: Vec<(String, usize)> =
        sums.into_iter().map(|(t, c)| (t.to_string(), c)).collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Some(counts)
}

/// `{"topics":[{"topic":..,"subscribers":..},..],"tracked":N}`: the top
/// [`TOP`] and how many topics the cores reported.
pub fn ranking_json(ranking: &[(String, usize)]) -> Vec<u8> {
    let mut out = b"{\"topics\":[".to_vec();
    for (i, (t, c)) in ranking.iter().take(TOP).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"topic\":");
        push_str(&mut out, t);
        out.extend_from_slice(format!(",\"subscribers\":{c}}}").as_bytes());
    }
    out.extend_from_slice(format!("],\"tracked\":{}}}", ranking.len()).as_bytes());
    out
}

/// Publishes the current ranking to [`TOPICS_TOPIC`] if anyone watches it.
pub(crate) fn publish(handle: &ServerHandle) {
    if let Some(ranking) = ranking(handle) {
        let body = ranking_json(&ranking);
        handle.publish(TOPICS_TOPIC, &message_frame(TOPICS_TOPIC, &body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_lists_the_top_and_counts_all() {
        let r: Vec<(String, usize)> = (0..12).map(|i| (format!("t{i}"), 20 - i)).collect();
        let json = String::from_utf8(ranking_json(&r)).unwrap();
        assert!(json.starts_with(r#"{"topics":[{"topic":"t0","subscribers":20},{"topic":"t1","#));
        assert!(json.ends_with(r#"{"topic":"t9","subscribers":11}],"tracked":12}"#));
        assert_eq!(json.matches("\"topic\":").count(), TOP);
        let quoted = String::from_utf8(ranking_json(&[("a\"b".into(), 1)])).unwrap();
        assert_eq!(
            quoted,
            r#"{"topics":[{"topic":"a\"b","subscribers":1}],"tracked":1}"#
        );
    }
}
