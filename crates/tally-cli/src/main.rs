//! `tally` — the command-line entry point. It only wires: flags in, adapters
//! built, services run. Logic lives in the library crates.

mod config;
mod server;
mod telemetry;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tally_core::{IngestService, SystemClock};
use tally_http::{AppState, Auth, HttpOptions};
use tally_local::{DirSummarySink, SqliteOptions, SqliteRecordStore};

use crate::config::{Cli, Command, ServeArgs, StorageArgs, SummarizeArgs};

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

/// The API key from `TALLY_API_KEY` or `--api-key-file`, if any.
fn api_key(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let from_env = std::env::var("TALLY_API_KEY").ok().filter(|k| !k.is_empty());
    let from_file = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the API key file {}; check the path and permissions", path.display())
            })?;
            let key = text.lines().next().unwrap_or_default().trim().to_owned();
            if key.is_empty() {
                bail!("the API key file {} is empty; put the key on its first line", path.display());
            }
            Some(key)
        }
        None => None,
    };
    if from_env.is_some() && from_file.is_some() {
        bail!("both TALLY_API_KEY and --api-key-file are set; use one of them");
    }
    Ok(from_env.or(from_file))
}

fn open_store(storage: &StorageArgs) -> anyhow::Result<SqliteRecordStore> {
    std::fs::create_dir_all(&storage.data_dir).with_context(|| {
        format!("cannot create the data directory {}; choose another with --data-dir", storage.data_dir.display())
    })?;
    Ok(SqliteRecordStore::open(storage.db_path(), SqliteOptions::default())?)
}

fn open_sink(storage: &StorageArgs) -> anyhow::Result<DirSummarySink> {
    let dir = storage.bucket_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot use {} as the summary folder; choose another with --out", dir.display()))?;
    Ok(DirSummarySink::new(dir))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let auth = match api_key(args.api_key_file.as_deref())? {
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
    let store = Arc::new(open_store(&args.storage)?);
    let sink = Arc::new(open_sink(&args.storage)?);
    let ingest = IngestService::new(store.clone(), Arc::new(SystemClock), args.limits.limits());
    let state = AppState::new(ingest, sink.clone(), auth);
    let router =
        tally_http::router(state, HttpOptions { request_timeout: Duration::from_secs(args.request_timeout_secs) });

    let listener = server::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        db = %args.storage.db_path().display(),
        bucket = %args.storage.bucket_dir().display(),
        version = tally_core::VERSION,
        "tally is listening on http://{addr}"
    );
    let schedule = (!args.no_schedule).then(|| schedule::spawn(store.clone(), sink.clone(), &args.schedule));
    let schedule = match schedule.transpose() {
        Ok(s) => s,
        Err(e) => return Err(e),
    };
    server::serve(listener, router, server::ServerLimits::default(), server::shutdown_signal()).await?;
    if let Some(task) = schedule {
        task.abort();
    }
    // Dropping the last handle to the store flushes its writer thread.
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

async fn summarize(args: SummarizeArgs) -> anyhow::Result<()> {
    let _ = args;
    bail!("not yet available")
}

mod schedule {
    use std::sync::Arc;

    use tally_local::{DirSummarySink, SqliteRecordStore};

    pub fn spawn(
        _store: Arc<SqliteRecordStore>,
        _sink: Arc<DirSummarySink>,
        _cron: &str,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        Ok(tokio::spawn(async {}))
    }
}
