//! [`SummarySink`] on an S3 bucket.
//!
//! # Object layout
//! ```text
//! <prefix>summaries/2026-W47/summary.json        PutObject, SHA-256 checksum
//! <prefix>summaries/2026-W47/records.ndjson.gz   multipart upload, SHA-256 per part
//! <prefix>summaries/2026-W47/manifest.json       written last; readers trust only weeks with one
//! <prefix>summaries/2026-W47/refresh.request     empty; "rewrite this week" ([`S3WeekRefresh`])
//! ```
//! A streamed upload buffers up to the part size (8 MiB by default; S3 wants
//! at least 5 MiB for every part but the last), is aborted on error or when
//! dropped unfinished, and falls back to one PutObject when it never filled a
//! part. Nothing is visible under the key until it completes.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tally_core::IsoWeek;
use tally_core::ports::{ObjectInfo, ObjectUpload, SinkError, SummarySink, WeekRefresh, check_object_name};
use tracing::instrument;

/// Default multipart part size.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
const MANIFEST: &str = "manifest.json";
/// The object name of a refresh request; no summary object ends like it, so
/// the weekly function's own writes never match the notification filter.
pub const REFRESH_REQUEST: &str = "refresh.request";

/// tally's weekly summaries in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3SummarySink {
    client: Client,
    bucket: String,
    /// Empty or ending in `/`.
    prefix: String,
    part_size: usize,
}

impl S3SummarySink {
    /// One object's bytes, `None` when the key does not exist.
    async fn get(&self, key: String) -> Result<Option<Bytes>, SinkError> {
        let result = self.client.get_object().bucket(&self.bucket).key(key).send().await;
        let out = match result {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => return Ok(None),
            Err(e) => return Err(classify("GetObject", e)),
        };
        let body = out.body.collect().await.map_err(|e| SinkError::Unavailable {
            message: "reading an object from S3 failed".into(),
            source: Some(Box::new(e)),
        })?;
        Ok(Some(body.into_bytes()))
    }

    /// `prefix` is prepended to every key (a `/` is added if it lacks one).
    pub fn new(client: Client, bucket: impl Into<String>, prefix: Option<String>) -> Self {
        let prefix = match prefix.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => String::new(),
            Some(p) => format!("{p}/"),
        };
        Self { client, bucket: bucket.into(), prefix, part_size: DEFAULT_PART_SIZE }
    }

    /// Sets the multipart part size. Real S3 rejects parts under 5 MiB (but
    /// the last); tests lower it together with moto's `S3_UPLOAD_PART_MIN_SIZE`.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Lists every object under the summaries prefix (the SDK's paginator,
    /// page by page) and returns the distinct weeks `week_of` finds in their
    /// keys, ascending.
    async fn weeks_of_objects(&self, week_of: impl Fn(&str) -> Option<IsoWeek>) -> Result<Vec<IsoWeek>, SinkError> {
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(self.weeks_prefix()).into_paginator().send();
        let mut weeks = Vec::new();
        while let Some(out) = pages.try_next().await.map_err(|e| classify("ListObjectsV2", e))? {
            weeks.extend(out.contents().iter().filter_map(|o| o.key()).filter_map(&week_of));
        }
        weeks.sort();
        weeks.dedup();
        Ok(weeks)
    }

    fn weeks_prefix(&self) -> String {
        format!("{}summaries/", self.prefix)
    }

    fn key(&self, week: IsoWeek, name: &str) -> Result<String, SinkError> {
        check_object_name(name)?;
        Ok(format!("{}{week}/{name}", self.weeks_prefix()))
    }
}

/// [`WeekRefresh`] on AWS: a request is the empty object
/// `<prefix>summaries/<week>/refresh.request` in the summary bucket. Its
/// creation is the event that starts the weekly function, which rewrites the
/// week and then deletes the object ([`done`](WeekRefresh::done)). Writing it again
/// while one is pending just makes another event, so a request is never lost
/// to an in-flight run; the weekly function coalesces the extra runs.
#[derive(Debug, Clone)]
pub struct S3WeekRefresh {
    sink: S3SummarySink,
}

impl S3WeekRefresh {
    /// Requests in the same bucket and under the same prefix as `sink`'s summaries.
    pub fn new(sink: &S3SummarySink) -> Self {
        Self { sink: sink.clone() }
    }

    pub fn bucket(&self) -> &str {
        &self.sink.bucket
    }

    /// The key of `week`'s request.
    pub fn key(&self, week: IsoWeek) -> String {
        format!("{}{week}/{REFRESH_REQUEST}", self.sink.weeks_prefix())
    }

    /// The keys of requests, for messages: `<prefix>summaries/<week>/refresh.request`.
    pub fn key_pattern(&self) -> String {
        format!("{}<week>/{REFRESH_REQUEST}", self.sink.weeks_prefix())
    }

