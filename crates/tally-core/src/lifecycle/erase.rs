//! Erasure: deleting one record on request, and getting its week's summary
//! rewritten without it.

use serde::Serialize;

use crate::id::RecordId;
use crate::ports::{RecordLifecycle, SinkError, StoreError, SummarySink, WeekRefresh};
use crate::summary::is_summarized;
use crate::week::IsoWeek;

/// What happens to the summary of an erased record's week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SummaryState {
    /// The week had a summary, which holds the record: it is being rewritten.
    Regenerating,
    /// The week has no summary yet: nothing holds the record any more.
    None,
    /// The week's summary still holds the record: asking for it to be
    /// rewritten failed (logged); the next weekly run or `tally summarize
    /// --week W` rewrites it.
    Stale,
}

/// The answer to an erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Erased {
    pub id: RecordId,
    pub week: IsoWeek,
    pub summary: SummaryState,
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Deletes record `id`; if its week already has a summary, asks `refresh` to
/// rewrite that week (so the export stops holding the record). `None` when
/// no record had that id.
pub async fn erase(
    store: &dyn RecordLifecycle,
    sink: &dyn SummarySink,
    refresh: &dyn WeekRefresh,
    id: RecordId,
) -> Result<Option<Erased>, EraseError> {
    if !store.delete(id).await? {
        return Ok(None);
    }
    let week = IsoWeek::containing(id.timestamp());
    let summary = if !is_summarized(sink, week).await? {
        SummaryState::None
    } else if let Err(e) = refresh.request(week).await {
        tracing::warn!(%week, error = %e, "the record is erased, but its week's summary could not be queued for rewriting");
        SummaryState::Stale
    } else {
        SummaryState::Regenerating
    };
    Ok(Some(Erased { id, week, summary }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordStore;
    use crate::clock::Timestamp;
    use crate::record::Record;
    use crate::summary::{NoProgress, SummaryOptions, summarize_week};
    use crate::testing::{FixedClock, MemoryRecordStore, MemorySummarySink, RecordedRefresh};

    #[tokio::test]
    async fn erasing_a_summarized_record_asks_for_its_week_again() {
        let store = MemoryRecordStore::default();
        let sink = MemorySummarySink::default();
        let requests = RecordedRefresh::default();
        let week = IsoWeek::parse("2026-W47").unwrap();
        let at = week.start();
        let a = Record { id: RecordId::generate(at), received_at: at, data: "{}".into() };
        let later = Timestamp::from_millis(week.end().as_millis() + 1);
        let b = Record { id: RecordId::generate(later), received_at: later, data: "{}".into() };
        store.insert(&[a.clone(), b.clone()], None).await.unwrap();
        summarize_week(&store, &sink, &FixedClock::at(later), week, &SummaryOptions::default(), &NoProgress)
            .await
            .unwrap();

        let erased = erase(&store, &sink, &requests, a.id).await.unwrap().unwrap();
        assert_eq!(erased, Erased { id: a.id, week, summary: SummaryState::Regenerating });
        assert_eq!(store.get(a.id).await.unwrap(), None);
        assert_eq!(erase(&store, &sink, &requests, a.id).await.unwrap(), None, "a second erase finds nothing");

        let unsummarized = erase(&store, &sink, &requests, b.id).await.unwrap().unwrap();
        assert_eq!(unsummarized.summary, SummaryState::None);
        assert_eq!(requests.weeks(), vec![week]);
    }
}
