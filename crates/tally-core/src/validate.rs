//! From request body to validated record texts — without re-encoding anything.
//!
//! A body is parsed with `serde_json`'s [`RawValue`], so every accepted record
//! is a slice of the original bytes: key order, number spelling (`1.0`, `1e400`,
//! `123456789012345678901234567890`) and escapes survive storage exactly.
//! Two cheap byte scans add what `serde_json` does not check: nesting depth
//! (before parsing, so a 10,000-deep body is a clear 422 rather than a parser
//! recursion error) and duplicate keys (after parsing, on known-valid text).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde_json::value::RawValue;

/// Size and shape limits for request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// One record's JSON text, in bytes.
    pub max_record_bytes: usize,
    /// Records in one batch.
    pub max_batch_records: usize,
    /// Nesting depth of one record; `{}` has depth 1.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 1024 * 1024, max_record_bytes: 64 * 1024, max_batch_records: 1000, max_depth: 32 }
    }
}

impl Limits {
    /// `serde_json` refuses to nest deeper than 128 levels; stay well below it
    /// (a batch array adds one level) so depth errors are always ours.
    pub const DEPTH_CEILING: usize = 100;
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One object, or an array of objects (`application/json`).
    Json,
    /// One object per line, blank lines ignored (`application/x-ndjson`).
    NdJson,
}

impl BodyFormat {
    /// A stable tag used in idempotency fingerprints.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::NdJson => "ndjson",
        }
    }
}

/// The accepted records, as slices of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A single object was sent: the response is `{"id","received_at"}`.
    Single(&'a str),
    /// An array or NDJSON was sent: the response is `{"count","ids"}`.
    Batch(Vec<&'a str>),
}

impl<'a> Parsed<'a> {
    pub fn records(&self) -> &[&'a str] {
        match self {
            Self::Single(r) => std::slice::from_ref(r),
            Self::Batch(v) => v,
        }
    }
}

/// JSON value kinds, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Object,
    Array,
    String,
    Number,
    Boolean,
    Null,
}

impl JsonKind {
    fn of(raw: &str) -> Self {
        match raw.as_bytes().first() {
            Some(b'{') => Self::Object,
            Some(b'[') => Self::Array,
            Some(b'"') => Self::String,
            Some(b't' | b'f') => Self::Boolean,
            Some(b'n') => Self::Null,
            _ => Self::Number,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Object => "an object",
            Self::Array => "an array",
            Self::String => "a string",
            Self::Number => "a number",
            Self::Boolean => "a boolean",
            Self::Null => "null",
        })
    }
}

/// Where in a batch a problem is: the record's 0-based index and, for
/// NDJSON, its 1-based line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub index: Option<usize>,
    pub line: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.index, self.line) {
            (Some(i), Some(l)) => write!(f, "record {i} (line {l})"),
            (Some(i), None) => write!(f, "record {i}"),
            _ => f.write_str("the record"),
        }
    }
}

/// Why a body was refused. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the request body is empty; send one JSON object, an array of objects, or NDJSON")]
    EmptyBody,
    #[error("the body starts with {what}; send UTF-8 JSON without a byte order mark")]
    Encoding { what: &'static str },
    #[error("the body is not valid UTF-8 (first bad byte at offset {offset}, line {line}); send UTF-8 encoded JSON")]
    InvalidUtf8 { offset: usize, line: usize },
    #[error("malformed JSON{}: {message} at line {line}, column {column}; fix the JSON syntax there", in_record(.pos))]
    Syntax { message: String, line: usize, column: usize, pos: Position },
    #[error("{pos} is {found}, not a JSON object; every record must be an object like {{\"key\": \"value\"}}", pos = subject(.pos))]
    NotAnObject { found: JsonKind, pos: Position },
    #[error("the batch holds no records; send at least one object")]
    EmptyBatch,
    #[error("the batch holds {count}{} records, more than the limit of {max}; split it into smaller batches", if *.at_least { "+" } else { "" })]
    TooManyRecords { count: usize, at_least: bool, max: usize },
    #[error("{pos} is {bytes} bytes, more than the limit of {max} bytes per record; split or shrink it")]
    RecordTooLarge { bytes: usize, max: usize, pos: Position },
    #[error("{pos} nests deeper than {max} levels; flatten it")]
    TooDeep { max: usize, pos: Position },
    #[error("{pos} repeats the key {key:?} in the object at {path}; keys must be unique within an object")]
    DuplicateKey { key: String, path: String, pos: Position },
}

fn in_record(pos: &Position) -> String {
    match pos.index {
        Some(_) => format!(" in {pos}"),
        None => String::new(),
    }
}

