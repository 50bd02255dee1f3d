//! Creates a fresh table and bucket on the moto server of `scripts/with-moto`
//! and fills the table with generated ~250-byte records of one week through
//! tally's own `DynamoDbRecordStore` (BatchWriteItem). Prints
//! `TABLE BUCKET` on stdout for `bench/summary/moto.sh`. Bench-only.
//!
//! Run with `./scripts/with-moto cargo run --release -p tally-aws --example
//! bench_fill_dynamodb -- RECORDS [WEEK]`.

use std::time::Instant;

use tally_core::{IsoWeek, RecordStore};

#[path = "../../tally-core/tests/common/mod.rs"]
mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().ok_or("usage: bench_fill_dynamodb RECORDS [WEEK]")?.parse()?;
    let week = IsoWeek::parse(&args.next().unwrap_or_else(|| "2026-W47".into()))?;
    let config = tally_aws::testing::fresh_config().await;
    let (store, _sink) = tally_aws::connect(&config).await?;
    let start = Instant::now();
    for batch in common::records(week, n, 7, common::varied_event_text).chunks(1000) {
        store.insert(batch, None).await?;
    }
    eprintln!("{n} records into moto table {} in {:.1}s", config.table, start.elapsed().as_secs_f64());
    println!("{} {}", config.table, config.bucket);
    Ok(())
}
