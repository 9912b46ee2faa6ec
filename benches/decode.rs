//! Decoder benchmarks: frames per second for small masked text frames and bytes per second for 64 KiB frames, decode + unmask + UTF-8 validation included.
//!
//! The decoder unmasks in place, so each iteration needs the masked bytes
//! back:
//! - 64 B frames: the iteration re-masks the payload after decoding it
//!   (`mask::apply_mask`, the same cost as unmasking); `remask_only`
//!   measures that step alone so it can be subtracted.
//! - 64 KiB frames: `iter_custom` copies a pristine frame in untimed and
//!   times only the decode call; the copy leaves the frame in cache, as a
//!   just-received buffer would be.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcast::proto::decode::{Decoded, Decoder, Incoming, Limits, Role};
use shardcast::proto::frame::{encode_frame, OpCode};
use shardcast::proto::mask;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_frame(&mut frame, true, opcode, payload, Some(KEY));
    frame
}

/// Decodes the single message in `frame` and returns its payload length.
#[inline(always)]
fn decode_len(decoder: &mut Decoder, frame: &mut [u8], limits: &Limits) -> usize {
    match decoder.decode(frame, limits) {
        Ok(Decoded::Message { message, .. }) => match message {
            Incoming::Text(t) => t.len(),
            Incoming::Binary(b) => b.len(),
            _ => unreachable!(),
        },
        other => panic!("{other:?}"),
    }
}

fn small(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("decode_64B");
    g.throughput(Throughput::Elements(1));
    let text = "x".repeat(64);
    for (name, opcode, payload) in [
        ("text_masked", OpCode::Text, text.as_bytes()),
        ("binary_masked", OpCode::Binary, &[0xA5u8; 64][..]),
    ] {
        let mut frame = client_frame(opcode, payload);
        let head = frame.len() - 64;
        let mut decoder = Decoder::new(Role::Server);
        g.bench_function(name, |b| {
            b.iter(|| {
                let n = decode_len(&mut decoder, black_box(&mut frame), &limits);
                mask::apply_mask(&mut frame[head..], KEY, 0);
                n
            })
        });
    }
    let mut frame = client_frame(OpCode::Text, text.as_bytes());
    g.bench_function("remask_only", |b| {
        b.iter(|| mask::apply_mask(black_box(&mut frame[6..]), KEY, 0))
    });
    g.finish();
}

fn large(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("decode_64KiB");
    g.throughput(Throughput::Bytes(64 * 1024));
    let ascii = "a".repeat(64 * 1024);
    let mut mixed = "héllo wörld κόσμε 𝄞 ".repeat(64 * 1024 / 30);
    while mixed.len() < 64 * 1024 {
        mixed.push('.');
    }
    let binary: Vec<u8> = (0..64 * 1024).map(|i| (i * 31) as u8).collect();
    for (name, opcode, payload) in [
        ("binary_masked", OpCode::Binary, &binary[..]),
        ("text_ascii_masked", OpCode::Text, ascii.as_bytes()),
        ("text_mixed_masked", OpCode::Text, mixed.as_bytes()),
    ] {
        let pristine = client_frame(opcode, payload);
        let mut frame = pristine.clone();
        let mut decoder = Decoder::new(Role::Server);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    frame.copy_from_slice(&pristine);
                    let start = Instant::now();
                    black_box(decode_len(&mut decoder, black_box(&mut frame), &limits));
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, small, large);
criterion_main!(benches);
