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
    /// Serializes `{"id","received_at","data"}` with `data` embedded verbatim.
    /// This is the body of `GET /records/{id}` and one line of `records.ndjson.gz`.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.data.len() + 80);
        self.write_json(&mut out);
        out
    }

    pub fn write_json(&self, out: &mut String) {
        // `data` was validated as JSON when it was accepted; if a store hands
        // back something else, fall back to embedding it as a string rather than
        // emitting invalid JSON.
        let Ok(data) = serde_json::from_str::<&RawValue>(&self.data) else {
            let text = serde_json::to_string(&serde_json::json!({
                "id": self.id, "received_at": self.received_at, "data": self.data
            }));
            out.push_str(&text.unwrap_or_default());
            return;
        };
        // Written by hand, byte for byte what serde_json gives for
        // `{"id","received_at","data": <raw>}`: its serializer and the
        // timestamp's `format!` cost as much as the validating parse above,
        // once per line of every weekly export.
        out.reserve(data.get().len() + 72);
        out.push_str("{\"id\":\"");
        // A ULID is 26 Crockford base32 characters: nothing to escape.
        let _ = std::fmt::Write::write_fmt(out, format_args!("{}", self.id));
        out.push_str("\",\"received_at\":\"");
        self.received_at.write_rfc3339(out);
        out.push_str("\",\"data\":");
        out.push_str(data.get());
        out.push('}');
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
}
