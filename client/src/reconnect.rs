//! When to reconnect: exponential backoff with full jitter, and which close codes end retrying. No I/O, no clock.
//!
//! Time and randomness come in as arguments (a [`Jitter`] source, the
//! durations connections lasted), so schedules are tested exactly and a
//! reconnect storm of thousands of clients is simulated in microseconds.

use std::time::Duration;

/// A source of uniform numbers in `[0, 1)` for the jitter.
pub trait Jitter {
    /// The next number, in `[0, 1)`.
    fn unit(&mut self) -> f64;
}

impl Jitter for fastrand::Rng {
    fn unit(&mut self) -> f64 {
        self.f64()
    }
}

impl<F: FnMut() -> f64> Jitter for F {
    fn unit(&mut self) -> f64 {
        self()
    }
}

/// How long to wait between connection attempts.
///
/// The `n`th wait (from 0) is drawn uniformly from
/// `[0, min(max, base × factorⁿ))` ("full jitter"): clients dropped at the
/// same moment spread their retries over the whole window instead of
/// arriving together.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BackoffPolicy {
    /// The ceiling of the first wait. Default: 100 ms.
    pub base: Duration,
    /// The largest ceiling. Default: 10 s.
    pub max: Duration,
    /// How much the ceiling grows per attempt. Default: 2.
    pub factor: f64,
    /// Attempts after which the client gives up and turns
    /// [`Failed`](crate::State::Failed); `None` retries forever. Default: `None`.
    pub max_attempts: Option<u32>,
    /// A connection that stayed up this long resets the schedule to its
    /// first step; one that drops sooner keeps growing it, so a server that
    /// accepts and then drops every connection is not hammered. Default: 5 s.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
            factor: 2.0,
            max_attempts: None,
            reset_after: Duration::from_secs(5),
        }
    }
}

impl BackoffPolicy {
    /// Sets [`BackoffPolicy::base`]. Default: 100 ms.
    pub fn with_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets [`BackoffPolicy::max`]. Default: 10 s.
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets [`BackoffPolicy::factor`]. Default: 2.
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets [`BackoffPolicy::max_attempts`]. Default: `None` (unlimited).
    pub fn with_max_attempts(mut self, max_attempts: Option<u32>) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets [`BackoffPolicy::reset_after`]. Default: 5 s.
    pub fn with_reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = reset_after;
        self
    }

    /// The ceiling of the wait before attempt `n` (from 0).
    pub fn ceiling(&self, n: u32) -> Duration {
        let grown = self.base.as_secs_f64() * self.factor.max(1.0).powi(n.min(1024) as i32);
        Duration::from_secs_f64(grown.min(self.max.as_secs_f64()))
    }
}

/// The backoff state of one client: how many attempts since the last
/// stable connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    /// A schedule at its first step.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self { policy, attempt: 0 }
    }

    /// The policy.
    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }

    /// Attempts counted since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The wait before the next attempt, or `None` once
    /// [`BackoffPolicy::max_attempts`] have been made.
    pub fn next_delay(&mut self, rng: &mut impl Jitter) -> Option<Duration> {
        if self
            .policy
            .max_attempts
            .is_some_and(|max| self.attempt >= max)
        {
            return None;
        }
        let ceiling = self.policy.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let u = rng.unit().clamp(0.0, 1.0);
        Some(ceiling.mul_f64(u))
    }

    /// Tells the schedule that a connection was established and lasted
    /// `lasted`; it restarts from the first step if that was long enough.
    pub fn connection_ended(&mut self, lasted: Duration) {
        if lasted >= self.policy.reset_after {
            self.attempt = 0;
        }
    }

    /// Restarts the schedule from its first step.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// What to do after the server closed the connection with a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Reconnect after the backoff wait.
    Retry,
    /// Stop and turn [`Failed`](crate::State::Failed): retrying cannot help.
    Stop,
}

