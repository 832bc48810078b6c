//! Wire-layer costs: frame encode, decode with digest verification, header-only parse, the
//! acknowledgement JSON every stream message costs, and smux stream decoding.
//!
//! `cargo bench --bench codec`; figures are recorded in BENCHMARKS.md.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ssm_session::payload::{Acknowledge, JsonPayload};
use ssm_session::{Frame, Header, MessageType, PayloadType, smux};
use uuid::Uuid;

fn frame(payload_len: usize) -> Frame {
    Frame {
        message_type: MessageType::OutputStreamData,
        schema_version: 1,
        created_date: 1_700_000_000_000,
        sequence_number: 42,
        flags: 0,
        message_id: Uuid::from_u128(0xdd01e56b_ff48_483e_a508_b5f073f31b16),
        payload_type: PayloadType::Output,
        payload: Bytes::from((0..payload_len).map(|i| i as u8).collect::<Vec<_>>()),
    }
}

/// A 120-byte frame with an empty payload: no sender can encode it, every receiver accepts it.
fn empty_frame_wire() -> Bytes {
    let mut wire = frame(1).to_bytes().unwrap().to_vec();
    wire.truncate(120);
    wire[116..120].copy_from_slice(&0u32.to_be_bytes());
    wire.into()
}

const SIZES: [usize; 3] = [0, 1024, 64 * 1024];

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_encode");
    for size in SIZES {
        // An empty payload cannot be framed; the smallest encodable frame stands in for size 0.
        let frame = frame(size.max(1));
        group.throughput(Throughput::Bytes(frame.encoded_len() as u64));
        let mut out = Vec::with_capacity(frame.encoded_len());
        group.bench_with_input(BenchmarkId::from_parameter(size), &frame, |b, frame| {
            b.iter(|| {
                out.clear();
                frame.encode(&mut out).unwrap();
                black_box(&out);
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("frame_decode_verify");
    for size in SIZES {
        let wire = if size == 0 {
            empty_frame_wire()
        } else {
            frame(size).to_bytes().unwrap()
        };
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            b.iter(|| Frame::decode(black_box(wire.clone())).unwrap())
        });
    }
    group.finish();

    let wire = frame(1024).to_bytes().unwrap();
    c.bench_function("header_parse", |b| {
        b.iter(|| Header::parse(black_box(&wire)).unwrap())
    });
}

fn acknowledgements(c: &mut Criterion) {
    let ack = Acknowledge::for_frame(&frame(1));
    let json = ack.to_json();
    c.bench_function("ack_json_encode", |b| b.iter(|| black_box(&ack).to_json()));
    c.bench_function("ack_json_decode", |b| {
        b.iter(|| Acknowledge::from_json(black_box(&json)).unwrap())
    });
}

fn smux_decode(c: &mut Criterion) {
    // 1 MiB of 32 KiB PSH frames (smux's default frame size), delivered in 1 KiB messages as the
    // reference peers send them.
    let stream: Vec<u8> = (0..32)
        .flat_map(|i| {
            smux::Frame::psh(3, Bytes::from(vec![i as u8; 32 * 1024]))
                .to_bytes()
                .unwrap()
        })
        .collect();
    let mut group = c.benchmark_group("smux_decode");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("1KiB_pieces", |b| {
        b.iter(|| {
            let mut decoder = smux::StreamDecoder::new();
            let mut frames = 0;
            for piece in stream.chunks(1024) {
                decoder.push(piece);
                while decoder.next_frame().unwrap().is_some() {
                    frames += 1;
                }
            }
            assert_eq!(frames, 32);
        })
    });
    group.finish();
}

criterion_group!(benches, frames, acknowledgements, smux_decode);
criterion_main!(benches);
