//! What changed since the previous week: the findings of `summary.json`'s
//! `comparison`.
//!
//! [`compare`] is a pure function of two summaries, so a week's findings are
//! deterministic and can be recomputed from the bucket alone. Each finding
//! kind has a documented threshold ([`Thresholds`], changed with
//! `--thresholds`/`TALLY_THRESHOLDS`). On top of the thresholds, every
//! check that compares shares also asks whether the change is beyond
//! sampling noise for the two weeks' sizes, so two weeks drawn from the same
//! distribution raise no warning however small they are:
//! - shares (null rate, a type's share) must differ by a two-proportion
//!   z-score of at least [`Z_SIGNIFICANT`];
//! - a distribution's Kolmogorov–Smirnov distance must also pass the
//!   two-sample critical value at the same confidence as the z-score
//!   (`c(α)·√((n+m)/(n·m))` with `c(α) = √(−½·ln(α/2))` ≈ 2.28 for
//!   α ≈ 6.3·10⁻⁵), plus 2/40 for the rank error of comparing the 41
//!   stored quantiles rather than the values (tally ≤ 0.3 used α = 0.001
//!   and no such margin: two weeks of 47 values from one distribution
//!   could warn);
//! - a top-values total-variation distance must be at least three times
//!   the distance two samples of that size show by chance
//!   (`≈ 0.56·√(k/n)` for `k` values), see [`top_values_noise`];
//! - a field counts as added or removed only if its share predicts at least
//!   [`MIN_EXPECTED`] occurrences in the week where it is missing;
//! - counts (`volume`: the week's or a segment's records; `quiet_day`: a
//!   weekday's records) must differ beyond what two Poisson counts of one
//!   rate produce: given their sum `n`, each is Binomial(`n`, ½) under equal
//!   rates, and the exact two-sided binomial p-value must be below the one
//!   of a z-score of [`Z_SIGNIFICANT`] (≈ 6.3·10⁻⁵), see [`counts_p_value`].
//!   8 → 13 records is noise (p ≈ 0.38); 1,000 → 400 is not (p < 10⁻⁵⁰); a
//!   weekday falls silent significantly only from 15 records or more.
//!
//! The distribution check reads the 41 quantiles schema 2 stores per number
//! field (`NumberSummary::quantiles`): from them both CDFs are known to
//! within 1/40 in rank plus the KLL error, which is far below the 0.2
//! threshold. A schema-1 previous summary has no quantiles: that check is
//! skipped for it.
//!
//! Each message says what was, what is, and how sure: the numbers of both
//! weeks (`ok 50 % (was 90 %)`) and the p-value of the test that decided
//! (`beyond chance (p < 10⁻⁹)`): the binomial test of counts, the
//! two-proportion test of shares (for `top_values`, of the value that
//! moved most), the asymptotic Kolmogorov–Smirnov p-value of the distance
//! less the quantile margin, and for a field added or removed the chance
//! that a field in that share of the records is in none of the other
//! week's.
//!
//! Segment findings that say what the week's finding says — same kind,
//! field and direction ([`Found::direction`]) — are folded into it: marked
//! `folded`, listed in the week finding's `segments`, and named at the end
//! of its message. The report lists each change once; `summary.json` keeps
//! every finding.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde_json::{Value, json};
use statrs::distribution::{Binomial, DiscreteCDF};
use statrs::function::erf::erfc;

use super::fmt::{clip, decimal, group, p_value, percent};

use super::model::{
    Comparison, FieldSummary, Finding, FindingKind, OTHER_PATH, Segments, Severity, StringSummary, Summary, TypeCounts,
};

/// z-score two shares must differ by to count as a change, not noise
/// (p ≈ 6·10⁻⁵ two-sided).
pub const Z_SIGNIFICANT: f64 = 4.0;
/// Occurrences a field's share must predict in the week it is missing from.
pub const MIN_EXPECTED: f64 = 10.0;
/// What comparing two distributions through their 41 stored quantiles can
/// add to the Kolmogorov–Smirnov distance: each CDF is known to within
/// 1/40 in rank, and the sketch picks ranks of a small sample to within
/// another 1/40.
const KS_QUANTILE_MARGIN: f64 = 2.0 / 40.0;

/// The two-sided p-value of a z-score of [`Z_SIGNIFICANT`]: the confidence
/// every finding kind decides at (≈ 6.3·10⁻⁵).
fn alpha() -> f64 {
    erfc(Z_SIGNIFICANT / std::f64::consts::SQRT_2)
}

