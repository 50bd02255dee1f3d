//! Segments are exact whatever the cut: streams of 40 to 5,000 distinct
//! values split at random points and merged in random orders list the same
//! 20 values with their exact record counts, the most frequent value always
//! among them; with the second pass ([`SegmentRecount`]) their statistics
//! hold every record too. Past the exact limit the list comes from an
//! estimate, and `max_unlisted_records` bounds what it may miss.

mod common;

use std::collections::HashMap;

use common::Rng;
use proptest::prelude::*;
use tally_core::summary::{
    Aggregator, Nav, SEGMENT_VALUES_EXACT, SEGMENTS_LISTED, Segments, SummaryOptions, render_html,
};
use tally_core::{IsoWeek, Record};

fn week() -> IsoWeek {
    IsoWeek::parse("2026-W47").unwrap()
}

fn options() -> SummaryOptions {
    SummaryOptions { segment_by: Some("user".into()), ..SummaryOptions::default() }
}

/// The records of `counts` (value → records) in a random order, with a few
/// that have no `user` or a number there (counted in no segment).
fn stream(counts: &[(String, u64)], seed: u64) -> Vec<Record> {
    let mut rng = Rng(seed);
    let mut data: Vec<String> = Vec::new();
    for (value, n) in counts {
        for _ in 0..*n {
            data.push(format!(r#"{{"user":"{value}","n":{},"tag":"t{}"}}"#, rng.below(1000), rng.below(5)));
        }
    }
    for i in 0..data.len() / 20 {
        data.push(if i % 2 == 0 { format!(r#"{{"n":{i}}}"#) } else { format!(r#"{{"user":{i},"n":1}}"#) });
    }
    for i in (1..data.len()).rev() {
        data.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut data = data.into_iter();
    common::records(week(), data.len(), seed, |_| data.next().unwrap())
}

/// `distinct` values with skewed counts: a few heavy ones (up to a few
/// hundred records), ties, and a long tail of values seen once to thrice.
fn skewed(distinct: usize, seed: u64) -> Vec<(String, u64)> {
    let mut rng = Rng(seed ^ 0x5eed);
    (0..distinct)
        .map(|v| {
            let heavy = if rng.chance(3) { rng.below(300) } else { 0 };
            (format!("u{v:05}"), 1 + rng.below(3) + heavy)
        })
        .collect()
}

/// The 20 most frequent (by records, then value) and the records of the rest.
fn truth(counts: &[(String, u64)], records: usize) -> (Vec<(String, u64)>, u64) {
    let mut sorted = counts.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sorted.truncate(SEGMENTS_LISTED);
    let listed: u64 = sorted.iter().map(|(_, n)| n).sum();
    (sorted, records as u64 - listed)
}

fn listing(s: &Segments) -> Vec<(String, u64)> {
    s.values.iter().map(|v| (v.value.clone(), v.records)).collect()
}

/// `records` cut at `chunks - 1` random points (some chunks may be empty).
fn split(records: &[Record], chunks: usize, rng: &mut Rng) -> Vec<Vec<Record>> {
    let mut cuts: Vec<usize> = (1..chunks).map(|_| rng.below(records.len() as u64 + 1) as usize).collect();
    cuts.push(0);
    cuts.push(records.len());
    cuts.sort_unstable();
    cuts.windows(2).map(|w| records[w[0]..w[1]].to_vec()).collect()
}

fn aggregate(records: &[Record]) -> Aggregator {
    let mut agg = Aggregator::new(week(), &options());
    for r in records {
        agg.push(r);
    }
    agg
}

/// The chunks' aggregators merged pairwise in a random order and grouping.
fn merge_randomly(mut aggs: Vec<Aggregator>, rng: &mut Rng) -> Aggregator {
    while aggs.len() > 1 {
        let other = aggs.swap_remove(rng.below(aggs.len() as u64) as usize);
        let into = rng.below(aggs.len() as u64) as usize;
        aggs[into].merge(other).unwrap();
    }
    aggs.pop().unwrap()
}

/// The second pass, the chunks taken as the parts.
fn recount(agg: &mut Aggregator, chunks: &[Vec<Record>]) {
    if let Some(mut recount) = agg.segment_recount() {
        for chunk in chunks {
            let mut part = recount.part();
            chunk.iter().for_each(|r| part.push(r));
            recount.add_part(part);
        }
        agg.apply_segment_recount(recount).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Random streams, random cuts, random merge orders: the same listing,
    /// the true one; and after the second pass, statistics of every record.
    #[test]
    fn listed_segments_and_counts_are_exact_for_any_split_and_merge_order(
        distinct in 40usize..=5000,
        seed in any::<u64>(),
        chunks in 1usize..=40,
        order in any::<u64>(),
    ) {
        let counts = skewed(distinct, seed);
        let records = stream(&counts, seed);
        let (top, other) = truth(&counts, records.len());
        let mut rng = Rng(order | 1);
        let parts = split(&records, chunks, &mut rng);
        let merged = merge_randomly(parts.iter().map(|c| aggregate(c)).collect(), &mut rng);

        let mut with_stats = merged.clone();
        let segments = merged.finish().segments.unwrap();
        prop_assert_eq!(listing(&segments), top.clone(), "{} chunks", chunks);
        prop_assert_eq!(segments.other_records, other);
        prop_assert_eq!(segments.max_unlisted_records, None);
        // The most frequent value overall, with its exact count.
        let most = counts.iter().map(|(_, n)| *n).max().unwrap();
        let first = &segments.values[0];
        prop_assert_eq!(first.records, most);
        prop_assert_eq!(counts.iter().find(|(v, _)| *v == first.value).unwrap().1, most);

        recount(&mut with_stats, &parts);
        let segments = with_stats.finish().segments.unwrap();
        prop_assert_eq!(listing(&segments), top);
        for s in &segments.values {
            let field = |path: &str| s.fields.iter().find(|f| f.path == path).unwrap();
            prop_assert_eq!(field("n").present, s.records, "{}", &s.value);
            prop_assert_eq!(field("n").number.as_ref().unwrap().count, s.records, "{}", &s.value);
            let user = field("user").string.as_ref().unwrap();
            prop_assert_eq!((user.distinct, user.top[0].count), (1, s.records), "{}", &s.value);
        }
    }
}

/// One value per part boundary placement that 0.3 got wrong: 40 values,
/// the heavy one first seen after 32 others in every chunk.
#[test]
fn a_heavy_value_first_seen_after_32_others_keeps_its_records() {
    let mut data: Vec<String> = Vec::new();
    for chunk in 0..4 {
        for v in 0..39 {
            data.push(format!(r#"{{"user":"light{v:02}","n":{chunk}}}"#));
        }
        for _ in 0..50 {
            data.push(r#"{"user":"heavy","n":1}"#.to_owned());
        }
    }
    let mut data = data.into_iter();
    let records = common::records(week(), data.len(), 3, |_| data.next().unwrap());
    let chunks: Vec<Vec<Record>> = records.chunks(89).map(<[Record]>::to_vec).collect();
    let mut merged = chunks.iter().map(|c| aggregate(c)).reduce(|mut a, b| {
        a.merge(b).unwrap();
        a
    });
    let merged = merged.as_mut().unwrap();
    recount(merged, &chunks);
    let segments = merged.clone().finish().segments.unwrap();
    assert_eq!((segments.values[0].value.as_str(), segments.values[0].records), ("heavy", 200));
    let n = segments.values[0].fields.iter().find(|f| f.path == "n").unwrap();
    assert_eq!(n.present, 200, "its statistics hold every record, recounted");
    assert_eq!(segments.values.len(), SEGMENTS_LISTED);
    assert!(segments.values[1..].iter().all(|s| s.records == 4), "{:?}", listing(&segments));
    assert_eq!(segments.other_records, 4 * 39 - 19 * 4);
}

/// Past the exact limit: listed values are chosen from a Misra–Gries
/// estimate but recounted, so their records are exact; the list is the
/// true one when the heavy values stand out, and when it may not be,
/// `max_unlisted_records` bounds every value left out.
#[test]
fn past_the_exact_limit_listed_counts_stay_exact_and_the_bound_holds() {
    let tail = SEGMENT_VALUES_EXACT + SEGMENT_VALUES_EXACT / 2;
    // Heavy values that stand out: 25 values of 60 to 84 records.
    let mut clear: Vec<(String, u64)> = (0..25).map(|v| (format!("heavy{v:02}"), 60 + v)).collect();
    clear.extend((0..tail).map(|v| (format!("tail{v:05}"), 1)));
    // A plateau: 100 values of exactly 20 records, past the 32 recounted.
    let mut plateau: Vec<(String, u64)> = (0..100).map(|v| (format!("flat{v:03}"), 20)).collect();
    plateau.extend((0..tail).map(|v| (format!("tail{v:05}"), 1)));

    for (name, counts) in [("clear", clear), ("plateau", plateau)] {
        let records = stream(&counts, 11);
        let truth_of: HashMap<&str, u64> = counts.iter().map(|(v, n)| (v.as_str(), *n)).collect();
        let mut rng = Rng(5);
        let parts = split(&records, 28, &mut rng);
        let mut merged = merge_randomly(parts.iter().map(|c| aggregate(c)).collect(), &mut rng);
        recount(&mut merged, &parts);
        let summary = merged.finish();
        let page = render_html(&summary, None, Nav::default());
        let segments = summary.segments.unwrap();
        assert_eq!(segments.values.len(), SEGMENTS_LISTED, "{name}");
        // The page says what the list may miss, exactly when summary.json does.
        let warned = page.contains("a value left out may have up to");
        assert_eq!(warned, segments.max_unlisted_records.is_some(), "{name}");
        for s in &segments.values {
            assert_eq!(s.records, truth_of[s.value.as_str()], "{name}: {}", s.value);
            assert_eq!(s.fields.iter().find(|f| f.path == "n").unwrap().present, s.records, "{name}");
        }
        let listed: u64 = segments.values.iter().map(|s| s.records).sum();
        assert_eq!(segments.other_records, records.len() as u64 - listed, "{name}");
        match (name, segments.max_unlisted_records) {
            ("clear", bound) => {
                assert_eq!(listing(&segments), truth(&counts, records.len()).0, "the true top 20");
                assert_eq!(bound, None, "nothing left out can compete");
            }
            (_, Some(bound)) => {
                assert!(bound >= 20, "a left-out value of the plateau has 20 records, bound {bound}");
                let listed: Vec<&str> = segments.values.iter().map(|s| s.value.as_str()).collect();
                let max_left_out = counts.iter().filter(|(v, _)| !listed.contains(&v.as_str())).map(|c| c.1).max();
                assert!(max_left_out.unwrap() <= bound);
            }
            (_, None) => panic!("the plateau's list may miss values of 20 records: it must say so"),
        }
    }
}

/// A recount that does not match the first pass (the records changed in
/// between) is refused, naming the value.
#[test]
fn a_recount_of_other_records_is_refused() {
    let counts: Vec<(String, u64)> = (0..40).map(|v| (format!("u{v:02}"), 1 + v % 3)).collect();
    let records = stream(&counts, 2);
    let mut agg = aggregate(&records);
    let mut recount = agg.segment_recount().expect("40 values: some listed ones have no aggregator");
    let mut part = recount.part();
    // One record of a recounted value missing (erased between the reads).
    let skipped = recount.values().next().unwrap().to_owned();
    let mut skipped_one = false;
    for r in &records {
        if !skipped_one && r.data.contains(&format!(r#""user":"{skipped}""#)) {
            skipped_one = true;
            continue;
        }
        part.push(r);
    }
    recount.add_part(part);
    let err = agg.apply_segment_recount(recount).unwrap_err();
    assert_eq!(err.value, skipped);
    assert_eq!(err.recounted + 1, err.counted);
    assert!(err.to_string().contains("changed while it was summarized"), "{err}");
}
