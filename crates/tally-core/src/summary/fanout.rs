//! A week fanned out over workers that share only the summary sink: the
//! weekly run on AWS, where a Step Functions Map runs `tally-weekly` once per
//! share of the week and one last invocation merges.
//!
//! - [`summarize_part`] computes share `k` of `n` (its canonical parts, see
//!   [`Part::assigned`]) from the store and writes each canonical part's
//!   state beside the week's objects, as `part-NN.state` ([`part_object`]; object names are one path
//!   component in every sink).
//!   It touches nothing else of the week: while parts are being written,
//!   readers still see the week's previous summary, if any.
//! - [`merge_parts`] reads the 28 states back, checks them all before it
//!   writes anything (so a missing or damaged state never costs the week its
//!   previous summary), writes the four objects and the manifest exactly as
//!   [`summarize_week`](super::summarize_week) would — the same bytes — and
//!   then deletes the states.
//!
//! Names are per canonical part, not per share: a rerun with another number
//! of shares overwrites the same 28 objects, so a failed run leaves at most
//! 28 objects behind, which the next run replaces and its merge deletes.
//! Two runs of one week at once could interleave their states; each state is
//! a valid reading of its own 6 hours, so the merge still writes a
//! consistent summary, and the runs are expected to be serialized by the
//! caller (one schedule, the merge under the week's lease).
//!
//! The merge reads every state twice (a check pass, then the merge): the
//! states are a quarter of the records' size at gzip level 1, so that is a
//! second or so per GB of records, which buys the guarantee above. A week
//! whose segment field has more values than a part keeps summaries for
//! reads them a third time, for the listed segments' second pass
//! ([`SegmentRecount`](super::SegmentRecount)).

use bytes::Bytes;

use super::SummaryOptions;
use super::service::{PartSource, Progress, SummarizeError, WeekReport, summarize_merged, summarize_parts};
use super::state::{PARTS, Part, PartState, StateError, check_parts, read_header};
use crate::clock::Clock;
use crate::ports::{RecordStore, SinkError, SummarySink};
use crate::week::IsoWeek;

/// The object holding `part`'s state, under the week's folder.
pub fn part_object(part: Part) -> String {
    format!("part-{:02}.state", part.index())
}

const STATE_CONTENT_TYPE: &str = "application/octet-stream";

fn parts_of(k: u8, n: u8) -> impl Iterator<Item = Part> {
    Part::assigned(k, n).into_iter().flatten()
}

/// What [`summarize_part`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsWritten {
    pub week: IsoWeek,
    /// The canonical parts of share `k` of `n`, in order.
    pub parts: Vec<Part>,
    pub records: u64,
}

/// Why a share of a fanned-out week failed.
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    #[error("share {k}/{n} does not exist: expected 1 <= k <= n <= {PARTS}")]
    NoSuchShare { k: u8, n: u8 },
    #[error(transparent)]
    Summarize(#[from] SummarizeError),
    #[error("could not read the state of {part} of {week}")]
    Read {
        week: IsoWeek,
        part: Part,
        #[source]
        source: SinkError,
    },
    #[error(
        "the part states of {week} are not a whole week; nothing was written and the previous summary (if any) stays: run the whole week again (every share, then the merge)"
    )]
    States {
        week: IsoWeek,
        #[source]
        source: StateError,
    },
}

impl FanOutError {
    pub fn week(&self) -> Option<IsoWeek> {
        match self {
            Self::NoSuchShare { .. } => None,
            Self::Summarize(e) => e.week(),
            Self::Read { week, .. } | Self::States { week, .. } => Some(*week),
        }
    }
}

