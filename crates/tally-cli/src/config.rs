//! Command-line flags and environment variables, parsed into typed settings.
//! Only the binary reads the environment; everything below gets plain values.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tally_core::Limits;
use tally_core::summary::PARTS;
// The weekly run's settings are declared once, for this binary and the Lambda functions.
pub use tally_config::{LinkArgs, NotifyArgs, RetentionArgs, SummaryArgs};

use crate::telemetry::LogFormat;

/// tally — JSON records in, weekly reports out.
///
/// Send JSON records to `tally serve`; every record is stored durably, and
/// once a week tally writes a summary of that week (summary.json,
/// summary.html, records.ndjson.gz, manifest.json) to the bucket folder.
#[derive(Debug, Parser)]
#[command(name = "tally", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, env = "TALLY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (embedded SQLite by default, or DynamoDB + S3) with the weekly summary schedule.
    Serve(ServeArgs),
    /// Write the summary of one week, the last complete week, or a range of weeks.
    Summarize(SummarizeArgs),
    /// Write the records of a time range as NDJSON export lines (the format of records.ndjson.gz).
    Export(ExportArgs),
    /// Load NDJSON files (exports, or plain records) into the store; a rerun adds nothing.
    Import(ImportArgs),
    /// Delete the records of summarized weeks older than the retention (their summaries stay).
    Prune(PruneArgs),
    /// Print a signed link to a week's report page (or to the index of every
    /// week), for people to open in a browser.
    ReportLink(ReportLinkArgs),
}

#[derive(Debug, Args)]
pub struct ReportLinkArgs {
    /// The week whose page the link opens, e.g. 2026-W47 [default: the index of every week].
    #[arg(long)]
    pub week: Option<String>,

    #[command(flatten)]
    pub links: LinkArgs,

    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("range").required(true).args(["week", "from"])))]
pub struct ExportArgs {
    /// One ISO week, e.g. 2026-W47.
    #[arg(long)]
    pub week: Option<String>,

    /// Start of the range, RFC 3339 (inclusive); use with --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,

    /// End of the range, RFC 3339 (exclusive).
    #[arg(long, requires = "from")]
    pub to: Option<String>,

    /// Where to write: a file (gzip when it ends in .gz), or - for stdout.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,

    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// NDJSON files (.gz decompressed; - reads stdin): export lines keep their
    /// id and received_at; plain records get --time-field's time.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// Dotted path of the field holding a plain record's time (RFC 3339, or
    /// epoch seconds/milliseconds as a number), e.g. ts or meta.sent_at.
    #[arg(long)]
    pub time_field: Option<String>,

    /// The time of plain records without --time-field (RFC 3339) [default: now].
    #[arg(long, conflicts_with = "time_field")]
    pub received_at: Option<String>,

    /// Validate every line; store nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(flatten)]
    pub folder: FolderArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub summary: SummaryArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub retention: RetentionArgs,

    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(flatten)]
    pub folder: FolderArgs,
}

/// Which record store to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// An embedded SQLite file in --data-dir, summaries in a folder.
    Sqlite,
    /// A DynamoDB table (--table), summaries in an S3 bucket (--bucket).
    Dynamodb,
}

/// Where summaries go with --store sqlite (every command but `export`, whose
/// --out is the file it writes).
#[derive(Debug, Clone, Args)]
pub struct FolderArgs {
    /// Where summaries are written with --store sqlite: a directory [default: DATA_DIR/bucket].
    #[arg(long, env = "TALLY_OUT")]
    pub out: Option<PathBuf>,
}

/// Where records and summaries live.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Record store: the embedded SQLite file, or DynamoDB + S3.
    #[arg(long, env = "TALLY_STORE", value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,

    /// Directory holding the SQLite database (tally.db).
    #[arg(long, env = "TALLY_DATA_DIR", default_value = "./tally-data")]
    pub data_dir: PathBuf,

    /// DynamoDB table name (with --store dynamodb).
    #[arg(long, env = "TABLE_NAME", required_if_eq("store", "dynamodb"))]
    pub table: Option<String>,

    /// S3 bucket for summaries, as s3://BUCKET[/PREFIX] (with --store dynamodb).
    #[arg(long, env = "TALLY_BUCKET", required_if_eq("store", "dynamodb"))]
    pub bucket: Option<String>,

    /// AWS endpoint override, e.g. a local emulator (http://127.0.0.1:5000).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,

    /// AWS region [default: from the AWS environment or profile].
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,

    /// Seconds one DynamoDB request attempt may take (with --store dynamodb);
    /// raise it for slow emulators [default: 5].
    #[arg(long, env = "TALLY_AWS_ATTEMPT_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..=900))]
    pub aws_attempt_timeout_secs: Option<u64>,
}

