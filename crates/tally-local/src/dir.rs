//! A directory as the summary bucket: the local stand-in for S3.
//!
//! # Layout
//! ```text
//! <root>/summaries/2026-W47/records.ndjson.gz
//!                           summary.json
//!                           summary.html
//!                           manifest.json        ← written last: the week is complete
//!                           .summary.json.<pid>-<n>.tmp   (only while being written)
//! ```
//! Keys reported in [`ObjectInfo`] are the paths relative to `<root>`, so they
//! match the S3 sink's keys object for object.
//!
//! # Atomicity
//! Every object is written to a temp file in the same directory, fsynced, then
//! renamed over its final name, and the directory is fsynced: a reader sees
//! the old object or the new one, never a torn one, even across a crash.
//! Streamed uploads write to their temp file and are renamed on `finish`;
//! `abort` (or dropping the upload) deletes the temp file. One writer per week
//! at a time is assumed (the summarize service is the only writer).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tally_core::IsoWeek;
use tally_core::ports::{ObjectInfo, ObjectUpload, SinkError, SummarySink, check_object_name};

const PREFIX: &str = "summaries";
const MANIFEST: &str = "manifest.json";
const TMP_SUFFIX: &str = ".tmp";

/// Summaries under `<root>/summaries/<week>/`.
#[derive(Debug, Clone)]
pub struct DirSummarySink {
    root: PathBuf,
}

impl DirSummarySink {
    /// The directory is created on first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/summaries/<week>`.
    pub fn week_dir(&self, week: IsoWeek) -> PathBuf {
        self.root.join(PREFIX).join(week.to_string())
    }

    fn object_path(&self, week: IsoWeek, name: &str) -> Result<PathBuf, SinkError> {
        check_object_name(name)?;
        Ok(self.week_dir(week).join(name))
    }
}

fn key(week: IsoWeek, name: &str) -> String {
    format!("{PREFIX}/{week}/{name}")
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> SinkError {
    move |e| SinkError::internal(what, e)
}

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}-{n}{TMP_SUFFIX}", std::process::id()))
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `body` to `dest` atomically and durably.
fn write_atomic(dest: &Path, body: &[u8]) -> io::Result<()> {
    let dir = dest.parent().ok_or_else(|| io::Error::other("object path has no parent"))?;
    fs::create_dir_all(dir)?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("object");
    let tmp = temp_path(dir, name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| SinkError::internal("summary sink task failed", e))?
}

fn info(week: IsoWeek, name: &str, body: &[u8]) -> ObjectInfo {
    ObjectInfo { key: key(week, name), bytes: body.len() as u64, sha256: hex::encode(Sha256::digest(body)) }
}