/// The thresholds of the finding kinds. The defaults are documented in the
/// README; `--thresholds volume=0.3,null_rate=0.05` changes some of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// `volume`: record count changed by more than this fraction (±).
    pub volume: f64,
    /// `field_added`/`field_removed`: share of a week's records a path must
    /// be present in.
    pub field_share: f64,
    /// `type_changed`: a type rising from below `type_minor` …
    pub type_minor: f64,
    /// … to at least `type_major` of a path's non-null values.
    pub type_major: f64,
    /// `null_rate`: change of a path's share of nulls, in absolute terms.
    pub null_rate: f64,
    /// `distribution`: Kolmogorov–Smirnov distance.
    pub distribution: f64,
    /// `top_values`: total-variation distance of the top-value shares.
    pub top_values: f64,
    /// `quiet_day`: days with records a week needs besides the quiet one.
    pub quiet_day_active_days: u32,
    /// Values a path needs in each week for the share and distribution checks.
    pub min_values: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            volume: 0.5,
            field_share: 0.01,
            type_minor: 0.01,
            type_major: 0.05,
            null_rate: 0.10,
            distribution: 0.2,
            top_values: 0.2,
            quiet_day_active_days: 3,
            min_values: 30,
        }
    }
}

/// A `--thresholds` value that is not `key=value[,key=value…]` with known keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid thresholds {input:?}: {reason}; write key=value pairs separated by commas, with keys among {}",
    Thresholds::KEYS.join(", ")
)]
pub struct InvalidThresholds {
    pub input: String,
    pub reason: String,
}

impl Thresholds {
    pub const KEYS: [&'static str; 9] = [
        "volume",
        "field_share",
        "type_minor",
        "type_major",
        "null_rate",
        "distribution",
        "top_values",
        "quiet_day_active_days",
        "min_values",
    ];
}

impl FromStr for Thresholds {
    type Err = InvalidThresholds;

    /// Overrides the defaults: `"volume=0.3, null_rate=0.05"`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| InvalidThresholds { input: input.to_owned(), reason };
        let mut t = Self::default();
        for pair in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| err(format!("{pair:?} has no '='")))?;
            let (key, value) = (key.trim(), value.trim());
            let fraction = || match value.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
                _ => Err(err(format!("{key} must be a non-negative number, not {value:?}"))),
            };
            let count =
                || value.parse::<u64>().map_err(|_| err(format!("{key} must be a whole number, not {value:?}")));
            match key {
                "volume" => t.volume = fraction()?,
                "field_share" => t.field_share = fraction()?,
                "type_minor" => t.type_minor = fraction()?,
                "type_major" => t.type_major = fraction()?,
                "null_rate" => t.null_rate = fraction()?,
                "distribution" => t.distribution = fraction()?,
                "top_values" => t.top_values = fraction()?,
                "quiet_day_active_days" => {
                    t.quiet_day_active_days = u32::try_from(count()?).map_err(|_| err(format!("{key} too large")))?;
                }
                "min_values" => t.min_values = count()?,
                other => return Err(err(format!("unknown key {other:?}"))),
            }
        }
        Ok(t)
    }
}

impl fmt::Display for Thresholds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "volume={},field_share={},type_minor={},type_major={},null_rate={},distribution={},top_values={},quiet_day_active_days={},min_values={}",
            self.volume,
            self.field_share,
            self.type_minor,
            self.type_major,
            self.null_rate,
            self.distribution,
            self.top_values,
            self.quiet_day_active_days,
            self.min_values
        )
    }
}

/// The findings of `current` against `previous`, sorted by (kind, path),
/// segment findings that say what the week's say folded into them.
pub fn compare(previous: &Summary, current: &Summary, t: &Thresholds) -> Comparison {
    let mut found = Vec::new();
    volume(&mut found, None, previous.records, current.records, t);
    fields(&mut found, None, &previous.fields, previous.records, &current.fields, current.records, t);
    quiet_days(&mut found, previous, current, t);
    let mut compared = 0;
    let mut by = "";
    if let (Some(p), Some(c)) = (&previous.segments, &current.segments) {
        compared = segments(&mut found, p, c, t);
        by = &c.by;
    }
    let mut findings = fold(found, by, compared);
    // Stable: findings of one kind and path keep the order they were found in.
    findings.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
    Comparison { previous_week: previous.week, findings }
}

/// A finding as the checks make it, with what folding compares it by.
struct Found {
    finding: Finding,
    /// The segment it is about (`kind=order`), `None` for the week's.
    segment: Option<String>,
    /// The field path within the week or segment; `None` for the week's
    /// (or the segment's) own record counts.
    field: Option<String>,
    /// Which way it went, by kind: `up`/`down` for counts, shares and
    /// values, the old and new dominant type, the value whose share grew
    /// most. Two findings of one kind and field say the same when their
    /// directions are equal.
    direction: String,
}

