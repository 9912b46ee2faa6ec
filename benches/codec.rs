//! Codec benchmarks: unmasking and UTF-8 validation throughput in bytes per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcast::proto::{mask, utf8};
use std::hint::black_box;

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for size in [16usize, 125, 1024, 16 * 1024, 1024 * 1024] {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| mask::apply_mask(black_box(&mut buf), [1, 2, 3, 4], 0))
        });
    }
    g.finish();
}

fn validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    let ascii = "a".repeat(64 * 1024);
    let mixed = "héllo wörld κόσμε 𝄞 ".repeat(64 * 1024 / 30);
    for (name, text) in [("ascii", &ascii), ("mixed", &mixed)] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| utf8::validate(black_box(text.as_bytes())))
        });
    }
    g.finish();
}

criterion_group!(benches, unmask, validate);
criterion_main!(benches);
