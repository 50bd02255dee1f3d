//! The aggregator's statistics against an independent reference computation,
//! and merge (shards summarized separately then merged) against a single pass.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::Gen;
use proptest::prelude::*;
use tally_core::summary::{Aggregator, FieldSummary, OTHER_PATH, Summary, SummaryOptions};
use tally_core::{IsoWeek, Record, RecordId, Timestamp};

fn week() -> IsoWeek {
    IsoWeek::parse("2026-W47").unwrap()
}

fn summarize(records: &[Record], options: &SummaryOptions) -> Summary {
    let mut agg = Aggregator::new(week(), options);
    records.iter().for_each(|r| {
        agg.push(r);
    });
    agg.finish()
}

/// Generated records with their reference trees.
fn generated(n: usize, seed: u64) -> (Vec<Record>, Vec<Gen>) {
    let mut trees = Vec::new();
    let records = common::records(week(), n, seed, |rng| {
        let g = common::rich_value(rng);
        let text = g.text();
        trees.push(g);
        text
    });
    (records, trees)
}

/// What the reference walk collects per path.
#[derive(Debug, Default)]
struct Expected {
    present: u64,
    types: [u64; 6], // object, array, string, number, boolean, null
    numbers: Vec<f64>,
    out_of_range: u64,
    strings: Vec<String>,
    trues: u64,
    array_lens: Vec<u64>,
}

fn escape(key: &str) -> String {
    key.replace('\\', "\\\\").replace('.', "\\.")
}

/// The naive definition: every member of an object at depth ≤ 4 is a path;
/// objects deeper than that are counted but not entered; arrays are not entered.
fn walk(g: &Gen, path: &str, depth: u8, out: &mut BTreeMap<String, Expected>) {
    let Gen::Obj(members) = g else { unreachable!() };
    for (k, v) in members {
        let p = if path.is_empty() { escape(k) } else { format!("{path}.{}", escape(k)) };
        let e = out.entry(p.clone()).or_default();
        e.present += 1;
        match v {
            Gen::Obj(_) => {
                e.types[0] += 1;
                if depth + 1 < 4 {
                    walk(v, &p, depth + 1, out);
                }
            }
            Gen::Arr(items) => {
                e.types[1] += 1;
                e.array_lens.push(items.len() as u64);
            }
            Gen::Str(s) => {
                e.types[2] += 1;
                e.strings.push(s.clone());
            }
            Gen::Num(t) => {
                e.types[3] += 1;
                match t.parse::<f64>() {
                    Ok(x) if x.is_finite() => e.numbers.push(x),
                    _ => e.out_of_range += 1,
                }
            }
            Gen::Bool(b) => {
                e.types[4] += 1;
                e.trues += u64::from(*b);
            }
            Gen::Null => e.types[5] += 1,
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn check_field(f: &FieldSummary, e: &Expected) {
    let p = &f.path;
    assert_eq!(f.present, e.present, "{p} present");
    let t = f.types;
    assert_eq!([t.object, t.array, t.string, t.number, t.boolean, t.null], e.types, "{p} types");
    assert_eq!(f.null, e.types[5], "{p} null");

    match &f.number {
        None => assert_eq!(e.types[3], 0, "{p}: numbers missing"),
        Some(n) => {
            assert_eq!(n.count, e.numbers.len() as u64 + e.out_of_range, "{p} number count");
            assert_eq!(n.out_of_range, e.out_of_range, "{p} out of range");
            let min = e.numbers.iter().copied().reduce(f64::min);
            let max = e.numbers.iter().copied().reduce(f64::max);
            assert_eq!(n.min, min, "{p} min");
            assert_eq!(n.max, max, "{p} max");
            if !e.numbers.is_empty() {
                let mean = e.numbers.iter().sum::<f64>() / e.numbers.len() as f64;
                let var = e.numbers.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / e.numbers.len() as f64;
                if mean.is_finite() && mean.abs() < 1e15 {
                    assert!(close(n.mean.unwrap(), mean), "{p} mean {:?} vs {mean}", n.mean);
                    assert!(close(n.stddev.unwrap(), var.sqrt()), "{p} stddev {:?} vs {}", n.stddev, var.sqrt());
                }
                // fewer values than the sketch's first compaction: quantiles are exact
                let mut sorted = e.numbers.clone();
                sorted.sort_by(f64::total_cmp);
                let q = |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).max(1) - 1];
                if sorted.len() <= 400 {
                    assert_eq!((n.p50, n.p90, n.p99), (Some(q(0.5)), Some(q(0.9)), Some(q(0.99))), "{p} quantiles");
                }
                assert_eq!(n.histogram.as_ref().unwrap().counts.iter().sum::<u64>(), sorted.len() as u64);
            }
        }
    }

    match &f.string {
        None => assert!(e.strings.is_empty(), "{p}: strings missing"),
        Some(s) => {
            assert_eq!(s.count, e.strings.len() as u64, "{p} string count");
            let mut counts: HashMap<&str, u64> = HashMap::new();
            e.strings.iter().for_each(|v| *counts.entry(v).or_default() += 1);
            assert!(s.distinct_exact && s.top_exact);
            assert_eq!(s.distinct, counts.len() as u64, "{p} distinct");
            let lens = e.strings.iter().map(|v| v.chars().count() as u64);
            assert_eq!(s.min_length, lens.clone().min().unwrap(), "{p} min length");
            assert_eq!(s.max_length, lens.max().unwrap(), "{p} max length");
            let mut top: Vec<(&str, u64)> = counts.into_iter().collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            top.truncate(10);
            let got: Vec<(&str, u64)> = s.top.iter().map(|t| (t.value.as_str(), t.count)).collect();
            assert_eq!(got, top, "{p} top values");
        }
    }

    match &f.boolean {
        None => assert_eq!(e.types[4], 0),
        Some(b) => assert_eq!((b.true_count, b.false_count), (e.trues, e.types[4] - e.trues), "{p} booleans"),
    }
    match &f.array {
        None => assert!(e.array_lens.is_empty()),
        Some(a) => {
            assert_eq!(a.count, e.array_lens.len() as u64);
            assert_eq!(a.min_length, *e.array_lens.iter().min().unwrap());
            assert_eq!(a.max_length, *e.array_lens.iter().max().unwrap());
            assert!(close(a.mean_length, e.array_lens.iter().sum::<u64>() as f64 / e.array_lens.len() as f64));
        }
    }
}

#[test]
fn statistics_match_a_naive_reference_walk() {
    let (records, trees) = generated(3_000, 99);
    let summary = summarize(&records, &SummaryOptions::default());

    let mut expected = BTreeMap::new();
    trees.iter().for_each(|g| walk(g, "", 0, &mut expected));

    assert_eq!(summary.records, 3_000);
    assert_eq!(summary.unparsable_records, 0);
    assert_eq!(summary.bytes, records.iter().map(|r| r.data.len() as u64).sum::<u64>());
    let mut per_hour = vec![0u64; 168];
    records
        .iter()
        .for_each(|r| per_hour[((r.received_at.as_millis() - week().start().as_millis()) / 3_600_000) as usize] += 1);
    assert_eq!(summary.per_hour, per_hour);
    let per_day: Vec<u64> = per_hour.chunks(24).map(|d| d.iter().sum()).collect();
    assert_eq!(summary.per_day.iter().map(|d| d.records).collect::<Vec<_>>(), per_day);
    assert_eq!(summary.per_day[0].date, "2026-11-16");

    let paths: Vec<&str> = summary.fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, expected.keys().map(String::as_str).collect::<Vec<_>>());
    // depth: a.b.c.d is the deepest path, reported as an object; keys with dots are escaped
    assert!(paths.contains(&"a.b.c.d") && !paths.iter().any(|p| p.starts_with("a.b.c.d.")));
    assert!(paths.contains(&"ünï\\.cödé.k"));
    for f in &summary.fields {
        check_field(f, &expected[&f.path]);
    }
    // the generator's huge numbers really were exercised
    assert!(summary.field("n").unwrap().number.as_ref().unwrap().out_of_range > 0);
}

