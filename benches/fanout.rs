//! Fanout benchmarks without sockets: the per-subscriber cost of a publish on one core
//! (registry lookup, a `Bytes` clone per subscriber, a push onto its outbox).

use std::collections::VecDeque;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcast::pubsub::{InterestTable, Registry};
use shardcast::PreparedFrame;

fn publish_local(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for subs in [1_000u32, 10_000, 100_000] {
        let mut reg = Registry::new();
        for s in 0..subs {
            reg.subscribe(s, "news");
            reg.subscribe(s, &format!("own-{s}"));
        }
        let mut outboxes: Vec<VecDeque<Bytes>> = (0..subs).map(|_| VecDeque::new()).collect();
        let frame = PreparedFrame::text(&"x".repeat(64)).into_bytes();
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(format!("publish_to_{subs}_subscribers"), |b| {
            b.iter(|| {
                for &s in reg.subscribers(black_box("news")) {
                    outboxes[s as usize].push_back(frame.clone());
                }
                // Written out by the next flush; here just emptied again.
                for o in outboxes.iter_mut() {
                    o.clear();
                }
            })
        });
    }
    g.finish();
}

fn interest_lookup(c: &mut Criterion) {
    let t = InterestTable::new(64, 1 << 16);
    for i in 0..1000 {
        let b = t.bucket(&format!("topic-{i}"));
        t.set(b, i % 64);
    }
    let mut g = c.benchmark_group("interest");
    g.throughput(Throughput::Elements(1));
    g.bench_function("bucket_and_cores", |b| {
        b.iter(|| {
            let mut n = 0;
            t.for_each_core(t.bucket(black_box("topic-500")), |c| n += c);
            n
        })
    });
    g.finish();
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("registry");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("subscribe_then_remove_10k", |b| {
        let mut reg = Registry::new();
        b.iter(|| {
            for s in 0..10_000u32 {
                reg.subscribe(s, "hot");
            }
            for s in (0..10_000u32).rev() {
                reg.remove_subscriber(s, |_| {});
            }
        })
    });
    g.finish();
}

criterion_group!(benches, publish_local, interest_lookup, churn);
criterion_main!(benches);
