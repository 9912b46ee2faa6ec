//! Token buckets per HTTP client for the publish API, shared by every core: locked once per request, never on the message path.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

/// Clients tracked before idle (full) buckets are forgotten.
const SWEEP_ABOVE: usize = 10_000;

/// One bucket per client: `rate` tokens a second, at most `burst`.
pub(crate) struct Buckets {
    rate: f64,
    burst: f64,
    map: Mutex<FxHashMap<String, (f64, Instant)>>,
}

impl Buckets {
    /// Buckets filling at `rate` per second up to `burst`; a zero rate
    /// admits everything.
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            map: Mutex::new(FxHashMap::default()),
        }
    }

    /// Takes `n` tokens from `client`'s bucket. A request larger than the
    /// burst passes when the bucket is full and leaves it in debt, so the
    /// average rate holds whatever the batch size.
    ///
    /// # Errors
    /// How long until the request would pass.
    pub(crate) fn take(&self, client: &str, n: f64) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > SWEEP_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = map.entry(client.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        let need = n.min(self.burst);
        if *tokens >= need {
            *tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - *tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_its_rate_and_others_are_apart() {
        let b = Buckets::new(10.0, 100);
        assert!(b.take("a", 60.0).is_ok());
        assert!(b.take("a", 40.0).is_ok());
        let wait = b.take("a", 5.0).unwrap_err();
        assert!(wait <= Duration::from_millis(600), "{wait:?}");
        assert!(
            b.take("b", 100.0).is_ok(),
            "another client has its own bucket"
        );
        // A batch over the burst passes on a full bucket, then owes it.
        let c = Buckets::new(10.0, 100);
        assert!(c.take("c", 500.0).is_ok());
        assert!(c.take("c", 1.0).is_err());
        assert!(
            Buckets::new(0.0, 1).take("d", 1e9).is_ok(),
            "zero rate: no limit"
        );
    }
}
