//! tally's Lambda functions — driving adapters of the hexagon, like the CLI.
//!
//! - `tally-api` serves the shared [`tally_http::router`] through
//!   `lambda_http` ([`api_service`]).
//! - `tally-weekly` runs [`tally_core::summary::summarize_week`] when
//!   EventBridge Scheduler invokes it, and rewrites one week when its refresh
//!   request object is created ([`handle_weekly`]).
//!
//! The binaries in `src/bin` only read the environment and wire; the logic is
//! here so tests can run it in-process against moto. This crate holds no
//! domain logic and no SQL; it may use AWS only through `tally-aws`.
//!
//! # Layout
//! - this file: [`FunctionConfig`], the settings both functions read.
//! - [`api`]: the API function's service.
//! - [`weekly`]: the weekly function's events, handler and metrics.
//! - [`s3_event`]: the S3 object-created events that carry refresh requests.

pub mod api;
pub mod s3_event;
pub mod steps;
pub mod weekly;

use std::sync::Arc;

use tally_config::WeeklyArgs;
use tally_core::ports::Notifier;
use tally_core::report_link::{LinkSigner, ReportLinks};
use tally_core::summary::SummaryOptions;

pub use api::{API_REQUEST_TIMEOUT, ApiService, api_service};
pub use weekly::{
    MAX_WEEKS_PER_RUN, Retention, WeekDone, WeekPruned, WeeklyDeps, WeeklyError, WeeklyOutput, WeeklyRequest, emf_line,
    error_chain, handle_weekly, run_weekly,
};

