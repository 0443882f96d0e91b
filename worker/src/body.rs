//! The request body: an event's data in its endpoint's envelope, or a
//! batch of events ([`render_batch`]), as compact JSON. Knows nothing of
//! claims or the database: [`render`] takes the envelope and the event's
//! parts ([`crate::claim::Claimed::body`] passes them).

use std::time::SystemTime;
use uuid::Uuid;

/// The body's shape around an event's data, per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// `{"id","event","timestamp","data"}`.
    Postbox,
    /// Standard Webhooks' `{"type","timestamp","data"}`.
    Standard,
    /// `id`, `event` and `timestamp` beside the data's own keys, which lose
    /// to them on a clash.
    Flat,
}

impl Envelope {
    /// The stored name (`postbox.endpoints.envelope`); `None` for any other.
    pub fn parse(s: &str) -> Option<Envelope> {
        match s {
            "postbox" => Some(Envelope::Postbox),
            "standard" => Some(Envelope::Standard),
            "flat" => Some(Envelope::Flat),
            _ => None,
        }
    }
}

/// What a body is made of: one event.
pub struct Event<'a> {
    pub id: Uuid,
    pub event_type: &'a str,
    pub time: SystemTime,
    /// PostgreSQL's text of the event's jsonb data.
    pub data: &'a str,
}

/// Room for the body's envelope around `data`: the id (36), the
/// timestamp (27), the keys and a typical event type fit in 128 bytes, so
/// the body is built without growing its buffer.
const ENVELOPE_BYTES: usize = 128;

/// The request body: `envelope` around the event's data, compact JSON
/// throughout (no insignificant whitespace).
pub fn render(envelope: Envelope, event: &Event<'_>) -> String {
    let ts = humantime::format_rfc3339_micros(event.time).to_string();
    let event_type = serde_json::Value::String(event.event_type.to_string()).to_string();
    let mut s = String::with_capacity(event.data.len() + ENVELOPE_BYTES);
    // postbox and flat both start with id, event and timestamp.
    let head = |s: &mut String| {
        s.push_str("{\"id\":\"");
        s.push_str(&event.id.to_string());
        s.push_str("\",\"event\":");
        s.push_str(&event_type);
        s.push_str(",\"timestamp\":\"");
        s.push_str(&ts);
        s.push('"');
    };
    match envelope {
        Envelope::Postbox => {
            head(&mut s);
            s.push_str(",\"data\":");
            push_compact(&mut s, event.data);
            s.push('}');
        }
        Envelope::Standard => {
            s.push_str("{\"type\":");
            s.push_str(&event_type);
            s.push_str(",\"timestamp\":\"");
            s.push_str(&ts);
            s.push_str("\",\"data\":");
            push_compact(&mut s, event.data);
            s.push('}');
        }
        Envelope::Flat => {
            head(&mut s);
            // Event data is always an object (emit and the triggers make
            // sure); its members follow in their stored order and as
            // stored, except the envelope's keys, which win.
            if let Ok(Members(members)) = serde_json::from_str::<Members>(event.data) {
                for (k, v) in members {
                    if matches!(k.as_str(), "id" | "event" | "timestamp") {
                        continue;
                    }
                    s.push(',');
                    s.push_str(&serde_json::Value::String(k).to_string());
                    s.push(':');
                    push_compact(&mut s, v.get());
                }
            }
            s.push('}');
        }
    }
    s
}

/// A batch's body: `{"id":batch_id,"events":[...]}`, each event
/// `{"id","type","timestamp","data"}` in the order given (emit order), so a
/// receiver deduplicates per event. Every endpoint's batches have this
/// shape, whatever its envelope (which shapes single events).
pub fn render_batch(batch_id: Uuid, events: &[Event<'_>]) -> String {
    let size: usize = events.iter().map(|e| e.data.len() + ENVELOPE_BYTES).sum();
    let mut s = String::with_capacity(size + 64);
    s.push_str("{\"id\":\"");
    s.push_str(&batch_id.to_string());
    s.push_str("\",\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"id\":\"");
        s.push_str(&e.id.to_string());
        s.push_str("\",\"type\":");
        s.push_str(&serde_json::Value::String(e.event_type.to_string()).to_string());
        s.push_str(",\"timestamp\":\"");
        s.push_str(&humantime::format_rfc3339_micros(e.time).to_string());
        s.push_str("\",\"data\":");
        push_compact(&mut s, e.data);
        s.push('}');
    }
    s.push_str("]}");
    s
}