/// Where a finding is: the segment (`kind=order`, or `None` for the week)
/// and the field path in it (`None` for record counts).
#[derive(Clone, Copy)]
struct At<'a> {
    segment: Option<&'a str>,
    field: Option<&'a str>,
}

impl At<'_> {
    /// The finding's `path`: `a.b`, `kind=order:a.b`, `kind=order:`, or none.
    fn path(&self) -> Option<String> {
        match (self.segment, self.field) {
            (None, field) => field.map(str::to_owned),
            (Some(seg), field) => Some(format!("{seg}:{}", field.unwrap_or_default())),
        }
    }

    /// How a message names the field: `a.b`, or ``a.b` in `kind=order`` in a segment.
    fn label(&self) -> String {
        let field = self.field.unwrap_or_default();
        match self.segment {
            None => field.to_owned(),
            Some(seg) => format!("{field}` in `{seg}"),
        }
    }

    fn found(
        &self,
        kind: FindingKind,
        severity: Severity,
        previous: Value,
        current: Value,
        message: String,
        direction: impl Into<String>,
    ) -> Found {
        Found {
            finding: Finding {
                kind,
                path: self.path(),
                severity,
                previous,
                current,
                message,
                segments: Vec::new(),
                folded: false,
            },
            segment: self.segment.map(str::to_owned),
            field: self.field.map(str::to_owned),
            direction: direction.into(),
        }
    }
}

/// Folds each segment finding that says what a week finding says (same
/// kind, field and direction) into that week finding: the segment finding
/// is marked `folded`, the week's lists the segment and ends by naming the
/// segments ("The same in all 3 `kind` segments."). `compared` is the
/// number of segments compared with last week's.
fn fold(found: Vec<Found>, by: &str, compared: usize) -> Vec<Finding> {
    let week: BTreeMap<(FindingKind, Option<&str>, &str), usize> = found
        .iter()
        .enumerate()
        .filter(|(_, f)| f.segment.is_none())
        .map(|(i, f)| ((f.finding.kind, f.field.as_deref(), f.direction.as_str()), i))
        .collect();
    // Week finding → the segments folded into it, in the segments' order.
    let mut folded: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut is_folded = vec![false; found.len()];
    for (i, f) in found.iter().enumerate() {
        let Some(segment) = &f.segment else { continue };
        if let Some(&w) = week.get(&(f.finding.kind, f.field.as_deref(), f.direction.as_str())) {
            folded.entry(w).or_default().push(segment.clone());
            is_folded[i] = true;
        }
    }
    let mut findings: Vec<Finding> =
        found.into_iter().zip(is_folded).map(|(f, folded)| Finding { folded, ..f.finding }).collect();
    for (w, segs) in folded {
        let all = compared >= 2 && segs.len() == compared;
        let which = if all && compared == 2 {
            format!("both `{by}` segments")
        } else if all {
            format!("all {compared} `{by}` segments")
        } else {
            let named: Vec<String> = segs.iter().map(|s| format!("`{s}`")).collect();
            match named.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                None => String::new(),
            }
        };
        let f = &mut findings[w];
        f.message.push_str(&format!(" The same in {which}."));
        f.segments = segs;
    }
    findings
}

/// `; beyond chance (p < 10⁻⁹).`: how sure a finding is, ending its message.
fn sure(p: f64) -> String {
    format!("; beyond chance ({}).", p_value(p))
}

fn volume(out: &mut Vec<Found>, segment: Option<&str>, previous: u64, current: u64, t: &Thresholds) {
    if previous == 0 && current == 0 {
        return;
    }
    let change = if previous == 0 { f64::INFINITY } else { current as f64 / previous as f64 - 1.0 };
    let p = counts_p_value(previous, current);
    if change.abs() <= t.volume || p >= alpha() {
        return;
    }
    let what = segment.map_or_else(|| "Records".to_owned(), |s| format!("Records with {s}"));
    let how =
        if previous == 0 { "appeared".to_owned() } else { format!("{} {}", direction(change), percent(change.abs())) };
    let at = At { segment, field: None };
    out.push(at.found(
        FindingKind::Volume,
        Severity::Warn,
        json!(previous),
        json!(current),
        format!("{what} {how}: {} this week (was {}){}", group(current), group(previous), sure(p)),
        updown(change),
    ));
}

fn direction(change: f64) -> &'static str {
    if change >= 0.0 { "rose" } else { "fell" }
}

/// The direction of a change, as folding compares it.
fn updown(change: f64) -> &'static str {
    if change >= 0.0 { "up" } else { "down" }
}

