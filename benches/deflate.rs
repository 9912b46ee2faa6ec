//! Which compressor a publish goes through: flate2 (zlib-rs backend, a streaming compressor reset
//! after each message, sync flush as RFC 7692 wants) against libdeflate (one-shot, via
//! `libdeflater`), on JSON messages of 128 B, 1 KiB and 16 KiB, at levels 1 and 6. Reports CPU time
//! per message and, once per size, the compressed sizes.
//!
//! `cargo bench --bench deflate` (about two minutes; add
//! `-- --warm-up-time 1 --measurement-time 2` for less).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardcast::proto::deflate::Deflater;
use shardcast::PreparedFrame;
use std::hint::black_box;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::ThreadCpuTime;

type Crit = Criterion<ThreadCpuTime>;

/// A JSON message of about `n` bytes, like a market-data or chat publish.
fn json(n: usize) -> String {
    let mut s = String::from(r#"{"type":"message","topic":"prices.eu","data":{"items":["#);
    let mut k = 0;
    while s.len() + 64 < n {
        s.push_str(&format!(
            r#"{{"sym":"S{k:03}","bid":{}.{:02},"ask":{}.{:02},"ts":17000{k:05}}},"#,
            100 + k % 17,
            k * 7 % 100,
            101 + k % 13,
            k * 3 % 100
        ));
        k += 1;
    }
    s.push_str(r#"{"end":true}]}}"#);
    s
}

fn compressors(c: &mut Crit) {
    let mut g = c.benchmark_group("deflate");
    for size in [128usize, 1024, 16 * 1024] {
        let text = json(size);
        let frame = PreparedFrame::text(&text);
        g.throughput(Throughput::Bytes(text.len() as u64));
        for level in [1u32, 6] {
            let mut d = Deflater::new(level, 15, false);
            let z = d.compress_frame(frame.as_bytes()).map_or(0, |z| z.len());
            let mut ld = libdeflater::Compressor::new(
                libdeflater::CompressionLvl::new(level as i32).expect("a valid level"),
            );
            let mut out = vec![0u8; ld.deflate_compress_bound(text.len())];
            let n = ld.deflate_compress(text.as_bytes(), &mut out).unwrap();
            eprintln!(
                "{} B JSON, level {level}: flate2/zlib-rs frame {z} B, libdeflate payload {n} B (+1 B for RFC 7692)",
                text.len()
            );
            g.bench_function(
                BenchmarkId::new(format!("flate2-zlib-rs-l{level}"), size),
                |b| b.iter(|| d.compress_frame(black_box(frame.as_bytes()))),
            );
            g.bench_function(
                BenchmarkId::new(format!("libdeflate-l{level}"), size),
                |b| b.iter(|| ld.deflate_compress(black_box(text.as_bytes()), &mut out)),
            );
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = compressors
}
criterion_main!(benches);