    /// The week a request's key names; `None` for any other key (another
    /// prefix, another object of the week, not a week).
    pub fn week_of(&self, key: &str) -> Option<IsoWeek> {
        let week = key.strip_prefix(&self.sink.weeks_prefix())?.strip_suffix(REFRESH_REQUEST)?.strip_suffix('/')?;
        IsoWeek::parse(week).ok()
    }
}

#[async_trait]
impl WeekRefresh for S3WeekRefresh {
    /// One PutObject of an empty body: durable once it returns.
    #[instrument(skip_all, fields(bucket = %self.sink.bucket, week = %week))]
    async fn request(&self, week: IsoWeek) -> Result<(), SinkError> {
        put_whole(&self.sink.client, &self.sink.bucket, self.key(week), "application/octet-stream", Bytes::new())
            .await
            .map(drop)
    }

    /// Weeks with a request still in the bucket, ascending: requests whose run
    /// failed for good (dead-lettered) or never came. The scheduled run
    /// rewrites them too.
    #[instrument(skip_all, fields(bucket = %self.sink.bucket))]
    async fn pending(&self) -> Result<Vec<IsoWeek>, SinkError> {
        self.sink.weeks_of_objects(|key| self.week_of(key)).await
    }

    /// Removes `week`'s request once the week is rewritten. A request written
    /// in the meantime has made its own event already, so deleting the object
    /// loses nothing.
    #[instrument(skip_all, fields(bucket = %self.sink.bucket, week = %week))]
    async fn done(&self, week: IsoWeek) -> Result<(), SinkError> {
        let sink = &self.sink;
        sink.client
            .delete_object()
            .bucket(&sink.bucket)
            .key(self.key(week))
            .send()
            .await
            .map_err(|e| classify("DeleteObject", e))?;
        Ok(())
    }
}

#[async_trait]
impl SummarySink for S3SummarySink {
    #[instrument(skip_all, fields(bucket = %self.bucket, week = %week))]
    async fn begin_week(&self, week: IsoWeek) -> Result<(), SinkError> {
        self.delete_object(week, MANIFEST).await
    }

    #[instrument(skip_all, fields(bucket = %self.bucket, week = %week, name, bytes = body.len()))]
    async fn put_object(
        &self,
        week: IsoWeek,
        name: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<ObjectInfo, SinkError> {
        put_whole(&self.client, &self.bucket, self.key(week, name)?, content_type, body).await
    }

    async fn put_index(&self, name: &str, content_type: &str, body: Bytes) -> Result<ObjectInfo, SinkError> {
        check_object_name(name)?;
        put_whole(&self.client, &self.bucket, format!("{}{name}", self.weeks_prefix()), content_type, body).await
    }

    #[instrument(skip_all, fields(bucket = %self.bucket, week = %week, name))]
    async fn open_object(
        &self,
        week: IsoWeek,
        name: &str,
        content_type: &str,
    ) -> Result<Box<dyn ObjectUpload>, SinkError> {
        Ok(Box::new(S3Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: self.key(week, name)?,
            content_type: content_type.to_owned(),
            part_size: self.part_size,
            buf: Vec::new(),
            hasher: Sha256::new(),
            bytes: 0,
            upload_id: None,
            parts: Vec::new(),
            done: false,
        }))
    }

    #[instrument(skip_all, fields(bucket = %self.bucket, week = %week))]
    async fn commit_week(&self, week: IsoWeek, manifest: Bytes) -> Result<ObjectInfo, SinkError> {
        put_whole(&self.client, &self.bucket, self.key(week, MANIFEST)?, "application/json", manifest).await
    }

    #[instrument(skip_all, fields(bucket = %self.bucket, week = %week, name))]
    async fn read_object(&self, week: IsoWeek, name: &str) -> Result<Option<Bytes>, SinkError> {
        self.get(self.key(week, name)?).await
    }

    #[instrument(skip_all, fields(bucket = %self.bucket, week = %week, name))]
    async fn delete_object(&self, week: IsoWeek, name: &str) -> Result<(), SinkError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(week, name)?)
            .send()
            .await
            .map_err(|e| classify("DeleteObject", e))?;
        Ok(())
    }

    #[instrument(skip_all, fields(bucket = %self.bucket))]
    async fn list_weeks(&self) -> Result<Vec<IsoWeek>, SinkError> {
        let prefix = self.weeks_prefix();
        self.weeks_of_objects(|key| {
            key.strip_prefix(&prefix)?.strip_suffix("/manifest.json").and_then(|w| IsoWeek::parse(w).ok())
        })
        .await
    }

    #[instrument(skip_all, fields(bucket = %self.bucket, name))]
    async fn read_index(&self, name: &str) -> Result<Option<Bytes>, SinkError> {
        check_object_name(name)?;
        self.get(format!("{}{name}", self.weeks_prefix())).await
    }
}

