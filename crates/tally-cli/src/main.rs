//! `tally` — the command-line entry point. It only wires: flags in, adapters
//! built, services run. Logic lives in the library crates.

mod config;
mod data;
mod parts;
mod progress;
mod schedule;
mod server;
mod telemetry;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tally_core::lifecycle::{ImportOptions, RangeParams};
use tally_core::ports::{LinkSecretStore, Notifier, WeekLock};
use tally_core::report_link::{LinkSigner, PublicUrl, ReportLinks};
use tally_core::summary::{SummaryOptions, Trigger, Weekly, WeeklySchedule, WeeklySettings};
use tally_core::{Clock, IngestService, IsoWeek, RecordLifecycle, SummarySink, SystemClock, Timestamp};
use tally_http::{Admin, AppState, Auth, Erasure, HttpOptions};
use tally_local::refresh::{ChannelWeekRefresh, RefreshInbox};
use tally_local::{DirSummarySink, SqliteOptions, SqliteRecordStore, SqliteWeekLock};

use crate::config::{
    Cli, Command, ExportArgs, ImportArgs, LinkArgs, NotifyArgs, PruneArgs, ReportLinkArgs, ServeArgs, StorageArgs,
    StoreKind, SummarizeArgs,
};
use crate::progress::CliProgress;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let log_writer = telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {}", tally_core::error_chain(&e));
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Summarize(args) => summarize(args).await,
            Command::Export(args) => export(args).await,
            Command::Import(args) => import(args).await,
            Command::Prune(args) => prune(args).await,
            Command::ReportLink(args) => report_link(args).await,
        }
    });
    // Every queued log line out (those of the runtime's shutdown too) before
    // the final error or the exit.
    drop(runtime);
    drop(log_writer);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", tally_core::error_chain(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// A key from the environment variable `env` or the first line of `file`
/// (the flag `flag`), if any: the API key or the admin key.
fn key(env: &str, flag: &str, what: &str, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let from_env = std::env::var(env).ok().filter(|k| !k.is_empty());
    let from_file = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the {what} file {}; check the path and permissions", path.display())
            })?;
            let key = text.lines().next().unwrap_or_default().trim().to_owned();
            if key.is_empty() {
                bail!("the {what} file {} is empty; put the key on its first line", path.display());
            }
            Some(key)
        }
        None => None,
    };
    if from_env.is_some() && from_file.is_some() {
        bail!("both {env} and {flag} are set; use one of them");
    }
    Ok(from_env.or(from_file))
}

/// The notifiers `--notify-url` and `TALLY_NOTIFY_SECRET` ask for (none
/// without a URL).
fn notifiers(args: &NotifyArgs) -> anyhow::Result<Vec<Arc<dyn Notifier>>> {
    let secret = std::env::var("TALLY_NOTIFY_SECRET").ok().filter(|s| !s.is_empty());
    let Some(url) = args.url() else {
        if secret.is_some() {
            tracing::warn!(
                "TALLY_NOTIFY_SECRET is set but --notify-url (TALLY_NOTIFY_URL) is not: no notification is sent"
            );
        }
        return Ok(Vec::new());
    };
    let webhook = tally_notify::WebhookNotifier::new(url, secret.as_deref())?;
    tracing::info!(receiver = %webhook.receiver(), signed = secret.is_some(), "weekly reports are announced by webhook");
    Ok(vec![Arc::new(webhook)])
}

/// Where the report-link secret is: the stack's Secrets Manager secret
/// with `--link-secret-arn`, else `DATA_DIR/report-link.secret` (made on
/// first use).
async fn link_secrets(links: &LinkArgs, storage: &StorageArgs) -> Arc<dyn LinkSecretStore> {
    match links.secret_arn() {
        Some(arn) => {
            let config = tally_aws::AwsConfig {
                region: storage.region.clone(),
                endpoint_url: storage.endpoint_url.clone(),
                ..tally_aws::AwsConfig::default()
            };
            let client = tally_aws::secrets_manager_client(&tally_aws::sdk_config(&config).await);
            Arc::new(tally_aws::SecretsManagerLinkSecret::new(client, arn))
        }
        None => Arc::new(tally_local::FileLinkSecret::in_dir(&storage.data_dir)),
    }
}

