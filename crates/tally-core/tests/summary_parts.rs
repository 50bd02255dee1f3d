//! Partial summaries: part states merged in any grouping and order, and runs
//! on any number of threads, give the bytes of a plain run; the fold stays
//! within the sketches' bounds of one aggregator fed the whole week; bad
//! state sets are refused with errors that say what to do.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use proptest::prelude::*;
use tally_core::summary::fanout::{FanOutError, merge_parts, part_object, summarize_part};
use tally_core::summary::{
    Aggregator, MANIFEST_JSON, NoProgress, PARTS, Part, PartSource, PartState, RECORDS_NDJSON_GZ, SUMMARY_HTML,
    SUMMARY_JSON, StateError, SummarizeError, Summary, SummaryOptions, check_parts, read_header, summarize_merged,
    summarize_parts, summarize_week,
};
use tally_core::testing::{FixedClock, HookedScans, MemoryRecordStore, MemorySummarySink, ScanHook};
use tally_core::{IsoWeek, Record, RecordStore, SummarySink, Timestamp};

fn week() -> IsoWeek {
    IsoWeek::parse("2026-W47").unwrap()
}

fn clock() -> FixedClock {
    FixedClock::at(Timestamp::parse_rfc3339("2026-11-23T00:05:00Z").unwrap())
}

fn options(threads: usize) -> SummaryOptions {
    // Small caps so that a few hundred records already pass the exact
    // distinct limit and the path cap: the order-dependent regimes.
    SummaryOptions {
        page_size: 7,
        upload_chunk_bytes: 300,
        exact_distinct_limit: 40,
        max_paths: 30,
        segment_by: Some("kind".into()),
        threads,
        ..SummaryOptions::default()
    }
}

async fn store_with(records: &[Record]) -> MemoryRecordStore {
    let store = MemoryRecordStore::default();
    for chunk in records.chunks(500) {
        store.insert(chunk, None).await.unwrap();
    }
    store
}

