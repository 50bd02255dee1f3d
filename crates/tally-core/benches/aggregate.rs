//! Aggregator throughput on generated ~250-byte varied nested records.
//!
//! Run with `cargo bench -p tally-core --bench aggregate`. Besides criterion's
//! report it prints records/s and MB/s for one pass over 200k records, on one
//! core and on two (two shard aggregators merged, as a parallel run would).

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally_core::IsoWeek;
use tally_core::summary::{Aggregator, SummaryOptions};

#[path = "../tests/common/mod.rs"]
mod common;

fn week() -> IsoWeek {
    IsoWeek::parse("2026-W47").expect("week")
}

fn aggregate(c: &mut Criterion) {
    let records = common::records(week(), 200_000, 42, common::varied_event_text);
    let bytes: usize = records.iter().map(|r| r.data.len()).sum();
    let options = SummaryOptions::default();
    println!("{} records, {:.0} bytes on average", records.len(), bytes as f64 / records.len() as f64);

    for _ in 0..3 {
        let (start, cpu) = (Instant::now(), thread_cpu_secs());
        let mut agg = Aggregator::new(week(), &options);
        records.iter().for_each(|r| {
            agg.push(r);
        });
        black_box(agg.finish());
        let secs = start.elapsed().as_secs_f64();
        let cpu = thread_cpu_secs().map(|end| end - cpu.unwrap_or(end));
        println!(
            "one core: {:.0} records/s, {:.0} MB/s wall; {} per CPU-second (immune to other load)",
            records.len() as f64 / secs,
            bytes as f64 / secs / 1e6,
            cpu.filter(|c| *c > 0.0).map_or("n/a".into(), |c| format!("{:.0} records/s", records.len() as f64 / c)),
        );
    }

    let start = Instant::now();
    let (left, right) = records.split_at(records.len() / 2);
    let (mut a, b) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut agg = Aggregator::new(week(), &options);
            right.iter().for_each(|r| {
                agg.push(r);
            });
            agg
        });
        let mut agg = Aggregator::new(week(), &options);
        left.iter().for_each(|r| {
            agg.push(r);
        });
        (agg, h.join().expect("shard thread"))
    });
    a.merge(b).expect("same week");
    black_box(a.finish());
    let secs = start.elapsed().as_secs_f64();
    println!("two cores (2 shards + merge): {:.0} records/s", records.len() as f64 / secs);

    let mut group = c.benchmark_group("aggregate");
    group.sample_size(10);
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("push 200k events + finish", |b| {
        b.iter(|| {
            let mut agg = Aggregator::new(week(), &options);
            records.iter().for_each(|r| {
                agg.push(r);
            });
            black_box(agg.finish())
        })
    });
    group.finish();
}

/// CPU time of this thread (Linux), so figures stay meaningful on a busy machine.
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(stat.split_whitespace().next()?.parse::<f64>().ok()? / 1e9)
}

criterion_group!(benches, aggregate);
criterion_main!(benches);