impl StorageArgs {
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("tally.db")
    }

    /// The summary folder with --store sqlite: `out`, or DATA_DIR/bucket.
    pub fn bucket_dir(&self, out: Option<&std::path::Path>) -> PathBuf {
        out.map_or_else(|| self.data_dir.join("bucket"), std::path::Path::to_path_buf)
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(flatten)]
    pub folder: FolderArgs,

    /// File whose first line is the API key clients must send in `x-api-key`
    /// (the key may instead come from the TALLY_API_KEY environment variable).
    /// Without a key, tally serves only on loopback addresses.
    #[arg(long, env = "TALLY_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Longest time one request may take, body included (seconds).
    #[arg(long, env = "TALLY_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// When to summarize the previous week: a cron expression in UTC
    /// (minute hour day-of-month month day-of-week).
    #[arg(long, env = "TALLY_SCHEDULE", default_value = "5 0 * * MON")]
    pub schedule: String,

    /// Do not run the weekly summary schedule (nor the start-up catch-up).
    #[arg(long, env = "TALLY_NO_SCHEDULE")]
    pub no_schedule: bool,

    /// File whose first line is the admin key, which `DELETE /records/{id}`
    /// needs in `x-api-key` (or TALLY_ADMIN_KEY); distinct from the API key.
    /// Without one, erasure is off.
    #[arg(long, env = "TALLY_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,

    #[command(flatten)]
    pub retention: RetentionArgs,

    #[command(flatten)]
    pub summary: SummaryArgs,

    #[command(flatten)]
    pub notify: NotifyArgs,

    #[command(flatten)]
    pub links: LinkArgs,
}

/// Request limits; requests over them get 413 or 422.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest request body, in bytes.
    #[arg(long, env = "TALLY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest single record, in bytes.
    #[arg(long, env = "TALLY_MAX_RECORD_BYTES", default_value_t = 64 * 1024)]
    pub max_record_bytes: usize,

    /// Most records in one batch.
    #[arg(long, env = "TALLY_MAX_BATCH_RECORDS", default_value_t = 1000)]
    pub max_batch_records: usize,

    /// Deepest nesting of objects and arrays in a record.
    #[arg(long, env = "TALLY_MAX_DEPTH", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..=Limits::DEPTH_CEILING as i64))]
    pub max_depth: u16,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_record_bytes: self.max_record_bytes,
            max_batch_records: self.max_batch_records,
            max_depth: usize::from(self.max_depth),
        }
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").args(["week", "last", "from"])))]
pub struct SummarizeArgs {
    /// One ISO week, e.g. 2026-W47.
    #[arg(long)]
    pub week: Option<String>,

    /// The last complete week (the default).
    #[arg(long)]
    pub last: bool,

    /// First week of a range (backfill); use with --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,

    /// Last week of a range, inclusive.
    #[arg(long, requires = "from")]
    pub to: Option<String>,

    /// Compute only part K of N of --week (its share of the week's 28
    /// six-hour parts) into --state-out, for `--merge` to combine; writes
    /// no summary.
    #[arg(long, value_name = "K/N", requires_all = ["week", "state_out"], conflicts_with = "merge",
          value_parser = parse_part)]
    pub part: Option<(u8, u8)>,

    /// Summarize a week that has not ended yet (its records so far): the
    /// manifest says "partial", days not yet over raise no quiet_day, and
    /// the scheduled run after the week ends replaces it. Without it such a
    /// week is refused.
    #[arg(long)]
    pub partial: bool,

    /// The part state file --part writes (replaced whole on success).
    #[arg(long, value_name = "FILE", requires = "part")]
    pub state_out: Option<PathBuf>,

    /// Write --week's summary from the state files of `--part K/N` runs
    /// (every part exactly once, any order): the same bytes as a plain run.
    #[arg(long, value_name = "FILE", num_args = 1.., requires = "week")]
    pub merge: Vec<PathBuf>,

    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(flatten)]
    pub folder: FolderArgs,

    #[command(flatten)]
    pub summary: SummaryArgs,

    #[command(flatten)]
    pub notify: NotifyArgs,

    #[command(flatten)]
    pub links: LinkArgs,
}

/// `K/N` with `1 <= K <= N <= 28`.
fn parse_part(s: &str) -> Result<(u8, u8), String> {
    let parsed =
        s.split_once('/').and_then(|(k, n)| Some((k.trim().parse::<u8>().ok()?, n.trim().parse::<u8>().ok()?)));
    match parsed {
        Some((k, n)) if (1..=n).contains(&k) && (1..=PARTS).contains(&n) => Ok((k, n)),
        _ => Err(format!(
            "expected K/N with 1 <= K <= N <= {PARTS} (a week has {PARTS} six-hour parts), e.g. 1/4 .. 4/4"
        )),
    }
}
