//! The report site: each week's `summary.html` and the bucket's
//! `summaries/index.html`.
//!
//! Both pages are self-contained — inline CSS and SVG, no scripts, no
//! fonts or images fetched — so they open from a bucket over HTTPS, from
//! the folder on disk (`file://`), or from a mail attachment, and read the
//! same everywhere. Links between them are relative (`../2026-W47/summary.html`,
//! `../index.html`).
//!
//! The markup lives in `templates/` and is compiled by askama, which
//! escapes every interpolated value by default; this module only turns a
//! [`Summary`] into view models of preformatted strings and chart
//! geometry. The same summary gives the same bytes.

use std::collections::HashMap;

use askama::Template;

use super::fmt::{change_pct1, group, readable};
use super::model::{Comparison, FieldSummary, Finding, NumberSummary, Severity, StringSummary, Summary};
use crate::week::IsoWeek;

/// Where a week's page links to besides itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nav {
    /// The latest earlier summarized week.
    pub previous: Option<IsoWeek>,
    /// The earliest later summarized week, if one exists already.
    pub next: Option<IsoWeek>,
}

/// Renders `summary.html`. `previous` is the summary the comparison was
/// made against (for the per-field deltas).
pub fn render_html(s: &Summary, previous: Option<&Summary>, nav: Nav) -> String {
    let page = WeekPage::new(s, previous, nav);
    // Rendering into a String cannot fail: every value displays infallibly.
    page.render().unwrap_or_else(|e| format!("<!doctype html><p>report could not be rendered: {e}</p>\n")) + "\n"
}

/// One row of the index: a summarized week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexWeek {
    pub week: IsoWeek,
    pub records: u64,
    /// `None` for weeks summarized before findings existed (schema 1).
    pub warnings: Option<u64>,
}

/// Weeks charted on the index.
pub const TREND_WEEKS: usize = 12;
/// Numeric fields charted on the index (the busiest of the latest week).
pub const TREND_FIELDS: usize = 3;
/// Width of a trend chart's value axis (its labels), of 1000.
const TREND_AXIS_WIDTH: f64 = 70.0;

/// Renders `summaries/index.html`: every week in `weeks` (any order; shown
/// newest first) and trend charts from `recent`, the summaries of the
/// latest [`TREND_WEEKS`] weeks.
pub fn render_index(weeks: &[IndexWeek], recent: &[Summary]) -> String {
    let page = IndexPage::new(weeks, recent);
    page.render().unwrap_or_else(|e| format!("<!doctype html><p>index could not be rendered: {e}</p>\n")) + "\n"
}