/// The `tally-weekly` handler: a step of the weekly state machine (a payload
/// tagged `"tally"`, see [`steps`]) or a direct invocation ([`handle_weekly`]:
/// the schedule's `{}`, an operator's week or range, a refresh request).
pub async fn handle_weekly_event(
    deps: &WeeklyDeps,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, WeeklyError> {
    if steps::is_step(&event.payload) {
        let function = event.context.env_config.function_name.clone();
        // Boxed: the two handlers' futures together nest too deep for the
        // compiler's layout of one future.
        return Box::pin(steps::handle_step(deps, event.payload, &function)).await.inspect_err(|e| {
            tracing::error!(error = %error_chain(e), "weekly step failed");
        });
    }
    let output = Box::pin(handle_weekly(deps, event)).await?;
    // A struct of strings, numbers and lists always serializes.
    Ok(serde_json::to_value(output).unwrap_or(serde_json::Value::Null))
}

/// Settings both functions read from their environment (set by `template.yaml`).
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionConfig {
    /// `TABLE_NAME`.
    pub table: String,
    /// `BUCKET_NAME`.
    pub bucket: String,
    /// The weekly run's settings (`TALLY_GZIP_LEVEL`, `TALLY_SEGMENT_BY`,
    /// `TALLY_THRESHOLDS`, `TALLY_THREADS`, `TALLY_RETENTION_WEEKS`,
    /// `TALLY_NOTIFY_URL`, `TALLY_PUBLIC_URL`, `TALLY_REPORT_LINK_DAYS`,
    /// `TALLY_LINK_SECRET_ARN`), parsed by `tally_config` exactly as the
    /// `tally` flags of the same names.
    pub weekly: WeeklyArgs,
    /// `TALLY_NOTIFY_SECRET` (optional): signs the webhook's body.
    pub notify_secret: Option<Secret>,
    /// `TALLY_REPORT_TOPIC_ARN` (optional): `tally-weekly` publishes each
    /// week's digest to this SNS topic (the template's, for `ReportEmail`).
    pub report_topic_arn: Option<String>,
    /// `TALLY_WEEKLY_PARTS` (optional, 1–28, default 7): how many shares
    /// the weekly state machine cuts each week into.
    pub weekly_parts: u8,
    /// `TALLY_FIREHOSE_ACCESS_KEY_SHA256` (optional, 64 hex digits): the
    /// SHA-256 of the access key Amazon Data Firehose streams send to
    /// `POST /firehose`; unset, that route answers 403. Only the hash is
    /// configured, so the function's environment holds no key.
    pub firehose_key_sha256: Option<String>,
}

/// A value that `Debug` never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Most weeks `TALLY_RETENTION_WEEKS` may say (as the CLI's `--retention-weeks`).
pub use tally_config::MAX_RETENTION_WEEKS;

impl FunctionConfig {
    /// Reads `TABLE_NAME`, `BUCKET_NAME` and the optional `TALLY_GZIP_LEVEL`
    /// and `TALLY_RETENTION_WEEKS` through `var` (e.g. `std::env::var`).
    pub fn from_env(var: impl Fn(&str) -> Result<String, std::env::VarError>) -> anyhow::Result<Self> {
        let get = |name: &str| {
            var(name).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
                anyhow::anyhow!("environment variable {name} is not set; template.yaml sets it for the function")
            })
        };
        let weekly_parts = match var("TALLY_WEEKLY_PARTS").ok().filter(|v| !v.trim().is_empty()) {
            None => weekly::DEFAULT_SHARES,
            Some(v) => {
                v.trim().parse::<u8>().ok().filter(|n| (1..=steps::MAX_SHARES).contains(n)).ok_or_else(|| {
                    anyhow::anyhow!(
                        "TALLY_WEEKLY_PARTS is {v:?}; set it to a number of shares per week from 1 to {} \
                     (the template's WeeklyParts parameter), or unset it for {}",
                        steps::MAX_SHARES,
                        weekly::DEFAULT_SHARES
                    )
                })?
            }
        };
        let optional = |name: &str| var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        // The weekly run's settings, with the flags' parsers and messages.
        let weekly = WeeklyArgs::from_lookup(|name| var(name).ok())?;
        let firehose_key_sha256 = optional("TALLY_FIREHOSE_ACCESS_KEY_SHA256");
        if let Some(hash) = &firehose_key_sha256 {
            if tally_http::Auth::sha256_hex(hash).is_none() {
                anyhow::bail!(
                    "TALLY_FIREHOSE_ACCESS_KEY_SHA256 is not a SHA-256 in hex; set the FirehoseAccessKeySha256 \
                     parameter to the 64 hex digits `printf %s \"$KEY\" | sha256sum` prints, or leave it empty"
                );
            }
        }
        Ok(Self {
            table: get("TABLE_NAME")?,
            bucket: get("BUCKET_NAME")?,
            weekly,
            notify_secret: optional("TALLY_NOTIFY_SECRET").map(Secret),
            report_topic_arn: optional("TALLY_REPORT_TOPIC_ARN"),
            weekly_parts,
            firehose_key_sha256,
        })
    }

    /// Checks report links with `TALLY_LINK_SECRET_ARN`'s secret, read on
    /// first use and kept for the life of the function instance (one
    /// `GetSecretValue` per cold start). Its absence fails the cold start.
    pub async fn link_signer(&self) -> anyhow::Result<LinkSigner> {
        let arn = self.weekly.links.secret_arn().map(str::to_owned).ok_or_else(|| {
            anyhow::anyhow!(
                "environment variable TALLY_LINK_SECRET_ARN is not set; template.yaml sets it for the function"
            )
        })?;
        let sdk = tally_aws::sdk_config(&self.aws_config()).await;
        Ok(LinkSigner::new(Arc::new(tally_aws::SecretsManagerLinkSecret::new(
            tally_aws::secrets_manager_client(&sdk),
            arn,
        ))))
    }

    /// The links the weekly function sends: `TALLY_PUBLIC_URL`, the secret,
    /// `TALLY_REPORT_LINK_DAYS`. Either variable missing fails the cold start.
    pub async fn report_links(&self) -> anyhow::Result<ReportLinks> {
        let base = self.weekly.links.public_url.clone().ok_or_else(|| {
            anyhow::anyhow!("environment variable TALLY_PUBLIC_URL is not set; template.yaml sets it to the API's URL")
        })?;
        Ok(ReportLinks::new(self.link_signer().await?, base, self.weekly.links.report_link_days))
    }

    /// Who may deliver to `POST /firehose`: the key whose SHA-256 is
    /// `TALLY_FIREHOSE_ACCESS_KEY_SHA256`, or nobody.
    pub fn firehose_auth(&self) -> Option<tally_http::Auth> {
        self.firehose_key_sha256.as_deref().and_then(tally_http::Auth::sha256_hex)
    }

    /// The notifiers `TALLY_NOTIFY_URL` (with `TALLY_NOTIFY_SECRET`) and
    /// `TALLY_REPORT_TOPIC_ARN` ask for; none when neither is set. A bad URL
    /// fails the cold start, naming the variable.
    pub async fn notifiers(&self) -> anyhow::Result<Vec<Arc<dyn Notifier>>> {
        let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
        if let Some(url) = self.weekly.notify.url() {
            let secret = self.notify_secret.as_ref().map(|s| s.0.as_str());
            notifiers.push(Arc::new(tally_notify::WebhookNotifier::new(url, secret)?));
        } else if self.notify_secret.is_some() {
            tracing::warn!("TALLY_NOTIFY_SECRET is set but TALLY_NOTIFY_URL is not: no webhook is called");
        }
        if let Some(topic) = &self.report_topic_arn {
            let sdk = tally_aws::sdk_config(&self.aws_config()).await;
            notifiers.push(Arc::new(tally_aws::SnsNotifier::new(tally_aws::sns_client(&sdk), topic.clone())));
        }
        Ok(notifiers)
    }

    /// How `tally-weekly` writes the summary.
    pub fn summary_options(&self) -> SummaryOptions {
        self.weekly.summary.options()
    }

    /// `TALLY_RETENTION_WEEKS`: keep records of summarized weeks that long.
    pub fn retention_weeks(&self) -> Option<u32> {
        self.weekly.retention.retention_weeks
    }

    pub fn aws_config(&self) -> tally_aws::AwsConfig {
        tally_aws::AwsConfig { table: self.table.clone(), bucket: self.bucket.clone(), ..Default::default() }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn function_config_from_env() {
        use std::collections::HashMap;
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            move |name: &str| map.get(name).cloned().ok_or(std::env::VarError::NotPresent)
        };
        let base = [("TABLE_NAME", "t"), ("BUCKET_NAME", "b")];
        let config = FunctionConfig::from_env(env(&base)).unwrap();
        assert_eq!((config.table.as_str(), config.bucket.as_str()), ("t", "b"));
        assert!(config.firehose_auth().is_none());
        // sha256("s3cret")
        let hash = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";
        let with_key = FunctionConfig::from_env(env(&[base[0], base[1], ("TALLY_FIREHOSE_ACCESS_KEY_SHA256", hash)]));
        assert!(with_key.unwrap().firehose_auth().unwrap().allows(Some(b"s3cret")));
        let err = FunctionConfig::from_env(env(&[base[0], base[1], ("TALLY_FIREHOSE_ACCESS_KEY_SHA256", "s3cret")]));
        assert!(err.unwrap_err().to_string().contains("64 hex digits"));
        assert_eq!(config.summary_options(), SummaryOptions::default());

        let config = FunctionConfig::from_env(env(&[base[0], base[1], ("TALLY_GZIP_LEVEL", "6")])).unwrap();
        assert_eq!(config.summary_options().gzip_level, 6);
        for bad in ["10", "-1", "fast"] {
            let err = FunctionConfig::from_env(env(&[base[0], base[1], ("TALLY_GZIP_LEVEL", bad)])).unwrap_err();
            assert!(
                err.to_string().contains("TALLY_GZIP_LEVEL") && err.to_string().contains("--gzip-level"),
                "{bad}: {err}"
            );
        }
        assert_eq!(config.retention_weeks(), None);
        for (value, weeks) in [("", None), ("0", Some(0)), (" 52 ", Some(52)), ("10000", Some(10_000))] {
            let config = FunctionConfig::from_env(env(&[base[0], base[1], ("TALLY_RETENTION_WEEKS", value)])).unwrap();
            assert_eq!(config.retention_weeks(), weeks, "{value:?}");
        }
        for bad in ["10001", "-1", "1.5", "52w", "forever"] {
            let err = FunctionConfig::from_env(env(&[base[0], base[1], ("TALLY_RETENTION_WEEKS", bad)])).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("TALLY_RETENTION_WEEKS") && msg.contains("--retention-weeks"), "{bad}: {msg}");
        }
        let config = FunctionConfig::from_env(env(&[
            base[0],
            base[1],
            ("TALLY_SEGMENT_BY", " kind "),
            ("TALLY_THRESHOLDS", "volume=0.3"),
        ]))
        .unwrap();
        let options = config.summary_options();
        assert_eq!((options.segment_by.as_deref(), options.thresholds.volume), (Some("kind"), 0.3));
        let err = FunctionConfig::from_env(env(&[base[0], base[1], ("TALLY_THRESHOLDS", "loud=1")])).unwrap_err();
        assert!(format!("{err}").contains("TALLY_THRESHOLDS") && format!("{err}").contains("unknown key"), "{err}");
        assert_eq!((config.weekly.notify.url(), config.report_topic_arn.as_deref()), (None, None));
        let config = FunctionConfig::from_env(env(&[
            base[0],
            base[1],
            ("TALLY_NOTIFY_URL", "https://hooks.example.com/x"),
            ("TALLY_NOTIFY_SECRET", "k3y"),
            ("TALLY_REPORT_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:tally-reports"),
        ]))
        .unwrap();
        assert_eq!(config.weekly.notify.url(), Some("https://hooks.example.com/x"));
        assert_eq!(config.notify_secret, Some(Secret("k3y".into())));
        assert!(!format!("{config:?}").contains("k3y"), "the secret is never printed");
        assert_eq!(config.report_topic_arn.as_deref(), Some("arn:aws:sns:us-east-1:123456789012:tally-reports"));
        let empty = FunctionConfig::from_env(env(&[
            base[0],
            base[1],
            ("TALLY_NOTIFY_URL", " "),
            ("TALLY_REPORT_TOPIC_ARN", ""),
        ]));
        let empty = empty.unwrap();
        assert_eq!((empty.weekly.notify.url(), empty.report_topic_arn), (None, None));

        let err = FunctionConfig::from_env(env(&base[..1])).unwrap_err();
        assert!(err.to_string().contains("BUCKET_NAME"), "{err}");

        assert_eq!((config.weekly.links.public_url.as_ref(), config.weekly.links.report_link_days), (None, 30));
        let links = FunctionConfig::from_env(env(&[
            base[0],
            base[1],
            ("TALLY_PUBLIC_URL", "https://abc.execute-api.eu-west-1.amazonaws.com/Prod/"),
            ("TALLY_REPORT_LINK_DAYS", "7"),
            ("TALLY_LINK_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x"),
        ]))
        .unwrap();
        assert_eq!(
            links.weekly.links.public_url.unwrap().as_str(),
            "https://abc.execute-api.eu-west-1.amazonaws.com/Prod"
        );
        assert_eq!(links.weekly.links.report_link_days, 7);
        for (name, bad) in
            [("TALLY_REPORT_LINK_DAYS", "0"), ("TALLY_REPORT_LINK_DAYS", "367"), ("TALLY_PUBLIC_URL", "abc")]
        {
            let err = FunctionConfig::from_env(env(&[base[0], base[1], (name, bad)])).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={bad}: {err}");
        }
    }
}