/// The address report links start with: `--public-url`, else `fallback`.
fn public_url(links: &LinkArgs, fallback: &str) -> anyhow::Result<PublicUrl> {
    match &links.public_url {
        Some(url) => Ok(url.clone()),
        None => PublicUrl::parse(fallback).context("the address report links start with"),
    }
}

/// What notifications and `tally report-link` sign links with.
async fn report_links(links: &LinkArgs, storage: &StorageArgs, fallback: &str) -> anyhow::Result<ReportLinks> {
    let signer = LinkSigner::new(link_secrets(links, storage).await);
    Ok(ReportLinks::new(signer, public_url(links, fallback)?, links.report_link_days))
}

/// The base of links when `tally serve` is not the one making them.
const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";

/// `tally report-link [--week W]`: prints one signed link.
async fn report_link(args: ReportLinkArgs) -> anyhow::Result<()> {
    let links = report_links(&args.links, &args.storage, DEFAULT_PUBLIC_URL).await?;
    let now = Timestamp::now();
    let link = match args.week.as_deref() {
        Some(week) => links.week(parse_week("week", week)?, now).await,
        None => links.site(now).await,
    }
    .context("cannot sign the link; check the data directory (--data-dir) or, for AWS, --link-secret-arn and your credentials")?;
    println!("{link}");
    let until = Timestamp::from_millis(now.as_millis() + links.validity().as_millis() as i64);
    eprintln!("valid until {} (--report-link-days {})", until.to_rfc3339(), args.links.report_link_days);
    Ok(())
}

/// The adapters chosen by the storage flags.
struct Storage {
    store: Arc<dyn RecordLifecycle>,
    sink: Arc<dyn SummarySink>,
    /// One run per week at a time, beside the records (the SQLite file, the
    /// DynamoDB table): every command that writes a week takes its lock.
    lock: Arc<dyn WeekLock>,
    /// Where people find the summaries, for messages.
    location: String,
    /// The SQLite store, when the records are local: it also keeps the
    /// weeks to rewrite after erasures ([`refresh_queue`]).
    sqlite: Option<Arc<SqliteRecordStore>>,
}

/// The queue between erasures and the refresher: in the SQLite file when
/// the records are local (a request outlives a crash or a stop, and the
/// next `tally serve` rewrites its week first), in memory with DynamoDB.
async fn refresh_queue(storage: &Storage) -> anyhow::Result<(ChannelWeekRefresh, RefreshInbox)> {
    match &storage.sqlite {
        Some(store) => tally_local::refresh::durable(store.clone())
            .await
            .context("cannot read the weeks waiting for a rewrite in the data directory; check --data-dir"),
        None => Ok(tally_local::refresh::channel()),
    }
}

/// Who this process is, in the week locks' messages ("2026-W47 is being
/// written by tally summarize (pid 4242)").
fn holder(what: &str) -> String {
    format!("{what}, pid {}", std::process::id())
}