/// Which close codes from the server end reconnection.
///
/// Default: stop on 1002 (protocol error), 1003 (unsupported data), 1007
/// (invalid payload), 1008 (policy: auth refused or expired), 1009 (message
/// too big) and 1010 (extension required), which a new connection would
/// only repeat; retry on everything else, notably 1000, 1001 (going away:
/// shutdown, idle), 1006 (no close frame), 1011 (server error), 1012
/// (service restart) and 1013 (try again later: e.g. slow consumer).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClosePolicy {
    /// Codes after which the client stops.
    pub stop: Vec<u16>,
}

impl Default for ClosePolicy {
    fn default() -> Self {
        Self {
            stop: vec![1002, 1003, 1007, 1008, 1009, 1010],
        }
    }
}

impl ClosePolicy {
    /// A policy that stops on exactly `codes`.
    pub fn stopping_on(codes: &[u16]) -> Self {
        Self {
            stop: codes.to_vec(),
        }
    }

    /// The verdict for a close `code` from the server.
    pub fn verdict(&self, code: u16) -> Verdict {
        if self.stop.contains(&code) {
            Verdict::Stop
        } else {
            Verdict::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceilings_grow_by_the_factor_up_to_the_max() {
        let p = BackoffPolicy {
            base: ms(100),
            max: ms(1000),
            factor: 2.0,
            ..BackoffPolicy::default()
        };
        let c: Vec<_> = (0..6).map(|n| p.ceiling(n)).collect();
        assert_eq!(c, [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        assert_eq!(p.ceiling(u32::MAX), ms(1000));
    }

    #[test]
    fn waits_are_the_injected_fraction_of_the_ceiling() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let mut half = || 0.5;
        let waits: Vec<_> = (0..4).map(|_| b.next_delay(&mut half).unwrap()).collect();
        assert_eq!(waits, [ms(50), ms(100), ms(200), ms(400)]);
        let mut zero = || 0.0;
        assert_eq!(b.next_delay(&mut zero), Some(Duration::ZERO));
        let mut almost_one = || 0.999_999;
        let w = b.next_delay(&mut almost_one).unwrap();
        assert!(w < ms(3200) && w > ms(3199), "{w:?}");
    }

    #[test]
    fn full_jitter_covers_the_whole_window() {
        let mut rng = fastrand::Rng::with_seed(7);
        let p = BackoffPolicy::default();
        let waits: Vec<_> = (0..10_000)
            .map(|_| Backoff::new(p.clone()).next_delay(&mut rng).unwrap())
            .collect();
        let below = waits.iter().filter(|w| **w < ms(10)).count();
        let above = waits.iter().filter(|w| **w > ms(90)).count();
        // Uniform over [0, 100 ms): about 10 % in each end decile.
        assert!((800..1200).contains(&below), "{below}");
        assert!((800..1200).contains(&above), "{above}");
        assert!(waits.iter().all(|w| *w < ms(100)));
    }

    #[test]
    fn max_attempts_end_the_schedule() {
        let p = BackoffPolicy {
            max_attempts: Some(3),
            ..BackoffPolicy::default()
        };
        let mut b = Backoff::new(p);
        let mut one = || 0.9;
        assert!((0..3).all(|_| b.next_delay(&mut one).is_some()));
        assert_eq!(b.next_delay(&mut one), None);
    }

    #[test]
    fn only_a_stable_connection_resets_the_schedule() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let mut one = || 0.5;
        for _ in 0..4 {
            b.next_delay(&mut one);
        }
        b.connection_ended(ms(4999));
        assert_eq!(
            b.attempt(),
            4,
            "a short-lived connection keeps the schedule"
        );
        assert_eq!(b.next_delay(&mut one), Some(ms(800)));
        b.connection_ended(ms(5000));
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.next_delay(&mut one), Some(ms(50)));
    }

    #[test]
    fn close_codes_decide() {
        let p = ClosePolicy::default();
        for code in [1008, 1002, 1007, 1009] {
            assert_eq!(p.verdict(code), Verdict::Stop, "{code}");
        }
        for code in [1000, 1001, 1006, 1011, 1012, 1013, 4000] {
            assert_eq!(p.verdict(code), Verdict::Retry, "{code}");
        }
    }
}
