//! Typed access to the fields of a [`Json`] object, with errors that name the
//! field by its full path.

use std::borrow::Cow;

use super::json::Json;
use super::{DecodeError, limits};
use crate::event::Labels;
use crate::time::Ts;

/// The fields of one JSON object, taken one by one so leftovers (unknown
/// fields) can be reported.
pub(crate) struct Fields<'a> {
    prefix: String,
    entries: Vec<(Cow<'a, str>, Option<Json<'a>>)>,
}

impl<'a> Fields<'a> {
    /// `prefix` is the object's own path, e.g. `alerts[2]` (empty at top level).
    pub fn new(prefix: &str, value: Json<'a>) -> Result<Fields<'a>, DecodeError> {
        let Json::Object(entries) = value else {
            return Err(DecodeError::Field {
                field: if prefix.is_empty() {
                    "(event)".into()
                } else {
                    prefix.into()
                },
                problem: format!("expected an object, got {}", value.describe()),
            });
        };
        // Events have a handful of fields; a cap keeps the duplicate check
        // below (quadratic) cheap whatever a producer sends.
        if entries.len() > limits::MAX_FIELDS {
            return Err(DecodeError::field(
                if prefix.is_empty() { "(event)" } else { prefix },
                format!(
                    "has {} fields, more than the {} an event may have",
                    entries.len(),
                    limits::MAX_FIELDS
                ),
            ));
        }
        let mut out: Vec<(Cow<'a, str>, Option<Json<'a>>)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            if out.iter().any(|(seen, _)| *seen == k) {
                return Err(DecodeError::field(
                    join(prefix, &k),
                    "appears more than once",
                ));
            }
            out.push((k, Some(v)));
        }
        Ok(Fields {
            prefix: prefix.to_owned(),
            entries: out,
        })
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, v)| k == key && v.is_some())
    }

    pub fn take(&mut self, key: &str) -> Option<Json<'a>> {
        self.entries
            .iter_mut()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.take())
            .filter(|v| !matches!(v, Json::Null))
    }

    pub fn require(&mut self, key: &str) -> Result<Json<'a>, DecodeError> {
        self.take(key)
            .ok_or_else(|| DecodeError::field(self.path(key), "is missing"))
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.prefix, key)
    }

    /// Fails on the first field nobody took: strict forms reject unknown
    /// fields so a typo (`lables`) never silently drops data.
    pub fn deny_unknown(&self, form: &str) -> Result<(), DecodeError> {
        match self.entries.iter().find(|(_, v)| v.is_some()) {
            Some((k, _)) => Err(DecodeError::field(
                self.path(k),
                format!("unknown field for {form}"),
            )),
            None => Ok(()),
        }
    }

    pub fn str(&mut self, key: &str) -> Result<Cow<'a, str>, DecodeError> {
        let v = self.require(key)?;
        as_str(v, &self.path(key))
    }

    pub fn opt_str(&mut self, key: &str) -> Result<Option<Cow<'a, str>>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => as_str(v, &self.path(key)).map(Some),
        }
    }

    pub fn opt_u64(&mut self, key: &str) -> Result<Option<u64>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Json::UInt(u)) => Ok(Some(u)),
            Some(Json::Int(i)) if i >= 0 => Ok(Some(i as u64)),
            Some(v) => Err(DecodeError::field(
                self.path(key),
                format!("expected a non-negative integer, got {}", v.describe()),
            )),
        }
    }

    /// RFC 3339 string or integer Unix milliseconds.
    pub fn ts(&mut self, key: &str) -> Result<Ts, DecodeError> {
        let v = self.require(key)?;
        ts_value(v, &self.path(key))
    }

    pub fn labels(&mut self, key: &str, kind: LabelKind) -> Result<Labels<'a>, DecodeError> {
        match self.take(key) {
            None => Ok(Labels::default()),
            Some(v) => labels_value(v, &self.path(key), kind),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

pub(crate) fn as_str<'a>(v: Json<'a>, path: &str) -> Result<Cow<'a, str>, DecodeError> {
    match v {
        Json::Str(s) => Ok(s),
        other => Err(DecodeError::field(
            path,
            format!("expected a string, got {}", other.describe()),
        )),
    }
}

pub(crate) fn ts_value(v: Json<'_>, path: &str) -> Result<Ts, DecodeError> {
    match v {
        Json::Str(s) => Ts::parse_rfc3339(&s).map_err(|e| DecodeError::field(path, e.to_string())),
        Json::Int(ms) => millis(ms, path),
        Json::UInt(ms) => millis(i64::try_from(ms).unwrap_or(i64::MAX), path),
        other => Err(DecodeError::field(
            path,
            format!(
                "expected an RFC 3339 string or integer Unix milliseconds, got {}",
                other.describe()
            ),
        )),
    }
}

fn millis(ms: i64, path: &str) -> Result<Ts, DecodeError> {
    Ts::from_millis(ms).ok_or_else(|| {
        DecodeError::field(
            path,
            format!("{ms} is not Unix milliseconds between 1970 and 9999"),
        )
    })
}

/// Labels name series; annotations carry free text (Alertmanager only).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelKind {
    Labels,
    Annotations,
}

pub(crate) fn labels_value<'a>(
    v: Json<'a>,
    path: &str,
    kind: LabelKind,
) -> Result<Labels<'a>, DecodeError> {
    let Json::Object(entries) = v else {
        return Err(DecodeError::field(
            path,
            format!("expected an object of strings, got {}", v.describe()),
        ));
    };
    let mut out = Labels(Vec::with_capacity(entries.len()));
    for (name, value) in entries {
        let field = format!("{path}.{name}");
        let Json::Str(value) = value else {
            return Err(DecodeError::field(
                field,
                format!("expected a string, got {}", value.describe()),
            ));
        };
        if let Some(problem) = check_label(&out, &name, &value, kind) {
            return Err(DecodeError::field(field, problem));
        }
        out.0.push((name, value));
    }
    Ok(out)
}

/// The one place label rules live; the fast and slow paths both call it so
/// they accept exactly the same events. `None` means the pair is fine.
pub(crate) fn check_label(
    seen: &Labels<'_>,
    name: &str,
    value: &str,
    kind: LabelKind,
) -> Option<String> {
    if seen.len() >= limits::MAX_LABELS {
        return Some(format!("more than {} labels", limits::MAX_LABELS));
    }
    if seen.get(name).is_some() {
        return Some("appears more than once".into());
    }
    if kind == LabelKind::Labels && !is_label_name(name) {
        return Some(
            "is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, at most 128 bytes)".into(),
        );
    }
    let max = match kind {
        LabelKind::Labels => limits::MAX_LABEL_VALUE_BYTES,
        LabelKind::Annotations => limits::MAX_ANNOTATION_BYTES,
    };
    if value.len() > max {
        return Some(format!(
            "value is {} bytes, over the {max}-byte limit",
            value.len()
        ));
    }
    None
}

pub use crate::text::is_label_name;

pub fn is_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= limits::MAX_METRIC_NAME_BYTES
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}
