//! Logging set-up for the CLI: human-readable by default, JSON on request.
//! Filter with `RUST_LOG` (default `info`).
//!
//! Lines go to stderr through `tracing_appender`'s writer thread and a
//! buffer, which it flushes whenever no line is waiting: `tally serve` logs
//! one line per request, and writing each from the request's own thread cost
//! one `write(2)` per request (4 % of the server's CPU under load, 7 % with
//! the formatting; docs/BENCHMARKS.md, issue 25). The writer is not lossy: a
//! full queue (128k lines) makes loggers wait rather than drop lines.

use std::io::{BufWriter, IsTerminal};

use clap::ValueEnum;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Aligned lines for people, coloured on a terminal.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the subscriber. Keep the guard until the end of `main`: dropping
/// it writes the lines still queued.
#[must_use = "dropping the guard at once stops the log writer"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) =
        NonBlockingBuilder::default().lossy(false).thread_name("tally-log").finish(BufWriter::new(std::io::stderr()));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a terminal: a log file or pipe gets plain text (and
    // formatting it costs less, once per request line in `serve`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    // `try_init` so tests that call `main` logic twice do not panic.
    let _ = match format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
    guard
}
