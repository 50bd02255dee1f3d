//! `tally serve` end to end: the real binary, a real socket, a real SQLite file.

mod common;

use common::{KEY, Server, client, tally};
use serde_json::{Value, json};

#[tokio::test]
async fn records_survive_a_restart_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let http = client();
    let single = r#"{"z":1.0,"a":1e400,"n":123456789012345678901234567890,"s":"é😀\u0000"}"#;
    let r = server.post(&http, "/records", "application/json", single).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let r = server.post(&http, "/post", "application/x-ndjson", "{\"i\":1}\n{\"i\":2}\n").await;
    assert_eq!(r.status(), 201);
    let ids: Vec<String> = serde_json::from_value(r.json::<Value>().await.unwrap()["ids"].clone()).unwrap();
    let before = http.get(server.url(&format!("/records/{id}"))).header("x-api-key", KEY).send().await.unwrap();
    let before = before.text().await.unwrap();
    assert!(before.ends_with(&format!(r#""data":{single}}}"#)), "{before}");

    // WHEN the server is stopped and started again on the same data
    assert!(server.terminate().success(), "SIGTERM must exit 0");
    let server = Server::start(dir.path(), &[]);

    // THEN every record reads back exactly as before
    let after = http.get(server.url(&format!("/records/{id}"))).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(after.text().await.unwrap(), before);
    for (i, id) in ids.iter().enumerate() {
        let r = http.get(server.url(&format!("/records/{id}"))).header("x-api-key", KEY).send().await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["data"], json!({"i": i + 1}));
    }
}

#[tokio::test]
async fn each_request_is_logged_once_with_status_latency_and_request_id_but_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let http = client();
    let r = http
        .post(server.url("/records"))
        .header("x-api-key", KEY)
        .header("x-request-id", "trace-me-123")
        .header("authorization", "Bearer hunter2-secret")
        .header("content-type", "application/json")
        .body(r#"{"secret_body_marker":"do-not-log"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], "trace-me-123");
    let r = http.get(server.url(&format!("/summaries?x-api-key={KEY}"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(server.terminate().success());
    let logs = server.final_log_text();
    let done: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request done")
        .collect();
    assert_eq!(done.len(), 2, "{logs}");
    assert_eq!(done[0]["status"], 201);
    assert!(done[0]["latency_ms"].as_f64().is_some());
    assert_eq!(done[0]["span"]["request_id"], "trace-me-123");
    assert_eq!(done[1]["status"], 401);
    for secret in [KEY, "hunter2-secret", "do-not-log"] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs:\n{logs}");
    }
}

/// Log lines are written by a writer thread (`telemetry`): under a burst,
/// stored and shed requests alike get their line, once, and the server's
/// own last line follows them when it exits.
#[tokio::test]
async fn every_request_of_a_burst_is_logged_once_whether_stored_or_shed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let http = client();
    let burst = (0..300).map(|i| {
        let (http, url) = (http.clone(), server.url("/records"));
        async move {
            let r = http
                .post(url)
                .header("x-api-key", KEY)
                .header("x-request-id", format!("burst-{i}"))
                .header("content-type", "application/json")
                .body(format!(r#"{{"i":{i}}}"#))
                .send()
                .await
                .unwrap();
            r.status()
        }
    });
    // More than the 64 upload slots at once: some are shed (503), and
    // those are logged too.
    let statuses = futures::future::join_all(burst).await;
    assert!(statuses.iter().all(|s| *s == 201 || *s == 503), "{statuses:?}");
    assert!(statuses.iter().any(|s| *s == 201), "{statuses:?}");
    assert!(server.terminate().success());
    let logs = server.final_log_text();
    let mut logged: Vec<String> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request done")
        .map(|v| v["span"]["request_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    logged.sort();
    let mut sent: Vec<String> = (0..300).map(|i| format!("burst-{i}")).collect();
    sent.sort();
    assert_eq!(logged, sent, "every request logged once");
    // The server's last lines (after the burst's) are there too.
    assert!(logs.lines().last().is_some_and(|l| l.contains("stopped")), "{logs}");
}

#[test]
fn serving_beyond_loopback_without_a_key_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let out = tally()
        .args(["serve", "--listen", "0.0.0.0:0", "--no-schedule", "--data-dir"])
        .arg(dir.path())
        .env_remove("TALLY_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TALLY_API_KEY") && err.contains("loopback"), "{err}");
}

#[tokio::test]
async fn without_a_key_loopback_serves_openly_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(dir.path(), &[], None);
    let r = client()
        .post(server.url("/records"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(server.terminate().success());
}

#[test]
fn an_empty_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "\n").unwrap();
    let out = tally()
        .args(["serve", "--listen", "127.0.0.1:0", "--no-schedule", "--api-key-file"])
        .arg(&key_file)
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("TALLY_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

#[test]
fn help_describes_every_subcommand() {
    let out = tally().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("summarize"), "{help}");
    let out = tally().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--data-dir", "--api-key-file", "--max-body-bytes", "--schedule", "[env: TALLY_LISTEN="] {
        assert!(help.contains(flag), "serve --help lacks {flag}:\n{help}");
    }
}