#[derive(Template)]
#[template(path = "summary.html")]
struct WeekPage {
    week: String,
    first_day: String,
    last_day: String,
    nav: Nav,
    comparison: Option<ComparisonView>,
    previous_week: Option<String>,
    cards: Vec<(&'static str, String)>,
    unparsable: Option<String>,
    per_day: Chart,
    per_hour: Chart,
    fields: Vec<FieldView>,
    segments: Option<SegmentsView>,
    schema: u32,
    footer: String,
}

struct ComparisonView {
    previous_week: IsoWeek,
    headline: String,
    findings: Vec<FindingView>,
}

struct FindingView {
    severity: &'static str,
    kind: &'static str,
    message: String,
    anchor: Option<String>,
}

struct SegmentsView {
    by: String,
    summary: String,
    values: Vec<SegmentView>,
}

struct SegmentView {
    id: String,
    value: String,
    records: String,
    delta: Option<String>,
    fields: Vec<FieldView>,
}

struct Chart {
    label: &'static str,
    height: u32,
    axis_y: String,
    label_y: String,
    max: String,
    bars: Vec<Bar>,
    labels: Vec<Label>,
}

struct Bar {
    x: String,
    y: String,
    width: String,
    height: String,
    tip: String,
}

struct Label {
    x: String,
    text: String,
}

struct FieldView {
    id: String,
    flagged: bool,
    path: String,
    present: String,
    share: String,
    types: Vec<String>,
    histogram: Option<Vec<Bar>>,
    number_line: Option<(String, String)>,
    note: Option<String>,
    top: Vec<TopView>,
    stats: Vec<String>,
    deltas: Vec<Delta>,
}

struct TopView {
    value: String,
    shown: String,
    percent: String,
    count: String,
}

struct Delta {
    label: &'static str,
    text: String,
    class: &'static str,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const HISTOGRAM_WIDTH: f64 = 240.0;
const HISTOGRAM_HEIGHT: f64 = 40.0;

impl WeekPage {
    fn new(s: &Summary, previous: Option<&Summary>, nav: Nav) -> Self {
        let busiest = s.per_day.iter().enumerate().max_by_key(|(_, d)| d.records).filter(|(_, d)| d.records > 0);
        let peak =
            s.per_hour.iter().enumerate().max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i))).filter(|(_, c)| **c > 0);
        let cards = vec![
            ("records", group(s.records)),
            ("data", bytes(s.bytes)),
            ("avg record", s.bytes.checked_div(s.records).map(bytes).unwrap_or_else(|| "–".into())),
            ("fields", group(s.fields.len() as u64)),
            ("busiest day", busiest.map(|(i, d)| format!("{} · {}", DAYS[i], group(d.records))).unwrap_or("–".into())),
            (
                "peak hour",
                peak.map(|(i, c)| format!("{} {:02}:00 · {}", DAYS[i / 24], i % 24, group(*c))).unwrap_or("–".into()),
            ),
        ];
        // Field anchors: `f-N` for the week's fields, `sI-f-N` in segment I.
        let mut anchors: HashMap<String, String> = HashMap::new();
        for (i, f) in s.fields.iter().enumerate() {
            anchors.insert(f.path.clone(), format!("f-{i}"));
        }
        if let Some(seg) = &s.segments {
            for (si, v) in seg.values.iter().enumerate() {
                anchors.insert(format!("{}={}:", seg.by, v.value), format!("s{si}"));
                for (i, f) in v.fields.iter().enumerate() {
                    anchors.insert(format!("{}={}:{}", seg.by, v.value, f.path), format!("s{si}-f-{i}"));
                }
            }
        }
        let flagged: std::collections::HashSet<&str> = s
            .comparison
            .iter()
            .flat_map(|c| &c.findings)
            .filter(|f| f.severity == Severity::Warn)
            .filter_map(|f| f.path.as_deref())
            .collect();
        let previous_fields = |fields: &'_ [FieldSummary]| -> HashMap<String, FieldSummary> {
            fields.iter().map(|f| (f.path.clone(), f.clone())).collect()
        };
        let before = previous.map(|p| previous_fields(&p.fields)).unwrap_or_default();
        let fields = s
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                field_view(format!("f-{i}"), flagged.contains(f.path.as_str()), f, s.records, before.get(&f.path))
            })
            .collect();
        let segments = s.segments.as_ref().map(|seg| {
            let previous_seg = previous.and_then(|p| p.segments.as_ref()).filter(|p| p.by == seg.by);
            let listed: u64 = seg.values.iter().map(|v| v.records).sum();
            SegmentsView {
                by: seg.by.clone(),
                summary: format!(
                    "{} values listed ({} records); {} records have another value or none.{}",
                    seg.values.len(),
                    group(listed),
                    group(seg.other_records),
                    seg.max_unlisted_records.map_or_else(String::new, |n| format!(
                        " Past 10,000 values the list is chosen from an estimate: a value left out may have up to {} records.",
                        group(n)
                    ))
                ),
                values: seg
                    .values
                    .iter()
                    .enumerate()
                    .map(|(si, v)| {
                        let old = previous_seg.and_then(|p| p.values.iter().find(|o| o.value == v.value));
                        let old_fields = old.map(|o| previous_fields(&o.fields)).unwrap_or_default();
                        let prefix = format!("{}={}:", seg.by, v.value);
                        SegmentView {
                            id: format!("s{si}"),
                            value: v.value.clone(),
                            records: group(v.records),
                            delta: old.map(|o| {
                                format!("{} vs {}", change_pct1(o.records as f64, v.records as f64), group(o.records))
                            }),
                            fields: v
                                .fields
                                .iter()
                                .enumerate()
                                .map(|(i, f)| {
                                    let path = format!("{prefix}{}", f.path);
                                    field_view(
                                        format!("s{si}-f-{i}"),
                                        flagged.contains(path.as_str()),
                                        f,
                                        v.records,
                                        old_fields.get(&f.path),
                                    )
                                })
                                .collect(),
                        }
                    })
                    .collect(),
            }
        });
        Self {
            week: s.week.to_string(),
            first_day: s.per_day.first().map(|d| d.date.clone()).unwrap_or_default(),
            last_day: s.per_day.last().map(|d| d.date.clone()).unwrap_or_default(),
            nav,
            comparison: s.comparison.as_ref().map(|c| {
                comparison_view(c, &anchors, s.segments.as_ref().map(|seg| format!("{}=", seg.by)).as_deref())
            }),
            previous_week: s.comparison.as_ref().map(|c| c.previous_week.to_string()),
            cards,
            unparsable: (s.unparsable_records > 0).then(|| {
                format!(
                    "{} records could not be read as JSON objects and are counted only in the totals.",
                    group(s.unparsable_records)
                )
            }),
            per_day: bar_chart(
                "records per day",
                &s.per_day.iter().map(|d| d.records).collect::<Vec<_>>(),
                |i| Some(format!("{} {}", DAYS[i], &s.per_day[i].date[s.per_day[i].date.len().saturating_sub(5)..])),
                |i, v| format!("{}: {} records", s.per_day[i].date, group(v)),
                160,
            ),
            per_hour: bar_chart(
                "records per hour",
                &s.per_hour,
                |i| (i % 24 == 0).then(|| DAYS[i / 24].to_owned()),
                |i, v| format!("{} {:02}:00–{:02}:00: {} records", DAYS[i / 24], i % 24, i % 24 + 1, group(v)),
                140,
            ),
            fields,
            segments,
            schema: s.schema,
            footer: format!(
                "Paths nest up to depth {}; at most {} paths are tracked, the rest are counted under _other. \
                 Quantiles have ≤ 1% rank error; distinct counts above {} are estimates (≤ 2%).",
                s.limits.max_depth,
                group(s.limits.max_paths as u64),
                group(s.limits.exact_distinct_limit as u64)
            ),
        }
    }
}

