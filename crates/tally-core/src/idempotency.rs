//! `Idempotency-Key` handling: the key, the request fingerprint, and the
//! remembered response a retry gets back.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::id::RecordId;

/// How long a key is remembered. The contract promises at least 24 hours.
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// A client-chosen key: 1–255 printable ASCII characters (0x20–0x7E).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a header value is not a usable idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdempotencyKey {
    #[error("the Idempotency-Key header is empty; send 1 to 255 printable ASCII characters, e.g. a UUID")]
    Empty,
    #[error("the Idempotency-Key header is {0} bytes long; keys may be at most 255 characters")]
    TooLong(usize),
    #[error("the Idempotency-Key header contains a character outside printable ASCII (0x20-0x7E); use e.g. a UUID")]
    NotPrintable,
}

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, InvalidIdempotencyKey> {
        if raw.is_empty() {
            return Err(InvalidIdempotencyKey::Empty);
        }
        if raw.len() > 255 {
            return Err(InvalidIdempotencyKey::TooLong(raw.len()));
        }
        if !raw.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(InvalidIdempotencyKey::NotPrintable);
        }
        // All bytes are ASCII, so this cannot fail.
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are client secrets of a sort; keep them out of debug logs.
        f.write_str("IdempotencyKey(..)")
    }
}

/// SHA-256 over what makes two requests "the same": the body format and bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(format_tag: &str, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(format_tag.as_bytes());
        h.update([0]);
        h.update(body);
        Self(h.finalize().into())
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(Self(v.try_into().ok()?))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &self.to_hex()[..12])
    }
}

/// What a store remembers for a key: enough to recognise a retry and to
/// answer it exactly as the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyEntry {
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    /// When the original request was accepted; its records carry this `received_at`.
    pub received_at: Timestamp,
    /// HTTP status of the original response.
    pub status: u16,
    /// The original response body (JSON).
    pub response: String,
    /// The store may forget the key after this instant.
    pub expires_at: Timestamp,
}

/// The seed of an idempotent request's deterministic record ids
/// ([`RecordId::deterministic`]): the key and the request fingerprint.
pub fn id_seed(key: &IdempotencyKey, fingerprint: &Fingerprint) -> Vec<u8> {
    [key.as_str().as_bytes(), &[0], &fingerprint.0].concat()
}

impl IdempotencyEntry {
    /// The id the `index`-th record of the remembered request was given. A
    /// store that could not finish writing a request's records uses it to
    /// rewrite them under their original ids when a retry (which carries a
    /// later `received_at` of its own) comes in.
    pub fn record_id(&self, index: usize) -> RecordId {
        RecordId::deterministic(self.received_at, &id_seed(&self.key, &self.fingerprint), index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
        assert_eq!(IdempotencyKey::parse(b""), Err(InvalidIdempotencyKey::Empty));
        assert_eq!(IdempotencyKey::parse(&[b'k'; 256]), Err(InvalidIdempotencyKey::TooLong(256)));
        assert_eq!(IdempotencyKey::parse(b"a\tb"), Err(InvalidIdempotencyKey::NotPrintable));
        assert_eq!(IdempotencyKey::parse("é".as_bytes()), Err(InvalidIdempotencyKey::NotPrintable));
    }

    #[test]
    fn fingerprint_depends_on_format_and_body() {
        assert_eq!(Fingerprint::of("json", b"{}"), Fingerprint::of("json", b"{}"));
        assert_ne!(Fingerprint::of("json", b"{}"), Fingerprint::of("ndjson", b"{}"));
        assert_ne!(Fingerprint::of("json", b"{}"), Fingerprint::of("json", b"{ }"));
        let f = Fingerprint::of("json", b"x");
        assert_eq!(Fingerprint::from_hex(&f.to_hex()), Some(f));
    }
}
