//! `summary.html`: the week for people. One self-contained file — inline CSS
//! and SVG, no scripts, no fonts or images fetched — so it opens from a bucket,
//! a mail attachment or a laptop offline, and renders the same everywhere.
//!
//! Every string that comes from records (paths, top values) goes through
//! [`escape`]; numbers are formatted here, never taken from input text.

use std::fmt::Write;

use super::model::{FieldSummary, NumberSummary, StringSummary, Summary};

const CSS: &str = r#"
:root{--ink:#1d2330;--muted:#5f6b7a;--line:#e3e7ee;--bg:#f6f8fb;--card:#fff;--accent:#3b6fd8;--accent2:#9db8ef;--warn:#b7791f}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
main{max-width:1100px;margin:0 auto;padding:28px 20px 48px}
h1{font-size:24px;margin:0 0 2px}h2{font-size:16px;margin:0 0 12px}
.sub{color:var(--muted);margin:0 0 20px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-bottom:16px}
.card,.panel{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.card .v{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.panel{margin-bottom:16px}
svg{display:block;width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:var(--muted)}
.bar{fill:var(--accent)}.bar:hover{fill:#2a52a8}.hist{fill:var(--accent2)}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;vertical-align:top;padding:8px 10px;border-top:1px solid var(--line)}
th{font-size:12px;color:var(--muted);font-weight:600;border-top:none}
td.path{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all;max-width:260px}
.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.types span{display:inline-block;margin:0 4px 3px 0;padding:1px 6px;border-radius:9px;background:#eef2f8;font-size:12px;white-space:nowrap}
.stats{color:var(--muted);font-size:12px;margin-top:4px}
.top{display:grid;grid-template-columns:minmax(60px,180px) 1fr auto;gap:2px 8px;align-items:center;font-size:12px}
.top .val{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-family:ui-monospace,monospace}
.top .track{background:#eef2f8;border-radius:3px;height:8px}.top .fill{background:var(--accent);height:8px;border-radius:3px}
.note{color:var(--warn);font-size:12px}
.empty{color:var(--muted);text-align:center;padding:28px}
footer{color:var(--muted);font-size:12px;margin-top:20px}
"#;

/// Renders the summary page. Deterministic: the same summary gives the same bytes.
pub fn render_html(s: &Summary) -> String {
    let mut h = String::with_capacity(16 * 1024 + s.fields.len() * 2048);
    let title = format!("tally · week {}", s.week);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body><main>",
        escape(&title)
    );
    let last_day = s.per_day.last().map(|d| d.date.as_str()).unwrap_or_default();
    let first_day = s.per_day.first().map(|d| d.date.as_str()).unwrap_or_default();
    let _ = write!(
        h,
        "<h1>Week {}</h1><p class=\"sub\">{} – {} (UTC, Monday to Sunday)</p>",
        escape(&s.week.to_string()),
        escape(first_day),
        escape(last_day)
    );

    // At a glance
    let busiest = s.per_day.iter().max_by_key(|d| d.records).filter(|d| d.records > 0);
    let peak_hour =
        s.per_hour.iter().enumerate().max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i))).filter(|(_, c)| **c > 0);
    h.push_str("<section class=\"cards\">");
    card(&mut h, "records", &group(s.records));
    card(&mut h, "data", &bytes(s.bytes));
    card(&mut h, "avg record", &s.bytes.checked_div(s.records).map(bytes).unwrap_or_else(|| "–".into()));
    card(&mut h, "fields", &group(s.fields.len() as u64));
    card(
        &mut h,
        "busiest day",
        &busiest.map(|d| format!("{} · {}", weekday(s, &d.date), group(d.records))).unwrap_or("–".into()),
    );
    card(
        &mut h,
        "peak hour",
        &peak_hour.map(|(i, c)| format!("{} {:02}:00 · {}", DAYS[i / 24], i % 24, group(*c))).unwrap_or("–".into()),
    );
    h.push_str("</section>");
    if s.unparsable_records > 0 {
        let _ = write!(
            h,
            "<p class=\"note\">{} records could not be read as JSON objects and are counted only in the totals.</p>",
            group(s.unparsable_records)
        );
    }

    // Charts
    h.push_str("<section class=\"panel\"><h2>Records per day</h2>");
    let labels: Vec<String> = s
        .per_day
        .iter()
        .map(|d| format!("{} {}", weekday(s, &d.date), &d.date[d.date.len().saturating_sub(5)..]))
        .collect();
    let values: Vec<u64> = s.per_day.iter().map(|d| d.records).collect();
    bar_chart(
        &mut h,
        &values,
        |i| Some(labels[i].clone()),
        |i| format!("{}: {} records", s.per_day[i].date, group(values[i])),
        160,
    );
    h.push_str("</section><section class=\"panel\"><h2>Records per hour</h2>");
    bar_chart(
        &mut h,
        &s.per_hour,
        |i| (i % 24 == 0).then(|| DAYS[i / 24].to_owned()),
        |i| format!("{} {:02}:00–{:02}:00: {} records", DAYS[i / 24], i % 24, i % 24 + 1, group(s.per_hour[i])),
        140,
    );
    h.push_str("</section>");

    // Fields
    h.push_str("<section class=\"panel\"><h2>Fields</h2>");
    if s.fields.is_empty() {
        h.push_str("<p class=\"empty\">No records this week.</p>");
    } else {
        h.push_str("<table><thead><tr><th>Path</th><th>Present</th><th>Types</th><th>Values</th></tr></thead><tbody>");
        for f in &s.fields {
            field_row(&mut h, f, s.records);
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>");
    let _ = write!(
        h,
        "<footer>Generated by tally from summary.json (schema {}). Paths nest up to depth {}; at most {} paths are tracked, the rest are counted under <code>_other</code>. \
         Quantiles have ≤ 1% rank error; distinct counts above {} are estimates (≤ 2%).</footer>",
        s.schema,
        s.limits.max_depth,
        group(s.limits.max_paths as u64),
        group(s.limits.exact_distinct_limit as u64)
    );
    h.push_str("</main></body></html>\n");
    h
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn weekday(s: &Summary, date: &str) -> &'static str {
    s.per_day.iter().position(|d| d.date == date).map(|i| DAYS[i]).unwrap_or("")
}

fn card(h: &mut String, k: &str, v: &str) {
    let _ =
        write!(h, "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div></div>", escape(k), escape(v));
}

/// A bar chart scaled to its maximum, with a `<title>` tooltip per bar.
fn bar_chart(
    h: &mut String,
    values: &[u64],
    label: impl Fn(usize) -> Option<String>,
    tip: impl Fn(usize) -> String,
    height: u32,
) {
    let (w, top, bottom) = (1000.0, 16.0, 20.0);
    let plot = f64::from(height) - top - bottom;
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = w / values.len().max(1) as f64;
    let gap = if slot > 20.0 { slot * 0.2 } else { 1.0 };
    let _ = write!(h, "<svg viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"bar chart\">");
    let _ = write!(h, "<line x1=\"0\" x2=\"{w}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#e3e7ee\"/>", top + plot);
    let _ = write!(h, "<text x=\"0\" y=\"11\">max {}</text>", group(max as u64));
    for (i, &v) in values.iter().enumerate() {
        let bh = if v == 0 { 0.0 } else { (v as f64 / max * plot).max(1.5) };
        let x = i as f64 * slot + gap / 2.0;
        let _ = write!(
            h,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" rx=\"1\"><title>{}</title></rect>",
            top + plot - bh,
            (slot - gap).max(0.5),
            escape(&tip(i))
        );
        if let Some(l) = label(i) {
            let _ = write!(h, "<text x=\"{x:.1}\" y=\"{:.1}\">{}</text>", f64::from(height) - 5.0, escape(&l));
        }
    }
    h.push_str("</svg>");
}

fn field_row(h: &mut String, f: &FieldSummary, records: u64) {
    let t = &f.types;
    let _ = write!(
        h,
        "<tr><td class=\"path\">{}</td><td class=\"num\">{}<div class=\"stats\">{}</div></td><td class=\"types\">",
        escape(&f.path),
        group(f.present),
        if records > 0 {
            format!("{:.1}% of records", f.present as f64 * 100.0 / records as f64)
        } else {
            String::new()
        }
    );
    for (name, n) in [
        ("number", t.number),
        ("string", t.string),
        ("boolean", t.boolean),
        ("object", t.object),
        ("array", t.array),
        ("null", t.null),
    ] {
        if n > 0 {
            let _ = write!(h, "<span>{name} {}</span>", group(n));
        }
    }
    h.push_str("</td><td>");
    if let Some(n) = &f.number {
        number_cell(h, n);
    }
    if let Some(s) = &f.string {
        string_cell(h, s);
    }
    if let Some(b) = &f.boolean {
        let total = (b.true_count + b.false_count).max(1);
        top_bars(h, &[("true".into(), b.true_count), ("false".into(), b.false_count)], total);
    }
    if let Some(a) = &f.array {
        let _ = write!(
            h,
            "<div class=\"stats\">array length {}–{}, mean {}</div>",
            group(a.min_length),
            group(a.max_length),
            num(a.mean_length)
        );
    }
    h.push_str("</td></tr>");
}

fn number_cell(h: &mut String, n: &NumberSummary) {
    if let Some(hist) = &n.histogram {
        let max = hist.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
        let (w, ht) = (240.0, 40.0);
        let bw = w / hist.counts.len().max(1) as f64;
        let _ =
            write!(h, "<svg viewBox=\"0 0 {w} {ht}\" style=\"max-width:240px\" role=\"img\" aria-label=\"histogram\">");
        let step = (hist.max - hist.min) / hist.counts.len().max(1) as f64;
        for (i, &c) in hist.counts.iter().enumerate() {
            let bh = if c == 0 { 0.0 } else { (c as f64 / max * (ht - 2.0)).max(1.0) };
            let lo = hist.min + step * i as f64;
            let _ = write!(
                h,
                "<rect class=\"hist\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\"><title>{} – {}: ~{}</title></rect>",
                i as f64 * bw + 0.5,
                ht - bh,
                (bw - 1.0).max(0.5),
                escape(&num(lo)),
                escape(&num(lo + step)),
                group(c)
            );
        }
        h.push_str("</svg>");
    }
    let opt = |x: Option<f64>| x.map(num).unwrap_or_else(|| "–".into());
    let _ = write!(
        h,
        "<div class=\"stats num\">min {} · p50 {} · p90 {} · p99 {} · max {}<br>mean {} · sd {}</div>",
        escape(&opt(n.min)),
        escape(&opt(n.p50)),
        escape(&opt(n.p90)),
        escape(&opt(n.p99)),
        escape(&opt(n.max)),
        escape(&opt(n.mean)),
        escape(&opt(n.stddev))
    );
    if n.out_of_range > 0 {
        let _ = write!(
            h,
            "<div class=\"note\">{} numbers too large for a double, counted only</div>",
            group(n.out_of_range)
        );
    }
}

fn string_cell(h: &mut String, s: &StringSummary) {
    // Past the exact limit, a count within the error bound could be noise:
    // only values that certainly recur are shown.
    let top: Vec<(String, u64)> =
        s.top.iter().filter(|t| s.top_exact || t.count > s.top_max_error).map(|t| (t.value.clone(), t.count)).collect();
    if top.is_empty() && s.count > 0 {
        h.push_str("<div class=\"stats\">no value stands out</div>");
    }
    top_bars(h, &top, s.count.max(1));
    let _ = write!(
        h,
        "<div class=\"stats\">{}{} distinct · length {}–{}{}</div>",
        if s.distinct_exact { "" } else { "~" },
        group(s.distinct),
        group(s.min_length),
        group(s.max_length),
        if s.top_exact { String::new() } else { format!(" · counts may be up to {} low", group(s.top_max_error)) }
    );
}

fn top_bars(h: &mut String, items: &[(String, u64)], total: u64) {
    if items.is_empty() {
        return;
    }
    h.push_str("<div class=\"top\">");
    for (value, count) in items {
        let shown: String = if value.is_empty() { "(empty)".into() } else { value.chars().take(80).collect() };
        let pct = *count as f64 * 100.0 / total as f64;
        let _ = write!(
            h,
            "<span class=\"val\" title=\"{}\">{}</span><div class=\"track\"><div class=\"fill\" style=\"width:{pct:.1}%\"></div></div><span class=\"num\">{}</span>",
            escape(value),
            escape(&shown),
            group(*count)
        );
    }
    h.push_str("</div>");
}

/// Escapes text for HTML element content and double- or single-quoted
/// attributes. Control characters other than tab/newline are shown as U+FFFD
/// so a value cannot smuggle invisible markup-breaking bytes.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
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

/// Compact, readable numbers: integers grouped, others to 4 significant digits.
fn num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if x.fract() == 0.0 && a < 1e15 {
        let s = group(a as u64);
        return if x < 0.0 { format!("-{s}") } else { s };
    }
    if a != 0.0 && !(1e-3..1e9).contains(&a) {
        return format!("{x:.3e}");
    }
    let decimals = if a >= 100.0 {
        1
    } else if a >= 1.0 {
        3
    } else {
        4
    };
    let s = format!("{x:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use super::super::{Aggregator, SummaryOptions};
    use super::*;
    use crate::{IsoWeek, Record, RecordId, Timestamp};

    fn summary_of(datas: &[&str]) -> Summary {
        let week = IsoWeek::parse("2026-W47").unwrap();
        let mut agg = Aggregator::new(week, &SummaryOptions::default());
        for (i, d) in datas.iter().enumerate() {
            let at = Timestamp::from_millis(week.start().as_millis() + i as i64 * 3_600_000 * 7);
            agg.push(&Record { id: RecordId::generate(at), received_at: at, data: (*d).to_owned() });
        }
        agg.finish()
    }

    #[test]
    fn user_strings_are_escaped_everywhere() {
        let s = summary_of(&[
            r#"{"<script>alert(1)</script>":"<img src=x onerror=alert(1)>","q":"\" onmouseover=\"x","a'b":"&amp;"}"#,
        ]);
        let html = render_html(&s);
        assert!(!html.contains("<script>") && !html.contains("<img"), "unescaped markup");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot; onmouseover=&quot;x"));
        assert!(html.contains("&amp;amp;"));
        assert!(html.contains("a&#39;b"));
    }

    #[test]
    fn the_page_is_self_contained() {
        let html = render_html(&summary_of(&[r#"{"n":1,"s":"x","b":true,"arr":[1,2]}"#, r#"{"n":2.5}"#]));
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
        let html = render_html(&summary_of(&[]));
        assert!(html.contains("No records this week."));
        assert!(html.contains("Week 2026-W47"));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(12), "12");
        assert_eq!(num(-1500.0), "-1,500");
        assert_eq!(num(2.5), "2.5");
        assert_eq!(num(1.2345678901234568e29), "1.235e29");
        assert_eq!(bytes(2_500_000), "2.5 MB");
    }
}