fn sha256_b64(digest: &[u8]) -> String {
    aws_smithy_types::base64::encode(digest)
}

async fn put_whole(
    client: &Client,
    bucket: &str,
    key: String,
    content_type: &str,
    body: Bytes,
) -> Result<ObjectInfo, SinkError> {
    let digest = Sha256::digest(&body);
    let bytes = body.len() as u64;
    client
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type(content_type)
        .checksum_sha256(sha256_b64(&digest))
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| classify("PutObject", e))?;
    Ok(ObjectInfo { key, bytes, sha256: hex::encode(digest) })
}

/// A streamed upload; see the module docs.
#[derive(Debug)]
struct S3Upload {
    client: Client,
    bucket: String,
    key: String,
    content_type: String,
    part_size: usize,
    buf: Vec<u8>,
    /// SHA-256 of the whole object, for the manifest.
    hasher: Sha256,
    bytes: u64,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    /// Completed or aborted: nothing left to clean up.
    done: bool,
}

impl S3Upload {
    async fn upload_part(&mut self, part: Vec<u8>) -> Result<(), SinkError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let out = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type(&self.content_type)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .send()
                    .await
                    .map_err(|e| classify("CreateMultipartUpload", e))?;
                let id = out.upload_id.ok_or_else(|| SinkError::Internal {
                    message: "S3 started a multipart upload without an upload id".into(),
                    source: None,
                })?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let checksum = sha256_b64(&Sha256::digest(&part));
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_sha256(&checksum)
            .body(ByteStream::from(part))
            .send()
            .await
            .map_err(|e| classify("UploadPart", e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .checksum_sha256(out.checksum_sha256.unwrap_or(checksum))
                .build(),
        );
        Ok(())
    }

    async fn finish_inner(&mut self) -> Result<ObjectInfo, SinkError> {
        let rest = std::mem::take(&mut self.buf);
        if self.upload_id.is_none() {
            // Never filled a part: one PutObject is cheaper and just as atomic.
            let info = put_whole(&self.client, &self.bucket, self.key.clone(), &self.content_type, rest.into()).await?;
            self.done = true;
            return Ok(info);
        }
        if !rest.is_empty() {
            self.upload_part(rest).await?;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_upload_id(self.upload_id.clone())
            .multipart_upload(
                CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build(),
            )
            .send()
            .await
            .map_err(|e| classify("CompleteMultipartUpload", e))?;
        self.done = true;
        let digest = std::mem::take(&mut self.hasher).finalize();
        Ok(ObjectInfo { key: self.key.clone(), bytes: self.bytes, sha256: hex::encode(digest) })
    }

    async fn abort_inner(&mut self) -> Result<(), SinkError> {
        self.done = true;
        self.buf = Vec::new();
        let Some(upload_id) = self.upload_id.take() else { return Ok(()) };
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| classify("AbortMultipartUpload", e))?;
        Ok(())
    }

    /// Aborts after a failure, keeping the original error.
    async fn fail(&mut self, err: SinkError) -> SinkError {
        if let Err(abort) = self.abort_inner().await {
            tracing::warn!(error = %tally_core::error_chain(&abort), key = %self.key, "could not abort a failed multipart upload");
        }
        err
    }
}

#[async_trait]
impl ObjectUpload for S3Upload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        if self.done {
            return Err(SinkError::Internal { message: "write after the upload ended".into(), source: None });
        }
        self.hasher.update(&chunk);
        self.bytes += chunk.len() as u64;
        self.buf.extend_from_slice(&chunk);
        while self.buf.len() >= self.part_size {
            let rest = self.buf.split_off(self.part_size);
            let part = std::mem::replace(&mut self.buf, rest);
            if let Err(e) = self.upload_part(part).await {
                return Err(self.fail(e).await);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectInfo, SinkError> {
        match self.finish_inner().await {
            Ok(info) => Ok(info),
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), SinkError> {
        self.abort_inner().await
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(upload_id) = self.upload_id.take() else { return };
        // Dropped mid-upload (a panic, a cancelled future): abort in the
        // background so the parts are not billed forever. The bucket's
        // lifecycle rule for incomplete uploads is the backstop.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let request = self.client.abort_multipart_upload().bucket(&self.bucket).key(&self.key).upload_id(upload_id);
        let key = self.key.clone();
        runtime.spawn(async move {
            if let Err(e) = request.send().await {
                tracing::warn!(error = %tally_core::error_chain(&e), %key, "could not abort a dropped multipart upload");
            }
        });
    }
}

fn classify<E, R>(op: &'static str, err: SdkError<E, R>) -> SinkError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    let transient = crate::is_transient(&err);
    let message = format!("S3 {op} failed ({})", code.as_deref().unwrap_or("no error code"));
    let source = Some(Box::new(err) as tally_core::ports::BoxError);
    if transient { SinkError::Unavailable { message, source } } else { SinkError::Internal { message, source } }
}
