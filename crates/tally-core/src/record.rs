//! A stored record: its id, when it arrived, and its JSON text exactly as sent.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::clock::Timestamp;
use crate::id::RecordId;

/// One record. `data` is the record's JSON text byte for byte as the client
/// sent it (key order, number spelling and escapes kept), already validated to
/// be a JSON object within the configured limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: RecordId,
    pub received_at: Timestamp,
    pub data: String,
}

impl Record {
    /// Serializes `{"id","received_at","data"}` with `data` embedded verbatim:
    /// the body of `GET /records/{id}`.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.data.len() + 80);
        self.write_json(&mut out);
        out
    }

    /// [`to_json`](Self::to_json) into `out`. `data` was validated when it was
    /// accepted; this checks again (a full parse) and, if a store hands back
    /// something that is not JSON, embeds it as a string rather than emitting
    /// invalid JSON.
    pub fn write_json(&self, out: &mut String) {
        match serde_json::from_str::<&RawValue>(&self.data) {
            Ok(data) => self.write_object(out, data.get()),
            Err(_) => self.write_data_as_string(out),
        }
    }

    /// One line of `records.ndjson.gz` (without the newline): the same object
    /// as [`to_json`](Self::to_json), except that CR and LF in `data` become
    /// spaces. In valid JSON they can only be whitespace between tokens (a
    /// string cannot hold them raw), so the value is unchanged, and a record
    /// sent pretty-printed still takes exactly one line.
    ///
    /// `data_is_json` comes from the caller's own scan of `data` (the weekly
    /// run's aggregator reads every record anyway), which saves the export a
    /// second parse per record; when it is false, `data` is embedded as a
    /// string, as [`write_json`](Self::write_json) does.
    pub fn write_export_line(&self, out: &mut String, data_is_json: bool) {
        if !data_is_json {
            return self.write_data_as_string(out);
        }
        let data = self.data.trim_matches(crate::validate::is_json_ws);
        if memchr::memchr2(b'\n', b'\r', data.as_bytes()).is_none() {
            return self.write_object(out, data);
        }
        self.write_object(out, &data.replace(['\n', '\r'], " "));
    }

    /// [`write_export_line`](Self::write_export_line) for a record nobody
    /// has scanned yet (a range read, `tally export`): checks `data` first.
    pub fn write_checked_export_line(&self, out: &mut String) {
        let is_json = serde_json::from_str::<&RawValue>(&self.data).is_ok();
        self.write_export_line(out, is_json);
    }

    /// Written by hand, byte for byte what serde_json gives for
    /// `{"id","received_at","data": <raw>}`: its serializer and the
    /// timestamp's `format!` cost as much as a validating parse, once per line
    /// of every weekly export.
    fn write_object(&self, out: &mut String, data: &str) {
        out.reserve(data.len() + 72);
        out.push_str("{\"id\":\"");
        // A ULID is 26 Crockford base32 characters: nothing to escape.
        let _ = std::fmt::Write::write_fmt(out, format_args!("{}", self.id));
        out.push_str("\",\"received_at\":\"");
        self.received_at.write_rfc3339(out);
        out.push_str("\",\"data\":");
        out.push_str(data);
        out.push('}');
    }

    /// Reads back a line [`write_export_line`](Self::write_export_line)
    /// wrote (without its newline), borrowing the data where it was embedded
    /// as JSON; `None` for a line of another shape. The second pass of a
    /// week's segments reads part exports with it: the data comes back as
    /// it was summarized (whitespace between tokens aside), and a record
    /// that was not JSON comes back as its original text.
    pub fn read_export_line(line: &str) -> Option<ExportLine<'_>> {
        const ID: &str = "{\"id\":\"";
        const AT: &str = "\",\"received_at\":\"";
        const DATA: &str = ",\"data\":";
        if let Some(rest) = line.strip_prefix(ID) {
            // As `write_object` writes it: a 26-character id, an RFC 3339
            // time without quotes or escapes, the data verbatim.
            let (id, rest) = (rest.get(..26)?, rest.get(26..)?);
            let rest = rest.strip_prefix(AT)?;
            let (received_at, rest) = rest.split_once('"')?;
            let data = rest.strip_prefix(DATA)?.strip_suffix('}')?;
            // Data that was not JSON is embedded as a JSON string (below);
            // stored records are objects, so only that begins with a quote.
            if !data.starts_with('"') {
                return Some(ExportLine {
                    id: Cow::Borrowed(id),
                    received_at: Cow::Borrowed(received_at),
                    data: data.into(),
                });
            }
        }
        // A record whose data was not JSON, embedded as a string by serde_json.
        #[derive(serde::Deserialize)]
        struct AsString<'a> {
            #[serde(borrow)]
            id: Cow<'a, str>,
            #[serde(borrow)]
            received_at: Cow<'a, str>,
            #[serde(borrow)]
            data: Cow<'a, str>,
        }
        let line: AsString<'_> = serde_json::from_str(line).ok()?;
        Some(ExportLine { id: line.id, received_at: line.received_at, data: line.data })
    }

    fn write_data_as_string(&self, out: &mut String) {
        let text = serde_json::to_string(&serde_json::json!({
            "id": self.id, "received_at": self.received_at, "data": self.data
        }));
        out.push_str(&text.unwrap_or_default());
    }
}