/// Findings of the field paths of one summary (or segment), `segment`
/// naming the segment (`kind=orders`) or `None`.
fn fields(
    out: &mut Vec<Found>,
    segment: Option<&str>,
    previous: &[FieldSummary],
    previous_records: u64,
    current: &[FieldSummary],
    current_records: u64,
    t: &Thresholds,
) {
    let before: BTreeMap<&str, &FieldSummary> =
        previous.iter().filter(|f| f.path != OTHER_PATH).map(|f| (f.path.as_str(), f)).collect();
    let after: BTreeMap<&str, &FieldSummary> =
        current.iter().filter(|f| f.path != OTHER_PATH).map(|f| (f.path.as_str(), f)).collect();

    // Added and removed: only the topmost path of a new or vanished subtree.
    let mut appeared = BTreeSet::new();
    for (name, f, other, other_records, kind) in before
        .iter()
        .filter(|(p, _)| !after.contains_key(*p))
        .map(|(p, f)| (*p, *f, &after, current_records, FindingKind::FieldRemoved))
        .chain(
            after
                .iter()
                .filter(|(p, _)| !before.contains_key(*p))
                .map(|(p, f)| (*p, *f, &before, previous_records, FindingKind::FieldAdded)),
        )
    {
        let records = if kind == FindingKind::FieldRemoved { previous_records } else { current_records };
        let share = ratio(f.present, records);
        if share < t.field_share || share * (other_records as f64) < MIN_EXPECTED {
            continue;
        }
        if parents(name).any(|parent| !other.contains_key(parent) && appeared.contains(&(kind, parent.to_owned()))) {
            continue;
        }
        appeared.insert((kind, name.to_owned()));
        let at = At { segment, field: Some(name) };
        let shown = at.label();
        // The chance that a path in `share` of the records is in none of
        // the other week's `other_records`.
        let p = (other_records as f64 * (1.0 - share).ln()).exp();
        let (severity, message, previous, current) = if kind == FindingKind::FieldRemoved {
            (
                Severity::Warn,
                format!(
                    "Field `{shown}` disappeared: in none of this week's {} records (was in {} of {}){}",
                    group(current_records),
                    percent(share),
                    group(previous_records),
                    sure(p)
                ),
                json!(f.present),
                json!(0),
            )
        } else {
            (
                Severity::Info,
                format!(
                    "New field `{shown}`: in {} of this week's {} records (was in none of {}){}",
                    percent(share),
                    group(current_records),
                    group(previous_records),
                    sure(p)
                ),
                json!(0),
                json!(f.present),
            )
        };
        out.push(at.found(kind, severity, previous, current, message, ""));
    }

    for (name, a) in &before {
        let Some(b) = after.get(name) else { continue };
        let at = At { segment, field: Some(name) };
        types(out, at, a, b, t);
        null_rate(out, at, a, b, t);
        if let (Some(na), Some(nb)) = (&a.number, &b.number) {
            distribution(out, at, &na.quantiles, na.count, &nb.quantiles, nb.count, t);
        }
        if let (Some(sa), Some(sb)) = (&a.string, &b.string) {
            top_values(out, at, sa, sb, t);
        }
    }
}

/// `a.b.c` → `a.b`, `a` (escaped dots are part of a key).
fn parents(path: &str) -> impl Iterator<Item = &str> {
    let mut cuts = Vec::new();
    let mut escaped = false;
    for (i, c) in path.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '.' if !escaped => cuts.push(i),
            _ => escaped = false,
        }
    }
    cuts.into_iter().map(move |i| &path[..i])
}

const TYPE_NAMES: [&str; 5] = ["object", "array", "string", "number", "boolean"];

fn non_null(t: &TypeCounts) -> [u64; 5] {
    [t.object, t.array, t.string, t.number, t.boolean]
}