/// `segment` is the prefix of segment findings' paths (`kind=`).
fn comparison_view(c: &Comparison, anchors: &HashMap<String, String>, segment: Option<&str>) -> ComparisonView {
    // Each change once: segment findings folded into the week's are in
    // summary.json, and named by the week finding's message.
    let listed: Vec<&Finding> = c.listed().collect();
    let warnings = c.warnings();
    let infos = listed.len() - warnings;
    let headline = match (warnings, infos) {
        (0, n) => format!("No warnings; {n} note{}.", if n == 1 { "" } else { "s" }),
        (w, 0) => format!("{w} warning{}.", if w == 1 { "" } else { "s" }),
        (w, n) => {
            format!("{w} warning{} and {n} note{}.", if w == 1 { "" } else { "s" }, if n == 1 { "" } else { "s" })
        }
    };
    // Warnings first, then notes; the week's before its segments'; each
    // group in the summary's (kind, path) order.
    let in_segment = |path: Option<&str>| segment.zip(path).is_some_and(|(prefix, p)| p.starts_with(prefix));
    let mut findings = listed;
    findings.sort_by_key(|f| (std::cmp::Reverse(f.severity), in_segment(f.path.as_deref())));
    ComparisonView {
        previous_week: c.previous_week,
        headline,
        findings: findings
            .into_iter()
            .map(|f| FindingView {
                severity: if f.severity == Severity::Warn { "warn" } else { "info" },
                kind: f.kind.as_str(),
                message: f.message.clone(),
                // Week-level findings (volume, quiet days) point at the day chart.
                anchor: match f.path.as_deref() {
                    Some(p) => anchors.get(p).cloned(),
                    None => Some("per-day".to_owned()),
                },
            })
            .collect(),
    }
}