fn subject(pos: &Position) -> String {
    match pos.index {
        Some(_) => pos.to_string(),
        None => "the body".into(),
    }
}

impl ValidationError {
    /// The position of the offending record in a batch, if the error concerns one.
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::Syntax { pos, .. }
            | Self::NotAnObject { pos, .. }
            | Self::RecordTooLarge { pos, .. }
            | Self::TooDeep { pos, .. }
            | Self::DuplicateKey { pos, .. } => Some(*pos),
            _ => None,
        }
    }

    /// True for errors in the JSON text itself (HTTP 400) rather than in an
    /// acceptable-but-refused value (HTTP 422).
    pub fn is_malformed(&self) -> bool {
        matches!(self, Self::EmptyBody | Self::Encoding { .. } | Self::InvalidUtf8 { .. } | Self::Syntax { .. })
    }
}

/// Parses and validates a request body. On success every record is a
/// well-formed JSON object within `limits`; on failure nothing is accepted.
pub fn parse_body<'a>(body: &'a [u8], format: BodyFormat, limits: &Limits) -> Result<Parsed<'a>, ValidationError> {
    let text = decode(body)?;
    if text.trim_matches(is_json_ws).is_empty() {
        return Err(ValidationError::EmptyBody);
    }
    match format {
        BodyFormat::Json => parse_json(text, limits),
        BodyFormat::NdJson => parse_ndjson(text, limits),
    }
}

pub(crate) fn is_json_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn decode(body: &[u8]) -> Result<&str, ValidationError> {
    let what = match body {
        [0xEF, 0xBB, 0xBF, ..] => Some("a UTF-8 byte order mark"),
        [0xFE, 0xFF, ..] | [0xFF, 0xFE, ..] => Some("a UTF-16 byte order mark"),
        [0, _, ..] | [_, 0, ..] => Some("a NUL byte, which suggests UTF-16 or UTF-32 text"),
        _ => None,
    };
    if let Some(what) = what {
        return Err(ValidationError::Encoding { what });
    }
    std::str::from_utf8(body).map_err(|e| {
        let offset = e.valid_up_to();
        let line = body[..offset].iter().filter(|b| **b == b'\n').count() + 1;
        ValidationError::InvalidUtf8 { offset, line }
    })
}

fn syntax(e: &serde_json::Error, pos: Position, line_override: Option<usize>) -> ValidationError {
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    ValidationError::Syntax { message, line: line_override.unwrap_or(e.line()), column: e.column(), pos }
}

fn parse_json<'a>(text: &'a str, limits: &Limits) -> Result<Parsed<'a>, ValidationError> {
    let is_array = text.trim_start_matches(is_json_ws).starts_with('[');
    // A batch array adds one level above its records.
    let allowed = limits.max_depth + usize::from(is_array);
    if let Some(index) = too_deep(text, allowed, is_array) {
        let pos = Position { index: is_array.then_some(index), line: None };
        return Err(ValidationError::TooDeep { max: limits.max_depth, pos });
    }
    let whole: &RawValue = serde_json::from_str(text).map_err(|e| syntax(&e, Position::default(), None))?;
    match JsonKind::of(whole.get()) {
        JsonKind::Object => {
            check_record(whole.get(), text, Position::default(), limits)?;
            Ok(Parsed::Single(whole.get()))
        }
        JsonKind::Array => {
            let items: Vec<&RawValue> =
                serde_json::from_str(whole.get()).map_err(|e| syntax(&e, Position::default(), None))?;
            if items.is_empty() {
                return Err(ValidationError::EmptyBatch);
            }
            if items.len() > limits.max_batch_records {
                return Err(ValidationError::TooManyRecords {
                    count: items.len(),
                    at_least: false,
                    max: limits.max_batch_records,
                });
            }
            let mut out = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                let pos = Position { index: Some(index), line: None };
                let found = JsonKind::of(item.get());
                if found != JsonKind::Object {
                    return Err(ValidationError::NotAnObject { found, pos });
                }
                check_record(item.get(), text, pos, limits)?;
                out.push(item.get());
            }
            Ok(Parsed::Batch(out))
        }
        found => Err(ValidationError::NotAnObject { found, pos: Position::default() }),
    }
}

