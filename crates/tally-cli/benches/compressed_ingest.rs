//! Compressed ingest against plain ingest, in the same run (issue 24).
//!
//! Run with `cargo bench -p tally-cli --bench compressed_ingest`. The router
//! `tally serve` runs, over the SQLite store it runs (WAL, `synchronous=FULL`,
//! group commit) in a temporary folder, driven in-process (`oneshot`, no
//! socket, so the figures are the server's own work). The body is 1,000
//! NDJSON log-like records of ~1,000 bytes (just under 1 MB); the compressed
//! body is the same bytes gzipped at level 6 (Vector's and curl's default).
//! Plain and gzip requests alternate in rounds so that load on a shared
//! machine hits both alike; the figure printed is records stored per second
//! for each and their ratio (target: gzip >= 0.8x plain). The same is printed
//! for the in-memory store, where nothing but HTTP, decoding and validation
//! costs anything (the worst case for the ratio).
//!
//! The single-record figure checks that an uncompressed request pays nothing
//! measurable for decoding: the only new step on its path is reading the
//! absent `Content-Encoding` header ([`tally_http::encoding::content_coding`]),
//! timed on its own and printed as a share of a whole single-record POST.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally_core::ports::RecordStore;
use tally_core::testing::{MemoryRecordStore, MemorySummarySink};
use tally_core::{IngestService, Limits, SystemClock};
use tally_http::{AppState, Auth, HttpOptions, router};
use tally_local::{SqliteOptions, SqliteRecordStore};
use tower::ServiceExt;

const RECORDS: usize = 1000;

/// 1,000 records of about 1,000 bytes: a log line's fields and a message of
/// words from a small vocabulary, seeded, so the body compresses like logs do.
fn ndjson_body() -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "request", "served", "user", "cache", "miss", "hit", "upstream", "timeout", "retry", "order", "payment",
        "accepted", "declined", "session", "started", "ended", "latency", "ms", "bytes", "queue", "worker", "job",
        "done", "failed",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut body = Vec::new();
    for i in 0..RECORDS {
        let mut msg = String::new();
        while msg.len() < 820 {
            msg.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
            msg.push(' ');
        }
        let line = format!(
            "{{\"ts\":\"2026-11-25T15:{:02}:{:02}.{:03}Z\",\"level\":\"{}\",\"host\":\"web-{}\",\"request_id\":\"{:016x}\",\
             \"status\":{},\"duration_ms\":{}.{},\"msg\":\"{}\"}}\n",
            i / 60 % 60,
            i % 60,
            next() % 1000,
            ["info", "warn", "error"][(next() % 3) as usize],
            next() % 16,
            next(),
            [200, 201, 404, 500][(next() % 4) as usize],
            next() % 900,
            next() % 10,
            msg.trim_end()
        );
        body.extend_from_slice(line.as_bytes());
    }
    body
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn app(store: Arc<dyn RecordStore>) -> Router {
    let ingest = IngestService::new(store, Arc::new(SystemClock), Limits::default());
    router(AppState::new(ingest, Arc::new(MemorySummarySink::default()), Auth::Open), HttpOptions::default())
}

fn request(body: &[u8], coding: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/records").header("content-type", "application/x-ndjson");
    if let Some(coding) = coding {
        req = req.header("content-encoding", coding);
    }
    req.body(Body::from(body.to_vec())).expect("request")
}

async fn post(app: &Router, body: &[u8], coding: Option<&str>) {
    let res = app.clone().oneshot(request(body, coding)).await.expect("infallible");
    assert_eq!(res.status(), 201, "the bench body must be stored");
}

/// Records/s of plain and gzip bodies, alternating in `rounds` of `per_round` requests each.
fn compare(rt: &tokio::runtime::Runtime, app: &Router, plain: &[u8], zipped: &[u8], rounds: usize, per_round: usize) {
    let (mut t_plain, mut t_gzip) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        for (body, coding, total) in [(plain, None, &mut t_plain), (zipped, Some("gzip"), &mut t_gzip)] {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..per_round {
                    post(app, body, coding).await;
                }
            });
            *total += start.elapsed();
        }
    }
    let n = (rounds * per_round * RECORDS) as f64;
    let (plain_rate, gzip_rate) = (n / t_plain.as_secs_f64(), n / t_gzip.as_secs_f64());
    println!(
        "  plain {plain_rate:.0} records/s, gzip {gzip_rate:.0} records/s: gzip / plain = {:.2}x",
        gzip_rate / plain_rate
    );
}

fn compressed_ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let plain = ndjson_body();
    let zipped = gzip(&plain);
    println!(
        "body: {RECORDS} records, {} bytes plain, {} bytes gzip (level 6, {:.1}x smaller)",
        plain.len(),
        zipped.len(),
        plain.len() as f64 / zipped.len() as f64
    );
    assert!(plain.len() <= Limits::default().max_body_bytes, "the body must fit the default limit");

    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite: Arc<dyn RecordStore> =
        Arc::new(SqliteRecordStore::open(dir.path().join("tally.db"), SqliteOptions::default()).expect("sqlite"));
    let sqlite_app = app(sqlite);
    let memory_app = app(Arc::new(MemoryRecordStore::default()));
    rt.block_on(post(&sqlite_app, &zipped, Some("gzip")));
    println!("SQLite store (tally serve), 3 rounds x 20 requests of each:");
    compare(&rt, &sqlite_app, &plain, &zipped, 3, 20);
    println!("memory store (no storage cost: the ratio's worst case), 3 rounds x 20 requests of each:");
    compare(&rt, &memory_app, &plain, &zipped, 3, 20);

    // A single small record, uncompressed: the decoding step's share.
    let one = br#"{"temp":21.5}"#;
    let headers = request(one, None).headers().clone();
    let lookups = 1_000_000;
    let start = Instant::now();
    for _ in 0..lookups {
        black_box(tally_http::encoding::content_coding(black_box(&headers)).expect("no coding"));
    }
    let per_lookup = start.elapsed().as_secs_f64() / f64::from(lookups);
    let posts = 2000;
    let start = Instant::now();
    rt.block_on(async {
        for _ in 0..posts {
            let res = memory_app.clone().oneshot(request(one, None)).await.expect("infallible");
            assert_eq!(res.status(), 201);
        }
    });
    let per_post = start.elapsed().as_secs_f64() / f64::from(posts);
    println!(
        "single record, uncompressed: the Content-Encoding check takes {:.0} ns of a {:.1} us POST ({:.3} %)",
        per_lookup * 1e9,
        per_post * 1e6,
        per_lookup / per_post * 100.0
    );

    let mut group = c.benchmark_group("ingest 1000 records (SQLite)");
    group.sample_size(20);
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("plain NDJSON, 1 MB", |b| b.iter(|| rt.block_on(post(&sqlite_app, &plain, None))));
    group.bench_function("gzip NDJSON, 1 MB decoded", |b| {
        b.iter(|| rt.block_on(post(&sqlite_app, &zipped, Some("gzip"))))
    });
    group.finish();
}

criterion_group!(benches, compressed_ingest);
criterion_main!(benches);