/// One line of `records.ndjson.gz`, read back ([`Record::read_export_line`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportLine<'a> {
    pub id: Cow<'a, str>,
    pub received_at: Cow<'a, str>,
    pub data: Cow<'a, str>,
}

impl ExportLine<'_> {
    /// The record, or `None` if the id or time is not tally's.
    pub fn to_record(&self) -> Option<Record> {
        let id = RecordId::parse(&self.id).ok()?;
        let received_at = Timestamp::parse_rfc3339(&self.received_at)?;
        Some(Record { id, received_at, data: self.data.clone().into_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_data_verbatim() {
        let r = Record {
            id: RecordId::parse("01KAQ6ZP4W0000000000000000").unwrap(),
            received_at: Timestamp::from_millis(1_763_000_000_000),
            data: r#"{"b":1.0,"a":1e400,"n":123456789012345678901234567890,"s":"\u00e9é"}"#.into(),
        };
        assert_eq!(
            r.to_json(),
            r#"{"id":"01KAQ6ZP4W0000000000000000","received_at":"2025-11-13T02:13:20.000Z","data":{"b":1.0,"a":1e400,"n":123456789012345678901234567890,"s":"\u00e9é"}}"#
        );
    }

    #[test]
    fn hand_written_line_equals_serde_json() {
        #[derive(serde::Serialize)]
        struct View<'a> {
            id: RecordId,
            received_at: Timestamp,
            data: &'a RawValue,
        }
        for (ms, data) in
            [(0, "{}"), (1_763_000_000_123, " {\"a\": [1, {\"b\":null}]}\n"), (253_402_300_799_999, r#"{"k":"\"q\""}"#)]
        {
            let at = Timestamp::from_millis(ms);
            let r = Record { id: RecordId::deterministic(at, b"t", 3), received_at: at, data: data.into() };
            let view = View { id: r.id, received_at: at, data: serde_json::from_str(data).unwrap() };
            assert_eq!(r.to_json(), serde_json::to_string(&view).unwrap());
        }
        let bad = Record {
            id: RecordId::from_bytes([0; 16]),
            received_at: Timestamp::from_millis(0),
            data: "not json".into(),
        };
        assert!(bad.to_json().contains(r#""data":"not json""#), "{}", bad.to_json());
    }

    #[test]
    fn export_line_is_one_line_and_the_same_json() {
        let at = Timestamp::from_millis(1_763_000_000_123);
        let pretty = "{\n  \"a\": [1,\r\n 2],\n  \"s\": \"x\\ny\"\n}";
        let r = Record { id: RecordId::deterministic(at, b"t", 1), received_at: at, data: pretty.into() };
        let mut line = String::new();
        r.write_export_line(&mut line, true);
        assert!(!line.contains(['\n', '\r']), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        let whole: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(parsed, whole);
        assert_eq!(parsed["data"]["s"], "x\ny");

        // compact data: exactly `to_json`
        let compact = Record { data: r#"{"k":"\"q\"","n":1e400}"#.into(), ..r.clone() };
        line.clear();
        compact.write_export_line(&mut line, true);
        assert_eq!(line, compact.to_json());

        // data the caller's scan rejected: embedded as a string, still valid JSON
        let bad = Record { data: "not json\n".into(), ..r };
        line.clear();
        bad.write_export_line(&mut line, false);
        assert_eq!(line, bad.to_json());
        assert_eq!(serde_json::from_str::<serde_json::Value>(&line).unwrap()["data"], "not json\n");
    }

    #[test]
    fn export_lines_read_back_as_the_record_summarized() {
        let at = Timestamp::from_millis(1_763_000_000_123);
        let cases = [
            r#"{"kind":"a","n":1e400,"s":"\"}\"","x":{"y":[1,2]}}"#,
            " {\"kind\": \"b\",\n \"n\": 2}\r\n",
            "{}",
            "not json, \"quoted\" and \\ back",
            "{\"kind\":\"c\",",
        ];
        for (i, data) in cases.into_iter().enumerate() {
            let r = Record { id: RecordId::deterministic(at, b"x", i), received_at: at, data: data.into() };
            let mut line = String::new();
            r.write_checked_export_line(&mut line);
            let back = Record::read_export_line(&line).unwrap_or_else(|| panic!("{line}")).to_record().unwrap();
            assert_eq!((back.id, back.received_at), (r.id, r.received_at), "{line}");
            let is_json = serde_json::from_str::<&RawValue>(data).is_ok();
            let expected = if is_json { data.trim().replace(['\n', '\r'], " ") } else { data.to_owned() };
            assert_eq!(back.data, expected, "{line}");
        }
        assert_eq!(Record::read_export_line("{\"other\":1}"), None);
        assert_eq!(Record::read_export_line(""), None);
    }
}
