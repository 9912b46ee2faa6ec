//! Parsing a typed JSON message (`Message::json`, `Session::recv_json`):
//! serde_json against simd-json, on a 100-byte and a 10 KiB message.
//!
//! simd-json parses in place, so its cases include copying the borrowed
//! message into a buffer it may change, as `Message::json` would have to.
//!
//! `cargo bench --bench json` times them with criterion. For figures that
//! do not depend on what else the machine runs, count instructions:
//! `JSON_BENCH=serde-100 JSON_BENCH_ITERS=10000 valgrind --tool=callgrind
//! target/release/deps/json-…` runs one case that many times and nothing
//! else (`scripts/json-callgrind.sh` runs every case and prints the
//! instructions per parse).

use std::hint::black_box;

use criterion::{criterion_group, Criterion, Throughput};
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Chat {
    #[serde(rename = "type")]
    ty: String,
    data: ChatData,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct ChatData {
    room: String,
    user: String,
    text: String,
    seq: u64,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Batch {
    #[serde(rename = "type")]
    ty: String,
    data: BatchData,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct BatchData {
    items: Vec<Item>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Item {
    id: u64,
    name: String,
    price: f64,
    tags: Vec<String>,
    in_stock: bool,
}

/// About 100 bytes.
fn small() -> String {
    let s = r#"{"type":"chat","data":{"room":"lobby","user":"alice","text":"hello there, how are you?","seq":42}}"#;
    s.to_owned()
}

/// About 10 KiB.
fn large() -> String {
    let mut items = Vec::new();
    let mut i = 0;
    loop {
        items.push(format!(
            r#"{{"id":{i},"name":"item number {i}","price":{}.25,"tags":["red","large","sale"],"in_stock":{}}}"#,
            i * 3,
            i % 2 == 0
        ));
        let total: usize = items.iter().map(|s| s.len() + 1).sum();
        if total >= 10 * 1024 - 40 {
            break;
        }
        i += 1;
    }
    format!(
        r#"{{"type":"batch","data":{{"items":[{}]}}}}"#,
        items.join(",")
    )
}

fn serde_small(text: &str) -> Chat {
    serde_json::from_str(text).unwrap()
}

fn simd_small(text: &str) -> Chat {
    let mut buf = text.as_bytes().to_vec();
    simd_json::serde::from_slice(&mut buf).unwrap()
}

fn serde_large(text: &str) -> Batch {
    serde_json::from_str(text).unwrap()
}

fn simd_large(text: &str) -> Batch {
    let mut buf = text.as_bytes().to_vec();
    simd_json::serde::from_slice(&mut buf).unwrap()
}

fn parse(c: &mut Criterion) {
    let (s, l) = (small(), large());
    let mut g = c.benchmark_group("json_parse");
    g.throughput(Throughput::Bytes(s.len() as u64));
    g.bench_function(format!("serde_json/{}B", s.len()), |b| {
        b.iter(|| serde_small(black_box(&s)))
    });
    g.bench_function(format!("simd_json/{}B", s.len()), |b| {
        b.iter(|| simd_small(black_box(&s)))
    });
    g.throughput(Throughput::Bytes(l.len() as u64));
    g.bench_function(format!("serde_json/{}B", l.len()), |b| {
        b.iter(|| serde_large(black_box(&l)))
    });
    g.bench_function(format!("simd_json/{}B", l.len()), |b| {
        b.iter(|| simd_large(black_box(&l)))
    });
    g.finish();
}

criterion_group!(benches, parse);

fn main() {
    // One case, a fixed number of times, for an instruction count.
    if let Ok(case) = std::env::var("JSON_BENCH") {
        let iters: usize = std::env::var("JSON_BENCH_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let (s, l) = (small(), large());
        eprintln!("{case}: {iters} parses ({} B / {} B)", s.len(), l.len());
        for _ in 0..iters {
            match case.as_str() {
                "serde-100" => drop(black_box(serde_small(black_box(&s)))),
                "simd-100" => drop(black_box(simd_small(black_box(&s)))),
                "serde-10k" => drop(black_box(serde_large(black_box(&l)))),
                "simd-10k" => drop(black_box(simd_large(black_box(&l)))),
                other => panic!("unknown case {other}"),
            }
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