fn types(out: &mut Vec<Found>, at: At<'_>, a: &FieldSummary, b: &FieldSummary, t: &Thresholds) {
    let name = at.label();
    let (ca, cb) = (non_null(&a.types), non_null(&b.types));
    let (na, nb) = (ca.iter().sum::<u64>(), cb.iter().sum::<u64>());
    if na < t.min_values || nb < t.min_values {
        return;
    }
    // The dominant type: a strict majority of the non-null values.
    let dominant = |c: &[u64; 5], n: u64| c.iter().position(|&x| x * 2 > n);
    if let (Some(da), Some(db)) = (dominant(&ca, na), dominant(&cb, nb)) {
        let p = two_proportions(ratio(ca[db], na), na, ratio(cb[db], nb), nb);
        if da != db && p < alpha() {
            let (old, new) = (plural(TYPE_NAMES[da]), plural(TYPE_NAMES[db]));
            out.push(at.found(
                FindingKind::TypeChanged,
                Severity::Warn,
                json!(TYPE_NAMES[da]),
                json!(TYPE_NAMES[db]),
                format!(
                    "Field `{name}` is mostly {new} now: {new} {} of its values (was {}), {old} {} (was {}){}",
                    percent(ratio(cb[db], nb)),
                    percent(ratio(ca[db], na)),
                    percent(ratio(cb[da], nb)),
                    percent(ratio(ca[da], na)),
                    sure(p)
                ),
                format!("{}→{}", TYPE_NAMES[da], TYPE_NAMES[db]),
            ));
            return;
        }
    }
    for (i, type_name) in TYPE_NAMES.iter().enumerate() {
        let (sa, sb) = (ratio(ca[i], na), ratio(cb[i], nb));
        let p = two_proportions(sa, na, sb, nb);
        if sa < t.type_minor && sb >= t.type_major && p < alpha() {
            out.push(at.found(
                FindingKind::TypeChanged,
                Severity::Warn,
                json!(round4(sa)),
                json!(round4(sb)),
                format!(
                    "Field `{name}` now has {}: {} of its values (was {}){}",
                    plural(type_name),
                    percent(sb),
                    percent(sa),
                    sure(p)
                ),
                format!("+{type_name}"),
            ));
        }
    }
}

fn plural(type_name: &str) -> &'static str {
    match type_name {
        "object" => "objects",
        "array" => "arrays",
        "string" => "strings",
        "number" => "numbers",
        _ => "booleans",
    }
}

fn null_rate(out: &mut Vec<Found>, at: At<'_>, a: &FieldSummary, b: &FieldSummary, t: &Thresholds) {
    if a.present < t.min_values || b.present < t.min_values {
        return;
    }
    let (ra, rb) = (ratio(a.null, a.present), ratio(b.null, b.present));
    let p = two_proportions(ra, a.present, rb, b.present);
    if (rb - ra).abs() >= t.null_rate && p < alpha() {
        out.push(at.found(
            FindingKind::NullRate,
            Severity::Warn,
            json!(round4(ra)),
            json!(round4(rb)),
            format!(
                "Field `{}` is null in {} of the records that have it (was {}){}",
                at.label(),
                percent(rb),
                percent(ra),
                sure(p)
            ),
            updown(rb - ra),
        ));
    }
}

fn distribution(out: &mut Vec<Found>, at: At<'_>, qa: &[f64], na: u64, qb: &[f64], nb: u64, t: &Thresholds) {
    if na < t.min_values || nb < t.min_values || qa.len() < 2 || qb.len() < 2 {
        return;
    }
    let d = ks_distance(qa, qb);
    let (n, m) = (na as f64, nb as f64);
    // The asymptotic two-sample critical coefficient c(α) = √(−½·ln(α/2)).
    let c_alpha = (-0.5 * (alpha() / 2.0).ln()).sqrt();
    let critical = c_alpha * ((n + m) / (n * m)).sqrt() + KS_QUANTILE_MARGIN;
    if d < t.distribution || d < critical {
        return;
    }
    let (p10, p50, p90) = (|q: &[f64]| q[q.len() / 10], |q: &[f64]| q[q.len() / 2], |q: &[f64]| q[q.len() * 9 / 10]);
    let points = |q: &[f64]| json!({ "p10": p10(q), "p50": p50(q), "p90": p90(q) });
    // Which way the values moved: the mean shift of the stored quantiles.
    let shift = mean(qb) - mean(qa);
    let how = if shift > 0.0 {
        " up"
    } else if shift < 0.0 {
        " down"
    } else {
        ""
    };
    let was_is = |pick: fn(&[f64]) -> f64| format!("{} (was {})", decimal(pick(qb)), decimal(pick(qa)));
    out.push(at.found(
        FindingKind::Distribution,
        Severity::Warn,
        points(qa),
        points(qb),
        format!(
            "Values of `{}` shifted{how}: median {}, p10 {}, p90 {}; Kolmogorov–Smirnov distance {:.2}{}",
            at.label(),
            was_is(p50),
            was_is(p10),
            was_is(p90),
            d,
            sure(ks_p_value(d - KS_QUANTILE_MARGIN, n, m))
        ),
        updown(shift),
    ));
}

fn mean(q: &[f64]) -> f64 {
    q.iter().sum::<f64>() / q.len().max(1) as f64
}

