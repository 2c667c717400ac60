//! Executors: what actually rolls an instance back or pauses a rollout.
//! One file per kind, one variant per kind in [`Executor`].
//!
//! Every value that goes into a command's argv, a URL, a header or a body
//! comes from an event's labels, so it is checked against a per-label
//! pattern first (default [`DEFAULT_PATTERN`]); a value that does not match
//! refuses the whole action. No shell is ever involved.

pub mod command;
pub mod dry;
pub mod http;
pub mod placeholders;

use std::future::Future;
use std::pin::Pin;

use std::collections::BTreeMap;

use regex::Regex;

use crate::config::Errors;
use crate::config::yaml::MapReader;
use crate::decision::Decision;

/// Letters, digits, `.`, `_`, `:`, `-`; not starting with `-` or `.` (no
/// option injection, no `..`); 1 to 128 bytes.
pub const DEFAULT_PATTERN: &str = "^[A-Za-z0-9_:][A-Za-z0-9._:-]{0,127}$";

/// What a template may refer to, by name: the decision's labels plus
/// `incident`, `rule`, `tier`, `severity`, `action`, `key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars(pub BTreeMap<String, String>);

impl Vars {
    pub fn of(d: &Decision) -> Vars {
        let mut m: BTreeMap<String, String> = d
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.insert(
            "incident".into(),
            d.incident
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_default(),
        );
        m.insert("rule".into(), d.rule.to_string());
        m.insert("tier".into(), d.tier.to_string());
        m.insert("severity".into(), d.severity.to_string());
        m.insert("action".into(), d.action.to_string());
        m.insert("key".into(), d.key.clone());
        Vars(m)
    }
}

/// Per-label value patterns.
#[derive(Debug, Clone)]
pub struct Patterns {
    default: Regex,
    by_name: BTreeMap<String, Regex>,
}

impl Default for Patterns {
    fn default() -> Self {
        Patterns {
            default: Regex::new(DEFAULT_PATTERN).expect("default pattern"),
            by_name: BTreeMap::new(),
        }
    }
}

impl Patterns {
    pub fn from_config(mut m: MapReader<'_>, errs: &mut Errors) -> Patterns {
        let mut p = Patterns::default();
        for (name, _, v) in m.take_all() {
            let Some(re) = v.as_str() else {
                m.err(errs, v, name, "expected a regular expression");
                continue;
            };
            let anchored = format!("^(?:{})$", re.trim_start_matches('^').trim_end_matches('$'));
            match Regex::new(&anchored) {
                Ok(r) => {
                    p.by_name.insert(name.to_owned(), r);
                }
                Err(e) => m.err(errs, v, name, format!("bad regular expression: {e}")),
            }
        }
        p
    }

    /// The labels given their own pattern: labels the operator expects.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// These patterns with `names` let through as `pattern` (for facts
    /// ripcord writes itself, like a vendor message's summary).
    pub fn allowing(&self, names: &[&str], pattern: &str) -> Patterns {
        let mut p = self.clone();
        let re = Regex::new(&format!("^(?:{pattern})$")).expect("a fixed pattern");
        for n in names {
            p.by_name.insert((*n).to_owned(), re.clone());
        }
        p
    }

    /// Checks a value a template is about to use.
    pub fn check(&self, name: &str, value: &str) -> Result<(), String> {
        let re = self.by_name.get(name).unwrap_or(&self.default);
        if re.is_match(value) {
            Ok(())
        } else {
            Err(format!(
                "refused: `{name}` = {} does not match {}",
                shown(value),
                re.as_str()
            ))
        }
    }
}

/// A hostile value, quoted for a message: escaped and cut short.
pub fn shown(v: &str) -> String {
    let mut s: String = v.chars().take(40).flat_map(char::escape_default).collect();
    if v.chars().count() > 40 {
        s.push('…');
    }
    format!("\"{s}\"")
}

/// A template as an executor holds it: ripcord's one template syntax
/// ([`crate::text::template`]) and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: crate::text::template::Template,
    /// Where it was written, so `check` can point at a placeholder no
    /// event will ever fill.
    origin: Option<Origin>,
}

/// A template's place in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: std::path::PathBuf,
    pub line: u32,
    pub column: u32,
    /// "executors: rollback: argv", for messages.
    pub what: String,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        Ok(Template {
            text: crate::text::template::Template::parse(s)?,
            origin: None,
        })
    }

    /// The same template, remembering where it was written.
    pub fn at(mut self, m: &MapReader<'_>, node: &crate::config::yaml::Node, key: &str) -> Self {
        self.origin = Some(Origin {
            file: m.file().to_path_buf(),
            line: node.line,
            column: node.column,
            what: format!("{}: {key}", m.what()),
        });
        self
    }

    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.text.vars()
    }

    /// Renders with every value checked against its pattern first and then
    /// passed through `escape` (identity for argv, percent-encoding for
    /// URLs, JSON escaping for bodies).
    pub fn render(
        &self,
        vars: &Vars,
        patterns: &Patterns,
        escape: impl Fn(&str) -> Result<String, String>,
    ) -> Result<String, String> {
        self.text.render(|name| {
            let v = vars
                .0
                .get(name)
                .ok_or_else(|| format!("refused: the event has no `{name}` label"))?;
            patterns.check(name, v)?;
            escape(v).map_err(|e| format!("refused: `{name}` {e}"))
        })
    }
}

/// A value as it is (argv: no shell ever sees it).
pub fn verbatim(v: &str) -> Result<String, String> {
    Ok(v.to_owned())
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// Ran and succeeded.
    Ok(String),
    /// Ran and failed (non-zero exit, error status, timeout).
    Failed(String),
    /// Never started: a value was refused, or nothing could be started.
    Refused(String),
}

