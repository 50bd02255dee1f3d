//! A stored record: its id, when it arrived, and its JSON text exactly as sent.

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

    fn write_data_as_string(&self, out: &mut String) {
        let text = serde_json::to_string(&serde_json::json!({
            "id": self.id, "received_at": self.received_at, "data": self.data
        }));
        out.push_str(&text.unwrap_or_default());
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
}