fn field_view(id: String, flagged: bool, f: &FieldSummary, records: u64, before: Option<&FieldSummary>) -> FieldView {
    let t = &f.types;
    let types = [
        ("number", t.number),
        ("string", t.string),
        ("boolean", t.boolean),
        ("object", t.object),
        ("array", t.array),
        ("null", t.null),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| format!("{name} {}", group(n)))
    .collect();
    let mut view = FieldView {
        id,
        flagged,
        path: f.path.clone(),
        present: group(f.present),
        share: if records > 0 {
            format!("{:.1}% of records", f.present as f64 * 100.0 / records as f64)
        } else {
            String::new()
        },
        types,
        histogram: None,
        number_line: None,
        note: None,
        top: Vec::new(),
        stats: Vec::new(),
        deltas: before.map(|b| deltas(b, f)).unwrap_or_default(),
    };
    if let Some(n) = &f.number {
        number_view(&mut view, n);
    }
    if let Some(s) = &f.string {
        string_view(&mut view, s);
    }
    if let Some(b) = &f.boolean {
        let total = (b.true_count + b.false_count).max(1);
        view.top = top_views(&[("true".into(), b.true_count), ("false".into(), b.false_count)], total);
    }
    if let Some(a) = &f.array {
        view.stats.push(format!(
            "array length {}–{}, mean {}",
            group(a.min_length),
            group(a.max_length),
            readable(a.mean_length)
        ));
    }
    view
}

/// Δ of count, mean, p50 and null rate against the previous week's field.
fn deltas(b: &FieldSummary, f: &FieldSummary) -> Vec<Delta> {
    let mut out = vec![Delta {
        label: "count",
        text: format!("{} ({})", change_pct1(b.present as f64, f.present as f64), group(b.present)),
        class: trend(b.present as f64, f.present as f64),
    }];
    if let (Some(nb), Some(nf)) = (&b.number, &f.number) {
        for (label, x, y) in [("mean", nb.mean, nf.mean), ("p50", nb.p50, nf.p50)] {
            if let (Some(x), Some(y)) = (x, y) {
                out.push(Delta { label, text: format!("{} → {}", readable(x), readable(y)), class: trend(x, y) });
            }
        }
    }
    let rate = |g: &FieldSummary| if g.present == 0 { 0.0 } else { g.null as f64 / g.present as f64 };
    let (rb, rf) = (rate(b), rate(f));
    if rb > 0.0 || rf > 0.0 {
        out.push(Delta {
            label: "nulls",
            text: format!("{:.1}% → {:.1}%", rb * 100.0, rf * 100.0),
            class: trend(rf, rb), // more nulls reads as down
        });
    }
    out
}

fn trend(before: f64, after: f64) -> &'static str {
    if after > before {
        "up"
    } else if after < before {
        "down"
    } else {
        ""
    }
}

fn number_view(view: &mut FieldView, n: &NumberSummary) {
    if let Some(hist) = &n.histogram {
        let max = hist.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
        let bw = HISTOGRAM_WIDTH / hist.counts.len().max(1) as f64;
        let step = (hist.max - hist.min) / hist.counts.len().max(1) as f64;
        view.histogram = Some(
            hist.counts
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    let bh = if c == 0 { 0.0 } else { (c as f64 / max * (HISTOGRAM_HEIGHT - 2.0)).max(1.0) };
                    let lo = hist.min + step * i as f64;
                    Bar {
                        x: f1(i as f64 * bw + 0.5),
                        y: f1(HISTOGRAM_HEIGHT - bh),
                        width: f1((bw - 1.0).max(0.5)),
                        height: f1(bh),
                        tip: format!("{} – {}: ~{}", readable(lo), readable(lo + step), group(c)),
                    }
                })
                .collect(),
        );
    }
    let opt = |x: Option<f64>| x.map(readable).unwrap_or_else(|| "–".into());
    view.number_line = Some((
        format!(
            "min {} · p50 {} · p90 {} · p99 {} · max {}",
            opt(n.min),
            opt(n.p50),
            opt(n.p90),
            opt(n.p99),
            opt(n.max)
        ),
        format!("mean {} · sd {}", opt(n.mean), opt(n.stddev)),
    ));
    if n.out_of_range > 0 {
        view.note = Some(format!("{} numbers too large for a double, counted only", group(n.out_of_range)));
    }
}

fn string_view(view: &mut FieldView, s: &StringSummary) {
    // Past the exact limit, a count within the error bound could be noise:
    // only values that certainly recur are shown.
    let top: Vec<(String, u64)> =
        s.top.iter().filter(|t| s.top_exact || t.count > s.top_max_error).map(|t| (t.value.clone(), t.count)).collect();
    if top.is_empty() && s.count > 0 {
        view.stats.push("no value stands out".into());
    }
    view.top = top_views(&top, s.count.max(1));
    view.stats.push(format!(
        "{}{} distinct · length {}–{}{}",
        if s.distinct_exact { "" } else { "~" },
        group(s.distinct),
        group(s.min_length),
        group(s.max_length),
        if s.top_exact { String::new() } else { format!(" · counts may be up to {} low", group(s.top_max_error)) }
    ));
}