/// A JSON object's members in their order, each value as its text.
struct Members<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some(entry) = m.next_entry()? {
                    v.push(entry);
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Appends `json` (PostgreSQL's text of a jsonb, which puts a space after
/// every `:` and `,`) without whitespace outside strings: the compact form
/// `JSON.stringify` and `json.dumps(separators=(",", ":"))` write.
fn push_compact(out: &mut String, json: &str) {
    let bytes = json.as_bytes();
    let (mut in_string, mut escaped, mut from) = (false, false, 0);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            // Copy the run before it; JSON's structure is ASCII, so this
            // never splits a UTF-8 sequence.
            out.push_str(&json[from..i]);
            from = i + 1;
        }
    }
    out.push_str(&json[from..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Event 0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b of type `event_type`.
    fn body(envelope: Envelope, event_type: &str, data: &str) -> String {
        render(
            envelope,
            &Event {
                id: Uuid::parse_str("0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b").unwrap(),
                event_type,
                time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
                data,
            },
        )
    }

    // PostgreSQL's text of a jsonb: a space after each ':' and ','.
    const DATA: &str = r#"{"id": 9, "note": "a, b: \"c\" caf\u00e9", "order_id": 42, "items": [1, 2.50, {"x": null}]}"#;

    #[test]
    fn the_body_is_the_envelope_around_the_stored_data_in_compact_form() {
        assert_eq!(
            body(Envelope::Postbox, "order.paid", DATA),
            concat!(
                r#"{"id":"0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b","event":"order.paid","#,
                r#""timestamp":"2023-11-14T22:13:20.123456Z","#,
                r#""data":{"id":9,"note":"a, b: \"c\" caf\u00e9","order_id":42,"items":[1,2.50,{"x":null}]}}"#
            ),
            "whitespace goes outside strings only; numbers and escapes stay as stored"
        );
        // An event type that needs escaping still makes valid JSON.
        let body = body(Envelope::Postbox, "a\"b\\c", "null");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["event"], "a\"b\\c");
        assert_eq!(v["data"], serde_json::Value::Null);
    }

    #[test]
    fn the_standard_envelope_is_type_timestamp_data() {
        assert_eq!(
            body(Envelope::Standard, "order.paid", DATA),
            concat!(
                r#"{"type":"order.paid","timestamp":"2023-11-14T22:13:20.123456Z","#,
                r#""data":{"id":9,"note":"a, b: \"c\" caf\u00e9","order_id":42,"items":[1,2.50,{"x":null}]}}"#
            )
        );
    }

    #[test]
    fn the_flat_envelope_puts_the_data_keys_beside_its_own_which_win() {
        let body = body(Envelope::Flat, "order.paid", DATA);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["id"], "0190a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
            "the envelope's id wins"
        );
        assert_eq!(v["event"], "order.paid");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["order_id"], 42);
        assert_eq!(v["note"], "a, b: \"c\" caf\u{e9}");
        assert_eq!(v.as_object().unwrap().len(), 6);
        assert_eq!(
            &body[body.find(r#""note""#).unwrap()..],
            r#""note":"a, b: \"c\" caf\u00e9","order_id":42,"items":[1,2.50,{"x":null}]}"#,
            "the data's members in their order, compact, values as stored"
        );
    }

    #[test]
    fn a_batch_is_its_id_and_its_events_in_order_each_with_id_type_timestamp_data() {
        let id = |n| Uuid::from_u128(n);
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let events = [
            Event {
                id: id(1),
                event_type: "order.paid",
                time: t,
                data: DATA,
            },
            Event {
                id: id(2),
                event_type: "a\"b",
                time: t,
                data: "{}",
            },
        ];
        let body = render_batch(id(9), &events);
        assert_eq!(
            body,
            concat!(
                r#"{"id":"00000000-0000-0000-0000-000000000009","events":["#,
                r#"{"id":"00000000-0000-0000-0000-000000000001","type":"order.paid","#,
                r#""timestamp":"2023-11-14T22:13:20.123456Z","#,
                r#""data":{"id":9,"note":"a, b: \"c\" caf\u00e9","order_id":42,"items":[1,2.50,{"x":null}]}},"#,
                r#"{"id":"00000000-0000-0000-0000-000000000002","type":"a\"b","#,
                r#""timestamp":"2023-11-14T22:13:20.123456Z","data":{}}]}"#
            )
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["events"][1]["type"], "a\"b");
    }

    #[test]
    fn envelopes_parse_by_their_stored_names() {
        for e in [Envelope::Postbox, Envelope::Standard, Envelope::Flat] {
            let name = format!("{e:?}").to_lowercase();
            assert_eq!(Envelope::parse(&name), Some(e));
        }
        assert_eq!(Envelope::parse("Postbox"), None);
    }
}
