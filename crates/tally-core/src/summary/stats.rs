//! Per-field accumulators. Every one is mergeable: `a.merge(b)` gives what a
//! single accumulator fed both streams would (exactly for counts, min, max and
//! sums; within the sketch bounds for quantiles, distinct counts and, past the
//! exact limit, top values).

use std::collections::HashMap;

use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};

use super::hll::HyperLogLog;
use super::kll::Kll;

/// JSON types, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonType {
    Object = 0,
    Array = 1,
    String = 2,
    Number = 3,
    Boolean = 4,
    Null = 5,
}

/// KLL `k`: ~0.7% single-quantile rank error at 99% confidence.
pub(crate) const KLL_K: usize = 400;

/// Top values compare at most this many bytes (cut at a char boundary), so
/// a handful of huge strings cannot blow the memory bound.
pub(crate) const TOP_VALUE_MAX_BYTES: usize = 256;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FieldStats {
    pub types: [u64; 6],
    pub trues: u64,
    pub number: Option<Box<NumberStats>>,
    pub string: Option<Box<StringStats>>,
    pub array: Option<ArrayStats>,
}

impl FieldStats {
    pub fn present(&self) -> u64 {
        self.types.iter().sum()
    }

    #[inline]
    pub fn count(&mut self, t: JsonType) {
        self.types[t as usize] += 1;
    }

    #[inline]
    pub fn boolean(&mut self, b: bool) {
        self.count(JsonType::Boolean);
        self.trues += u64::from(b);
    }

    #[inline]
    pub fn number(&mut self, token: &str) {
        self.count(JsonType::Number);
        self.number.get_or_insert_with(|| Box::new(NumberStats::new())).push_token(token);
    }

    #[inline]
    pub fn string(&mut self, s: &str, exact_limit: usize) {
        self.count(JsonType::String);
        self.string.get_or_insert_with(|| Box::new(StringStats::new(exact_limit))).push(s);
    }

    #[inline]
    pub fn array(&mut self, len: u64) {
        self.count(JsonType::Array);
        self.array.get_or_insert_with(ArrayStats::default).push(len);
    }

    pub fn merge(&mut self, other: &FieldStats) {
        for (a, b) in self.types.iter_mut().zip(other.types) {
            *a += b;
        }
        self.trues += other.trues;
        if let Some(o) = &other.number {
            match &mut self.number {
                Some(n) => n.merge(o),
                None => self.number = Some(o.clone()),
            }
        }
        if let Some(o) = &other.string {
            match &mut self.string {
                Some(s) => s.merge(o),
                None => self.string = Some(o.clone()),
            }
        }
        if let Some(o) = &other.array {
            self.array.get_or_insert_with(ArrayStats::default).merge(o);
        }
    }
}

/// Numbers: exact count/min/max, a compensated sum for the mean, Welford's
/// M2 for the variance (merged with Chan et al.'s formula), and a KLL sketch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NumberStats {
    /// Numbers whose magnitude does not fit an f64 (`1e400`): counted only.
    pub out_of_range: u64,
    pub n: u64,
    pub min: f64,
    pub max: f64,
    sum: f64,
    compensation: f64,
    mean: f64,
    m2: f64,
    pub sketch: Kll,
}

impl NumberStats {
    fn new() -> Self {
        Self {
            out_of_range: 0,
            n: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            compensation: 0.0,
            mean: 0.0,
            m2: 0.0,
            sketch: Kll::new(KLL_K),
        }
    }

    /// `token` is the number exactly as written in the record; parsing it here
    /// (rather than through serde) is what lets `1e400` be counted instead of
    /// failing the record.
    #[inline]
    fn push_token(&mut self, token: &str) {
        match token.parse::<f64>() {
            Ok(x) if x.is_finite() => self.push(x),
            _ => self.out_of_range += 1,
        }
    }

    #[inline]
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.add_to_sum(x);
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
        self.sketch.insert(x);
    }

    /// Neumaier's compensated summation: the mean of integers and short
    /// decimals comes out exact, whatever order shards are merged in.
    #[inline]
    fn add_to_sum(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn merge(&mut self, o: &NumberStats) {
        self.out_of_range += o.out_of_range;
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            let out_of_range = self.out_of_range;
            *self = o.clone();
            self.out_of_range = out_of_range;
            return;
        }
        let (na, nb) = (self.n as f64, o.n as f64);
        let n = na + nb;
        let delta = o.mean - self.mean;
        self.m2 += o.m2 + delta * delta * na * nb / n;
        self.mean += delta * nb / n;
        self.n += o.n;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.add_to_sum(o.sum);
        self.compensation += o.compensation;
        self.sketch.merge(&o.sketch);
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.sum + self.compensation) / self.n as f64)
    }

    /// Population standard deviation.
    pub fn stddev(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.m2.max(0.0) / self.n as f64).sqrt())
    }
}

/// Strings: length range, a Misra–Gries heavy-hitters summary that is exact
/// while the field has at most `exact_limit` distinct values, and a
/// HyperLogLog created only once that limit is passed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StringStats {
    pub n: u64,
    pub min_len: u64,
    pub max_len: u64,
    /// Serialized in place (postcard writes a struct's fields in order), so
    /// the bytes are those of the flat fields it replaced.
    top: HeavyHitters,
    hll: Option<HyperLogLog>,
}

