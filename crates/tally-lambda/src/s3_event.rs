//! "An object was created in the summary bucket", in the two shapes AWS
//! delivers it to a function:
//!
//! - an S3 event notification: `{"Records":[{"eventSource":"aws:s3",
//!   "eventName":"ObjectCreated:Put","eventTime":..,"s3":{"bucket":{"name":..},
//!   "object":{"key":..}}}]}`, keys URL-encoded (`+` for a space);
//! - S3's EventBridge event, which `template.yaml` routes to the weekly
//!   function (a direct notification would make the bucket, the function and
//!   its permission depend on each other in one stack): `{"source":"aws.s3",
//!   "detail-type":"Object Created","time":..,"detail":{"bucket":{"name":..},
//!   "object":{"key":..}}}`, keys as they are.
//!
//! S3 also sends `{"Event":"s3:TestEvent",..}` when a notification is set up.

use serde::Deserialize;
use serde_json::Value;
use tally_core::Timestamp;

/// One created object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedObject {
    pub bucket: String,
    /// Decoded.
    pub key: String,
    /// When S3 created it (EventBridge gives whole seconds).
    pub at: Timestamp,
}

/// What an S3-shaped event says; `None` from [`parse`] for any other event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Event {
    Created(Vec<CreatedObject>),
    /// S3 checking that a new notification can reach the function.
    Test,
}

/// Recognises the shapes above; `Ok(None)` when the event is none of them,
/// `Err` (a message) when it is one of them but not an object creation or
/// malformed.
pub fn parse(event: &Value) -> Result<Option<S3Event>, String> {
    let Value::Object(map) = event else { return Ok(None) };
    if map.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Some(S3Event::Test));
    }
    if map.contains_key("Records") {
        return notification(event).map(|o| Some(S3Event::Created(o)));
    }
    if map.get("source").and_then(Value::as_str) == Some("aws.s3") {
        return eventbridge(event).map(|o| Some(S3Event::Created(vec![o])));
    }
    Ok(None)
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Vec<NotificationRecord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationRecord {
    event_source: String,
    event_name: String,
    event_time: String,
    s3: Entity,
}

#[derive(Deserialize)]
struct Entity {
    bucket: Named,
    object: Keyed,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct Keyed {
    key: String,
}

fn notification(event: &Value) -> Result<Vec<CreatedObject>, String> {
    let n = Notification::deserialize(event).map_err(|e| format!("not an S3 event notification: {e}"))?;
    if n.records.is_empty() {
        return Err("an S3 event notification without records".into());
    }
    n.records
        .into_iter()
        .map(|r| {
            if r.event_source != "aws:s3" {
                return Err(format!("a record from {:?}, not aws:s3", r.event_source));
            }
            if !r.event_name.starts_with("ObjectCreated:") {
                return Err(format!("an S3 {} event, not ObjectCreated", r.event_name));
            }
            Ok(CreatedObject {
                bucket: r.s3.bucket.name,
                key: url_decode(&r.s3.object.key).ok_or_else(|| format!("a malformed key {:?}", r.s3.object.key))?,
                at: time(&r.event_time)?,
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct Bridged {
    #[serde(rename = "detail-type")]
    detail_type: String,
    time: String,
    detail: Entity,
}

fn eventbridge(event: &Value) -> Result<CreatedObject, String> {
    let e = Bridged::deserialize(event).map_err(|e| format!("not an S3 EventBridge event: {e}"))?;
    if e.detail_type != "Object Created" {
        return Err(format!("an S3 {:?} event, not \"Object Created\"", e.detail_type));
    }
    Ok(CreatedObject { bucket: e.detail.bucket.name, key: e.detail.object.key, at: time(&e.time)? })
}

fn time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 time"))
}

/// Decodes an S3 notification key: `%XX` escapes and `+` for a space.
fn url_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(name: &str, key: &str) -> Value {
        json!({"eventSource": "aws:s3", "eventName": name, "eventTime": "2026-11-30T12:00:00.250Z",
               "s3": {"bucket": {"name": "b"}, "object": {"key": key, "size": 0}}})
    }

    #[test]
    fn notification_keys_are_url_decoded() {
        let event = json!({"Records": [record("ObjectCreated:Put", "team+a/summaries%2F2026-W47/refresh.request")]});
        let Some(S3Event::Created(objects)) = parse(&event).unwrap() else { panic!() };
        assert_eq!(objects[0].key, "team a/summaries/2026-W47/refresh.request");
        assert_eq!(objects[0].bucket, "b");
        assert_eq!(objects[0].at, Timestamp::parse_rfc3339("2026-11-30T12:00:00.250Z").unwrap());
        assert_eq!(url_decode("a%C3%A9%2b"), Some("a\u{e9}+".into()));
        for bad in ["%", "%4", "%zz", "%ff"] {
            assert_eq!(url_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn eventbridge_keys_are_taken_as_they_are() {
        let event = json!({"source": "aws.s3", "detail-type": "Object Created", "time": "2026-11-30T12:00:00Z",
                           "detail": {"bucket": {"name": "b"}, "object": {"key": "summaries/2026-W47/refresh.request"}}});
        let Some(S3Event::Created(objects)) = parse(&event).unwrap() else { panic!() };
        assert_eq!(objects[0].key, "summaries/2026-W47/refresh.request");
    }

    #[test]
    fn other_s3_events_are_errors_and_other_events_are_not_s3() {
        for bad in [
            json!({"Records": [record("ObjectRemoved:Delete", "k")]}),
            json!({"Records": [{"eventSource": "aws:sqs", "eventName": "x"}]}),
            json!({"Records": []}),
            json!({"Records": "x"}),
            json!({"source": "aws.s3", "detail-type": "Object Deleted", "time": "2026-11-30T12:00:00Z",
                   "detail": {"bucket": {"name": "b"}, "object": {"key": "k"}}}),
            json!({"source": "aws.s3", "detail-type": "Object Created", "time": "yesterday",
                   "detail": {"bucket": {"name": "b"}, "object": {"key": "k"}}}),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(parse(&json!({"Service": "Amazon S3", "Event": "s3:TestEvent"})).unwrap(), Some(S3Event::Test));
        for other in [json!({}), json!(null), json!({"week": "2026-W47"}), json!({"detail-type": "Scheduled Event"})] {
            assert_eq!(parse(&other).unwrap(), None, "{other}");
        }
    }
}