/// The weekly run over `storage`, for the command `what` (named in the
/// week lock's holder: e.g. `scheduled run (tally serve, pid 42)`).
fn weekly(storage: &Storage, options: SummaryOptions, retention_weeks: Option<u32>, what: &str) -> Weekly {
    Weekly::new(
        storage.store.clone(),
        storage.sink.clone(),
        storage.lock.clone(),
        clock(),
        WeeklySettings::local(options, retention_weeks),
        holder(what),
    )
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

async fn open_storage(storage: &StorageArgs, out: Option<&Path>) -> anyhow::Result<Storage> {
    match storage.store {
        StoreKind::Sqlite => {
            std::fs::create_dir_all(&storage.data_dir).with_context(|| {
                format!(
                    "cannot create the data directory {}; choose another with --data-dir",
                    storage.data_dir.display()
                )
            })?;
            let store = Arc::new(SqliteRecordStore::open(storage.db_path(), SqliteOptions::default())?);
            let dir = storage.bucket_dir(out);
            std::fs::create_dir_all(&dir).with_context(|| {
                format!("cannot use {} as the summary folder; choose another with --out", dir.display())
            })?;
            Ok(Storage {
                lock: Arc::new(SqliteWeekLock::new(store.clone())),
                sqlite: Some(store.clone()),
                store,
                sink: Arc::new(DirSummarySink::new(&dir)),
                location: dir.display().to_string(),
            })
        }
        StoreKind::Dynamodb => {
            let (Some(table), Some(bucket)) = (&storage.table, &storage.bucket) else {
                bail!("--store dynamodb needs --table NAME and --bucket s3://BUCKET");
            };
            let config = tally_aws::AwsConfig::new(table.clone(), bucket)?
                .with_endpoint_url(storage.endpoint_url.clone())
                .with_region(storage.region.clone())
                .with_attempt_timeout(storage.aws_attempt_timeout_secs.map(Duration::from_secs));
            let (store, sink) = tally_aws::connect(&config).await.with_context(|| {
                format!(
                    "cannot use DynamoDB table {table} and bucket {bucket}; check the names, region and AWS credentials"
                )
            })?;
            Ok(Storage {
                lock: Arc::new(store.week_lease()),
                store: Arc::new(store),
                sink: Arc::new(sink),
                location: bucket.clone(),
                sqlite: None,
            })
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let api_key = key("TALLY_API_KEY", "--api-key-file", "API key", args.api_key_file.as_deref())?;
    let admin_key = key("TALLY_ADMIN_KEY", "--admin-key-file", "admin key", args.admin_key_file.as_deref())?;
    if admin_key.is_some() && admin_key == api_key {
        bail!(
            "the admin key is the API key; choose a different TALLY_ADMIN_KEY so that clients who send records cannot erase them"
        );
    }
    let auth = match api_key {
        Some(key) => Auth::key(&key),
        None if args.listen.ip().is_loopback() => {
            tracing::warn!(
                listen = %args.listen,
                "no API key configured: anyone on this machine can use the API; set TALLY_API_KEY to require one"
            );
            Auth::Open
        }
        None => bail!(
            "refusing to listen on {} without an API key: set TALLY_API_KEY=<key> (or --api-key-file FILE), \
             or listen on a loopback address such as 127.0.0.1",
            args.listen
        ),
    };
    let schedule = WeeklySchedule::parse(&args.schedule)?;
    let notifiers = notifiers(&args.notify)?;
    let storage = open_storage(&args.storage, args.folder.out.as_deref()).await?;
    let (store, sink) = (storage.store.clone(), storage.sink.clone());
    let signer = LinkSigner::new(link_secrets(&args.links, &args.storage).await);
    let ingest = IngestService::new(store.clone(), Arc::new(SystemClock), args.limits.limits());
    let state = AppState::new(ingest, sink.clone(), auth).with_report_links(signer.clone());
    // Erasure, and the refresher that rewrites the summaries it changes, only
    // with an admin key (requests made before the refresher starts wait in
    // its channel).
    let (state, refresh) = match admin_key {
        Some(admin) => {
            let (queue, inbox) = refresh_queue(&storage).await?;
            let erasure = Erasure::new(store.clone(), Arc::new(queue.clone()), Admin::Key(Auth::key(&admin)));
            (state.with_erasure(erasure), Some((queue, inbox)))
        }
        None => (state, None),
    };
    let router =
        tally_http::router(state, HttpOptions { request_timeout: Duration::from_secs(args.request_timeout_secs) });

    let listener = server::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    // Links say where this server is reached: --public-url, else its own address.
    let own = match addr.ip() {
        ip if ip.is_unspecified() => format!("http://127.0.0.1:{}", addr.port()),
        _ => format!("http://{addr}"),
    };
    if args.links.public_url.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(listen = %addr, "report links will start with {own}: set --public-url (TALLY_PUBLIC_URL) to the address people reach this server at");
    }
    let links = ReportLinks::new(signer, public_url(&args.links, &own)?, args.links.report_link_days);
    tracing::info!(
        %addr,
        store = ?args.storage.store,
        summaries = %storage.location,
        version = tally_core::VERSION,
        "tally is listening on http://{addr}"
    );
    // The weekly run, which the schedule and the refresher drive; its
    // announcements link to this server's pages.
    let weekly = weekly(&storage, args.summary.options(), args.retention.retention_weeks, "tally serve")
        .with_notifiers(notifiers, links);
    let (runs, refresher) = match refresh {
        Some((queue, inbox)) => {
            let runs = schedule::Runs::new(weekly.with_refresh(Arc::new(queue)), schedule::Timing::default());
            let task = schedule::spawn_refresher(runs.clone(), inbox);
            (runs, Some(task))
        }
        None => (schedule::Runs::new(weekly, schedule::Timing::default()), None),
    };
    let scheduler = (!args.no_schedule).then(|| schedule::spawn(runs.clone(), schedule));
    server::serve(listener, router, server::ServerLimits::default(), server::shutdown_signal()).await?;
    for task in scheduler.into_iter().chain(refresher) {
        task.abort();
        let _ = task.await;
    }
    // Dropping the last handle to the store lets its writer finish and close.
    drop((store, sink, storage, runs));
    tracing::info!("stopped");
    Ok(())
}

fn parse_week(flag: &str, value: &str) -> anyhow::Result<IsoWeek> {
    IsoWeek::parse(value).with_context(|| format!("--{flag} {value:?}"))
}

async fn summarize(args: SummarizeArgs) -> anyhow::Result<()> {
    if let (Some(part), Some(out)) = (args.part, &args.state_out) {
        let week = parse_week("week", args.week.as_deref().unwrap_or_default())?;
        return parts::summarize_part(&args, week, part, out).await;
    }
    if !args.merge.is_empty() {
        let week = parse_week("week", args.week.as_deref().unwrap_or_default())?;
        return parts::merge(&args, week).await;
    }
    let weeks: Vec<IsoWeek> = match (&args.week, &args.from, &args.to) {
        (Some(week), _, _) => vec![parse_week("week", week)?],
        (None, Some(from), Some(to)) => {
            let (from, to) = (parse_week("from", from)?, parse_week("to", to)?);
            if from > to {
                bail!("--from {from} is after --to {to}; swap them");
            }
            IsoWeek::range(from, to).collect()
        }
        _ => vec![IsoWeek::last_complete(Timestamp::now())],
    };
    let notifiers = notifiers(&args.notify)?;
    let links = report_links(&args.links, &args.storage, DEFAULT_PUBLIC_URL).await?;
    let storage = open_storage(&args.storage, args.folder.out.as_deref()).await?;
    let progress = CliProgress::new(weeks.len() as u64, false);
    // Each week under its lock (another process's run of it finishes
    // first), announced as soon as it is written; a failed delivery is
    // logged and does not fail the command.
    let weekly = weekly(&storage, args.summary.options(), None, "tally summarize").with_notifiers(notifiers, links);
    let trigger = Trigger::Operator { partial: args.partial };
    let mut reports = Vec::with_capacity(weeks.len());
    let mut result = Ok(());
    for week in weeks {
        match weekly.week(week, trigger, &progress).await {
            // Skipped (logged): a run that waits is never skipped.
            Ok(None) => {}
            Ok(Some(ran)) => reports.push(ran.report),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let location = storage.location;
    progress.finish();
    result.context(
        "the summary run failed; nothing was committed for that week — fix the cause and run the same command again",
    )?;
    for r in &reports {
        println!(
            "{}  {:>10} records  {}/summaries/{}/summary.html",
            r.week,
            r.records,
            location.trim_end_matches('/'),
            r.week
        );
    }
    Ok(())
}

/// How long a request may take to commit: range reads (and `tally export`)
/// end that long before now, so a record still committing is not skipped.
const SETTLE: Duration = AppState::DEFAULT_STORE_TIMEOUT;

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let params = RangeParams { week: args.week, from: args.from, to: args.to, ..RangeParams::default() };
    let storage = open_storage(&args.storage, None).await?;
    data::export(&storage, params, &args.out, SETTLE).await
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let received_at = args.received_at.as_deref().map(|t| data::parse_time("received-at", t)).transpose()?;
    let options = ImportOptions { time_field: args.time_field, received_at, dry_run: args.dry_run };
    let storage = open_storage(&args.storage, args.folder.out.as_deref()).await?;
    data::import(&storage, &args.files, options, args.limits.limits(), &args.summary.options()).await
}

async fn prune(args: PruneArgs) -> anyhow::Result<()> {
    let Some(weeks) = args.retention.retention_weeks else {
        bail!("say how many weeks to keep: tally prune --retention-weeks N (or TALLY_RETENTION_WEEKS=N)");
    };
    let storage = open_storage(&args.storage, args.folder.out.as_deref()).await?;
    data::prune_now(&storage, weeks).await
}
