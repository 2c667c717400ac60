//! How journal values are stored, the same in every backend: labels as a
//! JSON list of pairs (order kept), enums by name.

use super::JournalError;
use crate::decision::GroupLabels;

pub fn labels_json(labels: &GroupLabels) -> String {
    let pairs: Vec<[&str; 2]> = labels.iter().map(|(k, v)| [&**k, &**v]).collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
}

pub fn labels_from(json: &str) -> Result<GroupLabels, JournalError> {
    let pairs: Vec<(String, String)> = serde_json::from_str(json)
        .map_err(|e| JournalError::Corrupt(format!("labels {json:?}: {e}")))?;
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
        .collect::<Vec<_>>()
        .into())
}

/// A batch incident's facts as stored (JSON), `None` for other incidents.
pub fn batch_json(b: Option<&std::sync::Arc<crate::decision::BatchInfo>>) -> Option<String> {
    b.and_then(|b| serde_json::to_string(&**b).ok())
}

pub fn batch_from(
    json: Option<String>,
) -> Result<Option<std::sync::Arc<crate::decision::BatchInfo>>, JournalError> {
    match json {
        None => Ok(None),
        Some(j) => serde_json::from_str(&j)
            .map(|b| Some(std::sync::Arc::new(b)))
            .map_err(|e| JournalError::Corrupt(format!("batch incident: {e}"))),
    }
}

/// `labels` with `instance` set to `instance` (replacing any), sorted.
pub fn with_instance(labels: &GroupLabels, instance: &str) -> GroupLabels {
    let mut v: Vec<(Box<str>, Box<str>)> = labels
        .iter()
        .filter(|(k, _)| &**k != "instance")
        .cloned()
        .collect();
    v.push(("instance".into(), instance.into()));
    v.sort();
    v.into()
}

pub fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, JournalError> {
    s.parse()
        .map_err(|_| JournalError::Corrupt(format!("{what} {s:?}")))
}

/// A silence's columns as both backends read them.
pub struct SilenceCols {
    pub id: String,
    pub matchers: String,
    pub scope: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub until_service: Option<String>,
    pub until_batch: Option<String>,
    pub created_by: String,
    pub comment: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub expired_by: Option<String>,
}

/// The columns of `silences`, in [`SilenceCols`] order.
pub const SILENCE_COLS: &str = "id, matchers, scope, starts_at, ends_at, until_service, until_batch, \
     created_by, comment, created_at, updated_at, expired_by";

pub fn matchers_json(m: &[super::silences::MatcherSpec]) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "[]".into())
}

impl SilenceCols {
    pub fn into_silence(self) -> Result<super::silences::Silence, JournalError> {
        use super::silences::{Scope, Silence, UntilBatch};
        use crate::time::Ts;
        let matchers = serde_json::from_str(&self.matchers)
            .map_err(|e| JournalError::Corrupt(format!("silence {} matchers: {e}", self.id)))?;
        let scope = Scope::parse(&self.scope)
            .ok_or_else(|| JournalError::Corrupt(format!("silence scope {:?}", self.scope)))?;
        let until = match (self.until_service, self.until_batch) {
            (Some(service), Some(batch)) => Some(UntilBatch { service, batch }),
            _ => None,
        };
        Ok(Silence {
            id: self.id,
            matchers,
            scope,
            starts_at: Ts(self.starts_at),
            ends_at: Ts(self.ends_at),
            until,
            created_by: self.created_by,
            comment: self.comment,
            created_at: Ts(self.created_at),
            updated_at: Ts(self.updated_at),
            expired_by: self.expired_by,
        })
    }
}

/// A hold's columns as both backends read them.
pub fn hold_from(
    source: String,
    action_key: String,
    action: &str,
    incident: Option<String>,
    scope: &str,
    detail: String,
    at: i64,
) -> Result<super::HoldRecord, JournalError> {
    Ok(super::HoldRecord {
        source,
        action_key,
        action: parse("action", action)?,
        incident,
        scope: super::silences::Scope::parse(scope)
            .ok_or_else(|| JournalError::Corrupt(format!("hold scope {scope:?}")))?,
        detail,
        at: crate::time::Ts(at),
    })
}

/// The columns of `silence_holds`, in [`hold_from`] order.
pub const HOLD_COLS: &str = "source, action_key, action, incident_id, scope, detail, at";
