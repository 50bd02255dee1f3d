//! A stored record: its id, when it arrived, and its JSON text exactly as sent.

use serde::Serialize;
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
        #[derive(Serialize)]
        struct View<'a> {
            id: RecordId,
            received_at: Timestamp,
            data: &'a RawValue,
        }
        // `data` was validated as JSON when it was accepted; if a store hands
        // back something else, fall back to embedding it as a string rather than
        // emitting invalid JSON.
        let raw = serde_json::from_str::<&RawValue>(&self.data);
        let text = match raw {
            Ok(data) => serde_json::to_string(&View { id: self.id, received_at: self.received_at, data }),
            Err(_) => serde_json::to_string(&serde_json::json!({
                "id": self.id, "received_at": self.received_at, "data": self.data
            })),
        };
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
}