fn without_float_noise(mut s: Summary) -> Summary {
    for f in &mut s.fields {
        if let Some(n) = &mut f.number {
            // compared separately, with a relative tolerance
            n.mean = None;
            n.stddev = None;
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Below the sketches' exact range every field, quantiles included, must
    /// be identical; mean and stddev may differ only in the last bits.
    #[test]
    fn merging_shards_equals_summarizing_all_at_once(
        seed in any::<u64>(),
        n in 0usize..250,
        cuts in proptest::collection::vec(0usize..250, 0..4),
    ) {
        let (records, _) = generated(n, seed);
        let options = SummaryOptions::default();
        let whole = summarize(&records, &options);

        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(n)).collect();
        cuts.sort_unstable();
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(n);
        let mut merged = Aggregator::new(week(), &options);
        for w in bounds.windows(2) {
            let mut shard = Aggregator::new(week(), &options);
            records[w[0]..w[1]].iter().for_each(|r| {
        shard.push(r);
    });
            merged.merge(shard).unwrap();
        }
        let merged = merged.finish();
        for (a, b) in whole.fields.iter().zip(&merged.fields) {
            if let (Some(x), Some(y)) = (&a.number, &b.number) {
                prop_assert!(x.mean.zip(y.mean).is_none_or(|(x, y)| close(x, y)), "{} mean", a.path);
                prop_assert!(x.stddev.zip(y.stddev).is_none_or(|(x, y)| close(x, y)), "{} stddev", a.path);
                prop_assert_eq!(x.mean.is_some(), y.mean.is_some());
            }
        }
        prop_assert_eq!(without_float_noise(whole), without_float_noise(merged));
    }
}

#[test]
fn merged_sketches_stay_within_their_bounds_past_the_exact_range() {
    let records = common::records(week(), 30_000, 5, common::event_text);
    // a low exact limit forces HyperLogLog and Misra–Gries on the high-cardinality fields
    let options = SummaryOptions { exact_distinct_limit: 500, ..SummaryOptions::default() };
    let whole = summarize(&records, &options);
    let mut merged = Aggregator::new(week(), &options);
    for chunk in records.chunks(7_001) {
        let mut shard = Aggregator::new(week(), &options);
        chunk.iter().for_each(|r| {
            shard.push(r);
        });
        merged.merge(shard).unwrap();
    }
    let merged = merged.finish();

    let values: Vec<serde_json::Value> = records.iter().map(|r| serde_json::from_str(&r.data).unwrap()).collect();
    let mut amounts: Vec<f64> = values.iter().map(|v| v["value"].as_f64().unwrap()).collect();
    amounts.sort_by(f64::total_cmp);
    let sessions: HashSet<&str> = values.iter().map(|v| v["session"].as_str().unwrap()).collect();
    let events: HashMap<&str, u64> = values.iter().fold(HashMap::new(), |mut m, v| {
        *m.entry(v["event"].as_str().unwrap()).or_default() += 1;
        m
    });

    for s in [&whole, &merged] {
        assert_eq!(s.records, 30_000);
        // exact fields stay exact
        let value = s.field("value").unwrap().number.as_ref().unwrap();
        assert_eq!((value.count, value.min, value.max), (30_000, amounts.first().copied(), amounts.last().copied()));
        // quantiles: rank error ≤ 1%
        for (q, got) in [(0.5, value.p50), (0.9, value.p90), (0.99, value.p99)] {
            let got = got.unwrap();
            let lo = amounts.partition_point(|&x| x < got) as f64 / 30_000.0;
            let hi = amounts.partition_point(|&x| x <= got) as f64 / 30_000.0;
            assert!(lo - 0.01 <= q && q <= hi + 0.01, "p{q}: {got} has rank {lo}..{hi}");
        }
        // distinct: HyperLogLog within 2%
        let session = s.field("session").unwrap().string.as_ref().unwrap();
        assert!(!session.distinct_exact);
        let err = (session.distinct as f64 - sessions.len() as f64).abs() / sessions.len() as f64;
        assert!(err <= 0.02, "distinct {} vs {} ({err})", session.distinct, sessions.len());
        // a low-cardinality field stays exact
        let event = s.field("event").unwrap().string.as_ref().unwrap();
        assert!(event.top_exact && event.distinct == 5);
        for t in &event.top {
            assert_eq!(t.count, events[t.value.as_str()], "{}", t.value);
        }
        // heavy hitters past the limit: counts are lower bounds within top_max_error
        let name = s.field("user.name").unwrap().string.as_ref().unwrap();
        assert!(!name.top_exact && name.top_max_error <= 30_000 / 501);
    }
}

#[test]
fn paths_past_the_cap_are_counted_under_other() {
    let records =
        common::records(week(), 50, 8, |r| format!(r#"{{"a":1,"b":{{"c":2}},"k{}":"x","z":null}}"#, r.below(5)));
    let options = SummaryOptions { max_paths: 3, ..SummaryOptions::default() };
    let s = summarize(&records, &options);
    let paths: Vec<&str> = s.fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["a", "b", "b.c", OTHER_PATH]);
    let other = s.field(OTHER_PATH).unwrap();
    // every record has one k* string and one null z past the cap
    assert_eq!((other.present, other.types.string, other.null), (100, 50, 50));
}

#[test]
fn records_that_are_not_json_objects_are_counted_not_fatal() {
    let at = week().start();
    let rec = |i: usize, data: &str| Record {
        id: RecordId::deterministic(at, b"bad", i),
        received_at: Timestamp::from_millis(at.as_millis() + i as i64),
        data: data.into(),
    };
    let records =
        vec![rec(0, "[1,2]"), rec(1, r#"{"a":"unterminated"#), rec(2, r#"{"a":1e400,"b":-1E+999}"#), rec(3, "{}")];
    let s = summarize(&records, &SummaryOptions::default());
    assert_eq!((s.records, s.unparsable_records), (4, 2));
    let a = s.field("a").unwrap().number.as_ref().unwrap();
    assert_eq!((a.count, a.out_of_range, a.min, a.mean, a.p50), (1, 1, None, None, None));
    let json = String::from_utf8(s.to_json().unwrap()).unwrap();
    assert!(json.contains("\"out_of_range\": 1"));
}

#[test]
fn merging_aggregators_of_different_weeks_is_refused() {
    let mut a = Aggregator::new(week(), &SummaryOptions::default());
    let b = Aggregator::new(week().next(), &SummaryOptions::default());
    assert!(a.merge(b).is_err());
}

#[test]
fn summary_json_is_sorted_and_stable() {
    let (records, _) = generated(200, 17);
    let a = summarize(&records, &SummaryOptions::default()).to_json().unwrap();
    let b = summarize(&records, &SummaryOptions::default()).to_json().unwrap();
    assert_eq!(a, b);
    let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
    let paths: Vec<&str> = v["fields"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
}
