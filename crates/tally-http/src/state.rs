//! Shared handler state and API-key authentication.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tally_core::{IngestService, SummarySink};

/// Who may call the protected routes.
#[derive(Clone)]
pub enum Auth {
    /// No key configured. The binaries allow this only on loopback addresses
    /// (or behind API Gateway, which checks keys itself).
    Open,
    /// Callers must send this key in `x-api-key`. Only its SHA-256 is kept,
    /// so comparison time does not depend on where the bytes differ, nor on
    /// the length of either key.
    Key(Arc<[u8; 32]>),
}

impl Auth {
    pub fn key(key: &str) -> Self {
        Self::Key(Arc::new(Sha256::digest(key.as_bytes()).into()))
    }

    /// True when `presented` (the raw `x-api-key` header) is acceptable.
    pub fn allows(&self, presented: Option<&[u8]>) -> bool {
        match self {
            Self::Open => true,
            Self::Key(expected) => {
                let Some(presented) = presented else { return false };
                let digest: [u8; 32] = Sha256::digest(presented).into();
                digest.ct_eq(expected.as_ref()).into()
            }
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key, not even its digest.
        f.write_str(match self {
            Self::Open => "Auth::Open",
            Self::Key(_) => "Auth::Key(..)",
        })
    }
}

/// Everything handlers need, cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub(crate) ingest: IngestService,
    pub(crate) sink: Arc<dyn SummarySink>,
    pub(crate) auth: Auth,
    /// Longest wait for one store call; past it the request gets 503 with
    /// `Retry-After` (the store's fault), not the router's 408 (the client's).
    pub(crate) store_timeout: Duration,
    /// Slots for requests that upload a body; a request finding none is shed
    /// with 503 before its body is read, so memory stays bounded by
    /// `slots x body limit` however many clients flood the server.
    pub(crate) ingest_slots: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Default for [`with_store_timeout`](Self::with_store_timeout): well
    /// below the default request timeout, well above SQLite's busy timeout.
    pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Default for [`with_ingest_concurrency`](Self::with_ingest_concurrency).
    pub const DEFAULT_INGEST_CONCURRENCY: usize = 64;

    pub fn new(ingest: IngestService, sink: Arc<dyn SummarySink>, auth: Auth) -> Self {
        Self {
            ingest,
            sink,
            auth,
            store_timeout: Self::DEFAULT_STORE_TIMEOUT,
            ingest_slots: Arc::new(tokio::sync::Semaphore::new(Self::DEFAULT_INGEST_CONCURRENCY)),
        }
    }

    /// Sets how many uploads (`POST`s) may be in progress at once; more are
    /// answered 503 with `Retry-After` at once (load shedding).
    pub fn with_ingest_concurrency(mut self, slots: usize) -> Self {
        self.ingest_slots = Arc::new(tokio::sync::Semaphore::new(slots.max(1)));
        self
    }

    /// Sets the longest wait for one store call (keep it below the request timeout).
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_check() {
        let auth = Auth::key("s3cret");
        assert!(auth.allows(Some(b"s3cret")));
        assert!(!auth.allows(Some(b"s3cret ")));
        assert!(!auth.allows(Some(b"")));
        assert!(!auth.allows(None));
        assert!(Auth::Open.allows(None));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
