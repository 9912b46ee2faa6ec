//! Codec benchmarks: unmasking and UTF-8 validation throughput in bytes per second.
//!
//! `cargo bench --bench codec` (about five minutes; add
//! `-- --warm-up-time 1 --measurement-time 2` for about three). Every masking
//! kernel the CPU has runs next to the byte loop, so the gain is visible.
//!
//! Time is the benchmark thread's CPU time, not wall time: on a small shared
//! machine, wall time also counts the moments the thread was descheduled,
//! which moved results by up to 2x between runs. CPU time of a thread that
//! never blocks is its wall time on an idle machine.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardcast::proto::mask::{self, MaskKernel};
use shardcast::proto::utf8;
use std::hint::black_box;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::ThreadCpuTime;

type Crit = Criterion<ThreadCpuTime>;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// A key without high bits keeps ASCII text ASCII after every pass, so each
/// iteration of a text benchmark scans the whole buffer.
const ASCII_KEY: [u8; 4] = [0x1f, 0x2e, 0x3d, 0x4c];

fn unmask(c: &mut Crit) {
    let mut g = c.benchmark_group("unmask");
    for size in [16usize, 125, 1024, 16 * 1024, 1024 * 1024] {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("apply_mask", size), |b| {
            b.iter(|| mask::apply_mask(black_box(&mut buf), KEY, 0))
        });
        for kernel in MaskKernel::ALL.into_iter().filter(|k| k.is_available()) {
            g.bench_function(BenchmarkId::new(kernel.name(), size), |b| {
                b.iter(|| kernel.apply(black_box(&mut buf), KEY, 0))
            });
        }
    }
    // A start one byte past an allocation's alignment, as a payload behind a
    // frame header usually is.
    let mut buf = vec![0x5au8; 16 * 1024 + 1];
    g.throughput(Throughput::Bytes(16 * 1024));
    g.bench_function(BenchmarkId::new("apply_mask", "16384+1"), |b| {
        b.iter(|| mask::apply_mask(black_box(&mut buf[1..]), KEY, 0))
    });
    g.finish();
}

fn unmask_text(c: &mut Crit) {
    let mut g = c.benchmark_group("unmask_text");
    for size in [16usize, 64, 125, 1024] {
        let mut buf: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("fused", size), |b| {
            b.iter(|| mask::unmask_text(black_box(&mut buf), ASCII_KEY, 0))
        });
        g.bench_function(BenchmarkId::new("mask_then_is_ascii", size), |b| {
            b.iter(|| {
                let buf = black_box(&mut buf);
                mask::apply_mask(buf, ASCII_KEY, 0);
                buf.is_ascii()
            })
        });
    }
    g.finish();
}

fn validate(c: &mut Crit) {
    let mut g = c.benchmark_group("utf8");
    let ascii = "the quick brown fox jumps over the lazy dog. ".repeat(64 * 1024 / 45);
    let mixed = "héllo wörld κόσμε 𝄞 ".repeat(64 * 1024 / 30);
    for (name, text) in [("ascii", &ascii), ("mixed", &mixed)] {
        let bytes = text.as_bytes();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(BenchmarkId::new("validate", name), |b| {
            b.iter(|| utf8::validate(black_box(bytes)))
        });
        g.bench_function(BenchmarkId::new("std_from_utf8", name), |b| {
            b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok())
        });
        g.bench_function(BenchmarkId::new("incremental_4KiB_chunks", name), |b| {
            b.iter(|| {
                let mut v = utf8::Utf8Validator::new();
                for chunk in black_box(bytes).chunks(4096) {
                    v.feed(chunk).unwrap();
                }
                v.finish().unwrap();
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = unmask, unmask_text, validate
}
criterion_main!(benches);