/// The asymptotic p-value of a two-sample Kolmogorov–Smirnov distance `d`
/// between samples of `n` and `m` values: `Q(λ) = 2·Σ (−1)^(k−1)·e^(−2k²λ²)`
/// with `λ = d·√(n·m/(n+m))`.
fn ks_p_value(d: f64, n: f64, m: f64) -> f64 {
    let lambda = d.max(0.0) * (n * m / (n + m)).sqrt();
    if lambda < 0.2 {
        return 1.0;
    }
    let sum: f64 = (1..=100)
        .map(|k| {
            let k = f64::from(k);
            let sign = if k % 2.0 == 1.0 { 1.0 } else { -1.0 };
            sign * (-2.0 * k * k * lambda * lambda).exp()
        })
        .sum();
    (2.0 * sum).clamp(0.0, 1.0)
}

/// The Kolmogorov–Smirnov distance of two distributions given by their
/// values at evenly spaced ranks (`q[i]` at rank `i/(len-1)`): the largest
/// gap between the two step CDFs, evaluated just below and at every point.
pub(crate) fn ks_distance(qa: &[f64], qb: &[f64]) -> f64 {
    // F(x) = the highest rank whose value is ≤ x (or < x for the left limit).
    let cdf = |q: &[f64], x: f64, strict: bool| {
        let below = q.partition_point(|&v| if strict { v < x } else { v <= x });
        if below == 0 {
            0.0
        } else if below == q.len() {
            1.0
        } else {
            (below - 1) as f64 / (q.len() - 1) as f64
        }
    };
    qa.iter()
        .chain(qb)
        .flat_map(|&x| [(x, false), (x, true)])
        .map(|(x, strict)| (cdf(qa, x, strict) - cdf(qb, x, strict)).abs())
        .fold(0.0, f64::max)
}

fn top_values(out: &mut Vec<Found>, at: At<'_>, a: &StringSummary, b: &StringSummary, t: &Thresholds) {
    if a.count < t.min_values || b.count < t.min_values || (a.top.is_empty() && b.top.is_empty()) {
        return;
    }
    let (d, mut moves) = tv_distance(a, b);
    let noise = top_values_noise(moves.len() + 1, a.count.min(b.count));
    if d < t.top_values || d < noise {
        return;
    }
    let shares = |s: &StringSummary| {
        let total = s.count.max(1) as f64;
        Value::Object(s.top.iter().take(3).map(|v| (v.value.clone(), json!(round4(v.count as f64 / total)))).collect())
    };
    // The values that moved most, largest move first (ties: the larger
    // share now, then before, then by value).
    moves.sort_by(|x, y| {
        let change = |v: &ValueShares| (v.after - v.before).abs();
        change(y)
            .total_cmp(&change(x))
            .then(y.after.total_cmp(&x.after))
            .then(y.before.total_cmp(&x.before))
            .then(x.value.cmp(y.value))
    });
    let share = |x: f64, under: bool| if under { format!("under {}", percent(x)) } else { percent(x) };
    let listed: Vec<String> = moves
        .iter()
        .take(3)
        .map(|v| {
            let shown = if v.value.is_empty() { "(empty)".to_owned() } else { clip(v.value, 40, "…") };
            format!("{shown} {} (was {})", share(v.after, v.after_under), share(v.before, v.before_under))
        })
        .collect();
    // How sure: the two-proportion test of the value that moved most.
    let p = moves.first().map_or(1.0, |v| two_proportions(v.before, a.count, v.after, b.count));
    let grew = moves
        .iter()
        .filter(|v| v.after > v.before)
        .max_by(|x, y| (x.after - x.before).total_cmp(&(y.after - y.before)).then(y.value.cmp(x.value)))
        .map_or("", |v| v.value);
    out.push(at.found(
        FindingKind::TopValues,
        Severity::Warn,
        shares(a),
        shares(b),
        format!("The mix of `{}` changed: {}{}", at.label(), listed.join(", "), sure(p)),
        grew,
    ));
}

/// One value's share in each week, as [`tv_distance`] compares them.
struct ValueShares<'a> {
    value: &'a str,
    before: f64,
    after: f64,
    /// The value is missing from that week's (truncated) top list: its
    /// share there is at most the one given.
    before_under: bool,
    after_under: bool,
}

/// Three times the total-variation distance two samples of `n` values
/// from the same `k`-valued uniform distribution show on average
/// (`½·k·√(2p(1−p)/n)·√(2/π)` with `p = 1/k`, about `0.56·√(k/n)`).
fn top_values_noise(k: usize, n: u64) -> f64 {
    3.0 * 0.56 * (k as f64 / n.max(1) as f64).sqrt()
}

