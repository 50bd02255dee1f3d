//! Helpers shared by the CLI's end-to-end tests: run the real `tally`
//! binary on a random port with a fresh data directory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KEY: &str = "e2e-test-key-0123456789";

/// A running `tally serve`.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    /// Every stderr line so far (logs are JSON).
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The thread reading stderr into `logs`; it ends at the pipe's end.
    reader: Option<std::thread::JoinHandle<()>>,
}

pub fn tally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally"))
}

impl Server {
    /// Starts `tally serve --listen 127.0.0.1:0` on `data_dir` with the test key.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_with(data_dir, extra, Some(KEY))
    }

    /// Like [`start`](Self::start), with the weekly schedule (and its start-up catch-up) on.
    pub fn start_with_schedule(data_dir: &Path) -> Server {
        Self::launch(data_dir, &[], Some(KEY), true)
    }

    /// [`start_with_schedule`](Self::start_with_schedule) with extra flags.
    pub fn start_with_schedule_and(data_dir: &Path, extra: &[&str]) -> Server {
        Self::launch(data_dir, extra, Some(KEY), true)
    }

    /// Like [`start`](Self::start), with the given key (or none).
    pub fn start_with(data_dir: &Path, extra: &[&str], key: Option<&str>) -> Server {
        Self::launch(data_dir, extra, key, false)
    }

    fn launch(data_dir: &Path, extra: &[&str], key: Option<&str>, schedule: bool) -> Server {
        let mut cmd = tally();
        match key {
            Some(k) => cmd.env("TALLY_API_KEY", k),
            None => cmd.env_remove("TALLY_API_KEY"),
        };
        let mut child = cmd
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(if schedule { &[][..] } else { &["--no-schedule"][..] })
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tally");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on ".len()..];
                    let url: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
                    let _ = tx.send(url);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("tally serve did not start; logs: {:?}", logs.lock().unwrap())
        });
        Server { child, base, data_dir: data_dir.to_owned(), logs, reader: Some(reader) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then wait for exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "tally did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Polls `done` every 50 ms until it holds; fails, with `expected` and
    /// the server's logs, if it does not within `limit`. For what the
    /// server does on its own time (the schedule, a rewrite, a notification).
    pub async fn wait_until(&self, expected: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "expected {expected} within {limit:?}; logs:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`wait_until`](Self::wait_until) a log line contains `text`.
    pub async fn wait_for_log(&self, text: &str, limit: Duration) {
        self.wait_until(&format!("a log line with {text:?}"), limit, || self.log_text().contains(text)).await;
    }

    /// Every line the server wrote, once it has exited (after
    /// [`terminate`](Self::terminate)): waits for the reader to reach the
    /// end of the pipe, so no line still in it is missed.
    pub fn final_log_text(&mut self) -> String {
        assert!(self.child.try_wait().expect("wait").is_some(), "the server is still running");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader panicked");
        }
        self.log_text()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client for `tally serve`. Its idle connections are dropped after 5 s,
/// before the server's 10 s header-read timeout closes them
/// (`ServerLimits::header_read_timeout`): a connection reused after a long
/// step (a summarize on a loaded machine) would otherwise race the server's
/// close and fail with `IncompleteMessage`.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

impl Server {
    /// `POST path` with the test key, the given `Content-Type` and body.
    pub async fn post(&self, http: &reqwest::Client, path: &str, content_type: &str, body: &str) -> reqwest::Response {
        http.post(self.url(path))
            .header("x-api-key", KEY)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("POST")
    }
}
