//! A HyperLogLog distinct counter with Ertl's improved estimator (O. Ertl,
//! "New cardinality estimation algorithms for HyperLogLog sketches", 2017).
//!
//! Why this one: the improved estimator is accurate over the whole range
//! without HLL++'s empirical bias tables, and merging is a register-wise max.
//! With 2^14 registers the standard error is 1.04/128 ≈ 0.8%, so the issue's
//! 2% bound holds at about 2.5 sigma; 16 KiB per sketch, and tally only
//! allocates one for string fields past the exact-distinct limit.

use std::hash::BuildHasher;

/// log2 of the register count.
const P: u32 = 14;
const M: usize = 1 << P;
/// Hash bits left for the rank once `P` index bits are taken.
const Q: u32 = 64 - P;

/// The hasher for distinct counting. A fixed seed keeps estimates identical
/// from run to run and across merged shards.
pub(crate) fn hash_str(s: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0x5EED_7A11_1E5C_0DE5).hash_one(s)
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct HyperLogLog {
    registers: Box<[u8]>,
}

/// A decoded state must not be able to panic `estimate` or `merge`.
impl TryFrom<Vec<u8>> for HyperLogLog {
    type Error = String;
    fn try_from(registers: Vec<u8>) -> Result<Self, String> {
        if registers.len() != M || registers.iter().any(|&r| u32::from(r) > Q + 1) {
            return Err(format!("a HyperLogLog needs {M} registers of at most {}", Q + 1));
        }
        Ok(Self { registers: registers.into_boxed_slice() })
    }
}

impl From<HyperLogLog> for Vec<u8> {
    fn from(h: HyperLogLog) -> Self {
        h.registers.into_vec()
    }
}

impl Default for HyperLogLog {
    fn default() -> Self {
        Self { registers: vec![0u8; M].into_boxed_slice() }
    }
}

impl HyperLogLog {
    pub fn insert(&mut self, s: &str) {
        self.insert_hash(hash_str(s));
    }

    pub fn insert_hash(&mut self, h: u64) {
        let index = (h >> Q) as usize;
        let rank = ((h << P).leading_zeros() + 1).min(Q + 1) as u8;
        let r = &mut self.registers[index];
        if rank > *r {
            *r = rank;
        }
    }

    pub fn merge(&mut self, other: &HyperLogLog) {
        for (a, &b) in self.registers.iter_mut().zip(other.registers.iter()) {
            *a = (*a).max(b);
        }
    }

    /// Estimated number of distinct values inserted.
    pub fn estimate(&self) -> u64 {
        let mut counts = [0u32; Q as usize + 2];
        for &r in self.registers.iter() {
            counts[r as usize] += 1;
        }
        let m = M as f64;
        let mut z = m * tau(1.0 - f64::from(counts[Q as usize + 1]) / m);
        for k in (1..=Q as usize).rev() {
            z = 0.5 * (z + f64::from(counts[k]));
        }
        z += m * sigma(f64::from(counts[0]) / m);
        let alpha_inf = 1.0 / (2.0 * std::f64::consts::LN_2);
        (alpha_inf * m * m / z).round() as u64
    }
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative_error(estimate: u64, truth: u64) -> f64 {
        (estimate as f64 - truth as f64).abs() / truth as f64
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(HyperLogLog::default().estimate(), 0);
    }

    #[test]
    fn estimates_within_two_percent_across_the_range() {
        for truth in [100u64, 1_000, 10_000, 50_000, 300_000] {
            let mut h = HyperLogLog::default();
            for i in 0..truth {
                h.insert(&format!("user-{i}"));
                h.insert(&format!("user-{i}")); // duplicates never count twice
            }
            let err = relative_error(h.estimate(), truth);
            assert!(err <= 0.02, "{truth}: estimate {} (error {err})", h.estimate());
        }
    }

    #[test]
    fn merge_equals_union() {
        let (mut a, mut b, mut all) = (HyperLogLog::default(), HyperLogLog::default(), HyperLogLog::default());
        for i in 0..40_000 {
            let s = format!("v{i}");
            if i % 3 == 0 {
                a.insert(&s)
            } else {
                b.insert(&s)
            }
            if i % 5 == 0 {
                b.insert(&s)
            }
            all.insert(&s);
        }
        a.merge(&b);
        assert_eq!(a.estimate(), all.estimate());
        assert!(relative_error(a.estimate(), 40_000) <= 0.02);
    }
}
