//! A deliberately dumb HTTP/1.1 client over `std::net::TcpStream`, for the
//! reliability tests: it sends exactly the bytes a test asks for (bad
//! framing, huge or slow headers, chunked bodies, lies in Content-Length),
//! which a real client library would refuse to send. Plus a read-only view
//! of the server's SQLite file to count what was stored.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How the request body is framed.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body and no length header.
    None,
    /// `Content-Length` and the bytes.
    Sized(Vec<u8>),
    /// `Transfer-Encoding: chunked`, these chunks, no `Content-Length`.
    Chunked(Vec<Vec<u8>>),
}

/// Builds the request bytes; adds `Host` and `Connection: close`.
pub fn request(method: &str, path: &str, headers: &[(String, Vec<u8>)], body: &Body) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match body {
        Body::None => out.extend_from_slice(b"\r\n"),
        Body::Sized(b) => {
            out.extend_from_slice(format!("content-length: {}\r\n\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        Body::Chunked(chunks) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            for c in chunks.iter().filter(|c| !c.is_empty()) {
                out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    out
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// `host:port` of a base URL like `http://127.0.0.1:1234`.
pub fn authority(base: &str) -> &str {
    base.trim_start_matches("http://").trim_end_matches('/')
}

/// Sends `raw` and reads one response. The request is written from another
/// thread, so a server that answers early (413) and stops reading cannot
/// deadlock the test; write errors after that point are expected and ignored.
pub fn send(addr: &str, raw: Vec<u8>, timeout: Duration) -> std::io::Result<Response> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let w = std::thread::spawn(move || {
        let _ = writer.write_all(&raw);
        let _ = writer.flush();
    });
    let res = read_response(stream, timeout);
    let _ = w.join();
    res
}

/// Reads one response from `stream` (until its framing says it is complete,
/// or EOF).
pub fn read_response(mut stream: TcpStream, timeout: Duration) -> std::io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(res) = parse(&buf)? {
            return Ok(res);
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no complete response in time"));
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_eof(&buf);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if !buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => return parse_eof(&buf),
            Err(e) => return Err(e),
        }
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn parse_head(head: &[u8]) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

/// A complete response in `buf`, if there is one yet.
fn parse(buf: &[u8]) -> std::io::Result<Option<Response>> {
    let Some(end) = head_end(buf) else { return Ok(None) };
    let (status, headers) = parse_head(&buf[..end])?;
    let res = Response { status, headers, body: Vec::new() };
    let rest = &buf[end..];
    if res.header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Ok(dechunk(rest).map(|body| Response { body, ..res }));
    }
    match res.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) if rest.len() >= n => Ok(Some(Response { body: rest[..n].to_vec(), ..res })),
        Some(_) => Ok(None),
        // No framing: the body runs to EOF (or there is none, e.g. 1xx/204).
        None => Ok(None),
    }
}

fn parse_eof(buf: &[u8]) -> std::io::Result<Response> {
    if buf.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed without a response"));
    }
    let end = head_end(buf).ok_or_else(|| std::io::Error::other("connection closed inside the response head"))?;
    let (status, headers) = parse_head(&buf[..end])?;
    let mut res = Response { status, headers, body: buf[end..].to_vec() };
    if res.header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        res.body = dechunk(&buf[end..]).unwrap_or_default();
    }
    Ok(res)
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// `GET /health` answers 200 within a second or two.
pub fn healthy(addr: &str) -> bool {
    send(addr, request("GET", "/health", &[], &Body::None), Duration::from_secs(5)).is_ok_and(|r| r.status == 200)
}

/// Rows in the records table, read through a separate read-only connection.
pub fn count_records(data_dir: &Path) -> u64 {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("tally.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the database read-only");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    conn.query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0)).expect("count records") as u64
}

/// `PRAGMA integrity_check` on the database file.
pub fn integrity_check(data_dir: &Path) -> String {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("tally.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the database read-only");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check")
}

/// Every stored record as `(id, data)`, sorted by id.
pub fn all_records(data_dir: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("tally.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the database read-only");
    let mut stmt = conn.prepare("SELECT id, data FROM records ORDER BY id").expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            let id: Vec<u8> = r.get(0)?;
            let id: [u8; 16] = id.try_into().unwrap_or([0; 16]);
            Ok((tally_core::RecordId::from_bytes(id).to_string(), r.get(1)?))
        })
        .expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}
