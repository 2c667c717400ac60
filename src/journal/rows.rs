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

pub fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, JournalError> {
    s.parse()
        .map_err(|_| JournalError::Corrupt(format!("{what} {s:?}")))
}