fn top_views(items: &[(String, u64)], total: u64) -> Vec<TopView> {
    items
        .iter()
        .map(|(value, count)| TopView {
            value: value.clone(),
            shown: if value.is_empty() { "(empty)".into() } else { value.chars().take(80).collect() },
            percent: f1(*count as f64 * 100.0 / total as f64),
            count: group(*count),
        })
        .collect()
}

/// A bar chart 1000 wide, scaled to its maximum, a tooltip per bar.
fn bar_chart(
    label: &'static str,
    values: &[u64],
    axis_label: impl Fn(usize) -> Option<String>,
    tip: impl Fn(usize, u64) -> String,
    height: u32,
) -> Chart {
    let (top, bottom) = (16.0, 20.0);
    let plot = f64::from(height) - top - bottom;
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = 1000.0 / values.len().max(1) as f64;
    let gap = if slot > 20.0 { slot * 0.2 } else { 1.0 };
    let mut bars = Vec::with_capacity(values.len());
    let mut labels = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let bh = if v == 0 { 0.0 } else { (v as f64 / max * plot).max(1.5) };
        let x = i as f64 * slot + gap / 2.0;
        bars.push(Bar {
            x: f1(x),
            y: f1(top + plot - bh),
            width: f1((slot - gap).max(0.5)),
            height: f1(bh),
            tip: tip(i, v),
        });
        if let Some(text) = axis_label(i) {
            labels.push(Label { x: f1(x), text });
        }
    }
    Chart {
        label,
        height,
        axis_y: f1(top + plot),
        label_y: f1(f64::from(height) - 5.0),
        max: group(max as u64),
        bars,
        labels,
    }
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    subtitle: String,
    weeks: Vec<IndexRow>,
    volume: IndexVolume,
    trends: Vec<Trend>,
}

struct IndexRow {
    week: IsoWeek,
    records: String,
    warnings: String,
}

struct IndexVolume {
    max: String,
    bars: Vec<LinkedBar>,
    labels: Vec<Label>,
}

struct LinkedBar {
    href: String,
    x: String,
    y: String,
    width: String,
    height: String,
    tip: String,
}

struct Trend {
    path: String,
    range: String,
    /// Instead of a chart: why there is no trend to draw (a field with
    /// numbers in one charted week only).
    note: Option<String>,
    p50: String,
    p90: String,
    points: Vec<Point>,
    labels: Vec<Label>,
    /// The value axis: the highest and lowest value charted, at their height.
    axis: Vec<AxisLabel>,
}

struct AxisLabel {
    y: String,
    text: String,
}

struct Point {
    x: String,
    y: String,
    tip: String,
}

impl IndexPage {
    fn new(weeks: &[IndexWeek], recent: &[Summary]) -> Self {
        let mut rows: Vec<&IndexWeek> = weeks.iter().collect();
        rows.sort_by_key(|w| std::cmp::Reverse(w.week));
        let mut recent: Vec<&Summary> = recent.iter().collect();
        recent.sort_by_key(|s| s.week);
        let recent = &recent[recent.len().saturating_sub(TREND_WEEKS)..];
        let subtitle = match (rows.last(), rows.first()) {
            (Some(first), Some(last)) => format!(
                "{} summarized week{}, {} to {}; newest first.",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" },
                first.week,
                last.week
            ),
            _ => String::new(),
        };
        let slot = 1000.0 / recent.len().clamp(6, TREND_WEEKS) as f64;
        let max = recent.iter().map(|s| s.records).max().unwrap_or(0).max(1) as f64;
        let plot = 108.0;
        let mut bars = Vec::new();
        let mut labels = Vec::new();
        for (i, s) in recent.iter().enumerate() {
            let bh = if s.records == 0 { 0.0 } else { (s.records as f64 / max * plot).max(1.5) };
            let x = i as f64 * slot + slot * 0.1;
            bars.push(LinkedBar {
                href: format!("{}/summary.html", s.week),
                x: f1(x),
                y: f1(16.0 + plot - bh),
                width: f1(slot * 0.8),
                height: f1(bh),
                tip: format!("{}: {} records", s.week, group(s.records)),
            });
            labels.push(Label { x: f1(x), text: short_week(s.week) });
        }
        Self {
            subtitle,
            weeks: rows
                .into_iter()
                .map(|w| IndexRow {
                    week: w.week,
                    records: group(w.records),
                    warnings: w.warnings.map(group).unwrap_or_else(|| "–".into()),
                })
                .collect(),
            volume: IndexVolume { max: group(max as u64), bars, labels },
            trends: trends(recent),
        }
    }
}

