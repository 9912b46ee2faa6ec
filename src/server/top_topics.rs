//! The busiest topics by subscriber count, published to `$sys.topics` next to `$sys.stats` for the status page.
//!
//! The engine counts subscribers per topic on each core but keeps no list
//! of names to rank, so the subscribe path notes the names it grants
//! (`note`) in one bounded, process-wide set. Each stats tick
//! (`publish`) asks every core for the subscriber counts of those names,
//! forgets the ones nobody holds any more, and publishes the top
//! [`TOP`]. Past [`MAX_TRACKED`] names, new names wait for room: a server
//! with more live topics than that ranks the ones it noted first.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use shardcast::ServerHandle;

use super::json::push_str;
use super::protocol::message_frame;

/// The topic the ranking is published to.
pub const TOPICS_TOPIC: &str = "$sys.topics";

/// How many topics a ranking lists.
pub const TOP: usize = 10;

/// Names tracked at most; bounds the set and each tick's query.
pub const MAX_TRACKED: usize = 4096;

/// Names subscribed since they were last seen empty. A `Mutex` off the hot
/// path: subscribing is rare next to publishing, and the stats thread holds
/// it only to copy the names out.
static TRACKED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Remembers topic names a connection was just subscribed to.
pub(crate) fn note(topics: &[&str]) {
    if topics.is_empty() {
        return;
    }
    let mut set = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    for t in topics {
        if set.len() >= MAX_TRACKED {
            break;
        }
        if !set.contains(*t) {
            set.insert((*t).to_owned());
        }
    }
}

/// The ranking as `(topic, subscribers)`, most subscribed first (ties by
/// name), and forgets names without subscribers.
pub fn ranking(handle: &ServerHandle) -> Vec<(String, usize)> {
    let names: Arc<Vec<String>> = Arc::new(
        TRACKED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect(),
    );
    if names.is_empty() {
        return Vec::new();
    }
    let asked = names.clone();
    let Ok(per_core) = handle.query(move |core| {
        asked
            .iter()
            .map(|n| core.subscriber_count(n))
            .collect::<Vec<_>>()
    }) else {
        return Vec::new();
    };
    let mut counts: Vec<(String, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), per_core.iter().map(|c| c[i]).sum()))
        .collect();
    {
        let mut set = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
        for (n, c) in &counts {
            if *c == 0 {
                set.remove(n);
            }
        }
    }
    counts.retain(|(_, c)| *c > 0);
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

/// `{"topics":[{"topic":..,"subscribers":..},..],"tracked":N}`.
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

/// Publishes the current ranking to [`TOPICS_TOPIC`].
pub(crate) fn publish(handle: &ServerHandle) {
    let body = ranking_json(&ranking(handle));
    handle.publish(TOPICS_TOPIC, &message_frame(TOPICS_TOPIC, &body));
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