/// Records of varied shapes, a few unparsable, clustered so some parts are
/// empty and others full.
fn records(n: usize, seed: u64) -> Vec<Record> {
    let mut recs = common::records(week(), n, seed, |rng| {
        if rng.chance(3) {
            return "{\"broken\": [".into();
        }
        let kind = rng.pick(&["a", "b", "c", "d"]);
        match rng.below(3) {
            0 => format!(r#"{{"kind":"{kind}","v":{},"user":"u{}"}}"#, rng.below(1000), rng.below(200)),
            1 => format!(r#"{{"kind":"{kind}","k{}":{},"x":"{}"}}"#, rng.below(60), rng.below(7), rng.next()),
            _ => {
                let mut t = common::rich_value(rng).text();
                t.insert_str(1, &format!(r#""kind":"{kind}","#));
                t
            }
        }
    });
    // Leave Wednesday empty: a few parts without any record.
    recs.retain(|r| {
        let day = (r.received_at.as_millis() - week().start().as_millis()) / 86_400_000;
        day != 2
    });
    recs
}

/// Every object of the week, by name.
async fn objects(sink: &MemorySummarySink) -> HashMap<&'static str, Vec<u8>> {
    let mut out = HashMap::new();
    for name in [RECORDS_NDJSON_GZ, SUMMARY_JSON, SUMMARY_HTML, MANIFEST_JSON] {
        out.insert(name, sink.read_object(week(), name).await.unwrap().unwrap().to_vec());
    }
    out
}

async fn plain_run(store: &MemoryRecordStore, options: &SummaryOptions) -> HashMap<&'static str, Vec<u8>> {
    let sink = MemorySummarySink::default();
    summarize_week(store, &sink, &clock(), week(), options, &NoProgress).await.unwrap();
    objects(&sink).await
}

/// `--part k/n`: the encoded states of that run's parts.
async fn part_file(store: &MemoryRecordStore, k: u8, n: u8, options: &SummaryOptions) -> Vec<u8> {
    let mut file = Vec::new();
    let parts = Part::assigned(k, n).unwrap();
    summarize_parts(store, week(), options, parts, &NoProgress, &mut |_, bytes| {
        file.extend_from_slice(&bytes);
        Ok(())
    })
    .await
    .unwrap();
    file
}

/// Part states in memory, indexed by reading headers only.
struct Files {
    files: Vec<Vec<u8>>,
    index: HashMap<Part, (usize, usize, usize)>,
    options: SummaryOptions,
}

impl Files {
    fn index(files: Vec<Vec<u8>>, options: &SummaryOptions) -> Result<Self, StateError> {
        let mut headers = Vec::new();
        let mut index = HashMap::new();
        for (f, file) in files.iter().enumerate() {
            let mut at = 0usize;
            let mut rest = &file[..];
            while let Some(h) = read_header(&mut rest)? {
                let len = h.total_len() as usize;
                index.insert(h.part, (f, at, len));
                at += len;
                rest = &file[at.min(file.len())..];
                headers.push(h);
            }
        }
        check_parts(week(), options, &headers)?;
        Ok(Self { files, index, options: options.clone() })
    }
}

#[async_trait]
impl PartSource for Files {
    async fn load(&mut self, part: Part) -> Result<PartState, StateError> {
        let (f, at, len) = self.index[&part];
        PartState::from_bytes(&self.files[f][at..at + len], week(), &self.options)
    }
}

async fn merged(files: Vec<Vec<u8>>, options: &SummaryOptions) -> HashMap<&'static str, Vec<u8>> {
    let mut source = Files::index(files, options).unwrap();
    let sink = MemorySummarySink::default();
    summarize_merged(&sink, &clock(), week(), options, &mut source, &NoProgress).await.unwrap();
    objects(&sink).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn assert_same(a: &HashMap<&'static str, Vec<u8>>, b: &HashMap<&'static str, Vec<u8>>, what: &str) {
    for name in [RECORDS_NDJSON_GZ, SUMMARY_JSON, SUMMARY_HTML, MANIFEST_JSON] {
        assert!(a[name] == b[name], "{name} differs: {what}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any N, any regrouping of the part files (states cut out and put
    /// together in other files) and any order of files and of states
    /// within them: the four objects and the manifest are the plain run's.
    #[test]
    fn merges_of_any_split_grouping_and_order_are_byte_identical(
        n_records in 0usize..600,
        seed in any::<u64>(),
        n in 1u8..=PARTS,
        threads in 1usize..5,
        shuffle in any::<u64>(),
        files in 1usize..6,
    ) {
        runtime().block_on(async {
            let recs = records(n_records, seed);
            let store = store_with(&recs).await;
            let plain = plain_run(&store, &options(2)).await;

            // Every state of every `--part k/n` file, cut apart.
            let mut states: Vec<Vec<u8>> = Vec::new();
            for k in 1..=n {
                let file = part_file(&store, k, n, &options(threads)).await;
                let mut rest = &file[..];
                let mut at = 0;
                while let Some(h) = read_header(&mut rest).unwrap() {
                    let len = h.total_len() as usize;
                    states.push(file[at..at + len].to_vec());
                    at += len;
                    rest = &file[at..];
                }
            }
            prop_assert_eq!(states.len(), usize::from(PARTS));
            // Shuffle them (Fisher–Yates) into `files` files.
            let mut rng = common::Rng(shuffle | 1);
            for i in (1..states.len()).rev() {
                states.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let mut grouped = vec![Vec::new(); files];
            for s in states {
                grouped[rng.below(files as u64) as usize].extend_from_slice(&s);
            }
            let merged = merged(grouped, &options(1)).await;
            assert_same(&plain, &merged, &format!("n={n} threads={threads} files={files}"));
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_thread_count_writes_the_same_bytes() {
    let store = store_with(&records(3000, 42)).await;
    let one = plain_run(&store, &options(1)).await;
    for threads in [2, 3, 7, 28, 40] {
        assert_same(&one, &plain_run(&store, &options(threads)).await, &format!("threads={threads}"));
    }
    // AND the export is every record, in id order, as one valid (multi-member) gzip
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&one[RECORDS_NDJSON_GZ][..]), &mut text)
        .unwrap();
    // (Read by hand: some data holds numbers serde_json refuses.)
    let ids: Vec<&str> = text.lines().map(|l| &l[l.find("\"id\":\"").unwrap() + 6..][..26]).collect();
    let expected: Vec<String> = records(3000, 42).iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids, expected);
}

/// The fold of the 28 parts against one aggregator fed the whole week: what
/// must be equal is, the sketches stay within their bounds.
#[test]
fn the_fold_matches_a_single_pass_within_the_sketch_bounds() {
    let recs: Vec<Record> = common::records(week(), 20_000, 9, |rng| {
        format!(
            r#"{{"kind":"{}","ms":{},"user":"u{}","id":"x{}","f":{}}}"#,
            rng.pick(&["a", "b", "c"]),
            rng.below(100_000) as f64 / 7.0,
            rng.below(300),
            rng.next(),
            rng.below(2) == 0
        )
    });
    let options =
        SummaryOptions { exact_distinct_limit: 1000, segment_by: Some("kind".into()), ..SummaryOptions::default() };
    let mut single = Aggregator::new(week(), &options);
    recs.iter().for_each(|r| {
        single.push(r);
    });
    let single = single.finish();
    let folded = fold_of_parts(&recs, &options);

    assert_eq!(folded.records, single.records);
    assert_eq!(folded.bytes, single.bytes);
    assert_eq!(folded.per_hour, single.per_hour);
    assert_eq!(folded.per_day, single.per_day);
    assert_eq!(folded.fields.len(), single.fields.len());
    for (f, s) in folded.fields.iter().zip(&single.fields) {
        assert_eq!((&f.path, f.present, f.null, &f.types), (&s.path, s.present, s.null, &s.types));
        assert_eq!(f.boolean, s.boolean, "{}", f.path);
        if let (Some(a), Some(b)) = (&f.number, &s.number) {
            assert_eq!((a.count, a.min, a.max), (b.count, b.min, b.max), "{}", f.path);
            let (ma, mb) = (a.mean.unwrap(), b.mean.unwrap());
            assert!((ma - mb).abs() <= 1e-9 * mb.abs(), "{}: mean {ma} vs {mb}", f.path);
            let (sa, sb) = (a.stddev.unwrap(), b.stddev.unwrap());
            assert!((sa - sb).abs() <= 1e-9 * sb.abs(), "{}: stddev {sa} vs {sb}", f.path);
            // Rank error: the fold's median lies within 1% of ranks of the true one.
            let mut sorted: Vec<f64> = recs
                .iter()
                .map(|r| serde_json::from_str::<serde_json::Value>(&r.data).unwrap()["ms"].as_f64().unwrap())
                .collect();
            sorted.sort_by(f64::total_cmp);
            let rank = sorted.partition_point(|&x| x < a.p50.unwrap()) as f64 / sorted.len() as f64;
            assert!((rank - 0.5).abs() <= 0.01, "{}: p50 at rank {rank}", f.path);
        }
        if let (Some(a), Some(b)) = (&f.string, &s.string) {
            assert_eq!((a.count, a.min_length, a.max_length), (b.count, b.min_length, b.max_length), "{}", f.path);
            assert_eq!(a.distinct_exact, b.distinct_exact, "{}", f.path);
            if b.distinct_exact {
                assert_eq!((a.distinct, &a.top), (b.distinct, &b.top), "{}", f.path);
            } else {
                let err = (a.distinct as f64 - b.distinct as f64).abs() / b.distinct as f64;
                assert!(err <= 0.02, "{}: distinct {} vs {}", f.path, a.distinct, b.distinct);
            }
        }
    }
    let (fs, ss) = (folded.segments.unwrap(), single.segments.unwrap());
    assert_eq!(
        fs.values.iter().map(|s| (&s.value, s.records)).collect::<Vec<_>>(),
        ss.values.iter().map(|s| (&s.value, s.records)).collect::<Vec<_>>()
    );
}

/// The week as the service computes it: each canonical part aggregated
/// alone, encoded and decoded, folded in order.
fn fold_of_parts(recs: &[Record], options: &SummaryOptions) -> Summary {
    let rt = runtime();
    rt.block_on(async {
        let store = store_with(recs).await;
        let sink = MemorySummarySink::default();
        summarize_week(&store, &sink, &clock(), week(), options, &NoProgress).await.unwrap();
        serde_json::from_slice(&sink.read_object(week(), SUMMARY_JSON).await.unwrap().unwrap()).unwrap()
    })
}

#[tokio::test]
async fn bad_state_sets_are_refused_with_what_to_do() {
    let store = store_with(&records(300, 3)).await;
    let opts = options(2);
    let (a, b) = (part_file(&store, 1, 2, &opts).await, part_file(&store, 2, 2, &opts).await);

    // a missing half names the parts and the command
    let err = Files::index(vec![a.clone()], &opts).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(&err, StateError::Missing { parts, .. } if parts.len() == 14), "{msg}");
    assert!(msg.starts_with("14 parts of 2026-W47 are missing from the states: part 14"), "{msg}");
    assert!(msg.contains("part 14 (Thu 12:00–18:00 UTC)") && msg.contains("--part K/N --state-out FILE"), "{msg}");

    // the same half twice
    let err = Files::index(vec![a.clone(), b.clone(), a.clone()], &opts).err().unwrap();
    assert!(matches!(err, StateError::Duplicate { .. }), "{err}");

    // another week's states
    let other = store_with(&[]).await;
    let mut wrong = Vec::new();
    summarize_parts(&other, week().next(), &opts, Part::all(), &NoProgress, &mut |_, s| {
        wrong.extend_from_slice(&s);
        Ok(())
    })
    .await
    .unwrap();
    let err = Files::index(vec![wrong], &opts).err().unwrap();
    assert!(err.to_string().contains("is of week 2026-W48, not 2026-W47"), "{err}");

    // other options
    let plain = SummaryOptions { segment_by: None, ..opts.clone() };
    let err = Files::index(vec![a.clone(), b.clone()], &plain).err().unwrap();
    assert!(err.to_string().contains("--segment-by None here, Some(\"kind\") in the state"), "{err}");

    // not a state, a newer format, a damaged body
    assert!(matches!(Files::index(vec![b"{\"json\":1}".to_vec()], &opts), Err(StateError::NotAState)));
    let mut newer = a.clone();
    newer[8] = 9;
    assert!(Files::index(vec![newer], &opts).err().unwrap().to_string().contains("format version 9"));
    let mut damaged = a.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    let mut source = Files::index(vec![damaged, b.clone()], &opts).unwrap();
    let sink = MemorySummarySink::default();
    let err = summarize_merged(&sink, &clock(), week(), &opts, &mut source, &NoProgress).await.unwrap_err();
    assert!(matches!(err, SummarizeError::State { .. }), "{err:?}");
    let chain = tally_core::error_chain(&err);
    assert!(chain.contains("damaged (checksum mismatch)"), "{chain}");
    assert!(sink.read_object(week(), MANIFEST_JSON).await.unwrap().is_none(), "a failed merge commits nothing");
}

/// The fan-out (Step Functions on AWS): shares run in any order, each writes
/// its parts' states to the sink, one merge writes the bytes of a plain run
/// and deletes the states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanned_out_shares_merge_from_the_sink_to_the_bytes_of_a_plain_run() {
    let store = store_with(&records(2000, 7)).await;
    let options = options(2);
    let plain = plain_run(&store, &options).await;
    for n in [1u8, 4, 7, 28] {
        let sink = MemorySummarySink::default();
        let mut records = 0;
        for k in (1..=n).rev() {
            let written = summarize_part(&store, &sink, week(), (k, n), &options, &NoProgress).await.unwrap();
            assert_eq!(written.parts, Part::assigned(k, n).unwrap().collect::<Vec<_>>());
            records += written.records;
        }
        // Until the merge the week has no summary: the shares wrote states only.
        assert!(sink.read_object(week(), MANIFEST_JSON).await.unwrap().is_none(), "n={n}");
        let report = merge_parts(&sink, &clock(), week(), &options, &NoProgress).await.unwrap();
        assert_eq!(report.records, records);
        assert_same(&plain, &objects(&sink).await, &format!("fan-out n={n}"));
        for part in Part::all() {
            assert!(
                sink.read_object(week(), &part_object(part)).await.unwrap().is_none(),
                "{part} left after the merge"
            );
        }
    }
    // AND a share that does not exist is refused before reading anything
    let sink = MemorySummarySink::default();
    let err = summarize_part(&store, &sink, week(), (8, 7), &options, &NoProgress).await.unwrap_err();
    assert!(matches!(err, FanOutError::NoSuchShare { k: 8, n: 7 }), "{err}");
}

/// A merge with a state missing, damaged or of other options writes nothing:
/// the week keeps its previous summary, and the error says to run the week
/// again. Running the missing share then lets the merge through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_with_a_missing_or_damaged_state_keeps_the_previous_summary() {
    let store = store_with(&records(1500, 11)).await;
    let options = options(2);
    let sink = MemorySummarySink::default();
    summarize_week(&store, &sink, &clock(), week(), &options, &NoProgress).await.unwrap();
    let before = objects(&sink).await;
    for k in [1, 2, 4] {
        summarize_part(&store, &sink, week(), (k, 4), &options, &NoProgress).await.unwrap();
    }
    let err = merge_parts(&sink, &clock(), week(), &options, &NoProgress).await.unwrap_err();
    let message = tally_core::error_chain(&err);
    assert!(
        matches!(&err, FanOutError::States { source: StateError::Missing { parts, .. }, .. }
            if *parts == Part::assigned(3, 4).unwrap().collect::<Vec<_>>()),
        "{message}"
    );
    assert!(message.contains("run the whole week again"), "{message}");
    assert_same(&before, &objects(&sink).await, "after a merge with a missing share");

    summarize_part(&store, &sink, week(), (3, 4), &options, &NoProgress).await.unwrap();
    // A damaged state: one byte of a part's export flipped.
    let victim = part_object(Part::new(20).unwrap());
    let mut bytes = sink.read_object(week(), &victim).await.unwrap().unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    sink.put_object(week(), &victim, "application/octet-stream", bytes.into()).await.unwrap();
    let err = merge_parts(&sink, &clock(), week(), &options, &NoProgress).await.unwrap_err();
    assert!(
        matches!(&err, FanOutError::States { source: StateError::Corrupt(_), .. }),
        "{}",
        tally_core::error_chain(&err)
    );
    assert_same(&before, &objects(&sink).await, "after a merge with a damaged state");

    // States of other options (another --segment-by) are refused too.
    let other = SummaryOptions { segment_by: None, ..options.clone() };
    summarize_part(&store, &sink, week(), (3, 4), &other, &NoProgress).await.unwrap();
    let err = merge_parts(&sink, &clock(), week(), &options, &NoProgress).await.unwrap_err();
    assert!(
        matches!(&err, FanOutError::States { source: StateError::Options { .. }, .. }),
        "{}",
        tally_core::error_chain(&err)
    );

    // Rerunning the share repairs the week; the merge converges on a plain run.
    summarize_part(&store, &sink, week(), (3, 4), &options, &NoProgress).await.unwrap();
    merge_parts(&sink, &clock(), week(), &options, &NoProgress).await.unwrap();
    assert_same(&before, &objects(&sink).await, "after the repaired merge");
}

/// Records of `distinct` values of `user` (skewed: a few heavy values,
/// many seen once to thrice), in a random order over the week.
fn many_valued(distinct: usize, seed: u64) -> Vec<Record> {
    let mut rng = common::Rng(seed);
    let mut data: Vec<String> = Vec::new();
    for v in 0..distinct {
        let n = 1 + rng.below(3) + if rng.chance(2) { rng.below(150) } else { 0 };
        for _ in 0..n {
            data.push(format!(
                r#"{{"user":"u{v:04}","amount":{},"ok":{},"city":"c{}"}}"#,
                rng.below(10_000) as f64 / 8.0,
                rng.chance(80),
                rng.below(40)
            ));
        }
    }
    for i in (1..data.len()).rev() {
        data.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut data = data.into_iter();
    common::records(week(), data.len(), seed, |_| data.next().unwrap())
}

fn user_of(r: &Record) -> &str {
    let at = r.data.find("\"user\":\"u").unwrap() + 8;
    &r.data[at..at + 5]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// A segment field of 40 to 5,000 values: the plain run on any number
    /// of threads and `--part K/N` states merged give the same bytes; the
    /// list is the true top 20 with exact counts, the most frequent value
    /// first; and a listed segment's statistics are, byte for byte, those
    /// of a week holding only its records (with the per-segment caps).
    #[test]
    fn segments_of_many_values_are_exact_for_any_threads_and_parts(
        distinct in 40usize..=5000,
        seed in any::<u64>(),
        n in 1u8..=PARTS,
        threads in 1usize..5,
        pick in any::<u64>(),
    ) {
        runtime().block_on(async {
            let recs = many_valued(distinct, seed);
            let store = store_with(&recs).await;
            let opts = SummaryOptions { segment_by: Some("user".into()), page_size: 50, threads, ..SummaryOptions::default() };
            let plain = plain_run(&store, &opts).await;
            let mut files = Vec::new();
            for k in 1..=n {
                files.push(part_file(&store, k, n, &opts).await);
            }
            let merged = merged(files, &SummaryOptions { threads: 1, ..opts.clone() }).await;
            assert_same(&plain, &merged, &format!("distinct={distinct} n={n} threads={threads}"));

            let summary: Summary = serde_json::from_slice(&plain[SUMMARY_JSON]).unwrap();
            let segments = summary.segments.unwrap();
            let mut counts: HashMap<&str, u64> = HashMap::new();
            recs.iter().for_each(|r| *counts.entry(user_of(r)).or_default() += 1);
            let mut top: Vec<(&str, u64)> = counts.iter().map(|(v, n)| (*v, *n)).collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            top.truncate(20);
            let listed: Vec<(&str, u64)> = segments.values.iter().map(|s| (s.value.as_str(), s.records)).collect();
            prop_assert_eq!(&listed, &top);
            prop_assert_eq!(segments.values[0].records, *counts.values().max().unwrap());
            prop_assert_eq!(segments.other_records, recs.len() as u64 - top.iter().map(|t| t.1).sum::<u64>());

            let segment_opts = SummaryOptions {
                segment_by: None,
                max_paths: opts.max_paths.min(200),
                exact_distinct_limit: opts.exact_distinct_limit.min(1000),
                ..opts.clone()
            };
            let other = 1 + pick as usize % (segments.values.len() - 1);
            for s in [&segments.values[0], &segments.values[other]] {
                let only: Vec<Record> = recs.iter().filter(|r| user_of(r) == s.value).cloned().collect();
                let reference = plain_run(&store_with(&only).await, &segment_opts).await;
                let reference: Summary = serde_json::from_slice(&reference[SUMMARY_JSON]).unwrap();
                prop_assert_eq!(s.records, reference.records);
                prop_assert!(s.fields == reference.fields, "{}: the segment's fields differ from its own week's", s.value);
            }
            Ok(())
        })?;
    }
}

/// A scan hook that adds `late` (one record) to the store at its `at`-th
/// scan, before that scan reads: a record imported while the week is being
/// summarized, between the first read and the second pass of its segments.
#[derive(Debug)]
struct LateRecord {
    calls: std::sync::atomic::AtomicUsize,
    at: usize,
    late: Record,
}

impl ScanHook for LateRecord {
    fn scan<'a>(
        &'a self,
        inner: &'a dyn RecordStore,
        from: tally_core::RecordId,
        to: tally_core::RecordId,
        page_size: usize,
    ) -> tally_core::ports::RecordPages<'a> {
        use futures::StreamExt;
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let add = async move {
            if call == self.at {
                inner.insert(std::slice::from_ref(&self.late), None).await.unwrap();
            }
        };
        futures::stream::once(add).map(move |()| inner.scan_range(from, to, page_size)).flatten().boxed()
    }
}

/// The second pass reads the store again: a record of a recounted value
/// arriving between the reads makes the counts disagree, and the run fails
/// without committing anything (its message says to run again); the rerun
/// counts the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_added_between_the_two_reads_fails_the_run_and_the_rerun_counts_it() {
    let recs = many_valued(300, 4);
    let opts = SummaryOptions { segment_by: Some("user".into()), threads: 2, ..SummaryOptions::default() };
    // A listed value that the second pass recounts: the fold of the 28
    // parts (as the run computes it) kept no aggregator of it whole.
    let recounted = {
        let mut fold: Option<Aggregator> = None;
        for part in Part::all() {
            let (from, to) = part.range(week());
            let mut agg = Aggregator::new(week(), &opts);
            recs.iter().filter(|r| from <= r.id && r.id < to).for_each(|r| {
                agg.push(r);
            });
            match &mut fold {
                Some(acc) => acc.merge(agg).unwrap(),
                None => fold = Some(agg),
            }
        }
        let recount = fold.unwrap().segment_recount().expect("300 values: some listed ones are recounted");
        recount.values().next().unwrap().to_owned()
    };
    let at = week().start();
    let late = Record {
        id: tally_core::RecordId::deterministic(at, b"late", 0),
        received_at: at,
        data: format!(r#"{{"user":"{recounted}","amount":1}}"#),
    };
    // The first pass reads 28 parts; the 29th read is the second pass's first.
    let store = HookedScans::new(
        Arc::new(store_with(&recs).await),
        LateRecord { calls: Default::default(), at: usize::from(PARTS) + 1, late: late.clone() },
    );
    let sink = MemorySummarySink::default();
    let err = summarize_week(&store, &sink, &clock(), week(), &opts, &NoProgress).await.unwrap_err();
    assert!(matches!(err, SummarizeError::Recount { .. }), "{err:?}");
    let chain = tally_core::error_chain(&err);
    assert!(chain.contains("run the week again") && chain.contains(&recounted), "{chain}");
    assert!(sink.read_object(week(), MANIFEST_JSON).await.unwrap().is_none(), "a failed run commits nothing");

    summarize_week(&store, &sink, &clock(), week(), &opts, &NoProgress).await.unwrap();
    let summary: Summary =
        serde_json::from_slice(&sink.read_object(week(), SUMMARY_JSON).await.unwrap().unwrap()).unwrap();
    let segments = summary.segments.unwrap();
    let segment = segments.values.iter().find(|s| s.value == recounted).unwrap();
    let before = recs.iter().filter(|r| user_of(r) == recounted).count() as u64;
    assert_eq!(segment.records, before + 1);
}
