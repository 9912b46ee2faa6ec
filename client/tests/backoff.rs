//! Verifies that the waits a client announces between failed attempts are its backoff policy's full-jitter draws from the injected random source, inside each attempt's window and under the cap, and that it turns `Failed` once `max_attempts` ran out.

mod support;

use std::time::Duration;

use shardcast_client::{Backoff, BackoffPolicy, Client, Config, Reason, State};
use support::{Proxy, Server};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_follows_its_seeded_full_jitter_schedule_and_stops_after_max_attempts() {
    let server = Server::start(0, &[]);
    let proxy = Proxy::start(server.addr).await;
    // Every attempt is accepted and reset at once.
    proxy.refuse(true);
    let policy = BackoffPolicy::default()
        .with_base(Duration::from_millis(10))
        .with_max(Duration::from_millis(40))
        .with_max_attempts(Some(6));
    let seed = 0x5eed;
    let (client, mut changes) = Client::start_observed(
        Config::new(&proxy.url())
            .unwrap()
            .with_backoff(policy.clone())
            .with_jitter_seed(Some(seed)),
    )
    .unwrap();
    let (waits, last) = tokio::time::timeout(WAIT, async {
        let mut waits = Vec::new();
        loop {
            let c = changes.recv().await.expect("state changes");
            if let Some(w) = c.retry_in {
                waits.push(w);
            }
            if c.state.is_terminal() {
                return (waits, c);
            }
        }
    })
    .await
    .expect("the client gave up within 10 s");

    // The same draws, computed from the policy and a source with the same seed.
    let mut expected = Backoff::new(policy.clone());
    let mut rng = fastrand::Rng::with_seed(seed);
    let draws: Vec<Duration> = (0..6)
        .map(|_| expected.next_delay(&mut rng).unwrap())
        .collect();
    assert_eq!(waits, draws);
    for (n, w) in waits.iter().enumerate() {
        assert!(*w < policy.ceiling(n as u32), "wait {n}: {w:?}");
        assert!(*w < Duration::from_millis(40), "capped: {w:?}");
    }
    assert!(
        waits.windows(2).any(|p| p[0] != p[1]),
        "jittered, not fixed: {waits:?}"
    );

    assert_eq!(last.state, State::Failed);
    assert_eq!(last.connections, 0);
    assert_eq!(last.attempt, 6);
    assert!(
        matches!(&last.reason, Some(Reason::AttemptsExhausted(r)) if matches!(**r, Reason::Connect(_))),
        "{:?}",
        last.reason
    );
    assert_eq!(
        client.metrics().errors,
        7,
        "six retries after the first attempt"
    );
}
