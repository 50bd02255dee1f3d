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
use tally_core::ports::{Notifier, WeekLock};
use tally_core::summary::{SummaryOptions, Trigger, Weekly, WeeklySchedule, WeeklySettings};
use tally_core::{Clock, IngestService, IsoWeek, RecordLifecycle, SummarySink, SystemClock, Timestamp};
use tally_http::{Admin, AppState, Auth, Erasure, HttpOptions};
use tally_local::{DirSummarySink, SqliteOptions, SqliteRecordStore, SqliteWeekLock};

use crate::config::{
    Cli, Command, ExportArgs, ImportArgs, NotifyArgs, PruneArgs, ServeArgs, StorageArgs, StoreKind, SummarizeArgs,
};
use crate::progress::CliProgress;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
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
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
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
    let Some(url) = args.notify_url.as_deref().filter(|u| !u.trim().is_empty()) else {
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

/// The adapters chosen by the storage flags.
struct Storage {
    store: Arc<dyn RecordLifecycle>,
    sink: Arc<dyn SummarySink>,
    /// One run per week at a time, beside the records (the SQLite file, the
    /// DynamoDB table): every command that writes a week takes its lock.
    lock: Arc<dyn WeekLock>,
    /// Where people find the summaries, for messages.
    location: String,
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
    let Storage { store, sink, lock, location } = open_storage(&args.storage, args.folder.out.as_deref()).await?;
    let ingest = IngestService::new(store.clone(), Arc::new(SystemClock), args.limits.limits());
    let state = AppState::new(ingest, sink.clone(), auth);
    // The weekly run, which the schedule and the refresher drive.
    let storage = Storage { store: store.clone(), sink: sink.clone(), lock, location };
    let weekly = weekly(&storage, args.summary.options(), args.retention.retention_weeks, "tally serve")
        .with_notifiers(notifiers);
    let location = storage.location;
    // Erasure, and the refresher that rewrites the summaries it changes, only with an admin key.
    let (state, runs, refresher) = match admin_key {
        Some(admin) => {
            let (queue, inbox) = tally_local::refresh::channel();
            let runs = schedule::Runs::new(weekly.with_refresh(Arc::new(queue.clone())), schedule::Timing::default());
            let task = schedule::spawn_refresher(runs.clone(), inbox);
            let erasure = Erasure::new(store.clone(), Arc::new(queue), Admin::Key(Auth::key(&admin)));
            (state.with_erasure(erasure), runs, Some(task))
        }
        None => (state, schedule::Runs::new(weekly, schedule::Timing::default()), None),
    };
    let router =
        tally_http::router(state, HttpOptions { request_timeout: Duration::from_secs(args.request_timeout_secs) });

    let listener = server::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        store = ?args.storage.store,
        summaries = %location,
        version = tally_core::VERSION,
        "tally is listening on http://{addr}"
    );
    let scheduler = (!args.no_schedule).then(|| schedule::spawn(runs.clone(), schedule));
    server::serve(listener, router, server::ServerLimits::default(), server::shutdown_signal()).await?;
    for task in scheduler.into_iter().chain(refresher) {
        task.abort();
        let _ = task.await;
    }
    // Dropping the last handle to the store lets its writer finish and close.
    drop((store, sink, runs));
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
    let storage = open_storage(&args.storage, args.folder.out.as_deref()).await?;
    let progress = CliProgress::new(weeks.len() as u64, false);
    // Each week under its lock (another process's run of it finishes
    // first), announced as soon as it is written; a failed delivery is
    // logged and does not fail the command.
    let weekly = weekly(&storage, args.summary.options(), None, "tally summarize").with_notifiers(notifiers);
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
