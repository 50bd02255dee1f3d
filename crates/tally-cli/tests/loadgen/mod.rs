//! Concurrent writers for the crash and shutdown tests: each worker posts
//! single records and batches (JSON arrays and NDJSON) with unique content
//! and remembers exactly what was acknowledged with a 201.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// What the server acknowledged: id → the exact record text sent.
#[derive(Debug, Default)]
pub struct Acked {
    pub records: Mutex<BTreeMap<String, String>>,
    /// Responses by status (or "transport" for connection errors).
    pub outcomes: Mutex<BTreeMap<String, u64>>,
    pub requests: AtomicU64,
    /// Woken at every acknowledgement.
    acked: tokio::sync::Notify,
}

impl Acked {
    fn outcome(&self, what: String) {
        *self.outcomes.lock().unwrap().entry(what).or_default() += 1;
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// Waits until at least `n` records are acknowledged in all; panics
    /// after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) {
        let reached = async {
            loop {
                let mut acked = std::pin::pin!(self.acked.notified());
                // Registered before the check, so no acknowledgement slips in between.
                acked.as_mut().enable();
                if self.len() >= n {
                    return;
                }
                acked.await;
            }
        };
        if tokio::time::timeout(within, reached).await.is_err() {
            panic!("only {} of {n} records acknowledged within {within:?}: {:?}", self.len(), self.outcomes);
        }
    }

    /// Statuses other than 201 that are not transport errors.
    pub fn unexpected(&self) -> Vec<(String, u64)> {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.as_str() != "201" && k.as_str() != "transport")
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Spawns `workers` writers against `base` until `stop` is set.
pub fn spawn(
    base: &str,
    key: &str,
    workers: usize,
    tag: &str,
    stop: Arc<AtomicBool>,
    acked: Arc<Acked>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let (base, key, tag, stop, acked) =
                (base.to_owned(), key.to_owned(), tag.to_owned(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
                let mut seq = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    // Singles, JSON batches and NDJSON batches, 1 to 50 records.
                    let n = match seq % 3 {
                        0 => 1,
                        _ => 1 + (seq * 7 + w as u64) % 50,
                    } as usize;
                    let items: Vec<String> = (0..n)
                        .map(|i| {
                            format!(
                                r#"{{"run":"{tag}","w":{w},"seq":{seq},"i":{i},"v":{}.25,"s":"é😀"}}"#,
                                seq * 31 % 97
                            )
                        })
                        .collect();
                    let (ct, body) = match (n, seq % 2) {
                        (1, _) => ("application/json", items[0].clone()),
                        (_, 0) => ("application/json", format!("[{}]", items.join(","))),
                        _ => ("application/x-ndjson", items.join("\n")),
                    };
                    acked.requests.fetch_add(1, Ordering::Relaxed);
                    let res = http
                        .post(format!("{base}/records"))
                        .header("x-api-key", &key)
                        .header("content-type", ct)
                        .body(body)
                        .send()
                        .await;
                    let res = match res {
                        Ok(r) => r,
                        Err(_) => {
                            acked.outcome("transport".into());
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let status = res.status().as_u16();
                    let Ok(v) = res.json::<Value>().await else {
                        // Cut mid-response: not an acknowledgement we can use.
                        acked.outcome("transport".into());
                        continue;
                    };
                    acked.outcome(status.to_string());
                    if status != 201 {
                        continue;
                    }
                    let ids: Vec<String> = match &v["ids"] {
                        Value::Array(ids) => ids.iter().map(|i| i.as_str().unwrap().to_owned()).collect(),
                        _ => vec![v["id"].as_str().unwrap().to_owned()],
                    };
                    assert_eq!(ids.len(), n, "{v}");
                    let mut map = acked.records.lock().unwrap();
                    for (id, item) in ids.into_iter().zip(items) {
                        map.insert(id, item);
                    }
                    drop(map);
                    acked.acked.notify_waiters();
                }
            })
        })
        .collect()
}

/// Checks every acknowledged record is stored with identical content; returns
/// the lost or altered ids.
pub fn missing(data_dir: &std::path::Path, acked: &Acked) -> Vec<String> {
    let stored: BTreeMap<String, String> = crate::rawhttp::all_records(data_dir).into_iter().collect();
    acked
        .records
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, data)| stored.get(*id) != Some(*data))
        .map(|(id, _)| id.clone())
        .collect()
}
