//! The sentences of the findings (issue 23, "Readable"): each says what
//! was, what is, and how sure, with the numbers a reader needs — e.g.
//! "The mix of `status` changed: ok 50 % (was 90 %), fail 50 % (was 10 %)",
//! not "most common now "ok", last week "ok"".
//!
//! Each test builds two weeks whose numbers are known exactly, and checks
//! the sentence of one finding kind word for word or number for number.

use tally_core::summary::{Aggregator, Finding, FindingKind, Summary, SummaryOptions, compare};
use tally_core::{IsoWeek, Record, RecordId, Timestamp};

fn weeks() -> (IsoWeek, IsoWeek) {
    let w = IsoWeek::parse("2026-W47").unwrap();
    (w.previous(), w)
}

/// A week of `records`, the i-th received on day `i % 7` (or on the day
/// `day` gives), in order.
fn week_of(week: IsoWeek, records: &[String], day: impl Fn(usize) -> u64) -> Summary {
    let mut agg = Aggregator::new(week, &SummaryOptions::default());
    for (i, data) in records.iter().enumerate() {
        let ms = week.start().as_millis() + (day(i) * 86_400_000 + i as u64 % 86_400 * 1000) as i64;
        let at = Timestamp::from_millis(ms);
        agg.push(&Record { id: RecordId::generate(at), received_at: at, data: data.clone() });
    }
    agg.finish()
}

fn spread(i: usize) -> u64 {
    i as u64 % 7
}

/// The one finding of `kind` between the two weeks of records.
fn finding(kind: FindingKind, before: &[String], after: &[String]) -> Finding {
    let (w1, w2) = weeks();
    let (a, b) = (week_of(w1, before, spread), week_of(w2, after, spread));
    let c = compare(&a, &b, &Default::default());
    let mut of_kind = c.findings.into_iter().filter(|f| f.kind == kind);
    let f = of_kind.next().unwrap_or_else(|| panic!("no {kind} finding"));
    assert!(of_kind.next().is_none(), "one {kind} finding");
    f
}

/// `n` records, the i-th from `make(i)`.
fn records(n: usize, make: impl Fn(usize) -> String) -> Vec<String> {
    (0..n).map(make).collect()
}

