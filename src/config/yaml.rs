//! YAML files as a tree of nodes that know their line.
//!
//! Config and rule files are read in two steps: serde-saphyr parses the text
//! into this untyped tree (only a YAML syntax error stops here), then typed
//! readers walk the tree and report every problem they find, each with its
//! file and line. That is how `ripcord check` lists all errors at once.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::error::{ConfigError, Errors};
use crate::time::Dur;

/// An error at a node: its file, line and column. (Here, not in
/// `error.rs`, so errors know nothing of YAML.)
impl ConfigError {
    pub fn at(file: &Path, node: &Node, message: impl Into<String>) -> ConfigError {
        ConfigError::new(file, node.line, node.column, message)
    }
}

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in document order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What the node is, for "expected …, got …" messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing (null)".into(),
            Value::Bool(b) => format!("boolean {b}"),
            Value::Int(i) => format!("number {i}"),
            Value::Float(f) => format!("number {f}"),
            Value::Str(s) if s.len() <= 40 => format!("{s:?}"),
            Value::Str(_) => "a long string".into(),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The node as JSON, for events written inline in rule tests.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    fn key_text(&self) -> String {
        match &self.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Float(f) => f.to_string(),
            _ => String::new(),
        }
    }
}

/// Parses `text` (the contents of `file`). A syntax error is returned as the
/// one error of the file.
pub fn parse(file: &Path, text: &str) -> Result<Node, ConfigError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ConfigError::new(file, 1, 1, "file is larger than 8 MiB"));
    }
    if text.trim().is_empty() {
        return Ok(Node {
            value: Value::Null,
            line: 1,
            column: 1,
        });
    }
    // YAML 1.2 booleans: `yes`, `no`, `on`, `y` stay strings (the Norway
    // problem); duplicate keys are an error.
    let options = serde_saphyr::options! {
        strict_booleans: true,
    };
    match serde_saphyr::from_str_with_options::<Spanned<Tree>>(text, options) {
        Ok(s) => Ok(node(s)),
        Err(e) => {
            let (line, column) = e
                .location()
                .map_or((1, 1), |l| (l.line() as u32, l.column() as u32));
            let opts = serde_saphyr::render_options! {
                snippets: serde_saphyr::SnippetMode::Off,
            };
            let msg = e.render_with_options(opts);
            Err(ConfigError::new(
                file,
                line,
                column,
                format!("invalid YAML: {msg}"),
            ))
        }
    }
}

/// The untyped tree as serde sees it; [`Node`] is the public form.
struct Tree(Value);

