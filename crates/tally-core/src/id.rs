//! Record ids: ULIDs whose timestamp is the record's `received_at`.
//!
//! Because the id's leading 48 bits are `received_at` in milliseconds, ids sort
//! in arrival order and a week is a contiguous id range — stores use that to read
//! one week without touching others, and `GET /records/{id}` on DynamoDB derives
//! the partition (day and shard) from the id alone.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use ulid::Ulid;

use crate::clock::Timestamp;

/// A record's id: a ULID in its canonical 26-character Crockford base32 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(Ulid);

/// Why a string is not a record id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a record id: ids are 26-character ULIDs such as 01JDQ7Z3V8M4W5X6Y7Z8A9B0C1")]
pub struct InvalidRecordId(pub String);

impl RecordId {
    /// A fresh random id for a record received at `at`.
    pub fn generate(at: Timestamp) -> Self {
        Self::sequence(at, rand::random::<u128>(), 0)
    }

    /// The `index`-th id of a batch received at `at` whose ids share the
    /// random `base`: consecutive, so a batch's ids sort in input order (and
    /// its export follows the order the client sent). The base keeps its top
    /// random bit clear, so adding any batch index cannot overflow 80 bits.
    pub fn sequence(at: Timestamp, base: u128, index: usize) -> Self {
        const RANDOM_BITS: u32 = 80;
        let base = base & ((1u128 << (RANDOM_BITS - 1)) - 1);
        Self(Ulid::from_parts(millis(at), base + index as u128))
    }

    /// The id of the `index`-th record of an idempotent request: the same key,
    /// body and `received_at` always give the same ids, so a retried request
    /// writes over its own earlier attempt instead of adding duplicates.
    pub fn deterministic(at: Timestamp, seed: &[u8], index: usize) -> Self {
        let digest = Sha256::digest(seed);
        let mut base = [0u8; 16];
        base.copy_from_slice(&digest[..16]);
        Self::sequence(at, u128::from_be_bytes(base), index)
    }

    /// The id right after this one (itself for the largest id): where a
    /// range read resumes after a page ending here.
    pub fn next(self) -> Self {
        Self::from_bytes(u128::from_be_bytes(self.to_bytes()).saturating_add(1).to_be_bytes())
    }

    /// The id right before this one, `None` for the smallest: the inclusive
    /// end of a range that stops before this id.
    pub fn previous(self) -> Option<Self> {
        u128::from_be_bytes(self.to_bytes()).checked_sub(1).map(|n| Self::from_bytes(n.to_be_bytes()))
    }

    /// The smallest id that can belong to a record received at `at` or later.
    pub fn lower_bound(at: Timestamp) -> Self {
        Self(Ulid::from_parts(millis(at), 0))
    }

    pub fn parse(s: &str) -> Result<Self, InvalidRecordId> {
        let invalid = || InvalidRecordId(truncate(s));
        // 26 base32 digits hold 130 bits; a first digit above 7 overflows 128.
        if s.len() != 26 || !matches!(s.as_bytes()[0], b'0'..=b'7') {
            return Err(invalid());
        }
        Ulid::from_string(s).map(Self).map_err(|_| invalid())
    }

    /// When the record was received (the ULID's timestamp).
    pub fn timestamp(self) -> Timestamp {
        Timestamp::from_millis(self.0.timestamp_ms() as i64)
    }

    /// Big-endian bytes: their byte order is the id order.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(Ulid::from_bytes(b))
    }

    /// A stable hash of the id in `0..n`, used to spread writes over shards.
    pub fn shard(self, n: u16) -> u16 {
        let digest = Sha256::digest(self.to_bytes());
        (u16::from_be_bytes([digest[0], digest[1]])) % n.max(1)
    }
}

fn millis(at: Timestamp) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(0)
}

fn truncate(s: &str) -> String {
    // Never echo an unbounded path segment back into an error.
    s.chars().take(40).collect()
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for RecordId {
    type Err = InvalidRecordId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for RecordId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RecordId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_one_apart_and_stop_at_the_ends() {
        let id = RecordId::parse("01KAQ6ZP4W0000000000000000").unwrap();
        assert_eq!(id.next().previous(), Some(id));
        assert!(id.previous().unwrap() < id && id < id.next());
        assert_eq!(RecordId::from_bytes([0; 16]).previous(), None);
        assert_eq!(RecordId::from_bytes([0xff; 16]).next(), RecordId::from_bytes([0xff; 16]));
    }

    #[test]
    fn id_carries_its_timestamp_and_round_trips() {
        let at = Timestamp::from_millis(1_795_939_200_123);
        let id = RecordId::generate(at);
        assert_eq!(id.timestamp(), at);
        assert_eq!(RecordId::parse(&id.to_string()), Ok(id));
        assert_eq!(RecordId::from_bytes(id.to_bytes()), id);
    }

    #[test]
    fn ids_sort_by_time() {
        let a = RecordId::generate(Timestamp::from_millis(1000));
        let b = RecordId::generate(Timestamp::from_millis(1001));
        assert!(a < b);
        assert!(a.to_bytes() < b.to_bytes());
        assert!(RecordId::lower_bound(Timestamp::from_millis(1001)) <= b);
    }

    #[test]
    fn deterministic_ids_repeat_and_differ_by_index() {
        let at = Timestamp::from_millis(5);
        assert_eq!(RecordId::deterministic(at, b"k", 0), RecordId::deterministic(at, b"k", 0));
        assert_ne!(RecordId::deterministic(at, b"k", 0), RecordId::deterministic(at, b"k", 1));
        assert_ne!(RecordId::deterministic(at, b"k", 0), RecordId::deterministic(at, b"j", 0));
        assert!(RecordId::deterministic(at, b"k", 0) < RecordId::deterministic(at, b"k", 1));
    }

    #[test]
    fn a_batch_sorts_in_input_order_even_from_the_largest_base() {
        let at = Timestamp::from_millis(5);
        let ids: Vec<RecordId> = (0..1000).map(|i| RecordId::sequence(at, u128::MAX, i)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|id| id.timestamp() == at));
    }

    #[test]
    fn rejects_non_ulids() {
        for bad in [
            "",
            "x",
            "../etc/passwd",
            "01JDQ7Z3V8M4W5X6Y7Z8A9B0C",
            "01JDQ7Z3V8M4W5X6Y7Z8A9B0C1X",
            "éééééééééééééééééééééééééé",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        ] {
            assert!(RecordId::parse(bad).is_err(), "{bad} accepted");
        }
        let long = "A".repeat(10_000);
        let err = RecordId::parse(&long).unwrap_err();
        assert!(err.0.len() <= 40);
    }

    #[test]
    fn shard_is_stable_and_in_range() {
        let id = RecordId::generate(Timestamp::from_millis(7));
        assert_eq!(id.shard(16), id.shard(16));
        assert!(id.shard(16) < 16);
    }
}