#[test]
fn top_values_names_each_moved_value_with_its_share_then_and_now() {
    let before = records(1000, |i| format!(r#"{{"status":"{}"}}"#, if i % 10 == 0 { "fail" } else { "ok" }));
    let after = records(1000, |i| format!(r#"{{"status":"{}"}}"#, if i % 2 == 0 { "fail" } else { "ok" }));
    let f = finding(FindingKind::TopValues, &before, &after);
    assert_eq!(
        f.message,
        "The mix of `status` changed: ok 50 % (was 90 %), fail 50 % (was 10 %); beyond chance (p < 10⁻¹²)."
    );
}

#[test]
fn volume_says_the_count_now_and_before() {
    let f = finding(FindingKind::Volume, &records(1000, |_| "{}".into()), &records(400, |_| "{}".into()));
    assert_eq!(f.message, "Records fell 60 %: 400 this week (was 1,000); beyond chance (p < 10⁻¹²).");
}

#[test]
fn null_rate_says_the_share_now_and_before() {
    let email = |nulls_in: usize| {
        move |i: usize| {
            if i % nulls_in == 0 { r#"{"email":null}"#.to_owned() } else { r#"{"email":"a@b.c"}"#.to_owned() }
        }
    };
    let f = finding(FindingKind::NullRate, &records(1000, email(20)), &records(1000, email(2)));
    assert_eq!(
        f.message,
        "Field `email` is null in 50 % of the records that have it (was 5.0 %); beyond chance (p < 10⁻¹²)."
    );
}

#[test]
fn type_changed_says_both_types_shares_now_and_before() {
    let before = records(1000, |i| format!(r#"{{"zip":{}}}"#, 10_000 + i));
    let after = records(1000, |i| format!(r#"{{"zip":"{}"}}"#, 10_000 + i));
    let f = finding(FindingKind::TypeChanged, &before, &after);
    assert_eq!(
        f.message,
        "Field `zip` is mostly strings now: strings 100 % of its values (was 0 %), numbers 0 % (was 100 %); \
         beyond chance (p < 10⁻¹²)."
    );
    // A minor type rising: 10 % strings among numbers.
    let after = records(1000, |i| {
        if i % 10 == 0 { format!(r#"{{"zip":"{}"}}"#, 10_000 + i) } else { format!(r#"{{"zip":{}}}"#, 10_000 + i) }
    });
    let f = finding(FindingKind::TypeChanged, &before, &after);
    assert_eq!(f.message, "Field `zip` now has strings: 10 % of its values (was 0 %); beyond chance (p < 10⁻¹²).");
}

#[test]
fn distribution_says_median_p10_and_p90_now_and_before() {
    let before = records(1000, |i| format!(r#"{{"ms":{}}}"#, i % 100));
    let after = records(1000, |i| format!(r#"{{"ms":{}}}"#, 1000 + i % 100));
    let f = finding(FindingKind::Distribution, &before, &after);
    let m = &f.message;
    assert!(m.starts_with("Values of `ms` shifted up: median 10"), "{m}");
    // The numbers of both weeks, as `previous`/`current` store them.
    for (key, was_is) in ["p50", "p10", "p90"].iter().map(|k| (*k, (&f.previous[*k], &f.current[*k]))) {
        let (was, is) = (was_is.0.as_f64().unwrap(), was_is.1.as_f64().unwrap());
        let said = if key == "p50" { "median".to_owned() } else { key.to_owned() };
        assert!(m.contains(&format!("{said} {is} (was {was})")), "{key}: {m}");
        assert!((1000.0..1100.0).contains(&is) && (0.0..100.0).contains(&was), "{key}: {was} → {is}");
    }
    assert!(m.ends_with("; Kolmogorov–Smirnov distance 1.00; beyond chance (p < 10⁻¹²)."), "{m}");
}

#[test]
fn added_and_removed_fields_say_their_share_and_both_weeks_sizes() {
    let plain = records(1000, |_| r#"{"a":1}"#.into());
    let with_coupon =
        records(1000, |i| if i % 5 == 0 { r#"{"a":1,"coupon":"X"}"#.into() } else { r#"{"a":1}"#.into() });
    let f = finding(FindingKind::FieldAdded, &plain, &with_coupon);
    assert_eq!(
        f.message,
        "New field `coupon`: in 20 % of this week's 1,000 records (was in none of 1,000); beyond chance (p < 10⁻¹²)."
    );
    let f = finding(FindingKind::FieldRemoved, &with_coupon, &plain);
    assert_eq!(
        f.message,
        "Field `coupon` disappeared: in none of this week's 1,000 records (was in 20 % of 1,000); \
         beyond chance (p < 10⁻¹²)."
    );
}

#[test]
fn a_quiet_day_says_how_many_records_that_weekday_had() {
    let (w1, w2) = weeks();
    let all = records(700, |_| "{}".into());
    let a = week_of(w1, &all, spread);
    // The same records, none on Wednesday (they arrive on Thursday).
    let b = week_of(w2, &all, |i| if spread(i) == 2 { 3 } else { spread(i) });
    let c = compare(&a, &b, &Default::default());
    let f = c.findings.iter().find(|f| f.kind == FindingKind::QuietDay).expect("a quiet day");
    assert_eq!(
        f.message,
        "No records on Wednesday 2026-11-18 (was 100 on last week's Wednesday) while 6 other days had some: \
         check ingestion; beyond chance (p < 10⁻¹²)."
    );
}

#[test]
fn how_sure_is_said_as_a_p_value_that_grows_for_smaller_changes() {
    // The exact binomial p-values: 160 → 60 is 1.1·10⁻¹¹, 100 → 40 is
    // 4.1·10⁻⁷, 50 → 15 is 1.6·10⁻⁵ (just beyond the 6.3·10⁻⁵ decided at).
    for (before, after, sure) in [(160, 60, "p < 10⁻¹⁰"), (100, 40, "p < 10⁻⁶"), (50, 15, "p < 10⁻⁴")] {
        let f = finding(FindingKind::Volume, &records(before, |_| "{}".into()), &records(after, |_| "{}".into()));
        assert!(f.message.ends_with(&format!("(was {before}); beyond chance ({sure}).")), "{}", f.message);
    }
}
