//! A store decorator for fault injection: every call of both store ports
//! goes through to the wrapped store, except that the pages of each scan
//! pass through a [`ScanHook`] first. Tests that pause a run's reads or make
//! them panic write only the hook, not the dozen forwarding methods (which
//! several tests used to write out each time, and could get subtly wrong:
//! `insert_until` must be forwarded too, see [`RecordStore::insert_until`]).

use std::sync::Arc;

use async_trait::async_trait;

use crate::RecordId;
use crate::clock::Timestamp;
use crate::idempotency::{IdempotencyEntry, IdempotencyKey};
use crate::ports::{GiveUp, InsertOutcome, RecordLifecycle, RecordPages, RecordStore, RestoreOutcome, StoreError};
use crate::record::Record;
use crate::week::IsoWeek;

/// What a [`HookedScans`] store does to its scans.
pub trait ScanHook: Send + Sync + std::fmt::Debug {
    /// The pages a scan of ids `from..to` answers, given the wrapped store's
    /// `pages` for it: `pages` itself, wrapped, or something else.
    fn pages<'a>(&'a self, from: RecordId, to: RecordId, pages: RecordPages<'a>) -> RecordPages<'a>;
}

/// `inner` with its scans passed through `hook`.
#[derive(Debug)]
pub struct HookedScans<H> {
    inner: Arc<dyn RecordLifecycle>,
    hook: H,
}

impl<H: ScanHook> HookedScans<H> {
    pub fn new(inner: Arc<dyn RecordLifecycle>, hook: H) -> Self {
        Self { inner, hook }
    }

    /// The hook, to arm or inspect it while the store is in use.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

#[async_trait]
impl<H: ScanHook> RecordStore for HookedScans<H> {
    async fn insert(&self, r: &[Record], i: Option<&IdempotencyEntry>) -> Result<InsertOutcome, StoreError> {
        self.inner.insert(r, i).await
    }
    async fn insert_until(
        &self,
        r: &[Record],
        i: Option<&IdempotencyEntry>,
        give_up: GiveUp<'_>,
    ) -> Result<InsertOutcome, StoreError> {
        self.inner.insert_until(r, i, give_up).await
    }
    async fn idempotency_entry(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyEntry>, StoreError> {
        self.inner.idempotency_entry(key).await
    }
    async fn get(&self, id: RecordId) -> Result<Option<Record>, StoreError> {
        self.inner.get(id).await
    }
    fn scan_range(&self, from: RecordId, to: RecordId, page_size: usize) -> RecordPages<'_> {
        self.hook.pages(from, to, self.inner.scan_range(from, to, page_size))
    }
    async fn weeks(&self) -> Result<Vec<IsoWeek>, StoreError> {
        self.inner.weeks().await
    }
}

#[async_trait]
impl<H: ScanHook> RecordLifecycle for HookedScans<H> {
    async fn restore(&self, records: &[Record]) -> Result<RestoreOutcome, StoreError> {
        self.inner.restore(records).await
    }
    async fn delete(&self, id: RecordId) -> Result<bool, StoreError> {
        self.inner.delete(id).await
    }
    async fn delete_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        self.inner.delete_week(week).await
    }
    async fn clear_abandoned(&self, week: IsoWeek, now: Timestamp) -> Result<u64, StoreError> {
        self.inner.clear_abandoned(week, now).await
    }
}
