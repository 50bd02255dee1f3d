//! Erasure: deleting one record on request, and getting its week's summary
//! rewritten without it.

use serde::Serialize;

use crate::clock::Timestamp;
use crate::id::RecordId;
use crate::ports::{RecordLifecycle, SinkError, StoreError, SummarySink, WeekRefresh};
use crate::summary::is_summarized;
use crate::week::IsoWeek;

/// What happens to the summary of an erased record's week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SummaryState {
    /// The week has ended: its summary — written already, or being written
    /// by a run that may have read the record before it went — is rewritten
    /// without the record (a refresh request is queued).
    Regenerating,
    /// The week has not ended and has no (partial) summary: nothing holds
    /// the record, and the week's run will not see it.
    None,
    /// The week's summary may still hold the record: asking for it to be
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

/// Deletes record `id` and, if its week has ended by `now`, asks `refresh`
/// to rewrite that week — **whether or not a manifest exists at this
/// moment**: a run of the week may be under way and have read the record
/// already (every run removes the manifest first, so its absence proves
/// nothing). The request outlives that run, and a run only covers a request
/// when it *started* after it (see the refresh handling), so the week is
/// rewritten without the record: an erasure is never undone. `None` when no
/// record had that id.
pub async fn erase(
    store: &dyn RecordLifecycle,
    sink: &dyn SummarySink,
    refresh: &dyn WeekRefresh,
    now: Timestamp,
    id: RecordId,
) -> Result<Option<Erased>, EraseError> {
    let week = IsoWeek::containing(id.timestamp());
    if store.get(id).await?.is_none() {
        return Ok(None);
    }
    // Asked for before the delete too, so the retention (which leaves a
    // week with a pending request alone) cannot delete the week's records
    // between this delete and the request below, which would keep the
    // record in the summary it leaves. The request after the delete is the
    // one a run must start after to cover the erasure.
    let asked_before = refresh.request(week).await;
    if !store.delete(id).await? {
        return Ok(None);
    }
    // A week that has not ended has had no run, unless a `--partial` one —
    // which may be under way right now, its manifest removed: the request
    // is made all the same, and the rewrite (under the week's lock, after
    // that run) finds out whether a partial summary exists to rewrite.
    let unsummarized = week.end() > now && !is_summarized(sink, week).await?;
    let summary = if let Err(e) = asked_before.and(refresh.request(week).await) {
        tracing::warn!(%week, error = %crate::error_chain(&e), "the record is erased, but its week's summary could not be queued for rewriting");
        SummaryState::Stale
    } else if unsummarized {
        SummaryState::None
    } else {
        SummaryState::Regenerating
    };
    Ok(Some(Erased { id, week, summary }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordStore;
    use crate::record::Record;
    use crate::summary::{NoProgress, SummaryOptions, summarize_week};
    use crate::testing::{FixedClock, MemoryRecordStore, MemorySummarySink, RecordedRefresh};

    #[tokio::test]
    async fn erasing_a_record_of_an_ended_week_always_asks_for_its_week_again() {
        let store = MemoryRecordStore::default();
        let sink = MemorySummarySink::default();
        let requests = RecordedRefresh::default();
        let week = IsoWeek::parse("2026-W47").unwrap();
        let at = week.start();
        let rec = |at: Timestamp| Record { id: RecordId::generate(at), received_at: at, data: "{}".into() };
        let (a, b, c) = (rec(at), rec(Timestamp::from_millis(at.as_millis() + 1)), rec(week.next().start()));
        store.insert(&[a.clone(), b.clone(), c.clone()], None).await.unwrap();
        let after = Timestamp::from_millis(week.end().as_millis() + 1);
        summarize_week(&store, &sink, &FixedClock::at(after), week, &SummaryOptions::default(), &NoProgress)
            .await
            .unwrap();

        // A summarized week: rewritten.
        let erased = erase(&store, &sink, &requests, after, a.id).await.unwrap().unwrap();
        assert_eq!(erased, Erased { id: a.id, week, summary: SummaryState::Regenerating });
        assert_eq!(store.get(a.id).await.unwrap(), None);
        assert_eq!(erase(&store, &sink, &requests, after, a.id).await.unwrap(), None, "a second erase finds nothing");

        // An ended week with no manifest at this moment (a run under way has
        // removed it, or the week was never summarized): rewritten all the same.
        sink.begin_week(week).await.unwrap();
        let erased = erase(&store, &sink, &requests, after, b.id).await.unwrap().unwrap();
        assert_eq!(erased.summary, SummaryState::Regenerating);
        // Each erasure asks twice: before its delete (the retention leaves
        // the week alone) and after it (the request a run must follow).
        assert_eq!(requests.weeks(), vec![week; 4]);

        // A week not yet over, without a partial summary at this moment:
        // asked for too (a partial run may be under way); the rewrite finds
        // out under the week's lock whether there is anything to rewrite.
        let unended = erase(&store, &sink, &requests, after, c.id).await.unwrap().unwrap();
        assert_eq!(unended.summary, SummaryState::None);
        assert_eq!(requests.weeks(), [vec![week; 4], vec![week.next(); 2]].concat());
    }
}
