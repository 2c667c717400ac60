//! Decode: bytes of one JSON object -> events.
//!
//! Four wire forms are accepted (see README "Event formats"): ripcord's
//! native metric sample, Prometheus Alertmanager's webhook payload (one event
//! per alert), prometheus-kafka-adapter's JSON sample, and upgrade progress
//! from the rollout orchestrator. Alertmanager's v2 `postableAlerts` (what
//! Prometheus sends) is rewritten into the webhook form at receipt
//! ([`webhook_of_postable`]).
//!
//! Decoding is strict and total: every input yields either events or a
//! [`DecodeError`] naming the offending field. A well-formed native sample is
//! parsed by a typed fast path; anything else goes through a schema-free tree
//! ([`json::Json`]) so the error can name the field precisely.

mod adapter;
mod alertmanager;
mod body;
mod fields;
pub mod json;
mod native;
mod postable;
mod progress;

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::event::{Event, Labels, Sample};
use crate::time::Ts;
pub(crate) use alertmanager::fingerprint_of;
pub use body::{BodyError, BodyForm, body_elements, decode_body, sequence_of};
use fields::{Fields, LabelKind, check_label};
pub use fields::{is_label_name, is_metric_name};
use json::{CowStr, Json};
pub use postable::webhook_of_postable;

/// Size limits that keep one event's footprint (and so the engine's memory)
/// bounded whatever a producer sends.
pub mod limits {
    pub const MAX_LABELS: usize = 64;
    pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
    pub const MAX_ANNOTATION_BYTES: usize = 16 * 1024;
    pub const MAX_METRIC_NAME_BYTES: usize = 256;
    /// Fields of one JSON object (an event, an alert).
    pub const MAX_FIELDS: usize = 256;
}

/// Why an input was rejected. The message always says what is wrong and,
/// for schema problems, which field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("field `{field}` {problem}")]
    Field { field: String, problem: String },
    #[error(
        "not a recognised event: expected a metric sample (`metric`), an Alertmanager \
         webhook payload (`alerts`), a prometheus-kafka-adapter sample (`name`) or \
         upgrade progress (`kind`)"
    )]
    Unrecognised,
}

impl DecodeError {
    pub(crate) fn field(field: impl Into<String>, problem: impl fmt::Display) -> DecodeError {
        DecodeError::Field {
            field: field.into(),
            problem: problem.to_string(),
        }
    }

    /// A short, fixed label for metrics (`decode_errors_total{reason=…}`).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Syntax(_) => "syntax",
            DecodeError::Field { .. } => "field",
            DecodeError::Unrecognised => "unrecognised",
        }
    }
}

/// Decodes one JSON object (one line, one Kafka message, one array element)
/// and appends its events to `out`. On error nothing is appended: a payload
/// is taken whole or not at all.
pub fn decode<'a>(input: &'a [u8], out: &mut Vec<Event<'a>>) -> Result<(), DecodeError> {
    decode_each(input, |e| out.push(e))
}

/// Like [`decode`], handing each event to `f` (no buffer for the common
/// single-event case). `f` is called only once the whole input decoded.
pub fn decode_each<'a>(input: &'a [u8], mut f: impl FnMut(Event<'a>)) -> Result<(), DecodeError> {
    if let Some(sample) = fast_native(input) {
        f(Event::Sample(sample));
        return Ok(());
    }
    let tree: Json<'a> =
        serde_json::from_slice(input).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    let mut events = Vec::new();
    decode_tree(tree, &mut events)?;
    events.into_iter().for_each(f);
    Ok(())
}

/// The slow path alone, for differential fuzzing against [`decode`]: both
/// must accept the same inputs and produce the same events.
#[doc(hidden)]
pub fn decode_slow<'a>(input: &'a [u8], out: &mut Vec<Event<'a>>) -> Result<(), DecodeError> {
    let tree: Json<'a> =
        serde_json::from_slice(input).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    decode_tree(tree, out)
}

/// Decodes an already parsed JSON value (an element of a JSON array body).
pub fn decode_tree<'a>(tree: Json<'a>, out: &mut Vec<Event<'a>>) -> Result<(), DecodeError> {
    let mut f = Fields::new("", tree)?;
    if f.has("alerts") || f.has("version") {
        alertmanager::decode(f, out)
    } else if f.has("kind") {
        out.push(Event::Progress(progress::decode(f)?));
        Ok(())
    } else if f.has("metric") {
        out.push(Event::Sample(native::decode(f)?));
        Ok(())
    } else if f.has("name") || f.has("timestamp") {
        out.push(Event::Sample(adapter::decode(f)?));
        Ok(())
    } else {
        // Empty objects and objects of unknown shape both land here.
        let _ = f.take("labels");
        Err(DecodeError::Unrecognised)
    }
}

/// The hot path: a well-formed native sample, parsed straight into an event.
/// `None` sends the input down the slow path, which either accepts it (other
/// forms) or explains what is wrong.
fn fast_native(input: &[u8]) -> Option<Sample<'_>> {
    // serde's derived struct would also take a JSON array; events are objects.
    if input.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let raw: FastNative<'_> = serde_json::from_slice(input).ok()?;
    if !is_metric_name(&raw.metric) {
        return None;
    }
    let ts = match raw.ts {
        FastTs::Text(s) => Ts::parse_rfc3339(s).ok()?,
        FastTs::Millis(ms) => Ts::from_millis(ms)?,
    };
    Some(Sample {
        metric: raw.metric,
        value: raw.value,
        ts,
        labels: raw.labels.0,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastNative<'a> {
    #[serde(borrow)]
    metric: Cow<'a, str>,
    value: f64,
    #[serde(borrow)]
    ts: FastTs<'a>,
    #[serde(borrow, default)]
    labels: FastLabels<'a>,
}

enum FastTs<'a> {
    Text(&'a str),
    Millis(i64),
}

impl<'de: 'a, 'a> Deserialize<'de> for FastTs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FastTs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a timestamp")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FastTs::Text(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(FastTs::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v).map(FastTs::Millis).map_err(E::custom)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Labels for the fast path: string values only, validated by the same
/// [`check_label`] as the slow path; any problem aborts the fast path.
#[derive(Default)]
struct FastLabels<'a>(Labels<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for FastLabels<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FastLabels<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut labels = Labels(Vec::with_capacity(map.size_hint().unwrap_or(6)));
                while let Some(CowStr(k)) = map.next_key()? {
                    let CowStr(v) = map.next_value()?;
                    if check_label(&labels, &k, &v, LabelKind::Labels).is_some() {
                        return Err(de::Error::custom("invalid label"));
                    }
                    labels.0.push((k, v));
                }
                Ok(FastLabels(labels))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests;
