//! HTTP body framing: one object, an array of objects, or JSON lines /
//! RFC 7464 text sequences; decoded all or nothing, each problem naming its
//! element or line. Kept beside the decoders so the fuzzer reaches it.

use super::{DecodeError, decode};
use crate::event::Event;

/// How an HTTP body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyForm {
    /// One JSON object (an Alertmanager payload or a single event).
    Object,
    /// A JSON array of event objects.
    Array,
    /// One JSON object per line.
    Lines,
}

impl BodyForm {
    pub(crate) fn tag(self) -> u8 {
        match self {
            BodyForm::Object => b'O',
            BodyForm::Array => b'A',
            BodyForm::Lines => b'L',
        }
    }

    pub(crate) fn from_tag(t: u8) -> Option<BodyForm> {
        match t {
            b'O' => Some(BodyForm::Object),
            b'A' => Some(BodyForm::Array),
            b'L' => Some(BodyForm::Lines),
            _ => None,
        }
    }
}

/// Where a body went wrong: the element (array) or line number, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Whole(DecodeError),
    #[error("element {index}: {error}")]
    Element { index: usize, error: DecodeError },
    #[error("line {line}: {error}")]
    Line { line: usize, error: DecodeError },
    #[error("the body holds no events")]
    Empty,
}

/// Decodes a whole HTTP body, all or nothing: either every event, or the
/// first problem, naming its element or line.
pub fn decode_body<'a>(
    body: &'a [u8],
    form: BodyForm,
    out: &mut Vec<Event<'a>>,
) -> Result<(), BodyError> {
    let start = out.len();
    let res = match form {
        BodyForm::Object => decode(body, out).map_err(BodyError::Whole),
        BodyForm::Array => {
            let items: Vec<&'a serde_json::value::RawValue> = serde_json::from_slice(body)
                .map_err(|e| BodyError::Whole(DecodeError::Syntax(e.to_string())))?;
            items.iter().enumerate().try_for_each(|(index, item)| {
                decode(item.get().as_bytes(), out)
                    .map_err(|error| BodyError::Element { index, error })
            })
        }
        // JSON lines; a body starting with RS (0x1E) is an RFC 7464 JSON
        // text sequence, whose records may span lines: split on RS then.
        BodyForm::Lines => {
            let (sep, first) = if body.first() == Some(&0x1e) {
                (0x1e, 0)
            } else {
                (b'\n', 1)
            };
            body.split(|b| *b == sep)
                .enumerate()
                .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
                .try_for_each(|(i, line)| {
                    decode(line, out).map_err(|error| BodyError::Line {
                        line: i + first,
                        error,
                    })
                })
        }
    };
    if res.is_err() {
        out.truncate(start);
        return res;
    }
    if out.len() == start {
        return Err(BodyError::Empty);
    }
    Ok(())
}

/// The body's elements as raw bytes, each one whole JSON value: the object
/// itself, each array element, each line or RS record. For a body that
/// [`decode_body`] accepted.
pub fn body_elements(body: &[u8], form: BodyForm) -> Result<Vec<&[u8]>, BodyError> {
    match form {
        BodyForm::Object => Ok(vec![body]),
        BodyForm::Array => {
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
                .map_err(|e| BodyError::Whole(DecodeError::Syntax(e.to_string())))?;
            // A RawValue borrows from `body`: find each one's span there.
            let base = body.as_ptr() as usize;
            Ok(items
                .iter()
                .map(|i| {
                    let start = i.get().as_ptr() as usize - base;
                    &body[start..start + i.get().len()]
                })
                .collect())
        }
        BodyForm::Lines => {
            let sep = if body.first() == Some(&0x1e) {
                0x1e
            } else {
                b'\n'
            };
            Ok(body
                .split(|b| *b == sep)
                .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
                .collect())
        }
    }
}

/// A JSON text sequence (RFC 7464) of `elements`: the one body form that
/// carries any JSON values, multi-line ones included.
pub fn sequence_of(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(elements.iter().map(|e| e.len() + 2).sum());
    for e in elements {
        out.push(0x1e);
        out.extend_from_slice(e);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_of_every_form_decode_to_the_same_events() {
        let a = br#"{"metric":"cpu_usage_ratio","value":0.5,"ts":"2026-01-01T00:00:00Z","labels":{"service":"a"}}"#;
        let b = br#"{"metric":"cpu_usage_ratio","value":0.7,"ts":"2026-01-01T00:00:01Z","labels":{"service":"b"}}"#;
        let array = [b"[".as_slice(), a, b" ,\n ", b, b"]"].concat();
        let lines = [a.as_slice(), b"\n\n", b, b"\n"].concat();
        let seq = sequence_of(&[a, b]);
        for (body, form) in [
            (array.as_slice(), BodyForm::Array),
            (lines.as_slice(), BodyForm::Lines),
            (seq.as_slice(), BodyForm::Lines),
        ] {
            let els = body_elements(body, form).unwrap();
            assert_eq!(els.len(), 2, "{form:?}");
            assert_eq!(els[0].trim_ascii(), a.as_slice());
            assert_eq!(els[1].trim_ascii(), b.as_slice());
            let (mut whole, mut parts) = (Vec::new(), Vec::new());
            decode_body(body, form, &mut whole).unwrap();
            let rejoined = sequence_of(&els);
            decode_body(&rejoined, BodyForm::Lines, &mut parts).unwrap();
            assert_eq!(whole, parts);
        }
    }
}