/// Computes share `k` of `n` of `week` and writes its canonical parts'
/// states to `sink` ([`part_object`]). Reruns overwrite them.
pub async fn summarize_part(
    store: &dyn RecordStore,
    sink: &dyn SummarySink,
    week: IsoWeek,
    (k, n): (u8, u8),
    options: &SummaryOptions,
    progress: &dyn Progress,
) -> Result<PartsWritten, FanOutError> {
    let parts: Vec<Part> = Part::assigned(k, n).ok_or(FanOutError::NoSuchShare { k, n })?.collect();
    // A pruned week's share writes no state, so no merge can follow.
    super::ensure_not_pruned(store, sink, week).await?;
    // States come out one canonical part at a time, in order, and each is
    // put as an object of its own while the next part is read: memory holds
    // a part or two, not the share. A failed put stops the reading.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Part, Vec<u8>)>();
    let mut out = move |part: Part, bytes: Vec<u8>| {
        tx.send((part, bytes)).map_err(|_| -> crate::ports::BoxError { "the upload of the part states stopped".into() })
    };
    let aggregate = async move {
        summarize_parts(store, week, options, parts_of(k, n), progress, &mut out).await
        // `out` (the sender) drops here: the uploads below end.
    };
    let upload = async move {
        while let Some((part, bytes)) = rx.recv().await {
            let name = part_object(part);
            sink.put_object(week, &name, STATE_CONTENT_TYPE, Bytes::from(bytes))
                .await
                .map_err(|source| SummarizeError::PartState { week, part, source: Box::new(source) })?;
        }
        Ok::<(), SummarizeError>(())
    };
    let (aggregated, uploaded) = tokio::join!(aggregate, upload);
    // A failed put is the cause when both failed (the aggregation then only
    // saw its channel close).
    uploaded?;
    let records = aggregated?;
    Ok(PartsWritten { week, parts, records })
}

/// Merges the 28 part states of `week` from `sink` into its summary (the same
/// bytes as a plain run), then deletes them. Nothing is written unless every
/// state is there, intact, of this week and made with `options`.
pub async fn merge_parts(
    sink: &dyn SummarySink,
    clock: &dyn Clock,
    week: IsoWeek,
    options: &SummaryOptions,
    progress: &dyn Progress,
) -> Result<WeekReport, FanOutError> {
    check_states(sink, week, options).await?;
    let mut source = SinkParts { sink, week, options };
    let report = summarize_merged(sink, clock, week, options, &mut source, progress).await?;
    // The week is committed: a state left behind only takes storage until
    // the week's next run replaces and deletes it.
    for part in Part::all() {
        if let Err(e) = sink.delete_object(week, &part_object(part)).await {
            tracing::warn!(%week, %part, error = %crate::error_chain(&e), "could not delete a merged part state; the next run of the week replaces it");
        }
    }
    Ok(report)
}

/// Reads every state once, fully checked (header, checksum, decoding).
async fn check_states(sink: &dyn SummarySink, week: IsoWeek, options: &SummaryOptions) -> Result<(), FanOutError> {
    let mut headers = Vec::with_capacity(usize::from(PARTS));
    for part in Part::all() {
        let Some(bytes) = read(sink, week, part).await? else { continue };
        let states = |source| FanOutError::States { week, source };
        let header = read_header(&mut bytes.as_ref()).map_err(states)?.ok_or(StateError::NotAState).map_err(states)?;
        if header.part != part {
            return Err(states(StateError::Corrupt(format!("{} holds {}", part_object(part), header.part))));
        }
        PartState::from_bytes(&bytes, week, options).map_err(states)?;
        headers.push(header);
    }
    check_parts(week, options, &headers).map_err(|source| FanOutError::States { week, source })
}

async fn read(sink: &dyn SummarySink, week: IsoWeek, part: Part) -> Result<Option<Bytes>, FanOutError> {
    sink.read_object(week, &part_object(part)).await.map_err(|source| FanOutError::Read { week, part, source })
}

/// The states in the sink, one object per canonical part.
struct SinkParts<'a> {
    sink: &'a dyn SummarySink,
    week: IsoWeek,
    options: &'a SummaryOptions,
}

#[async_trait::async_trait]
impl PartSource for SinkParts<'_> {
    async fn load(&mut self, part: Part) -> Result<PartState, StateError> {
        let (week, name) = (self.week, part_object(part));
        let bytes = self
            .sink
            .read_object(week, &name)
            .await
            .map_err(|e| StateError::Io(std::io::Error::other(format!("{name}: {}", crate::error_chain(&e)))))?
            .ok_or_else(|| StateError::Missing { week, parts: vec![part] })?;
        PartState::from_bytes(&bytes, week, self.options)
    }
}
