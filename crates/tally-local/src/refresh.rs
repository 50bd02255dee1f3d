//! [`WeekRefresh`] in process: the queue between `tally serve`'s erasures
//! and its refresher task.
//!
//! A request is two things: a message on a channel, which wakes the
//! refresher (so a week asked for again while its rewrite runs is rewritten
//! again), and an entry in the set [`pending`](WeekRefresh::pending) lists
//! until the refresher calls [`done`](WeekRefresh::done). Both live in
//! memory: requests do not outlive the process.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tally_core::IsoWeek;
use tally_core::ports::{SinkError, WeekRefresh};
use tokio::sync::mpsc;

/// The requesting side of the queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChannelWeekRefresh {
    wake: mpsc::UnboundedSender<IsoWeek>,
    pending: Arc<Mutex<BTreeSet<IsoWeek>>>,
}

/// The refresher's side of the queue: one message per request, and the
/// way to withdraw a rewritten week. It holds no sender, so
/// [`recv`](Self::recv) ends once every [`ChannelWeekRefresh`] is dropped.
#[derive(Debug)]
pub struct RefreshInbox {
    rx: mpsc::UnboundedReceiver<IsoWeek>,
    pending: Arc<Mutex<BTreeSet<IsoWeek>>>,
}

impl RefreshInbox {
    /// The next week asked for; `None` once no requester is left.
    pub async fn recv(&mut self) -> Option<IsoWeek> {
        self.rx.recv().await
    }

    /// [`WeekRefresh::done`] from the refresher's side.
    pub fn done(&self, week: IsoWeek) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&week);
    }
}

/// A queue: the [`WeekRefresh`] to hand to erasures, and the inbox the
/// refresher drains.
pub fn channel() -> (ChannelWeekRefresh, RefreshInbox) {
    let (wake, rx) = mpsc::unbounded_channel();
    let pending = Arc::<Mutex<BTreeSet<IsoWeek>>>::default();
    (ChannelWeekRefresh { wake, pending: pending.clone() }, RefreshInbox { rx, pending })
}

impl ChannelWeekRefresh {
    fn pending_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<IsoWeek>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl WeekRefresh for ChannelWeekRefresh {
    /// Fails only when the refresher has stopped; the week then stays
    /// pending (it does need a rewrite) and the error says how to do it.
    async fn request(&self, week: IsoWeek) -> Result<(), SinkError> {
        self.pending_set().insert(week);
        self.wake.send(week).map_err(|_| SinkError::Unavailable {
            message: format!("the summary refresher has stopped; run `tally summarize --week {week}`"),
            source: None,
        })
    }

    async fn pending(&self) -> Result<Vec<IsoWeek>, SinkError> {
        Ok(self.pending_set().iter().copied().collect())
    }

    async fn done(&self, week: IsoWeek) -> Result<(), SinkError> {
        self.pending_set().remove(&week);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_refresh_meets_the_refresh_contract() {
        let (refresh, _rx) = channel();
        tally_core::testing::refresh_contract(&refresh).await;
    }

    #[tokio::test]
    async fn every_request_wakes_the_refresher_and_its_done_withdraws_the_week() {
        let (refresh, mut inbox) = channel();
        let week = IsoWeek::parse("2026-W47").unwrap();
        refresh.request(week).await.unwrap();
        refresh.request(week).await.unwrap();
        assert_eq!((inbox.recv().await, inbox.recv().await), (Some(week), Some(week)));
        assert_eq!(refresh.pending().await.unwrap(), vec![week]);
        inbox.done(week);
        assert_eq!(refresh.pending().await.unwrap(), Vec::<IsoWeek>::new());
        // The inbox ends with the last requester.
        drop(refresh);
        assert_eq!(inbox.recv().await, None);
    }

    #[tokio::test]
    async fn a_request_to_a_stopped_refresher_fails_saying_what_to_run_and_stays_pending() {
        let (refresh, rx) = channel();
        drop(rx);
        let week = IsoWeek::parse("2026-W47").unwrap();
        let err = refresh.request(week).await.unwrap_err();
        assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("tally summarize --week 2026-W47"), "{err}");
        assert_eq!(refresh.pending().await.unwrap(), vec![week]);
    }
}
