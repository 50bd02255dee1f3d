//! A flood of 1 MiB uploads must not exhaust memory (issue 6): the server
//! sheds uploads beyond its ingest slots with 503 + Retry-After before
//! reading their bodies, so its peak RSS (VmHWM) stays bounded, it stays
//! healthy, and nothing it refused is stored.

mod common;
mod rawhttp;

use std::time::Duration;

use common::{KEY, Server};
use rawhttp::{Body, authority, count_records, healthy, request, send};

/// Peak resident set of `pid`, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_flood_of_1_mib_bodies_keeps_peak_memory_bounded() {
    let full = std::env::var("TALLY_TEST_FULL").is_ok_and(|v| v == "1");
    let (clients, rounds) = if full { (512, 4) } else { (256, 1) };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let addr = authority(&server.base).to_owned();
    let pid = server.child.id();
    let baseline = vm_hwm_kib(pid);
    // A body just under the 1 MiB limit that is fully parsed and then refused
    // (422 at its last record): the most memory a request can make us hold.
    let item = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000));
    let mut body = String::from("[");
    while body.len() + item.len() + 10 < 1024 * 1024 {
        body.push_str(&item);
        body.push(',');
    }
    body.push_str("1]");
    let body = body.into_bytes();
    let headers = vec![
        ("x-api-key".to_owned(), KEY.as_bytes().to_vec()),
        ("content-type".to_owned(), b"application/json".to_vec()),
    ];
    let mut statuses = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..rounds {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let raw = request("POST", "/records", &headers, &Body::Sized(body.clone()));
                let addr = addr.clone();
                std::thread::spawn(move || match send(&addr, raw, Duration::from_secs(60)) {
                    Ok(r) => r.status.to_string(),
                    Err(e) => format!("transport: {:?}", e.kind()),
                })
            })
            .collect();
        for t in threads {
            *statuses.entry(t.join().unwrap()).or_default() += 1;
        }
        assert!(healthy(&addr), "unhealthy after a flood round; statuses {statuses:?}");
    }
    let peak = vm_hwm_kib(pid);
    eprintln!("flood: {clients} clients x {rounds} rounds; statuses {statuses:?}; VmHWM {baseline} KiB -> {peak} KiB");
    // Nothing unexpected: refused (422) or shed (503), never another 5xx.
    for status in statuses.keys() {
        assert!(
            status == "422" || status == "503" || status.starts_with("transport"),
            "unexpected outcome {status}: {statuses:?}"
        );
    }
    assert!(statuses.get("422").copied().unwrap_or(0) > 0, "no upload was processed: {statuses:?}");
    // 64 slots x (1 MiB body + parse state) plus the runtime: about 90 MiB
    // measured. Without shedding, 256 concurrent uploads peaked at 276 MiB.
    assert!(peak < 180 * 1024, "peak RSS {peak} KiB is not bounded");
    assert_eq!(count_records(dir.path()), 0);
}