/// The smallest total-variation distance between the two weeks' value
/// shares that their top lists allow, and the shares compared.
///
/// A value missing from one week's list has a share there between 0 and
/// that list's smallest share (0 exactly when the list holds every value);
/// the share closest to the other week's is taken, so values that fall off
/// a truncated list by chance add nothing. The remaining mass is pooled as
/// "other" in both weeks.
fn tv_distance<'a>(a: &'a StringSummary, b: &'a StringSummary) -> (f64, Vec<ValueShares<'a>>) {
    let (ta, tb) = (a.count.max(1) as f64, b.count.max(1) as f64);
    let complete = |s: &StringSummary| s.top_exact && s.distinct as usize <= s.top.len();
    let bound = |s: &StringSummary, total: f64| {
        if complete(s) { 0.0 } else { s.top.iter().map(|v| v.count).min().unwrap_or(s.top_max_error) as f64 / total }
    };
    let (ba, bb) = (bound(a, ta), bound(b, tb));
    let share_a: BTreeMap<&str, f64> = a.top.iter().map(|v| (v.value.as_str(), v.count as f64 / ta)).collect();
    let share_b: BTreeMap<&str, f64> = b.top.iter().map(|v| (v.value.as_str(), v.count as f64 / tb)).collect();
    let values: BTreeSet<&str> = share_a.keys().chain(share_b.keys()).copied().collect();
    let (mut sum_a, mut sum_b, mut diff) = (0.0, 0.0, 0.0);
    let mut shares = Vec::with_capacity(values.len());
    for v in values {
        let (x, y) = match (share_a.get(v), share_b.get(v)) {
            (Some(&x), Some(&y)) => (x, y),
            (Some(&x), None) => (x, x.min(bb)),
            (None, Some(&y)) => (y.min(ba), y),
            (None, None) => continue,
        };
        sum_a += x;
        sum_b += y;
        diff += (x - y).abs();
        shares.push(ValueShares {
            value: v,
            before: x,
            after: y,
            before_under: !share_a.contains_key(v) && ba > 0.0,
            after_under: !share_b.contains_key(v) && bb > 0.0,
        });
    }
    let other = ((1.0 - sum_a).max(0.0) - (1.0 - sum_b).max(0.0)).abs();
    ((diff + other) / 2.0, shares)
}

fn quiet_days(out: &mut Vec<Found>, previous: &Summary, current: &Summary, t: &Thresholds) {
    let active = current.per_day.iter().filter(|d| d.records > 0).count() as u32;
    for (i, day) in current.per_day.iter().enumerate() {
        let before = previous.per_day.get(i).map_or(0, |d| d.records);
        // A weekday that was quiet last week too is a pattern, not an outage;
        // one that had a few records is quiet by chance as often as not.
        let p = counts_p_value(before, 0);
        if day.records == 0 && active >= t.quiet_day_active_days && p < alpha() {
            out.push(At { segment: None, field: None }.found(
                FindingKind::QuietDay,
                Severity::Warn,
                json!(before),
                json!(day.date),
                format!(
                    "No records on {} {} (was {} on last week's {}) while {active} other days had some: check ingestion{}",
                    WEEKDAYS[i],
                    day.date,
                    group(before),
                    WEEKDAYS[i],
                    sure(p)
                ),
                day.date.clone(),
            ));
        }
    }
}

const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// The findings of every segment listed in both weeks; returns how many
/// segments were compared.
fn segments(out: &mut Vec<Found>, previous: &Segments, current: &Segments, t: &Thresholds) -> usize {
    if previous.by != current.by {
        return 0;
    }
    let mut compared = 0;
    for seg in &current.values {
        let Some(before) = previous.values.iter().find(|s| s.value == seg.value) else { continue };
        compared += 1;
        let name = format!("{}={}", current.by, seg.value);
        volume(out, Some(&name), before.records, seg.records, t);
        fields(out, Some(&name), &before.fields, before.records, &seg.fields, seg.records, t);
    }
    compared
}

/// The two-sided p-value of shares `p1` of `n1` and `p2` of `n2` under
/// one common share (the two-proportion z-test); they differ beyond noise
/// when it is below [`alpha`] (z ≥ [`Z_SIGNIFICANT`]).
fn two_proportions(p1: f64, n1: u64, p2: f64, n2: u64) -> f64 {
    let (n1, n2) = (n1 as f64, n2 as f64);
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 {
        return if p1 == p2 { 1.0 } else { 0.0 };
    }
    erfc((p1 - p2).abs() / se / std::f64::consts::SQRT_2)
}