#[async_trait]
impl SummarySink for DirSummarySink {
    async fn begin_week(&self, week: IsoWeek) -> Result<(), SinkError> {
        let dir = self.week_dir(week);
        blocking(move || {
            match fs::remove_file(dir.join(MANIFEST)) {
                Ok(()) => sync_dir(&dir).map_err(io_err(format!("cannot sync {}", dir.display())))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SinkError::internal(format!("cannot remove the manifest of {week}"), e)),
            }
            // Temp files left by a run that crashed: nobody else writes here.
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn put_object(
        &self,
        week: IsoWeek,
        name: &str,
        _content_type: &str,
        body: Bytes,
    ) -> Result<ObjectInfo, SinkError> {
        let dest = self.object_path(week, name)?;
        let info = info(week, name, &body);
        blocking(move || {
            write_atomic(&dest, &body).map_err(io_err(format!("cannot write {}", dest.display())))?;
            Ok(info)
        })
        .await
    }

    async fn put_index(&self, name: &str, _content_type: &str, body: Bytes) -> Result<ObjectInfo, SinkError> {
        check_object_name(name)?;
        let dest = self.root.join(PREFIX).join(name);
        let info = ObjectInfo {
            key: format!("{PREFIX}/{name}"),
            bytes: body.len() as u64,
            sha256: hex::encode(Sha256::digest(&body)),
        };
        blocking(move || {
            write_atomic(&dest, &body).map_err(io_err(format!("cannot write {}", dest.display())))?;
            Ok(info)
        })
        .await
    }

    async fn open_object(
        &self,
        week: IsoWeek,
        name: &str,
        _content_type: &str,
    ) -> Result<Box<dyn ObjectUpload>, SinkError> {
        let dest = self.object_path(week, name)?;
        let key = key(week, name);
        let name = name.to_owned();
        blocking(move || {
            let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
            fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
            let tmp = temp_path(&dir, &name);
            let file = File::create(&tmp).map_err(io_err(format!("cannot create {}", tmp.display())))?;
            Ok(Box::new(DirUpload { file: Some(file), tmp, dest, key, hasher: Sha256::new(), bytes: 0, done: false })
                as Box<dyn ObjectUpload>)
        })
        .await
    }

    async fn commit_week(&self, week: IsoWeek, manifest: Bytes) -> Result<ObjectInfo, SinkError> {
        self.put_object(week, MANIFEST, "application/json", manifest).await
    }

    async fn read_object(&self, week: IsoWeek, name: &str) -> Result<Option<Bytes>, SinkError> {
        let path = self.object_path(week, name)?;
        blocking(move || match fs::read(&path) {
            Ok(body) => Ok(Some(Bytes::from(body))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SinkError::internal(format!("cannot read {}", path.display()), e)),
        })
        .await
    }

    async fn delete_object(&self, week: IsoWeek, name: &str) -> Result<(), SinkError> {
        let path = self.object_path(week, name)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SinkError::internal(format!("cannot delete {}", path.display()), e)),
        })
        .await
    }

    async fn list_weeks(&self) -> Result<Vec<IsoWeek>, SinkError> {
        let dir = self.root.join(PREFIX);
        blocking(move || {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(SinkError::internal(format!("cannot list {}", dir.display()), e)),
            };
            let mut weeks = Vec::new();
            for entry in entries {
                let entry = entry.map_err(io_err(format!("cannot list {}", dir.display())))?;
                let Some(week) = entry.file_name().to_str().and_then(|n| IsoWeek::parse(n).ok()) else {
                    continue;
                };
                if entry.path().join(MANIFEST).is_file() {
                    weeks.push(week);
                }
            }
            weeks.sort_unstable();
            Ok(weeks)
        })
        .await
    }

    async fn read_index(&self, name: &str) -> Result<Option<Bytes>, SinkError> {
        check_object_name(name)?;
        let path = self.root.join(PREFIX).join(name);
        blocking(move || match fs::read(&path) {
            Ok(body) => Ok(Some(Bytes::from(body))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SinkError::internal(format!("cannot read {}", path.display()), e)),
        })
        .await
    }
}

/// A streamed upload into a temp file, renamed into place on `finish`.
#[derive(Debug)]
struct DirUpload {
    /// `None` only while a blocking write owns it.
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    key: String,
    hasher: Sha256,
    bytes: u64,
    done: bool,
}

impl DirUpload {
    fn take_file(&mut self) -> Result<File, SinkError> {
        self.file
            .take()
            .ok_or_else(|| SinkError::Internal { message: "upload used after a failed write".into(), source: None })
    }
}