impl ExecOutcome {
    pub fn detail(&self) -> &str {
        match self {
            ExecOutcome::Ok(s) | ExecOutcome::Failed(s) | ExecOutcome::Refused(s) => s,
        }
    }
}

/// What every kind of executor does. A kind is one file implementing this
/// and declaring its [`Registration`], and one line in [`KINDS`].
pub trait Execute: Send + Sync + std::fmt::Debug {
    /// The longest one run may take.
    fn timeout(&self) -> std::time::Duration;
    /// What a run would do, in one line (argv, or method and URL without
    /// its query), with every value checked as for real.
    fn describe(&self, vars: &Vars, patterns: &Patterns) -> Result<String, String>;
    /// Renders every template without running anything: `Err` is the
    /// refusal `run` would give.
    fn check(&self, vars: &Vars, patterns: &Patterns) -> Result<(), String> {
        self.describe(vars, patterns).map(drop)
    }
    /// Every template it renders, for `check`'s placeholder pass.
    fn templates(&self) -> Vec<&Template>;
    fn run<'a>(&'a self, vars: &'a Vars, patterns: &'a Patterns) -> Running<'a>;
    /// A stand-in that only says what it would do.
    fn is_dry_run(&self) -> bool {
        false
    }
}

/// A run in flight: what [`Execute::run`] returns.
pub type Running<'a> = Pin<Box<dyn Future<Output = ExecOutcome> + Send + 'a>>;

/// How a kind of executor is named in the config (`command: {...}`) and
/// read.
pub struct Registration {
    pub key: &'static str,
    /// What its settings look like, for the error that names the kinds.
    pub example: &'static str,
    pub read: fn(MapReader<'_>, &mut Errors) -> Option<Box<dyn Execute>>,
}

/// The kinds a config can name. (The dry run stands in for them; it is
/// never configured.)
const KINDS: &[Registration] = &[command::EXECUTOR, http::EXECUTOR];

/// A configured executor of any kind.
#[derive(Debug)]
pub struct Executor(Box<dyn Execute>);

impl Executor {
    pub fn new(e: impl Execute + 'static) -> Executor {
        Executor(Box::new(e))
    }

    /// Reads exactly one of the kinds' keys (`{command: {...}}` or
    /// `{http: {...}}`).
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Executor> {
        let mut given: Vec<(&Registration, MapReader<'_>)> = KINDS
            .iter()
            .filter_map(|k| m.map(k.key, errs).map(|sub| (k, sub)))
            .collect();
        let keys = || {
            KINDS
                .iter()
                .map(|k| format!("`{}`", k.key))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        match given.len() {
            1 => {
                let (kind, sub) = given.pop().expect("one");
                (kind.read)(sub, errs).map(Executor)
            }
            0 => {
                let examples: Vec<&str> = KINDS.iter().map(|k| k.example).collect();
                m.err(
                    errs,
                    m.node(),
                    KINDS[0].key,
                    format!("needs {}", examples.join(" or ")),
                );
                None
            }
            _ => {
                m.err(
                    errs,
                    m.node(),
                    given[0].0.key,
                    format!("give either {}, not both", keys()),
                );
                None
            }
        }
    }

    pub fn timeout(&self) -> std::time::Duration {
        self.0.timeout()
    }

    pub fn is_dry_run(&self) -> bool {
        self.0.is_dry_run()
    }

    pub fn describe(&self, vars: &Vars, patterns: &Patterns) -> Result<String, String> {
        self.0.describe(vars, patterns)
    }

    /// Lets a refused rollback be told apart before it takes a place in
    /// the budget.
    pub fn check(&self, vars: &Vars, patterns: &Patterns) -> Result<(), String> {
        self.0.check(vars, patterns)
    }

    pub fn templates(&self) -> Vec<&Template> {
        self.0.templates()
    }

    pub async fn run(&self, vars: &Vars, patterns: &Patterns) -> ExecOutcome {
        self.0.run(vars, patterns).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn hostile_values_are_refused() {
        let p = Patterns::default();
        for ok in ["i-0a1", "web-3", "10.0.0.7:9100", "pay_db.1"] {
            assert!(p.check("instance", ok).is_ok(), "{ok}");
        }
        let mega = "a".repeat(1 << 20);
        for bad in [
            "$(id)",
            "a;b",
            "`id`",
            "a\nb",
            "--rf",
            "-x",
            "../etc",
            "..",
            ".",
            "a\0b",
            "",
            "a b",
            mega.as_str(),
        ] {
            assert!(p.check("instance", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn templates_check_and_escape_every_value() {
        let t = Template::parse("rebuild/{instance}?from={service}").unwrap();
        let p = Patterns::default();
        assert_eq!(
            t.render(
                &vars(&[("instance", "i-1"), ("service", "web")]),
                &p,
                verbatim
            )
            .unwrap(),
            "rebuild/i-1?from=web"
        );
        let err = t
            .render(
                &vars(&[("instance", "$(reboot)"), ("service", "web")]),
                &p,
                verbatim,
            )
            .unwrap_err();
        assert!(err.contains("`instance`"), "{err}");
        assert!(
            t.render(&vars(&[("service", "web")]), &p, verbatim)
                .unwrap_err()
                .contains("no `instance`")
        );
        assert!(Template::parse("x{bad-name}").is_err());
        // A JSON body: its braces are text, its placeholders are filled.
        let body =
            Template::parse(r#"{"instance": "{instance}", "o": {}, "p": { "q": 1 }}"#).unwrap();
        assert_eq!(
            body.render(&vars(&[("instance", "i-1")]), &p, verbatim)
                .unwrap(),
            r#"{"instance": "i-1", "o": {}, "p": { "q": 1 }}"#
        );
        assert!(Template::parse("x{open").is_err());
    }
}
