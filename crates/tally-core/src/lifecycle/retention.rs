//! Retention: deleting the records of old weeks, never before their summary.
//!
//! With `--retention-weeks N`, a week's records are deleted once the week
//! ended more than `N` weeks ago **and** its manifest exists; its summary
//! objects (the export included) stay in the bucket. A week that old with no
//! manifest keeps its records and is reported, so it can be summarized first.

use crate::clock::Timestamp;
use crate::ports::{RecordLifecycle, SinkError, StoreError, SummarySink};
use crate::week::IsoWeek;

const WEEK_MS: i64 = 7 * 86_400_000;

/// What one prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Weeks whose records were deleted, with how many records each.
    pub pruned: Vec<(IsoWeek, u64)>,
    /// Weeks old enough to prune but without a summary: kept.
    pub unsummarized: Vec<IsoWeek>,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("could not list the stored weeks: {0}")]
    Store(#[from] StoreError),
    #[error("could not list the summarized weeks: {0}")]
    Sink(#[from] SinkError),
    #[error("could not delete the records of {week}: {source}; the next prune finishes the job")]
    Delete {
        week: IsoWeek,
        #[source]
        source: StoreError,
    },
}

/// True when `week` ended more than `keep_weeks` weeks before `now`.
pub fn expired(week: IsoWeek, now: Timestamp, keep_weeks: u32) -> bool {
    week.end().as_millis().saturating_add(i64::from(keep_weeks) * WEEK_MS) < now.as_millis()
}

/// Deletes the records of every expired, summarized week, oldest first.
pub async fn prune(
    store: &dyn RecordLifecycle,
    sink: &dyn SummarySink,
    now: Timestamp,
    keep_weeks: u32,
) -> Result<PruneReport, PruneError> {
    let summarized = sink.list_weeks().await?;
    let mut report = PruneReport::default();
    for week in store.weeks().await? {
        if !expired(week, now, keep_weeks) {
            continue;
        }
        if summarized.binary_search(&week).is_err() {
            report.unsummarized.push(week);
            continue;
        }
        let deleted = store.delete_week(week).await.map_err(|source| PruneError::Delete { week, source })?;
        report.pruned.push((week, deleted));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordId;
    use crate::RecordStore;
    use crate::record::Record;
    use crate::summary::{NoProgress, SummaryOptions, summarize_week};
    use crate::testing::{FixedClock, MemoryRecordStore, MemorySummarySink};

    #[tokio::test]
    async fn only_summarized_weeks_past_the_retention_are_pruned() {
        let store = MemoryRecordStore::default();
        let sink = MemorySummarySink::default();
        let now = IsoWeek::parse("2026-W48").unwrap().start();
        let weeks = ["2026-W44", "2026-W45", "2026-W46", "2026-W47"].map(|w| IsoWeek::parse(w).unwrap());
        for (i, week) in weeks.iter().enumerate() {
            let at = week.start();
            let records: Vec<Record> = (0..=i)
                .map(|n| Record { id: RecordId::generate(at), received_at: at, data: format!("{{\"n\":{n}}}") })
                .collect();
            store.insert(&records, None).await.unwrap();
        }
        let clock = FixedClock::at(now);
        for week in [weeks[1], weeks[2], weeks[3]] {
            summarize_week(&store, &sink, &clock, week, &SummaryOptions::default(), &NoProgress).await.unwrap();
        }
        // Keep 1 week at the start of W48: W44 and W45 ended more than a week
        // ago; W46 ended exactly a week ago, W47 just now.
        let report = prune(&store, &sink, now, 1).await.unwrap();
        assert_eq!(report.pruned, vec![(weeks[1], 2)]);
        assert_eq!(report.unsummarized, vec![weeks[0]], "W44 has no summary: kept");
        assert_eq!(store.weeks().await.unwrap(), vec![weeks[0], weeks[2], weeks[3]]);
        assert!(sink.list_weeks().await.unwrap().contains(&weeks[1]), "summaries stay");
        assert_eq!(prune(&store, &sink, now, 1).await.unwrap().pruned, vec![], "a second prune finds nothing");
    }

    #[test]
    fn expiry_counts_from_the_end_of_the_week() {
        let w = IsoWeek::parse("2026-W47").unwrap();
        assert!(!expired(w, w.end(), 0));
        assert!(expired(w, Timestamp::from_millis(w.end().as_millis() + 1), 0));
        assert!(!expired(w, Timestamp::from_millis(w.end().as_millis() + WEEK_MS), 1));
        assert!(expired(w, Timestamp::from_millis(w.end().as_millis() + WEEK_MS + 1), 1));
    }
}