fn node(s: Spanned<Tree>) -> Node {
    Node {
        value: s.value.0,
        line: s.referenced.line() as u32,
        column: s.referenced.column() as u32,
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree(Value::Int(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Tree, E> {
        i64::try_from(v)
            .map(|v| Tree(Value::Int(v)))
            .map_err(|_| E::custom("integer too large"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree(Value::Float(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree(Value::Str(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Tree, E> {
        Ok(Tree(Value::Str(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Tree>>()? {
            items.push(node(item));
        }
        Ok(Tree(Value::Seq(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Spanned<Tree>>()? {
            let v = map.next_value::<Spanned<Tree>>()?;
            entries.push((node(k), node(v)));
        }
        Ok(Tree(Value::Map(entries)))
    }
}

/// Reads the fields of one mapping, reporting type errors and, at
/// [`MapReader::finish`], every key nobody asked for.
pub struct MapReader<'n> {
    file: &'n Path,
    node: &'n Node,
    entries: Vec<(&'n str, &'n Node, &'n Node, bool)>,
    what: String,
    /// Every key asked for, present or not: what an unknown key may be a
    /// misspelling of.
    asked: std::cell::RefCell<Vec<String>>,
}

impl<'n> MapReader<'n> {
    /// `what` names the mapping in messages ("rule `cpu-high`").
    pub fn new(
        file: &'n Path,
        node: &'n Node,
        what: impl Into<String>,
        errs: &mut Errors,
    ) -> Option<MapReader<'n>> {
        let what = what.into();
        let Value::Map(entries) = &node.value else {
            if node.value != Value::Null {
                errs.push(ConfigError::at(
                    file,
                    node,
                    format!("{what}: expected a mapping, got {}", node.describe()),
                ));
            }
            return if node.value == Value::Null {
                Some(MapReader {
                    file,
                    node,
                    entries: Vec::new(),
                    what,
                    asked: Default::default(),
                })
            } else {
                None
            };
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match &k.value {
                Value::Str(s) => out.push((s.as_str(), k, v, false)),
                _ => errs.push(ConfigError::at(
                    file,
                    k,
                    format!("{what}: keys must be strings, got {}", k.describe()),
                )),
            }
        }
        Some(MapReader {
            file,
            node,
            entries: out,
            what,
            asked: Default::default(),
        })
    }

    pub fn file(&self) -> &'n Path {
        self.file
    }

    pub fn node(&self) -> &'n Node {
        self.node
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// Every key of the mapping, for free-form maps (label -> value).
    pub fn take_all(&mut self) -> Vec<(&'n str, &'n Node, &'n Node)> {
        self.entries
            .iter_mut()
            .map(|e| {
                e.3 = true;
                (e.0, e.1, e.2)
            })
            .collect()
    }

    fn ask(&self, key: &str) {
        let mut asked = self.asked.borrow_mut();
        if !asked.iter().any(|k| k == key) {
            asked.push(key.to_owned());
        }
    }

    /// The value under `key`, if present and not null.
    pub fn get(&mut self, key: &str) -> Option<&'n Node> {
        self.ask(key);
        let e = self.entries.iter_mut().find(|e| e.0 == key)?;
        e.3 = true;
        (e.2.value != Value::Null).then_some(e.2)
    }

    /// The node under `key` (even if null), marking it read: for pointing
    /// errors at a key already read, or at one that must not be there.
    pub fn node_of(&mut self, key: &str) -> Option<&'n Node> {
        self.ask(key);
        let e = self.entries.iter_mut().find(|e| e.0 == key)?;
        e.3 = true;
        Some(e.2)
    }

    pub fn has(&self, key: &str) -> bool {
        self.ask(key);
        self.entries
            .iter()
            .any(|e| e.0 == key && e.2.value != Value::Null)
    }

    /// An error at `node`, prefixed with this mapping's name and `key`.
    pub fn err(&self, errs: &mut Errors, node: &Node, key: &str, msg: impl fmt::Display) {
        errs.push(ConfigError::at(
            self.file,
            node,
            format!("{}: {key}: {msg}", self.what),
        ));
    }

    pub fn require(&mut self, key: &str, errs: &mut Errors) -> Option<&'n Node> {
        let n = self.get(key);
        if n.is_none() {
            errs.push(ConfigError::at(
                self.file,
                self.node,
                format!("{}: `{key}` is required", self.what),
            ));
        }
        n
    }

    pub fn str(&mut self, key: &str, errs: &mut Errors) -> Option<&'n str> {
        let n = self.get(key)?;
        match &n.value {
            Value::Str(s) => Some(s),
            _ => {
                self.err(
                    errs,
                    n,
                    key,
                    format!("expected a string, got {}", n.describe()),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, key: &str, errs: &mut Errors) -> Option<bool> {
        let n = self.get(key)?;
        match n.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.err(
                    errs,
                    n,
                    key,
                    format!("expected true or false, got {}", n.describe()),
                );
                None
            }
        }
    }

    pub fn f64(&mut self, key: &str, errs: &mut Errors) -> Option<f64> {
        let n = self.get(key)?;
        match n.value {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) if f.is_finite() => Some(f),
            _ => {
                self.err(
                    errs,
                    n,
                    key,
                    format!("expected a number, got {}", n.describe()),
                );
                None
            }
        }
    }

    /// An integer within `range`.
    pub fn int(
        &mut self,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        errs: &mut Errors,
    ) -> Option<i64> {
        let n = self.get(key)?;
        match n.value {
            Value::Int(i) if range.contains(&i) => Some(i),
            Value::Int(i) => {
                self.err(
                    errs,
                    n,
                    key,
                    format!("{i} is outside {}..={}", range.start(), range.end()),
                );
                None
            }
            _ => {
                self.err(
                    errs,
                    n,
                    key,
                    format!("expected a whole number, got {}", n.describe()),
                );
                None
            }
        }
    }

    /// A duration (`30s`, `10m`, `1h30m`) within `range`.
    pub fn dur(
        &mut self,
        key: &str,
        range: std::ops::RangeInclusive<Dur>,
        errs: &mut Errors,
    ) -> Option<Dur> {
        let n = self.get(key)?;
        let parsed = match &n.value {
            Value::Str(s) => s.parse::<Dur>().map_err(|e| e.to_string()),
            Value::Int(0) => Ok(Dur::ZERO),
            _ => Err(format!(
                "expected a duration such as 30s, 10m or 1h, got {}",
                n.describe()
            )),
        };
        match parsed {
            Ok(d) if range.contains(&d) => Some(d),
            Ok(d) => {
                self.err(
                    errs,
                    n,
                    key,
                    format!("{d} is outside {}..={}", range.start(), range.end()),
                );
                None
            }
            Err(e) => {
                self.err(errs, n, key, e);
                None
            }
        }
    }

    /// A list of strings (a single string is taken as a one-item list).
    pub fn str_list(&mut self, key: &str, errs: &mut Errors) -> Option<Vec<(&'n str, &'n Node)>> {
        let n = self.get(key)?;
        match &n.value {
            Value::Str(s) => Some(vec![(s.as_str(), n)]),
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match &item.value {
                        Value::Str(s) => out.push((s.as_str(), item)),
                        _ => self.err(
                            errs,
                            item,
                            key,
                            format!("expected a string, got {}", item.describe()),
                        ),
                    }
                }
                Some(out)
            }
            _ => {
                self.err(
                    errs,
                    n,
                    key,
                    format!("expected a list of strings, got {}", n.describe()),
                );
                None
            }
        }
    }

    /// A nested mapping.
    pub fn map(&mut self, key: &str, errs: &mut Errors) -> Option<MapReader<'n>> {
        let n = self.get(key)?;
        let what = format!("{}: {key}", self.what);
        MapReader::new(self.file, n, what, errs)
    }

    /// A list of nodes.
    pub fn seq(&mut self, key: &str, errs: &mut Errors) -> Option<&'n [Node]> {
        let n = self.get(key)?;
        match &n.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.err(
                    errs,
                    n,
                    key,
                    format!("expected a list, got {}", n.describe()),
                );
                None
            }
        }
    }

    /// Reports keys nobody read: a typo (`widow: 5m`) must not pass silently.
    pub fn finish(self, errs: &mut Errors) {
        let asked = self.asked.borrow();
        for (k, knode, _, used) in &self.entries {
            if !used {
                let hint = did_you_mean(k, asked.iter().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                errs.push(ConfigError::at(
                    self.file,
                    knode,
                    format!("{}: unknown key `{k}`{hint}", self.what),
                ));
            }
        }
    }
}

/// The known key closest to a mistyped one, if it is close: a couple of
/// letters off (fewer for short keys).
pub fn did_you_mean<'a>(typed: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let max = (typed.chars().count() / 3).clamp(1, 3);
    known
        .map(|k| (edit_distance(typed, k), k))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, over characters (keys are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod suggest_tests {
    use super::*;

    #[test]
    fn a_misspelled_key_gets_its_nearest_known_key() {
        let known = ["window", "aggregate", "condition", "for", "min_samples"];
        assert_eq!(did_you_mean("windw", known.into_iter()), Some("window"));
        assert_eq!(
            did_you_mean("min_sample", known.into_iter()),
            Some("min_samples")
        );
        assert_eq!(did_you_mean("forr", known.into_iter()), Some("for"));
        assert_eq!(did_you_mean("threshold", known.into_iter()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