/// Whether shares `p1` of `n1` and `p2` of `n2` differ beyond noise.
#[cfg(test)]
fn significant(p1: f64, n1: u64, p2: f64, n2: u64) -> bool {
    two_proportions(p1, n1, p2, n2) < alpha()
}

/// Whether record counts `a` and `b` differ beyond noise (tests).
#[cfg(test)]
fn counts_differ(a: u64, b: u64) -> bool {
    counts_p_value(a, b) < alpha()
}

/// Whether record counts `a` and `b` of two equally long periods (two
/// weeks, or one weekday in each) differ beyond what one Poisson rate
/// produces in both: the exact conditional test of two Poisson rates.
/// Given `n = a + b`, each count is Binomial(`n`, ½) when the rates are
/// equal; this is the two-sided p-value `2·P(X ≥ max(a, b))` (1 for equal
/// counts), and the counts differ when it is below the two-sided tail of a
/// z-score of [`Z_SIGNIFICANT`], the confidence every other finding kind
/// decides at.
fn counts_p_value(a: u64, b: u64) -> f64 {
    let (n, high) = (a + b, a.max(b));
    if a == b {
        return 1.0;
    }
    // `n > 0` and `p = ½` are valid parameters: this cannot fail.
    let Ok(binomial) = Binomial::new(0.5, n) else { return 1.0 };
    // sf(k) = P(X > k), so P(X ≥ high) = sf(high − 1); `high ≥ 1` here.
    (2.0 * binomial.sf(high - 1)).min(1.0)
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_overrides_and_reject_unknown_keys() {
        let t: Thresholds = "volume=0.3, null_rate=0.05,min_values=100".parse().unwrap();
        assert_eq!((t.volume, t.null_rate, t.min_values, t.distribution), (0.3, 0.05, 100, 0.2));
        assert_eq!("".parse::<Thresholds>().unwrap(), Thresholds::default());
        let e = "volum=1".parse::<Thresholds>().unwrap_err().to_string();
        assert!(e.contains("unknown key \"volum\"") && e.contains("volume, field_share"), "{e}");
        assert!("volume=-1".parse::<Thresholds>().is_err());
        assert!("volume".parse::<Thresholds>().is_err());
        assert_eq!(Thresholds::default().to_string().parse::<Thresholds>().unwrap(), Thresholds::default());
    }

    #[test]
    fn ks_distance_of_identical_shifted_and_disjoint_distributions() {
        let q: Vec<f64> = (0..=40).map(f64::from).collect();
        assert_eq!(ks_distance(&q, &q), 0.0);
        let shifted: Vec<f64> = q.iter().map(|x| x + 10.0).collect();
        assert!((ks_distance(&q, &shifted) - 0.25).abs() < 0.03, "{}", ks_distance(&q, &shifted));
        let far: Vec<f64> = q.iter().map(|x| x + 1000.0).collect();
        assert_eq!(ks_distance(&q, &far), 1.0);
        let constant = vec![5.0; 41];
        assert_eq!(ks_distance(&constant, &constant), 0.0);
    }

    #[test]
    fn parents_respect_escaped_dots() {
        assert_eq!(parents("a.b.c").collect::<Vec<_>>(), vec!["a", "a.b"]);
        assert_eq!(parents(r"a\.b.c").collect::<Vec<_>>(), vec![r"a\.b"]);
        assert!(parents("a").next().is_none());
    }

    #[test]
    fn counts_differ_only_beyond_poisson_noise() {
        // The confidence of the share tests: z = 4, two-sided.
        assert!((alpha() - 6.334e-5).abs() < 1e-8);
        // 8 → 13 is "+62 %" but p ≈ 0.38; so are small weeks that halve.
        assert!(!counts_differ(8, 13));
        assert!(!counts_differ(13, 8));
        assert!(!counts_differ(20, 10));
        assert!(!counts_differ(0, 0) && !counts_differ(500, 500));
        // A real change of a big week.
        assert!(counts_differ(1000, 400) && counts_differ(400, 1000));
        assert!(counts_differ(3000, 4600));
        // A count falling to zero: p = 2·2⁻ⁿ, below 6.3·10⁻⁵ from n = 15 on.
        assert!(!counts_differ(14, 0) && counts_differ(15, 0) && counts_differ(0, 15));
        // A p-value near 10⁻⁴⁰⁰ does not underflow into "no difference".
        assert!(counts_differ(1_000_000, 0));
    }

    #[test]
    fn significance_needs_both_size_and_difference() {
        assert!(!significant(0.10, 20, 0.25, 20));
        assert!(significant(0.10, 5000, 0.25, 5000));
        assert!(!significant(0.5, 100_000, 0.5, 100_000));
    }
}