fn parse_ndjson<'a>(text: &'a str, limits: &Limits) -> Result<Parsed<'a>, ValidationError> {
    let mut out = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_matches(is_json_ws).is_empty() {
            continue;
        }
        let pos = Position { index: Some(out.len()), line: Some(n + 1) };
        if out.len() == limits.max_batch_records {
            return Err(ValidationError::TooManyRecords {
                count: out.len() + 1,
                at_least: true,
                max: limits.max_batch_records,
            });
        }
        if too_deep(line, limits.max_depth, false).is_some() {
            return Err(ValidationError::TooDeep { max: limits.max_depth, pos });
        }
        let raw: &RawValue = serde_json::from_str(line).map_err(|e| syntax(&e, pos, Some(n + 1)))?;
        let found = JsonKind::of(raw.get());
        if found != JsonKind::Object {
            return Err(ValidationError::NotAnObject { found, pos });
        }
        check_record(raw.get(), line, pos, limits)?;
        out.push(raw.get());
    }
    if out.is_empty() {
        return Err(ValidationError::EmptyBatch);
    }
    Ok(Parsed::Batch(out))
}

/// Checks one record; `body` is the text `text` was sliced from, used to
/// report line and column.
fn check_record(text: &str, body: &str, pos: Position, limits: &Limits) -> Result<(), ValidationError> {
    if text.len() > limits.max_record_bytes {
        return Err(ValidationError::RecordTooLarge { bytes: text.len(), max: limits.max_record_bytes, pos });
    }
    match scan_record(text) {
        Ok(()) => Ok(()),
        Err(Flaw::DuplicateKey { key, path }) => Err(ValidationError::DuplicateKey { key, path, pos }),
        Err(Flaw::BadString { offset, message }) => {
            // `text` is a slice of `body`; locate the string for the message.
            let at = (text.as_ptr() as usize).saturating_sub(body.as_ptr() as usize) + offset;
            let before = &body[..at.min(body.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            Err(ValidationError::Syntax { message, line: pos.line.unwrap_or(line), column, pos })
        }
    }
}

/// What [`scan_record`] can find wrong in text `serde_json` accepted.
enum Flaw {
    DuplicateKey {
        key: String,
        path: String,
    },
    /// A string whose escapes do not decode (a lone UTF-16 surrogate).
    BadString {
        offset: usize,
        message: String,
    },
}

/// Scans (possibly malformed) JSON text for nesting deeper than `max`.
/// Returns the index of the offending top-level array element (or 0).
fn too_deep(text: &str, max: usize, top_is_array: bool) -> Option<usize> {
    let b = text.as_bytes();
    let (mut depth, mut index, mut i) = (0usize, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => i = string_end(b, i),
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Some(index);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if top_is_array && depth == 1 => index += 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index of the closing quote of the string opening at `start` (or the end).
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    b.len()
}

/// Walks syntactically valid JSON `text` for what `serde_json`'s raw parse
/// lets through: repeated keys in one object (reported with a JSONPath-like
/// location) and strings whose escapes are not valid Unicode.
/// The keys seen so far in one object. Most objects have a handful of keys,
/// where comparing against each is cheaper than hashing; past
/// [`KeySet::LINEAR`] keys they move to a hash set (randomly seeded: the keys
/// come from clients).
enum KeySet<'a> {
    Few(Vec<Cow<'a, str>>),
    Many(HashSet<Cow<'a, str>, foldhash::fast::RandomState>),
}

impl Default for KeySet<'_> {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl<'a> KeySet<'a> {
    const LINEAR: usize = 16;

    /// Adds `key`; false if it was already there.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        match self {
            Self::Few(keys) if keys.contains(&key) => false,
            Self::Few(keys) if keys.len() < Self::LINEAR => {
                keys.push(key);
                true
            }
            Self::Few(keys) => {
                let mut set: HashSet<_, _> = keys.drain(..).collect();
                set.insert(key);
                *self = Self::Many(set);
                true
            }
            Self::Many(set) => set.insert(key),
        }
    }
}

fn scan_record(text: &str) -> Result<(), Flaw> {
    enum Frame<'a> {
        Object { keys: KeySet<'a>, expect_key: bool, current: Option<Cow<'a, str>> },
        Array { index: usize },
    }
    let path_of = |stack: &[Frame<'_>]| -> String {
        let mut p = String::from("$");
        let n = stack.len();
        for (i, f) in stack.iter().enumerate() {
            // The last frame is the object holding the duplicate: stop there.
            if i + 1 == n {
                break;
            }
            match f {
                Frame::Object { current: Some(k), .. } => {
                    p.push('.');
                    p.push_str(k);
                }
                Frame::Array { index } => p.push_str(&format!("[{index}]")),
                Frame::Object { current: None, .. } => {}
            }
        }
        p
    };
    let b = text.as_bytes();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => stack.push(Frame::Object { keys: KeySet::default(), expect_key: true, current: None }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            b':' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = false;
                }
            }
            b'"' => {
                let end = string_end(b, i).min(b.len() - 1);
                let raw = &text[i + 1..end];
                let decoded: Cow<'_, str> = if raw.contains('\\') {
                    // Compare decoded keys, so "a" and "\u0061" are the same key.
                    match serde_json::from_str::<String>(&text[i..=end]) {
                        Ok(s) => Cow::Owned(s),
                        Err(e) => {
                            let message = format!("invalid string escape ({e})");
                            let message = message.split(" at line ").next().unwrap_or_default().to_owned();
                            return Err(Flaw::BadString { offset: i, message: message + ")" });
                        }
                    }
                } else {
                    Cow::Borrowed(raw)
                };
                let is_key = matches!(stack.last(), Some(Frame::Object { expect_key: true, .. }));
                if is_key {
                    let key = decoded;
                    let dup = match stack.last_mut() {
                        Some(Frame::Object { keys, current, .. }) => {
                            *current = Some(key.clone());
                            !keys.insert(key.clone())
                        }
                        _ => false,
                    };
                    if dup {
                        return Err(Flaw::DuplicateKey { key: key.into_owned(), path: path_of(&stack) });
                    }
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Result<Parsed<'_>, ValidationError> {
        parse_body(body.as_bytes(), BodyFormat::Json, &Limits::default())
    }

    fn ndjson(body: &str) -> Result<Parsed<'_>, ValidationError> {
        parse_body(body.as_bytes(), BodyFormat::NdJson, &Limits::default())
    }

    #[test]
    fn single_object_is_kept_verbatim() {
        let body = r#" {"b":1.0, "a":1e400,"n":123456789012345678901234567890,"s":"\u00e9"} "#;
        assert_eq!(json(body), Ok(Parsed::Single(body.trim())));
    }

    #[test]
    fn array_of_objects_is_a_batch() {
        assert_eq!(json(r#"[{"a":1}, {"b":2}]"#), Ok(Parsed::Batch(vec![r#"{"a":1}"#, r#"{"b":2}"#])));
    }

    #[test]
    fn ndjson_skips_blank_lines_and_handles_crlf() {
        assert_eq!(ndjson("{\"a\":1}\r\n\n  \n{\"b\":2}\n"), Ok(Parsed::Batch(vec![r#"{"a":1}"#, r#"{"b":2}"#])));
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err = json("{\n  \"a\": }").unwrap_err();
        assert!(err.is_malformed());
        match err {
            ValidationError::Syntax { line, column, .. } => assert_eq!((line, column), (2, 8)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_are_classified() {
        use ValidationError as E;
        assert_eq!(json(""), Err(E::EmptyBody));
        assert_eq!(json(" \n\t"), Err(E::EmptyBody));
        assert!(matches!(json("{}x"), Err(E::Syntax { .. })));
        assert!(matches!(json("{\"a\":1"), Err(E::Syntax { .. })));
        assert!(matches!(json("{\"a\":NaN}"), Err(E::Syntax { .. })));
        assert!(matches!(json("{\"a\":Infinity}"), Err(E::Syntax { .. })));
        assert!(matches!(json(r#"{"a":"\ud800"}"#), Err(E::Syntax { .. })));
        assert!(matches!(json("{\"a\":\"x\u{0}\"}"), Err(E::Syntax { .. })));
        assert!(matches!(json("1"), Err(E::NotAnObject { found: JsonKind::Number, .. })));
        assert!(matches!(json("\"s\""), Err(E::NotAnObject { found: JsonKind::String, .. })));
        assert!(matches!(json("null"), Err(E::NotAnObject { found: JsonKind::Null, .. })));
        assert_eq!(json("[]"), Err(E::EmptyBatch));
        assert!(matches!(json("[1,2]"), Err(E::NotAnObject { pos: Position { index: Some(0), .. }, .. })));
        assert!(matches!(json("[{},[]]"), Err(E::NotAnObject { pos: Position { index: Some(1), .. }, .. })));
    }

    #[test]
    fn encodings_other_than_utf8_are_refused() {
        let err = |b: &[u8]| parse_body(b, BodyFormat::Json, &Limits::default()).unwrap_err();
        assert!(matches!(err(b"\xEF\xBB\xBF{}"), ValidationError::Encoding { .. }));
        assert!(matches!(err(b"\xFF\xFE{\0}\0"), ValidationError::Encoding { .. }));
        assert!(matches!(err(b"{\0}\0"), ValidationError::Encoding { .. }));
        assert_eq!(err(b"{\"a\":\"\xFF\"}"), ValidationError::InvalidUtf8 { offset: 6, line: 1 });
    }

    #[test]
    fn depth_limit_counts_record_levels() {
        let nest = |n: usize| format!("{}{}", "{\"a\":".repeat(n), "1".to_string() + &"}".repeat(n));
        assert!(json(&nest(32)).is_ok());
        assert!(matches!(json(&nest(33)), Err(ValidationError::TooDeep { .. })));
        assert!(json(&format!("[{}]", nest(32))).is_ok());
        assert!(matches!(
            json(&format!("[{{}},{}]", nest(33))),
            Err(ValidationError::TooDeep { pos: Position { index: Some(1), .. }, .. })
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(json(&deep), Err(ValidationError::TooDeep { .. })));
        // Brackets inside strings do not count.
        assert!(json(&format!("{{\"a\":\"{}\"}}", "[".repeat(100))).is_ok());
    }

    #[test]
    fn duplicate_keys_are_found_anywhere() {
        let err = json(r#"{"x":{"a":1,"b":{"a":2},"a":3}}"#).unwrap_err();
        assert_eq!(
            err,
            ValidationError::DuplicateKey { key: "a".into(), path: "$.x".into(), pos: Position::default() }
        );
        assert!(matches!(json(r#"{"a":1,"\u0061":2}"#), Err(ValidationError::DuplicateKey { .. })));
        assert!(matches!(json(r#"[{"l":[{"k":1,"k":2}]}]"#), Err(ValidationError::DuplicateKey { .. })));
        assert!(json(r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#).is_ok());
        assert!(json(r#"{"a\"b":1,"a":2,"x":"\"a\""}"#).is_ok());
    }

    #[test]
    fn duplicate_keys_are_found_in_objects_of_any_size() {
        // Below, at and past the switch from a list to a hash set, with the
        // duplicate early, at the switch and last.
        for n in [2, KeySet::LINEAR, KeySet::LINEAR + 1, 200] {
            let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
            assert!(json(&format!("{{{}}}", keys.join(","))).is_ok(), "{n} distinct keys");
            for dup in [0, (KeySet::LINEAR - 1).min(n - 1), n - 1] {
                let body = format!("{{{},\"k{dup}\":0}}", keys.join(","));
                let err = json(&body).unwrap_err();
                assert_eq!(
                    err,
                    ValidationError::DuplicateKey {
                        key: format!("k{dup}"),
                        path: "$".into(),
                        pos: Position::default()
                    },
                    "{n} keys, duplicate of k{dup}"
                );
            }
        }
    }

    #[test]
    fn size_and_count_limits() {
        let limits = Limits { max_record_bytes: 10, max_batch_records: 2, ..Limits::default() };
        let p = |b: &str, f| parse_body(b.as_bytes(), f, &limits).map(|_| ());
        assert!(matches!(
            p(r#"[{},{"a":"0123456789"}]"#, BodyFormat::Json),
            Err(ValidationError::RecordTooLarge { pos: Position { index: Some(1), .. }, .. })
        ));
        assert!(matches!(p("[{},{},{}]", BodyFormat::Json), Err(ValidationError::TooManyRecords { count: 3, .. })));
        assert!(matches!(p("{}\n{}\n{}", BodyFormat::NdJson), Err(ValidationError::TooManyRecords { .. })));
    }

    #[test]
    fn ndjson_errors_name_index_and_line() {
        let err = ndjson("{\"a\":1}\n\n{\"a\":\n{}").unwrap_err();
        assert!(
            matches!(err, ValidationError::Syntax { pos: Position { index: Some(1), line: Some(3) }, line: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("record 1 (line 3)"), "{err}");
        let err = ndjson("{}\n[1]").unwrap_err();
        assert!(matches!(err, ValidationError::NotAnObject { pos: Position { index: Some(1), line: Some(2) }, .. }));
        assert_eq!(ndjson("\n\n"), Err(ValidationError::EmptyBody));
    }

    #[test]
    fn messages_say_what_to_do() {
        let msg = json("[{},{},{\"a\":1,\"a\":2}]").unwrap_err().to_string();
        assert!(msg.contains("record 2") && msg.contains("unique"), "{msg}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_body(&body, BodyFormat::Json, &Limits::default());
            let _ = parse_body(&body, BodyFormat::NdJson, &Limits::default());
        }

        #[test]
        fn accepted_records_are_valid_json_objects(s in "[\\[\\]{}\",:a-c0-9 \\\\]{0,64}") {
            if let Ok(parsed) = parse_body(s.as_bytes(), BodyFormat::Json, &Limits::default()) {
                for r in parsed.records() {
                    let v: serde_json::Value = serde_json::from_str(r).unwrap();
                    proptest::prop_assert!(v.is_object());
                }
            }
        }
    }
}
