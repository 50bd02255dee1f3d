//! The weekly comparison end to end: generated weeks through the summarize
//! service (memory store and sink), then the findings of `summary.json`.
//!
//! Week 1 and week 2 are drawn from the same distribution with different
//! seeds: week 2 must raise no warning. Week 3 injects every finding kind,
//! each on its own field, and each must be found on the right path.

mod common;

use common::Rng;
use tally_core::summary::{FindingKind, NoProgress, SUMMARY_JSON, Severity, Summary, summarize_week};
use tally_core::testing::{FixedClock, MemoryRecordStore, MemorySummarySink};
use tally_core::{IsoWeek, RecordLifecycle, SummaryOptions, SummarySink, Timestamp};

/// How a week's records are drawn.
#[derive(Clone, Copy, Default)]
struct Shift {
    /// Records per week.
    records: usize,
    /// Every finding kind at once.
    broken: bool,
}

/// One record of the "normal" population, or of the broken week 3.
fn record(rng: &mut Rng, broken: bool) -> String {
    let countries = ["de", "fr", "us", "jp", "br", "in"];
    // Skewed but stable country mix: de 40 %, fr 20 %, us 15 %, … .
    let weights = [40, 20, 15, 10, 10, 5];
    let mut roll = rng.below(100);
    let mut country = countries[0];
    for (c, w) in countries.iter().zip(weights) {
        if roll < w {
            country = c;
            break;
        }
        roll -= w;
    }
    if broken {
        // top_values: a flood of one country.
        country = if rng.chance(70) { "jp" } else { country };
    }
    // distribution: amounts of around 10–110 normally, ×4 when broken.
    let base = 10 + rng.below(50) + rng.below(50);
    let amount = if broken { base * 4 } else { base };
    // null_rate: 5 % null normally, 50 % when broken.
    let email = if rng.chance(if broken { 50 } else { 5 }) {
        "null".to_owned()
    } else {
        format!("\"u{}@example.com\"", rng.below(500))
    };
    // type_changed: zip codes are numbers, strings when broken.
    let zip = rng.below(90_000) + 10_000;
    let zip = if broken { format!("\"{zip}\"") } else { zip.to_string() };
    let mut r = format!(
        r#"{{"kind":"{}","country":"{country}","amount":{amount},"email":{email},"zip":{zip},"user":"user-{}","ok":{}"#,
        if rng.chance(70) { "order" } else { "refund" },
        rng.below(100_000),
        rng.chance(90)
    );
    // field_removed: `legacy` in 30 % of records, none when broken.
    if !broken && rng.chance(30) {
        r.push_str(r#","legacy":{"v":1}"#);
    }
    // field_added: `coupon` only when broken, in 20 % of records.
    if broken && rng.chance(20) {
        r.push_str(r#","coupon":"SPRING""#);
    }
    r.push('}');
    r
}

async fn summarize(
    store: &MemoryRecordStore,
    sink: &MemorySummarySink,
    week: IsoWeek,
    seed: u64,
    shift: Shift,
    options: &SummaryOptions,
) -> Summary {
    let mut records = common::records(week, shift.records, seed, |rng| record(rng, shift.broken));
    if shift.broken {
        // quiet_day: nothing arrived on Wednesday.
        let start = week.start().as_millis();
        records.retain(|r| (r.received_at.as_millis() - start) / 86_400_000 != 2);
    }
    store.restore(&records).await.unwrap();
    let clock = FixedClock::at(Timestamp::from_millis(week.end().as_millis() + 300_000));
    summarize_week(store, sink, &clock, week, options, &NoProgress).await.unwrap();
    serde_json::from_slice(&sink.read_object(week, SUMMARY_JSON).await.unwrap().unwrap()).unwrap()
}

fn weeks() -> [IsoWeek; 3] {
    let w1 = IsoWeek::parse("2026-W45").unwrap();
    [w1, w1.next(), w1.next().next()]
}

#[tokio::test]
async fn a_same_distribution_week_warns_of_nothing_and_a_broken_week_of_every_kind() {
    let (store, sink) = (MemoryRecordStore::default(), MemorySummarySink::default());
    let options = SummaryOptions::default();
    let [w1, w2, w3] = weeks();
    let normal = Shift { records: 3000, broken: false };

    let first = summarize(&store, &sink, w1, 1, normal, &options).await;
    assert_eq!(first.schema, 4);
    assert_eq!(first.comparison, None, "no earlier week, no comparison");

    let second = summarize(&store, &sink, w2, 2, normal, &options).await;
    let c2 = second.comparison.as_ref().expect("week 1 has a manifest");
    assert_eq!(c2.previous_week, w1);
    let warnings: Vec<_> = c2.findings.iter().filter(|f| f.severity == Severity::Warn).collect();
    assert!(warnings.is_empty(), "same distribution, yet: {warnings:#?}");

    let third = summarize(&store, &sink, w3, 3, Shift { records: 9000, broken: true }, &options).await;
    let c3 = third.comparison.as_ref().unwrap();
    assert_eq!(c3.previous_week, w2);
    let found = |kind: FindingKind, path: Option<&str>| {
        c3.findings.iter().find(|f| f.kind == kind && f.path.as_deref() == path).unwrap_or_else(|| {
            panic!("no {kind} finding on {path:?} in {:#?}", c3.findings);
        })
    };
    let volume = found(FindingKind::Volume, None);
    assert_eq!((volume.previous.as_u64(), volume.current.as_u64()), (Some(3000), Some(third.records)));
    assert_eq!(found(FindingKind::FieldAdded, Some("coupon")).severity, Severity::Info);
    assert_eq!(found(FindingKind::FieldRemoved, Some("legacy")).severity, Severity::Warn);
    // Only the topmost path of a vanished subtree.
    assert!(!c3.findings.iter().any(|f| f.path.as_deref() == Some("legacy.v")), "{:#?}", c3.findings);
    let zip = found(FindingKind::TypeChanged, Some("zip"));
    assert_eq!((zip.previous.as_str(), zip.current.as_str()), (Some("number"), Some("string")));
    found(FindingKind::NullRate, Some("email"));
    found(FindingKind::Distribution, Some("amount"));
    found(FindingKind::TopValues, Some("country"));
    let quiet = found(FindingKind::QuietDay, None);
    assert_eq!(quiet.current.as_str(), Some(w3.days()[2].to_string().as_str()));
    for f in &c3.findings {
        assert!(!f.message.is_empty() && f.message.ends_with('.'), "{f:?}");
    }

    // Fields that did not change raise nothing: high-cardinality `user`
    // (whose top ten differ by chance), `ok`, `kind`.
    for quiet_path in ["user", "ok", "kind"] {
        assert!(!c3.findings.iter().any(|f| f.path.as_deref() == Some(quiet_path)), "{quiet_path}: {:#?}", c3.findings);
    }

    // Sorted by (kind, path), deterministic across reruns.
    let keys: Vec<_> = c3.findings.iter().map(|f| (f.kind, f.path.clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let rerun = {
        let clock = FixedClock::at(Timestamp::from_millis(w3.end().as_millis() + 300_000));
        summarize_week(&store, &sink, &clock, w3, &options, &NoProgress).await.unwrap();
        serde_json::from_slice::<Summary>(&sink.read_object(w3, SUMMARY_JSON).await.unwrap().unwrap()).unwrap()
    };
    assert_eq!(rerun.comparison, third.comparison);
}

#[tokio::test]
async fn weeks_from_one_distribution_never_warn_whatever_the_seed_or_size() {
    let options = SummaryOptions::default();
    let [w1, w2, _] = weeks();
    for (seed, records) in [(10, 200), (20, 800), (30, 2500), (40, 60), (50, 5000)] {
        let (store, sink) = (MemoryRecordStore::default(), MemorySummarySink::default());
        summarize(&store, &sink, w1, seed, Shift { records, broken: false }, &options).await;
        let s = summarize(&store, &sink, w2, seed + 1, Shift { records, broken: false }, &options).await;
        let warnings: Vec<_> =
            s.comparison.unwrap().findings.into_iter().filter(|f| f.severity == Severity::Warn).collect();
        assert!(warnings.is_empty(), "seed {seed}, {records} records: {warnings:#?}");
    }
}

/// A Poisson(`mean`) draw (Knuth's method; fine for means up to a few hundred).
fn poisson(rng: &mut Rng, mean: f64) -> usize {
    let limit = (-mean).exp();
    let (mut k, mut p) = (0, 1.0);
    loop {
        p *= rng.next() as f64 / u64::MAX as f64;
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// Small weeks whose record counts are themselves random (Poisson, as
/// arrivals are): `volume` and `quiet_day` must see through the noise of
/// 8 → 13 records or a weekday with 3 records last week and none now, and so
/// must every segment's findings (segments `order` ≈ 70 %, `refund` ≈ 30 %
/// of the records, so from about 2 to 200 records each).
#[tokio::test]
async fn weeks_and_segments_of_5_to_200_records_from_one_distribution_never_warn() {
    let options = SummaryOptions { segment_by: Some("kind".into()), ..SummaryOptions::default() };
    let [w1, w2, _] = weeks();
    let means = [5.0, 8.0, 13.0, 20.0, 30.0, 50.0, 80.0, 120.0, 200.0, 280.0];
    let (mut compared, mut failures) = (0, Vec::new());
    for seed in 0..80u64 {
        let mean = means[seed as usize % means.len()];
        let mut rng = Rng(seed * 7919 + 1);
        let (n1, n2) = (poisson(&mut rng, mean), poisson(&mut rng, mean));
        let (store, sink) = (MemoryRecordStore::default(), MemorySummarySink::default());
        summarize(&store, &sink, w1, 1000 + seed, Shift { records: n1, broken: false }, &options).await;
        let s = summarize(&store, &sink, w2, 2000 + seed, Shift { records: n2, broken: false }, &options).await;
        let Some(comparison) = s.comparison else { continue };
        compared += 1;
        let warnings: Vec<_> = comparison.findings.into_iter().filter(|f| f.severity == Severity::Warn).collect();
        if !warnings.is_empty() {
            failures.push(format!("seed {seed}, mean {mean}: {n1} → {n2} records: {warnings:#?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {compared} pairs warned:\n{}", failures.len(), failures.join("\n"));
    assert!(compared >= 75, "only {compared} weeks had a previous week to compare with");
}

#[tokio::test]
async fn a_real_drop_in_volume_and_a_silent_weekday_still_warn() {
    let options = SummaryOptions { segment_by: Some("kind".into()), ..SummaryOptions::default() };
    let [w1, w2, _] = weeks();
    let (store, sink) = (MemoryRecordStore::default(), MemorySummarySink::default());
    summarize(&store, &sink, w1, 5, Shift { records: 1000, broken: false }, &options).await;
    // 1000 → 400 records, and none on Wednesday (about 57 the week before).
    let mut records = common::records(w2, 400, 6, |rng| record(rng, false));
    let start = w2.start().as_millis();
    records.retain(|r| (r.received_at.as_millis() - start) / 86_400_000 != 2);
    store.restore(&records).await.unwrap();
    let clock = FixedClock::at(Timestamp::from_millis(w2.end().as_millis() + 300_000));
    summarize_week(&store, &sink, &clock, w2, &options, &NoProgress).await.unwrap();
    let s: Summary = serde_json::from_slice(&sink.read_object(w2, SUMMARY_JSON).await.unwrap().unwrap()).unwrap();
    let findings = s.comparison.unwrap().findings;
    let volume: Vec<_> = findings.iter().filter(|f| f.kind == FindingKind::Volume).collect();
    assert_eq!(volume[0].path, None, "{findings:#?}");
    assert_eq!((volume[0].previous.as_u64(), volume[0].current.as_u64()), (Some(1000), Some(s.records)));
    assert!(volume[0].message.starts_with("Records fell 6"), "{}", volume[0].message);
    // The big segment fell as much, and is beyond noise too.
    assert!(volume.iter().any(|f| f.path.as_deref() == Some("kind=order:")), "{findings:#?}");
    let quiet: Vec<_> = findings.iter().filter(|f| f.kind == FindingKind::QuietDay).collect();
    assert_eq!(quiet.len(), 1, "{findings:#?}");
    assert_eq!(quiet[0].current.as_str(), Some(w2.days()[2].to_string().as_str()));
}

#[tokio::test]
async fn thresholds_change_what_is_found() {
    let [w1, w2, _] = weeks();
    let (store, sink) = (MemoryRecordStore::default(), MemorySummarySink::default());
    let options = SummaryOptions::default();
    summarize(&store, &sink, w1, 7, Shift { records: 1000, broken: false }, &options).await;
    // 1000 → 1300 records: +30 %, under the default ±50 %, over a 20 % threshold.
    let strict = SummaryOptions { thresholds: "volume=0.2".parse().unwrap(), ..SummaryOptions::default() };
    let s = summarize(&store, &sink, w2, 8, Shift { records: 1300, broken: false }, &strict).await;
    let kinds: Vec<_> = s.comparison.unwrap().findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec![FindingKind::Volume]);
}

#[tokio::test]
async fn the_comparison_is_with_the_latest_earlier_summarized_week() {
    let [w1, _, w3] = weeks();
    let (store, sink) = (MemoryRecordStore::default(), MemorySummarySink::default());
    let options = SummaryOptions::default();
    // Week 2 has no records and so no summary: week 3 compares with week 1.
    summarize(&store, &sink, w1, 1, Shift { records: 500, broken: false }, &options).await;
    let s = summarize(&store, &sink, w3, 3, Shift { records: 500, broken: false }, &options).await;
    assert_eq!(s.comparison.unwrap().previous_week, w1);
    // Summarizing week 1 again (a backfill) compares with nothing earlier.
    let again = summarize(&store, &sink, w1, 99, Shift { records: 0, broken: false }, &options).await;
    assert_eq!(again.comparison, None);
}

#[tokio::test]
async fn segments_summarize_each_value_and_carry_their_own_findings() {
    let [w1, w2, _] = weeks();
    let (store, sink) = (MemoryRecordStore::default(), MemorySummarySink::default());
    let options = SummaryOptions { segment_by: Some("kind".into()), ..SummaryOptions::default() };
    let first = summarize(&store, &sink, w1, 1, Shift { records: 3000, broken: false }, &options).await;
    let segments = first.segments.as_ref().expect("segmented");
    assert_eq!(segments.by, "kind");
    let values: Vec<&str> = segments.values.iter().map(|s| s.value.as_str()).collect();
    assert_eq!(values, vec!["order", "refund"], "most frequent first");
    // Exact counts: the segments' records add up to the week's.
    let sum: u64 = segments.values.iter().map(|s| s.records).sum();
    assert_eq!((sum, segments.other_records), (first.records, 0));
    let orders = &segments.values[0];
    let kind = orders.fields.iter().find(|f| f.path == "kind").unwrap();
    assert_eq!(kind.string.as_ref().unwrap().top[0].value, "order");
    assert_eq!(kind.present, orders.records);

    // Week 2: refunds only (a segment-level change) and the same distribution otherwise.
    let mut records = common::records(w2, 3000, 2, |rng| record(rng, false));
    records.retain(|r| !r.data.contains(r#""kind":"order""#) || r.id.to_string().ends_with(['0', '1', '2']));
    store.restore(&records).await.unwrap();
    let clock = FixedClock::at(Timestamp::from_millis(w2.end().as_millis() + 300_000));
    summarize_week(&store, &sink, &clock, w2, &options, &NoProgress).await.unwrap();
    let second: Summary = serde_json::from_slice(&sink.read_object(w2, SUMMARY_JSON).await.unwrap().unwrap()).unwrap();
    let findings = second.comparison.unwrap().findings;
    let volume_paths: Vec<Option<&str>> =
        findings.iter().filter(|f| f.kind == FindingKind::Volume).map(|f| f.path.as_deref()).collect();
    assert_eq!(volume_paths, vec![None, Some("kind=order:")], "{findings:#?}");
    // Refunds did not change: no finding under their prefix.
    assert!(
        !findings.iter().any(|f| f.path.as_deref().is_some_and(|p| p.starts_with("kind=refund:"))),
        "{findings:#?}"
    );
}

#[tokio::test]
async fn only_the_twenty_most_frequent_segment_values_are_listed() {
    let [w1, ..] = weeks();
    let (store, sink) = (MemoryRecordStore::default(), MemorySummarySink::default());
    let options = SummaryOptions { segment_by: Some("event".into()), ..SummaryOptions::default() };
    // 25 values: value i appears 100 + i times; some records lack the field.
    let mut i = 0usize;
    let records = common::records(w1, (0..25).map(|v| 100 + v).sum::<usize>() + 50, 5, |_| {
        i += 1;
        let mut left = i;
        for v in 0..25 {
            if left <= 100 + v {
                return format!(r#"{{"event":"e{v:02}","n":{i}}}"#);
            }
            left -= 100 + v;
        }
        r#"{"n":0}"#.to_owned()
    });
    store.restore(&records).await.unwrap();
    let clock = FixedClock::at(Timestamp::from_millis(w1.end().as_millis() + 300_000));
    summarize_week(&store, &sink, &clock, w1, &options, &NoProgress).await.unwrap();
    let s: Summary = serde_json::from_slice(&sink.read_object(w1, SUMMARY_JSON).await.unwrap().unwrap()).unwrap();
    let segments = s.segments.unwrap();
    let listed: Vec<(String, u64)> = segments.values.iter().map(|v| (v.value.clone(), v.records)).collect();
    let expected: Vec<(String, u64)> = (5..25).rev().map(|v| (format!("e{v:02}"), 100 + v as u64)).collect();
    assert_eq!(listed, expected);
    assert_eq!(segments.other_records, (0..5).map(|v| 100 + v).sum::<u64>() + 50);
}
