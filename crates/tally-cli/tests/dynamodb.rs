//! The same user journey as `serve.rs` and `summary.rs`, on the AWS store:
//! `tally serve --store dynamodb` and `tally summarize --store dynamodb`
//! against the moto server that `scripts/with-moto` starts (these tests fail,
//! not skip, without it).

mod common;

use common::{KEY, Server, client, tally};
use serde_json::{Value, json};
use tally_core::{IsoWeek, Timestamp};

fn aws_flags(config: &tally_aws::AwsConfig) -> Vec<String> {
    vec![
        "--store".into(),
        "dynamodb".into(),
        "--table".into(),
        config.table.clone(),
        "--bucket".into(),
        format!("s3://{}", config.bucket),
        "--endpoint-url".into(),
        config.endpoint_url.clone().unwrap_or_default(),
        "--region".into(),
        "us-east-1".into(),
    ]
}

#[tokio::test]
async fn serve_and_summarize_work_the_same_on_dynamodb_and_s3() {
    let config = tally_aws::testing::fresh_config().await;
    let flags = aws_flags(&config);
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &flag_refs);
    let http = client();

    // A lossless single record and a batch.
    let single = r#"{"z":1.0,"big":123456789012345678901234567890,"s":"é😀"}"#;
    let r = server.post(&http, "/records", "application/json", single).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let r = server.post(&http, "/post", "application/x-ndjson", "{\"i\":0}\n{\"i\":1}\n").await;
    assert_eq!(r.status(), 201);
    let text = http.get(server.url(&format!("/records/{id}"))).header("x-api-key", KEY).send().await.unwrap();
    assert!(text.text().await.unwrap().ends_with(&format!(r#""data":{single}}}"#)));

    // A refused batch stores nothing.
    let r = server.post(&http, "/records", "application/json", r#"[{"ok":1},{"a":1,"a":2}]"#).await;
    assert_eq!(r.status(), 422);

    // The weekly run writes to S3 and the API serves it.
    let week = IsoWeek::containing(Timestamp::now()).to_string();
    let out = tally()
        .args(["summarize", "--week", &week])
        .args(&flags)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("s3://{}/summaries/{week}", config.bucket)));
    let r = http.get(server.url(&format!("/summaries/{week}"))).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let summary: Value = r.json().await.unwrap();
    assert_eq!((summary["week"].clone(), summary["records"].clone()), (json!(week), json!(3)));
    let r = http.get(server.url("/summaries")).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["weeks"][0]["week"], week);
    assert!(server.terminate().success());
}