/// `2026-W47` → `W47`, the year only where it changes (`2027-W01`).
fn short_week(w: IsoWeek) -> String {
    let s = w.to_string();
    if s.ends_with("W01") { s } else { s[5..].to_owned() }
}

/// p50 and p90 per week of the busiest numeric fields of the latest week.
fn trends(recent: &[&Summary]) -> Vec<Trend> {
    let Some(latest) = recent.last() else { return Vec::new() };
    let mut busiest: Vec<&FieldSummary> =
        latest.fields.iter().filter(|f| f.path != super::model::OTHER_PATH && f.number.is_some()).collect();
    busiest.sort_by(|a, b| {
        let count = |f: &FieldSummary| f.number.as_ref().map_or(0, |n| n.count);
        count(b).cmp(&count(a)).then_with(|| a.path.cmp(&b.path))
    });
    busiest.truncate(TREND_FIELDS);
    // The value axis's labels take the chart's left edge.
    let slot = (1000.0 - TREND_AXIS_WIDTH) / recent.len().clamp(6, TREND_WEEKS) as f64;
    busiest
        .into_iter()
        .map(|field| {
            let series: Vec<(usize, IsoWeek, f64, f64)> = recent
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let n = s.field(&field.path)?.number.as_ref()?;
                    Some((i, s.week, n.p50?, n.p90?))
                })
                .collect();
            let lo = series.iter().map(|p| p.2.min(p.3)).fold(f64::INFINITY, f64::min);
            let hi = series.iter().map(|p| p.2.max(p.3)).fold(f64::NEG_INFINITY, f64::max);
            let span = if hi > lo { hi - lo } else { 1.0 };
            let y = |v: f64| f1(126.0 - (v - lo) / span * 110.0);
            let x = |i: usize| f1(TREND_AXIS_WIDTH + i as f64 * slot + slot / 2.0);
            let line = |pick: fn(&(usize, IsoWeek, f64, f64)) -> f64| {
                series.iter().map(|p| format!("{},{}", x(p.0), y(pick(p)))).collect::<Vec<_>>().join(" ")
            };
            let note = match series.as_slice() {
                [] => Some(format!("No charted week has a p50 of {} (no finite numbers).", field.path)),
                [(_, week, p50, p90)] => Some(format!(
                    "Only {week} has numbers at {}, p50 {} and p90 {}: a trend needs two weeks.",
                    field.path,
                    readable(*p50),
                    readable(*p90)
                )),
                _ => None,
            };
            let axis = if note.is_some() {
                Vec::new()
            } else if hi > lo {
                vec![
                    AxisLabel { y: f1(126.0 - 110.0 + 4.0), text: readable(hi) },
                    AxisLabel { y: f1(126.0 + 4.0), text: readable(lo) },
                ]
            } else {
                vec![AxisLabel { y: f1(126.0 + 4.0), text: readable(lo) }]
            };
            Trend {
                path: field.path.clone(),
                note,
                axis,
                range: if series.is_empty() { "–".into() } else { format!("{} – {}", readable(lo), readable(hi)) },
                p50: line(|p| p.2),
                p90: line(|p| p.3),
                points: series
                    .iter()
                    .map(|p| Point {
                        x: x(p.0),
                        y: y(p.2),
                        tip: format!("{}: p50 {} · p90 {}", p.1, readable(p.2), readable(p.3)),
                    })
                    .collect(),
                labels: recent.iter().enumerate().map(|(i, s)| Label { x: x(i), text: short_week(s.week) }).collect(),
            }
        })
        .collect()
}