impl StringStats {
    fn new(exact_limit: usize) -> Self {
        Self { n: 0, min_len: u64::MAX, max_len: 0, top: HeavyHitters::new(exact_limit), hll: None }
    }

    #[inline]
    fn push(&mut self, s: &str) {
        self.n += 1;
        let len = s.chars().count() as u64;
        self.min_len = self.min_len.min(len);
        self.max_len = self.max_len.max(len);
        if let Some(h) = &mut self.hll {
            h.insert(s);
        }
        if self.top.add(top_key(s), 1) {
            self.reduce();
        }
    }

    pub fn is_exact(&self) -> bool {
        self.hll.is_none()
    }

    /// Sum of the thresholds subtracted by reductions: every reported count
    /// is at most this much below the true one. Zero while exact.
    pub fn max_error(&self) -> u64 {
        self.top.max_error
    }

    /// Distinct values: exact while no reduction happened, else HLL.
    pub fn distinct(&self) -> u64 {
        match &self.hll {
            None => self.top.len() as u64,
            Some(h) => h.estimate(),
        }
    }

    /// Values with their (lower-bound) counts, highest first, ties by value.
    pub fn top(&self, k: usize) -> Vec<(&str, u64)> {
        self.top.top(k)
    }

    fn reduce(&mut self) {
        if self.hll.is_none() {
            // Until now every distinct value is in `top`: seed the HLL with them.
            let mut h = HyperLogLog::default();
            self.top.keys().for_each(|k| h.insert(k));
            self.hll = Some(h);
        }
        self.top.reduce();
    }

    fn merge(&mut self, o: &StringStats) {
        self.n += o.n;
        self.min_len = self.min_len.min(o.min_len);
        self.max_len = self.max_len.max(o.max_len);
        // An exact side's keys are all its distinct values (modulo the
        // TOP_VALUE_MAX_BYTES cut, which only the HLL sees past).
        match (&mut self.hll, &o.hll) {
            (None, None) => {}
            (Some(h), None) => o.top.keys().for_each(|k| h.insert(k)),
            (None, Some(oh)) => {
                let mut h = oh.clone();
                self.top.keys().for_each(|k| h.insert(k));
                self.hll = Some(h);
            }
            (Some(h), Some(oh)) => h.merge(oh),
        }
        if self.top.merge(&o.top) {
            self.reduce();
        }
    }
}

/// Counts per value: exact while at most `exact_limit` distinct values were
/// added, then a Misra–Gries heavy-hitters summary (as merged by Agarwal et
/// al., "Mergeable summaries", 2012): the top values of string fields and
/// the records per segment value. Merges add counts, so while exact the
/// result does not depend on how the values were split or in which order
/// the parts were merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeavyHitters {
    exact_limit: usize,
    /// Serialized sorted by value, so a state's bytes do not depend on the
    /// map's layout (the map's iteration order never reaches an output:
    /// `top` sorts, merges add, reductions subtract one threshold from all).
    #[serde(with = "sorted_counts")]
    counts: HashMap<Box<str>, u64, FixedState>,
    /// Sum of the thresholds subtracted by reductions: every count is at
    /// most this much below the true one, and a value not counted has at
    /// most this many. Zero while exact.
    max_error: u64,
}

impl HeavyHitters {
    pub fn new(exact_limit: usize) -> Self {
        Self { exact_limit: exact_limit.max(1), counts: HashMap::with_hasher(FixedState::default()), max_error: 0 }
    }

    /// Counts `n` more of `value`; `true` when the summary must now be
    /// [reduced](Self::reduce) (the caller may have to act first).
    #[inline]
    pub fn add(&mut self, value: &str, n: u64) -> bool {
        if let Some(c) = self.counts.get_mut(value) {
            *c += n;
            false
        } else {
            self.counts.insert(value.into(), n);
            self.counts.len() > self.reduce_at()
        }
    }

    /// Reductions are batched: the summary may grow 25% past the limit, then
    /// shrinks back in one pass, keeping the cost amortized O(1) per value.
    /// So counts stay exact up to `exact_limit + exact_limit / 4` distinct
    /// values, whatever the split.
    fn reduce_at(&self) -> usize {
        self.exact_limit + self.exact_limit / 4
    }

    /// No reduction happened: every count is exact, every value is counted.
    pub fn is_exact(&self) -> bool {
        self.max_error == 0
    }

    pub fn max_error(&self) -> u64 {
        self.max_error
    }

    pub fn exact_limit(&self) -> usize {
        self.exact_limit
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.counts.keys().map(|k| &**k)
    }

    /// The count of `value` (a lower bound; 0 when not counted).
    pub fn count(&self, value: &str) -> u64 {
        self.counts.get(value).copied().unwrap_or(0)
    }