#[async_trait]
impl ObjectUpload for DirUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.hasher.update(&chunk);
        self.bytes += chunk.len() as u64;
        let mut file = self.take_file()?;
        let tmp = self.tmp.clone();
        let file = blocking(move || {
            file.write_all(&chunk).map_err(io_err(format!("cannot write {}", tmp.display())))?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectInfo, SinkError> {
        let file = self.take_file()?;
        let (tmp, dest) = (self.tmp.clone(), self.dest.clone());
        blocking(move || {
            let result = (|| {
                file.sync_all()?;
                drop(file);
                fs::rename(&tmp, &dest)?;
                sync_dir(dest.parent().unwrap_or(Path::new(".")))
            })();
            result.map_err(io_err(format!("cannot finish {}", dest.display())))
        })
        .await?;
        self.done = true;
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        Ok(ObjectInfo { key: std::mem::take(&mut self.key), bytes: self.bytes, sha256 })
    }

    async fn abort(mut self: Box<Self>) -> Result<(), SinkError> {
        self.file = None;
        let tmp = self.tmp.clone();
        self.done = true;
        blocking(move || match fs::remove_file(&tmp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SinkError::internal(format!("cannot remove {}", tmp.display()), e)),
        })
        .await
    }
}

impl Drop for DirUpload {
    /// An upload dropped without `finish` or `abort` (a panic, a cancelled
    /// task) must not leave its temp file behind.
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn week() -> IsoWeek {
        IsoWeek::parse("2026-W47").unwrap()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn folder_sink_meets_the_sink_contract() {
        let root = tempfile::tempdir().unwrap();
        let sink = DirSummarySink::new(root.path());
        tally_core::testing::sink_contract(&sink).await;
        // The contract's objects are whole files, with no temp file left beside them.
        let mut left = files_in(&sink.week_dir(week()));
        left.retain(|n| n.starts_with('.'));
        assert_eq!(left, Vec::<String>::new());
    }

    #[tokio::test]
    async fn put_replaces_an_object_whole_and_leaves_no_temp_file() {
        let root = tempfile::tempdir().unwrap();
        let sink = DirSummarySink::new(root.path());
        sink.put_object(week(), "a.json", "", Bytes::from_static(b"first version")).await.unwrap();
        sink.put_object(week(), "a.json", "", Bytes::from_static(b"second")).await.unwrap();
        assert_eq!(sink.read_object(week(), "a.json").await.unwrap().unwrap(), Bytes::from_static(b"second"));
        assert_eq!(files_in(&sink.week_dir(week())), vec!["a.json"]);
    }

    #[tokio::test]
    async fn an_aborted_or_dropped_upload_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let sink = DirSummarySink::new(root.path());
        sink.put_object(week(), "records.ndjson.gz", "", Bytes::from_static(b"old")).await.unwrap();

        let mut up = sink.open_object(week(), "records.ndjson.gz", "").await.unwrap();
        up.write(Bytes::from_static(b"partial")).await.unwrap();
        up.abort().await.unwrap();
        let mut dropped = sink.open_object(week(), "records.ndjson.gz", "").await.unwrap();
        dropped.write(Bytes::from_static(b"partial")).await.unwrap();
        drop(dropped);

        // the previous object is untouched and no temp file remains
        assert_eq!(sink.read_object(week(), "records.ndjson.gz").await.unwrap().unwrap(), &b"old"[..]);
        assert_eq!(files_in(&sink.week_dir(week())), vec!["records.ndjson.gz"]);
    }

    #[tokio::test]
    async fn begin_week_clears_temp_files_of_a_crashed_run() {
        let root = tempfile::tempdir().unwrap();
        let sink = DirSummarySink::new(root.path());
        fs::create_dir_all(sink.week_dir(week())).unwrap();
        fs::write(sink.week_dir(week()).join(".summary.json.1-0.tmp"), b"torn").unwrap();
        sink.begin_week(week()).await.unwrap();
        assert!(files_in(&sink.week_dir(week())).is_empty());
    }

    #[tokio::test]
    async fn directories_that_are_not_weeks_are_ignored() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("summaries/not-a-week")).unwrap();
        fs::write(root.path().join("summaries/not-a-week/manifest.json"), b"{}").unwrap();
        let sink = DirSummarySink::new(root.path());
        assert!(sink.list_weeks().await.unwrap().is_empty());
    }
}