/// One decimal: chart geometry.
fn f1(x: f64) -> String {
    format!("{x:.1}")
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::super::{Aggregator, SummaryOptions, compare};
    use super::*;
    use crate::{IsoWeek, Record, RecordId, Timestamp};

    fn week() -> IsoWeek {
        IsoWeek::parse("2026-W47").unwrap()
    }

    fn summary_of(week: IsoWeek, datas: &[&str]) -> Summary {
        let options = SummaryOptions { segment_by: Some("kind".into()), ..SummaryOptions::default() };
        let mut agg = Aggregator::new(week, &options);
        for (i, d) in datas.iter().enumerate() {
            let at = Timestamp::from_millis(week.start().as_millis() + i as i64 * 3_600_000 * 7);
            agg.push(&Record { id: RecordId::generate(at), received_at: at, data: (*d).to_owned() });
        }
        agg.finish()
    }

    #[test]
    fn user_strings_are_escaped_everywhere() {
        let s = summary_of(
            week(),
            &[
                r#"{"<script>alert(1)</script>":"<img src=x onerror=alert(1)>","q":"\" onmouseover=\"x","a'b":"&amp;","kind":"<b>"}"#,
            ],
        );
        let html = render_html(&s, None, Nav::default());
        assert!(!html.contains("<script>") && !html.contains("<img") && !html.contains("<b>"), "unescaped markup");
        // askama's escapes: numeric character references.
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{html}");
        assert!(html.contains("&#34; onmouseover=&#34;x"));
        assert!(html.contains("&#38;amp;"));
        assert!(html.contains("a&#39;b"));
    }

    #[test]
    fn the_page_is_self_contained() {
        let html = render_html(
            &summary_of(week(), &[r#"{"n":1,"s":"x","b":true,"arr":[1,2]}"#, r#"{"n":2.5}"#]),
            None,
            Nav::default(),
        );
        for forbidden in ["http://", "https://", "<script", "<link", "@import", "url("] {
            assert!(!html.contains(forbidden), "{forbidden} found");
        }
        assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>\n"));
        assert_eq!(
            html.matches("<svg").count(),
            2 + 1,
            "day and hour charts, and a histogram for the one numeric field"
        );
    }

    #[test]
    fn an_empty_week_says_so() {
        let html = render_html(&summary_of(week(), &[]), None, Nav::default());
        assert!(html.contains("No records this week."));
        assert!(html.contains("Week 2026-W47"));
        assert!(html.contains("No earlier summarized week to compare with."));
    }

    #[test]
    fn findings_come_first_link_to_their_field_and_fields_show_deltas() {
        // `m` shifts in every record (the week and both segments); `n`
        // shifts only in the small segment `b`, too few records to move the week's.
        let week_of = |shift_m: u64, shift_n: u64| -> Vec<String> {
            (0..360)
                .map(|i| {
                    let (kind, n) = if i < 300 { ("a", i % 10) } else { ("b", shift_n + i % 10) };
                    format!(r#"{{"m":{},"n":{n},"kind":"{kind}"}}"#, shift_m + i % 10)
                })
                .collect()
        };
        let (before, after) = (week_of(0, 0), week_of(500, 500));
        let p = summary_of(week().previous(), &before.iter().map(String::as_str).collect::<Vec<_>>());
        let mut s = summary_of(week(), &after.iter().map(String::as_str).collect::<Vec<_>>());
        s.comparison = Some(compare(&p, &s, &Default::default()));
        let html = render_html(&s, Some(&p), Nav { previous: Some(p.week), next: None });
        let findings = html.find("id=\"findings\"").unwrap();
        assert!(findings < html.find("id=\"fields\"").unwrap());
        let m = s.fields.iter().position(|f| f.path == "m").unwrap();
        assert!(html.contains(&format!("<li class=\"warn\"><span class=\"badge\">warn</span><span class=\"kind\">distribution</span><span><a href=\"#f-{m}\">")), "{html}");
        assert!(html.contains(&format!("<tr id=\"f-{m}\" class=\"flagged\">")));
        assert!(html.contains("p50 <span class=\"up\">"), "{html}");
        assert!(html.contains("href=\"../2026-W46/summary.html\" rel=\"prev\""));
        assert!(html.contains("no later week yet"));
        assert!(html.contains("id=\"s0\"") && html.contains("id=\"s1\""), "a section per segment");
        // `m` once, naming the segments that went the same way; `n` of
        // segment `b` on its own, linking into its section.
        let c = s.comparison.as_ref().unwrap();
        assert_eq!(c.findings.iter().filter(|f| f.path.as_deref().is_some_and(|p| p.ends_with('m'))).count(), 3);
        assert!(html.contains("The same in both `kind` segments."), "{html}");
        assert_eq!(html.matches("<li class=").count(), 2, "m once, n of kind=b once: {html}");
        assert!(html.contains("Values of `n` in `kind=b` shifted up"), "{html}");
        assert!(html.contains("<a href=\"#s1-f-"), "segment finding links into its section: {html}");
        assert!(html.contains("2 warnings."), "the headline counts what is listed: {html}");
    }

    #[test]
    fn the_index_lists_weeks_newest_first_with_trends() {
        let weeks: Vec<IsoWeek> = (0..14)
            .scan(week(), |w, _| {
                let this = *w;
                *w = w.next();
                Some(this)
            })
            .collect();
        let recent: Vec<Summary> = weeks
            .iter()
            .enumerate()
            .map(|(i, w)| summary_of(*w, &[&format!(r#"{{"ms":{i}}}"#), r#"{"ms":1}"#]))
            .collect();
        let rows: Vec<IndexWeek> = weeks
            .iter()
            .map(|w| IndexWeek { week: *w, records: 2, warnings: (w.to_string() != "2026-W47").then_some(1) })
            .collect();
        let html = render_index(&rows, &recent);
        let first = html.find(&format!("href=\"{}/summary.html\">", weeks[13])).unwrap();
        let last = html.find(&format!("href=\"{}/summary.html\">", weeks[0])).unwrap();
        assert!(first < last, "newest first");
        assert_eq!(html.matches("<rect class=\"bar\"").count(), TREND_WEEKS, "the last 12 weeks are charted");
        assert!(html.contains("<code>ms</code> per week"));
        // The value axis: the lowest and highest value charted, as numbers.
        let axis: Vec<&str> = html
            .split("<text class=\"axis\"")
            .skip(1)
            .map(|t| &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()])
            .collect();
        let charted = &recent[2..];
        let lo = charted
            .iter()
            .map(|s| s.field("ms").unwrap().number.as_ref().unwrap().p50.unwrap())
            .fold(f64::INFINITY, f64::min);
        let hi =
            charted.iter().map(|s| s.field("ms").unwrap().number.as_ref().unwrap().p90.unwrap()).fold(0.0, f64::max);
        assert_eq!(axis, vec![readable(hi), readable(lo)], "{html}");
        assert!(hi > lo);
        assert!(html.contains("<td class=\"num\">–</td>"), "unknown warnings");
        for forbidden in ["http://", "https://", "<script"] {
            assert!(!html.contains(forbidden), "{forbidden} found");
        }
        assert!(render_index(&[], &[]).contains("No week has been summarized yet."));
    }

    #[test]
    fn a_field_with_numbers_in_one_week_only_gets_a_sentence_not_a_lone_dot() {
        let weeks = [week().previous().previous(), week().previous(), week()];
        let recent: Vec<Summary> = weeks
            .iter()
            .enumerate()
            .map(|(i, w)| {
                // `ms` every week; `fresh` only in the latest.
                let data = if i == 2 { r#"{"ms":3,"fresh":42.5}"# } else { r#"{"ms":1}"# };
                summary_of(*w, &[data, r#"{"ms":2}"#])
            })
            .collect();
        let rows: Vec<IndexWeek> =
            weeks.iter().map(|w| IndexWeek { week: *w, records: 2, warnings: Some(0) }).collect();
        let html = render_index(&rows, &recent);
        let section = |path: &str| {
            let start = html.find(&format!("<h2><code>{path}</code> per week</h2>")).unwrap();
            &html[start..start + html[start..].find("</section>").unwrap()]
        };
        let fresh = section("fresh");
        assert!(
            fresh.contains("Only 2026-W47 has numbers at fresh, p50 42.5 and p90 42.5: a trend needs two weeks."),
            "{fresh}"
        );
        assert!(!fresh.contains("<svg") && !fresh.contains("<circle"), "no chart of one point: {fresh}");
        let ms = section("ms");
        assert_eq!(ms.matches("<circle").count(), 3, "{ms}");
        assert_eq!(ms.matches("<text class=\"axis\"").count(), 2, "{ms}");
    }

    #[test]
    fn byte_sizes_read_in_decimal_units() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(2_500_000), "2.5 MB");
    }
}
