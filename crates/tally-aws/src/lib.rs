//! tally on AWS — driven adapters of the hexagon: [`DynamoDbRecordStore`]
//! implements [`RecordStore`](tally_core::RecordStore) and
//! [`RecordLifecycle`](tally_core::RecordLifecycle), [`S3SummarySink`]
//! implements [`SummarySink`](tally_core::SummarySink) and [`S3WeekRefresh`]
//! [`WeekRefresh`](tally_core::ports::WeekRefresh), [`SnsNotifier`]
//! [`Notifier`](tally_core::ports::Notifier).
//!
//! This is the only crate that depends on the AWS SDK; it must not depend on
//! HTTP or Lambda crates. [`connect`] builds both adapters from an
//! [`AwsConfig`] (the CLI's `--store dynamodb` flags, or the Lambda's env).
//!
//! # Layout
//! - [`dynamo`]: records, week markers and idempotency keys in one table.
//! - [`s3`]: summaries under `<prefix>summaries/<week>/`, manifest last;
//!   refresh requests beside them.
//! - [`batch`]: batches larger than one transaction, staged under a marker.
//! - [`lease`]: one summary run per week at a time (the weekly Lambda).
//! - [`sns`]: the weekly report announced on an SNS topic (e-mail).

pub mod batch;
pub mod dynamo;
pub mod lease;
pub mod s3;
pub mod sns;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

pub use dynamo::DynamoDbRecordStore;
pub use lease::DynamoDbWeekLease;
pub use s3::{S3SummarySink, S3WeekRefresh};
pub use sns::SnsNotifier;
pub use tally_core::retry::RetryPolicy;

/// Where tally's data lives in AWS (or in an emulator).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsConfig {
    /// DynamoDB table name.
    pub table: String,
    /// S3 bucket name (no `s3://`).
    pub bucket: String,
    /// Key prefix inside the bucket, e.g. `tally/` (a trailing `/` is added if missing).
    pub prefix: Option<String>,
    /// Endpoint override, e.g. `http://127.0.0.1:5000` for moto or LocalStack.
    /// S3 then uses path-style addressing.
    pub endpoint_url: Option<String>,
    /// Region override; otherwise the SDK's default chain (env, profile, IMDS).
    pub region: Option<String>,
    /// Time one DynamoDB request attempt may take before it is retried
    /// [default: [`DEFAULT_ATTEMPT_TIMEOUT`]]. Raise it only for slow
    /// emulators: the default keeps an API request within API Gateway's 29 s.
    pub attempt_timeout: Option<Duration>,
}

/// One DynamoDB request attempt; the whole operation, retries included, gets four times this.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an [`AwsConfig`] cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the DynamoDB table name is empty; pass --table NAME")]
    NoTable,
    #[error("{0:?} is not a bucket: use s3://BUCKET or s3://BUCKET/PREFIX")]
    BadBucket(String),
}

impl AwsConfig {
    /// Builds a config from a table name and a bucket given as `s3://B`,
    /// `s3://B/prefix` or plain `B`.
    pub fn new(table: impl Into<String>, bucket_url: &str) -> Result<Self, ConfigError> {
        let (bucket, prefix) = parse_bucket_url(bucket_url)?;
        let config = Self { table: table.into(), bucket, prefix, ..Self::default() };
        if config.table.is_empty() {
            return Err(ConfigError::NoTable);
        }
        Ok(config)
    }

    pub fn with_endpoint_url(mut self, url: Option<String>) -> Self {
        self.endpoint_url = url;
        self
    }

    pub fn with_attempt_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    pub fn with_region(mut self, region: Option<String>) -> Self {
        self.region = region;
        self
    }
}

/// Splits `s3://bucket/some/prefix` into `("bucket", Some("some/prefix/"))`.
pub fn parse_bucket_url(url: &str) -> Result<(String, Option<String>), ConfigError> {
    let rest = url.strip_prefix("s3://").unwrap_or(url);
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid {
        return Err(ConfigError::BadBucket(url.chars().take(80).collect()));
    }
    let prefix = prefix.trim_matches('/');
    Ok((bucket.to_owned(), (!prefix.is_empty()).then(|| format!("{prefix}/"))))
}

/// The shared SDK configuration: default credential chain, optional region
/// and endpoint overrides.
pub async fn sdk_config(config: &AwsConfig) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// A DynamoDB client whose attempt timeout (default [`DEFAULT_ATTEMPT_TIMEOUT`])
/// is short enough to answer within API Gateway's 29 s even after the SDK's
/// own retries.
pub fn dynamodb_client(sdk: &SdkConfig, attempt_timeout: Option<Duration>) -> aws_sdk_dynamodb::Client {
    let attempt = attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt * 4)
        .build();
    aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(sdk).timeout_config(timeouts).build())
}

/// An S3 client; path-style when an endpoint override is set (emulators
/// rarely resolve `bucket.host` names).
pub fn s3_client(sdk: &SdkConfig, force_path_style: bool) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(force_path_style).build())
}

/// An SNS client (the report notifications of `tally-weekly`).
pub fn sns_client(sdk: &SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(sdk)
}

/// Builds both adapters. Makes no request: a missing table or bucket shows
/// up on first use.
pub async fn connect(config: &AwsConfig) -> anyhow::Result<(DynamoDbRecordStore, S3SummarySink)> {
    if config.table.is_empty() {
        return Err(ConfigError::NoTable.into());
    }
    parse_bucket_url(&config.bucket)?;
    let sdk = sdk_config(config).await;
    let store = DynamoDbRecordStore::new(dynamodb_client(&sdk, config.attempt_timeout), config.table.clone());
    let sink = S3SummarySink::new(
        s3_client(&sdk, config.endpoint_url.is_some()),
        config.bucket.clone(),
        config.prefix.clone(),
    );
    Ok((store, sink))
}

/// Whether an SDK error is worth a retry by the client (503) rather than a
/// bug or misconfiguration (500): timeouts, network trouble, unreadable
/// responses, and service errors whose code is [transient](is_transient_code).
pub(crate) fn is_transient<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    err: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    use aws_sdk_dynamodb::error::SdkError;
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => e.err().code().is_some_and(is_transient_code),
        _ => false,
    }
}

/// Error codes worth a retry by the client: throttling and server faults.
pub(crate) fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "TransactionInProgressException"
            | "LimitExceededException"
            | "InternalServerError"
            | "InternalError"
            | "ServiceUnavailable"
            | "SlowDown"
            | "RequestTimeout"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls() {
        assert_eq!(parse_bucket_url("s3://my-bucket").unwrap(), ("my-bucket".into(), None));
        assert_eq!(parse_bucket_url("my-bucket").unwrap(), ("my-bucket".into(), None));
        assert_eq!(parse_bucket_url("s3://b.c/x/y/").unwrap(), ("b.c".into(), Some("x/y/".into())));
        for bad in ["", "s3://", "s3://UPPER", "s3://a", "s3://a_b/x"] {
            assert!(parse_bucket_url(bad).is_err(), "{bad}");
        }
        let c = AwsConfig::new("t", "s3://bkt/p").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_deref()), ("bkt", Some("p/")));
        assert!(AwsConfig::new("", "s3://bkt").is_err());
    }
}
