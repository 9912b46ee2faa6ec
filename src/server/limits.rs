//! The server's shared limits: connections, subscriptions and publish rates per address, subscriptions and topics over the server, and each core's share of the server's publish rate.
//!
//! Locked at most once per accept, handshake and close (the per-address
//! map); a subscribe or a publish only touches atomics.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use shardcast::{Rejection, Ws};

use super::{buckets, App, CoreLocal};

/// What the connections of one address share, without a lock: its
/// subscriptions and its publish bucket.
#[derive(Default)]
pub(crate) struct IpShared {
    subs: AtomicUsize,
    publish: buckets::Gcra,
}

/// One address's share of the server: its connections (changed under the
/// map's lock, once per handshake and close) and what they share.
#[derive(Default)]
pub(super) struct PerIp {
    conns: usize,
    pub(super) shared: Arc<IpShared>,
}

/// Which limit refused a publish, in the order of
/// [`metrics::PUBLISH_LIMITS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PubLimit {
    /// `publish_rate`, per WebSocket connection.
    Connection,
    /// `http_publish_rate`, per HTTP client (key or address).
    HttpClient,
    /// `publish_rate_per_ip`.
    Address,
    /// `server_publish_rate`.
    Server,
}

/// Which limit refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubLimit {
    /// `max_subscriptions`, per connection.
    Connection,
    /// `max_subscriptions_per_ip`.
    Address,
    /// `max_total_subscriptions`.
    Server,
    /// `max_topics`.
    Topics,
}

/// Counts one more connection of `ip`, unless it holds `limit` (zero: no
/// limit) already.
pub(super) fn count_ip(
    m: &mut FxHashMap<IpAddr, PerIp>,
    ip: IpAddr,
    limit: usize,
) -> Result<(), Rejection> {
    let e = m.entry(ip).or_default();
    if limit > 0 && e.conns >= limit {
        tracing::debug!(%ip, limit, "connection limit per address reached");
        return Err(Rejection::new(
            429,
            "too many connections from this address\n",
        ));
    }
    e.conns += 1;
    Ok(())
}

/// Takes one of `max` (zero: no limit) from `n`: counted first, given
/// back if over, so that cores subscribing at once cannot all take the
/// last one.
pub(super) fn take_one(n: &AtomicUsize, max: usize) -> bool {
    if n.fetch_add(1, Ordering::AcqRel) >= max && max > 0 {
        n.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

impl App {
    /// Whether `peer` is a trusted proxy, whose clients are counted by the
    /// address its `X-Forwarded-For` names.
    pub(super) fn proxied(&self, peer: IpAddr) -> bool {
        self.settings.trusted_proxies.contains(&peer)
    }

    /// Whether anything is counted per address.
    pub(super) fn counts_per_ip(&self) -> bool {
        self.settings.max_connections_per_ip > 0
            || self.settings.max_subscriptions_per_ip > 0
            || self.ip_publish_rate.is_some()
    }

    /// Nanoseconds on the clock the publish buckets share.
    pub(super) fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Takes `n` publishes from the address's bucket (a WebSocket
    /// connection's, when `per_ip` is given) and this core's share of the
    /// server's.
    ///
    /// # Errors
    /// The limit that refused, and how long until it would pass.
    pub(crate) fn take_publishes(
        &self,
        local: &CoreLocal,
        per_ip: Option<&IpShared>,
        n: u64,
    ) -> Result<(), (PubLimit, Duration)> {
        if self.ip_publish_rate.is_none() && self.server_publish_rate.is_none() {
            return Ok(());
        }
        let now = self.now_ns();
        if let (Some(rate), Some(ip)) = (self.ip_publish_rate, per_ip) {
            ip.publish
                .take(rate, now, n)
                .map_err(|w| (PubLimit::Address, w))?;
        }
        if let Some(rate) = self.server_publish_rate {
            local
                .publish
                .take(rate, now, n)
                .map_err(|w| (PubLimit::Server, w))?;
        }
        Ok(())
    }

    pub(super) fn release_ip(&self, ip: IpAddr) {
        if !self.counts_per_ip() {
            return;
        }
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = m.get_mut(&ip) {
            e.conns -= 1;
            if e.conns == 0 {
                m.remove(&ip);
            }
        }
    }

    /// Takes a subscription to `topic` (not yet held) under the address,
    /// server and topic limits; returns whether it creates the topic on
    /// this core, for [`App::release_subscription`].
    pub(crate) fn reserve_subscription(
        &self,
        ws: &Ws<'_, Self>,
        topic: &str,
    ) -> Result<bool, SubLimit> {
        let s = &self.settings;
        if !take_one(&self.subscriptions, s.max_total_subscriptions) {
            return Err(SubLimit::Server);
        }
        if let Some(ip) = &ws.data().per_ip {
            if !take_one(&ip.subs, s.max_subscriptions_per_ip) {
                self.subscriptions.fetch_sub(1, Ordering::AcqRel);
                return Err(SubLimit::Address);
            }
        }
        let creates = s.max_topics > 0 && ws.local_subscriber_count(topic) == 0;
        if creates && !take_one(&self.topics, s.max_topics) {
            self.release_subscription(ws, 1, 0);
            return Err(SubLimit::Topics);
        }
        Ok(creates)
    }

    /// Gives back `subs` subscriptions and `topics` topics of `ws`.
    pub(crate) fn release_subscription(&self, ws: &Ws<'_, Self>, subs: usize, topics: usize) {
        self.subscriptions.fetch_sub(subs, Ordering::AcqRel);
        if let Some(ip) = &ws.data().per_ip {
            ip.subs.fetch_sub(subs, Ordering::AcqRel);
        }
        if topics > 0 {
            self.topics.fetch_sub(topics, Ordering::AcqRel);
        }
    }
}
