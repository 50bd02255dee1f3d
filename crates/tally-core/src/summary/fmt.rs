//! Number, percentage and text formatting shared by the report's texts:
//! findings (`compare`, whose messages are stored in `summary.json`), the
//! HTML pages (`html`) and notification digests (`notification`). A leaf
//! module: it imports nothing of tally.
//!
//! Every function here is pinned byte for byte by the golden reports, so
//! where two texts format the same quantity differently (a finding's
//! `12 %` and the page's `+12.0%`), both styles live here under names that
//! say which is which, rather than one silently changing the other.

/// `1234567` → `1,234,567`.
pub(crate) fn group(n: u64) -> String {
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

/// A share as a finding quotes it: `0.123` → `12 %`, `0.015` → `1.5 %`
/// (one decimal below 10 %), `0` → `0 %`.
pub(crate) fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p >= 10.0 || p == 0.0 { format!("{p:.0} %") } else { format!("{p:.1} %") }
}

/// A value as a finding quotes it: integers whole (`1500`), others to at
/// most 4 decimals (`2.5`, `0.1235`), never grouped.
pub(crate) fn decimal(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{:.4}", x).trim_end_matches('0').to_owned()
    }
}

/// How sure a finding is, as its message says it: `p < 10⁻⁹` (the power
/// of ten just above `p`, down to `10⁻¹²`), or `p = 0.012` from 0.001 on.
pub(crate) fn p_value(p: f64) -> String {
    if p >= 1e-3 {
        return format!("p = {}", decimal((p.min(1.0) * 1000.0).round() / 1000.0));
    }
    // p < 10⁻ᵏ for the largest k with 10⁻ᵏ > p; an underflowed 0 is below 10⁻¹².
    let k = if p > 0.0 { ((-p.log10()).floor() as u32).clamp(3, 12) } else { 12 };
    let superscript: String = k
        .to_string()
        .chars()
        .map(|d| ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'][d.to_digit(10).unwrap_or(0) as usize])
        .collect();
    format!("p < 10⁻{superscript}")
}

/// A value as the pages show it: integers grouped (`-1,500`), others to
/// about 4 significant digits (`2.5`, `1.235e29`), `–` when not finite.
pub(crate) fn readable(x: f64) -> String {
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

/// A change as the pages show it, to one decimal with a typographic minus:
/// `+12.0%`, `−40.0%`, `±0%` (under 0.05 %), `new` when `before` is 0.
pub(crate) fn change_pct1(before: f64, after: f64) -> String {
    if before == 0.0 {
        return if after == 0.0 { "±0%".into() } else { "new".into() };
    }
    let pct = (after / before - 1.0) * 100.0;
    if pct.abs() < 0.05 { "±0%".into() } else { format!("{}{:.1}%", if pct > 0.0 { "+" } else { "−" }, pct.abs()) }
}

/// A change of a count as a digest says it, in whole percent with an ASCII
/// minus (plain text for chat tools): `+8%`, `-12%`, `+0%`, or `up from 0`.
pub(crate) fn change_whole(before: u64, now: u64) -> String {
    if before == 0 {
        return if now == 0 { "+0%".into() } else { "up from 0".into() };
    }
    // f64 is exact enough for a whole percentage of record counts.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let pct = ((now as f64 - before as f64) / before as f64 * 100.0).round() as i64;
    if pct >= 0 { format!("+{pct}%") } else { format!("{pct}%") }
}

/// At most `max` characters of `s`; when cut, the last ones are `ellipsis`
/// (so the result is still `max` characters long at most).
pub(crate) fn clip(s: &str, max: usize, ellipsis: &str) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let keep = max.saturating_sub(ellipsis.chars().count());
    s.chars().take(keep).chain(ellipsis.chars()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(12), "12");
        assert_eq!(group(0), "0");
    }

    #[test]
    fn findings_quote_shares_and_values_plainly() {
        assert_eq!(percent(0.123), "12 %");
        assert_eq!(percent(0.015), "1.5 %");
        assert_eq!(percent(0.0), "0 %");
        assert_eq!(decimal(1500.0), "1500");
        assert_eq!(decimal(2.5), "2.5");
        assert_eq!(decimal(0.123_456), "0.1235");
    }

    #[test]
    fn p_values_read_as_a_power_of_ten_above_them() {
        assert_eq!(p_value(4e-5), "p < 10⁻⁴");
        assert_eq!(p_value(6.3e-10), "p < 10⁻⁹");
        assert_eq!(p_value(1e-300), "p < 10⁻¹²");
        assert_eq!(p_value(0.0), "p < 10⁻¹²");
        assert_eq!(p_value(0.0123), "p = 0.012");
        assert_eq!(p_value(0.00099), "p < 10⁻³");
    }

    #[test]
    fn pages_show_grouped_numbers_and_changes_to_one_decimal() {
        assert_eq!(readable(-1500.0), "-1,500");
        assert_eq!(readable(2.5), "2.5");
        assert_eq!(readable(1.234_567_890_123_456_8e29), "1.235e29");
        assert_eq!(readable(f64::NAN), "–");
        assert_eq!(change_pct1(100.0, 112.0), "+12.0%");
        assert_eq!(change_pct1(100.0, 60.0), "−40.0%");
        assert_eq!(change_pct1(100.0, 100.01), "±0%");
        assert_eq!(change_pct1(0.0, 3.0), "new");
    }

    #[test]
    fn digests_say_changes_in_whole_percent() {
        assert_eq!(change_whole(100, 108), "+8%");
        assert_eq!(change_whole(100, 88), "-12%");
        assert_eq!(change_whole(0, 0), "+0%");
        assert_eq!(change_whole(0, 5), "up from 0");
    }

    #[test]
    fn clipping_counts_characters_and_keeps_the_limit_with_the_ellipsis() {
        assert_eq!(clip("short", 40, "…"), "short");
        let long = "é".repeat(41);
        let clipped = clip(&long, 40, "…");
        assert_eq!(clipped.chars().count(), 40);
        assert!(clipped.ends_with("é…"), "{clipped}");
        assert_eq!(clip("abcdefghij", 8, "..."), "abcde...");
        assert_eq!(clip("abcdefgh", 8, "..."), "abcdefgh");
        assert_eq!(clip("abcdef", 2, "..."), "...");
    }
}