    /// Values with their (lower-bound) counts, highest first, ties by value.
    pub fn top(&self, k: usize) -> Vec<(&str, u64)> {
        let mut all: Vec<(&str, u64)> = self.counts.iter().map(|(v, &c)| (&**v, c)).collect();
        let by_count = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
        if all.len() > k {
            all.select_nth_unstable_by(k, by_count);
            all.truncate(k);
        }
        all.sort_unstable_by(by_count);
        all
    }

    /// Misra–Gries reduction: subtract the (limit+1)-th largest count from
    /// every counter and drop those left at zero. Each value's count is then
    /// off by at most the sum of subtracted thresholds, which is
    /// ≤ n / (limit + 1).
    pub fn reduce(&mut self) {
        let limit = self.exact_limit;
        if self.counts.len() <= limit {
            return;
        }
        let mut counts: Vec<u64> = self.counts.values().copied().collect();
        counts.select_nth_unstable_by(limit, |a, b| b.cmp(a));
        let threshold = counts[limit];
        self.counts.retain(|_, c| {
            *c = c.saturating_sub(threshold);
            *c > 0
        });
        self.max_error += threshold;
    }

    /// Adds `o`'s counts; `true` when the result must now be reduced.
    pub fn merge(&mut self, o: &HeavyHitters) -> bool {
        for (k, &c) in &o.counts {
            *self.counts.entry(k.clone()).or_insert(0) += c;
        }
        self.max_error += o.max_error;
        self.counts.len() > self.reduce_at()
    }

    /// The invariants a decoded summary must hold.
    pub fn check(&self) -> Result<(), String> {
        if self.counts.len() > self.reduce_at() {
            return Err(format!("{} counted values, more than {}", self.counts.len(), self.reduce_at()));
        }
        if self.counts.values().any(|&c| c == 0) {
            return Err("a value counted 0 times".into());
        }
        Ok(())
    }
}

/// The part of `s` used as a top-values (or segment) key.
pub(crate) fn top_key(s: &str) -> &str {
    if s.len() <= TOP_VALUE_MAX_BYTES {
        return s;
    }
    let mut end = TOP_VALUE_MAX_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `StringStats::counts` as a list sorted by value.
mod sorted_counts {
    use std::collections::HashMap;

    use foldhash::fast::FixedState;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(counts: &HashMap<Box<str>, u64, FixedState>, s: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<(&str, u64)> = counts.iter().map(|(k, &c)| (&**k, c)).collect();
        sorted.sort_unstable();
        sorted.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<Box<str>, u64, FixedState>, D::Error> {
        let sorted = Vec::<(Box<str>, u64)>::deserialize(d)?;
        let mut counts = HashMap::with_capacity_and_hasher(sorted.len(), FixedState::default());
        counts.extend(sorted);
        Ok(counts)
    }
}

/// Array lengths.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct ArrayStats {
    pub n: u64,
    pub min: u64,
    pub max: u64,
    pub sum: u64,
}

impl Default for ArrayStats {
    fn default() -> Self {
        Self { n: 0, min: u64::MAX, max: 0, sum: 0 }
    }
}

impl ArrayStats {
    #[inline]
    fn push(&mut self, len: u64) {
        self.n += 1;
        self.min = self.min.min(len);
        self.max = self.max.max(len);
        self.sum += len;
    }

    fn merge(&mut self, o: &ArrayStats) {
        self.n += o.n;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_values_are_exact_below_the_limit() {
        let mut s = StringStats::new(100);
        for i in 0..100u64 {
            for _ in 0..=i {
                s.push(&format!("v{i}"));
            }
        }
        assert!(s.is_exact());
        assert_eq!(s.distinct(), 100);
        assert_eq!(s.top(3), vec![("v99", 100), ("v98", 99), ("v97", 98)]);
        assert_eq!(s.max_error(), 0);
    }

    #[test]
    fn heavy_hitters_survive_past_the_limit_within_the_error_bound() {
        let mut s = StringStats::new(50);
        let mut n = 0u64;
        for i in 0..20_000u64 {
            s.push(&format!("noise{i}"));
            n += 1;
            if i % 4 == 0 {
                s.push("heavy");
                n += 1;
            }
        }
        assert!(!s.is_exact());
        let top = s.top(1);
        assert_eq!(top[0].0, "heavy");
        assert!(top[0].1 <= 5_000 && top[0].1 + s.max_error() >= 5_000);
        assert!(s.max_error() <= n / 51, "error {} > n/(k+1)", s.max_error());
        let d = s.distinct() as f64;
        assert!((d - 20_001.0).abs() / 20_001.0 < 0.02, "distinct {d}");
    }

    #[test]
    fn numbers_beyond_f64_are_counted_not_used() {
        let mut n = NumberStats::new();
        for t in ["1e400", "-1e400", "2", "4", "123456789012345678901234567890", "1e-400"] {
            n.push_token(t);
        }
        assert_eq!((n.out_of_range, n.n), (2, 4));
        assert_eq!(n.min, 0.0);
        assert_eq!(n.max, 1.2345678901234568e29);
    }

    #[test]
    fn long_strings_share_a_top_key_by_prefix() {
        let long = "é".repeat(200);
        assert!(top_key(&long).len() <= TOP_VALUE_MAX_BYTES);
        assert!(long.starts_with(top_key(&long)));
    }
}
