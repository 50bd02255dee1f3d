//! `tally summarize --part K/N --state-out FILE` and `--merge FILE...`: a
//! week computed in pieces (on several machines, or one after another) and
//! combined. The part states and their fold are tally-core's
//! (`tally_core::summary::state`); this module only moves files.
//!
//! A state file is part states back to back. `--merge` first reads every
//! file's headers only (seeking past the bodies), checks that the week's 28
//! parts are all there exactly once and made with the same options, and
//! only then starts the run, loading one part at a time in canonical order:
//! memory stays one part's state and export, however big the week.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use async_trait::async_trait;
use tally_core::IsoWeek;
use tally_core::summary::{
    Part, PartHeader, PartSource, PartState, StateError, SummaryOptions, check_parts, ensure_not_pruned, read_header,
    summarize_parts,
};

use crate::config::SummarizeArgs;
use crate::progress::CliProgress;
use crate::{Storage, notifiers, open_storage, weekly};

pub async fn summarize_part(args: &SummarizeArgs, week: IsoWeek, (k, n): (u8, u8), out: &Path) -> anyhow::Result<()> {
    let parts: Vec<Part> =
        Part::assigned(k, n).with_context(|| format!("--part {k}/{n}: expected 1 <= K <= N <= 28"))?.collect();
    let options = args.summary.options();
    let Storage { store, sink, .. } = open_storage(&args.storage, args.folder.out.as_deref()).await?;
    // A pruned week's part would be empty: refuse before any state is written.
    ensure_not_pruned(store.as_ref(), sink.as_ref(), week).await?;
    // Written beside the target and renamed over it once complete: a failed
    // run never leaves a truncated state file where a merge would find it.
    let tmp = tmp_path(out);
    let file = File::create(&tmp)
        .with_context(|| format!("cannot create {}; check the directory and permissions", tmp.display()))?;
    let mut writer = BufWriter::new(file);
    let progress = CliProgress::new(1, false);
    let result = summarize_parts(store.as_ref(), week, &options, parts.iter().copied(), &progress, &mut |_, bytes| {
        writer.write_all(&bytes).map_err(Into::into)
    })
    .await;
    progress.finish();
    let written = result.and_then(|records| {
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map(|()| records)
            .map_err(|e| tally_core::summary::SummarizeError::Encode { week, object: "part state", source: e })
    });
    let records = match written {
        Ok(records) => records,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).context(format!(
                "part {k}/{n} of {week} failed and wrote no state; fix the cause and run the same command again"
            ));
        }
    };
    std::fs::rename(&tmp, out).with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()))?;
    let (first, last) = (parts[0].index(), parts[parts.len() - 1].index());
    println!("{week}  part {k}/{n} (parts {first}–{last})  {records:>10} records  {}", out.display());
    Ok(())
}

fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    out.with_file_name(name)
}

pub async fn merge(args: &SummarizeArgs, week: IsoWeek) -> anyhow::Result<()> {
    let options = args.summary.options();
    let mut source = StateFiles::open(&args.merge, week, &options)?;
    let notifiers = notifiers(&args.notify)?;
    let storage = open_storage(&args.storage, args.folder.out.as_deref()).await?;
    let progress = CliProgress::new(1, false);
    // Under the week's lock, as any run of the week; announced like a plain
    // run (a failed delivery is logged and does not fail the command).
    let weekly = weekly(&storage, options, None, "tally summarize --merge").with_notifiers(notifiers);
    let result = weekly.merged(week, &mut source, &progress).await;
    progress.finish();
    let report = result
        .context(
            "the merge failed; nothing was committed for that week — fix the cause and run the same command again",
        )?
        .report;
    let location = storage.location;
    println!(
        "{}  {:>10} records  {}/summaries/{}/summary.html",
        report.week,
        report.records,
        location.trim_end_matches('/'),
        report.week
    );
    Ok(())
}

/// The part states of a set of files, indexed by their headers.
struct StateFiles {
    files: Vec<(PathBuf, File)>,
    /// Part → (file, offset, length).
    index: HashMap<Part, (usize, u64, u64)>,
    week: IsoWeek,
    options: SummaryOptions,
}

impl StateFiles {
    fn open(paths: &[PathBuf], week: IsoWeek, options: &SummaryOptions) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        let mut headers: Vec<PartHeader> = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let file = File::open(path)
                .with_context(|| format!("cannot open the state file {}; check the path", path.display()))?;
            let len = file.metadata()?.len();
            let mut reader = BufReader::new(&file);
            loop {
                let at = reader.stream_position()?;
                let header = read_header(&mut reader).with_context(|| format!("in {}", path.display()))?;
                let Some(header) = header else { break };
                if at + header.total_len() > len {
                    bail!(
                        "{} ends inside {}: the file is truncated; make it again with `tally summarize --week {week} --part K/N --state-out FILE`",
                        path.display(),
                        header.part
                    );
                }
                reader.seek_relative(header.body_len() as i64)?;
                if let Some((j, ..)) = index.insert(header.part, (i, at, header.total_len())) {
                    bail!(
                        "{} of {week} is in both {} and {}; pass each part once (the files of one `--part K/N` split)",
                        header.part,
                        paths[j].display(),
                        path.display()
                    );
                }
                tally_core::summary::check_header(&header, week, options)
                    .with_context(|| format!("in {}", path.display()))?;
                headers.push(header);
            }
            files.push((path.clone(), file));
        }
        check_parts(week, options, &headers)?;
        Ok(Self { files, index, week, options: options.clone() })
    }
}

#[async_trait]
impl PartSource for StateFiles {
    async fn load(&mut self, part: Part) -> Result<PartState, StateError> {
        let week = self.week;
        let &(i, at, len) = self.index.get(&part).ok_or(StateError::Missing { week, parts: vec![part] })?;
        let (path, file) = &mut self.files[i];
        file.seek(SeekFrom::Start(at))?;
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        file.read_exact(&mut bytes)?;
        PartState::from_bytes(&bytes, week, &self.options).map_err(|e| match e {
            StateError::Corrupt(why) => StateError::Corrupt(format!("{why}, in {}", path.display())),
            e => e,
        })
    }
}
