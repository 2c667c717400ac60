//! Label matchers in Alertmanager's syntax: `env="prod"`, `env!="dev"`,
//! `instance=~"i-0.*"`, `job!~"test.*"`. Regexes are anchored, and a label
//! that is absent matches as the empty string, as in Prometheus.

use regex::Regex;

use crate::event::Labels;

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    /// The value as written (for a regex: without the anchors added).
    value: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

impl Matcher {
    pub fn eq(name: &str, value: &str) -> Matcher {
        Matcher {
            name: name.to_owned(),
            value: value.to_owned(),
            kind: Kind::Eq(value.to_owned()),
        }
    }

    /// A matcher in Alertmanager's API form (`name`, `value`, `isRegex`,
    /// `isEqual`).
    pub fn from_parts(
        name: &str,
        value: &str,
        is_regex: bool,
        is_equal: bool,
    ) -> Result<Matcher, String> {
        if !crate::decode::is_label_name(name) {
            return Err(format!("`{name}` is not a valid label name"));
        }
        let regex = |v: &str| {
            Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("`{name}`: bad regex `{v}`: {e}"))
        };
        let kind = match (is_regex, is_equal) {
            (false, true) => Kind::Eq(value.to_owned()),
            (false, false) => Kind::Ne(value.to_owned()),
            (true, true) => Kind::Re(regex(value)?),
            (true, false) => Kind::NotRe(regex(value)?),
        };
        Ok(Matcher {
            name: name.to_owned(),
            value: value.to_owned(),
            kind,
        })
    }

    /// The value as written.
    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn is_regex(&self) -> bool {
        matches!(self.kind, Kind::Re(_) | Kind::NotRe(_))
    }

    pub fn is_equal(&self) -> bool {
        matches!(self.kind, Kind::Eq(_) | Kind::Re(_))
    }

    pub fn parse(text: &str) -> Result<Matcher, String> {
        let t = text.trim();
        let pos = t.find(['=', '!']).ok_or_else(|| {
            format!("`{text}` is not a matcher like env=\"prod\" or instance=~\"i-.*\"")
        })?;
        let name = t[..pos].trim();
        if !crate::decode::is_label_name(name) {
            return Err(format!("`{text}`: `{name}` is not a valid label name"));
        }
        let rest = &t[pos..];
        let (op, value) = ["=~", "!~", "!=", "="]
            .into_iter()
            .find_map(|op| rest.strip_prefix(op).map(|v| (op, v.trim())))
            .ok_or_else(|| format!("`{text}`: expected =, !=, =~ or !~ after `{name}`"))?;
        let value = unquote(value).ok_or_else(|| format!("`{text}`: unbalanced quotes"))?;
        Matcher::from_parts(name, &value, op.ends_with('~'), !op.starts_with('!'))
            .map_err(|e| format!("`{text}`: {e}"))
    }

    pub fn matches(&self, labels: &Labels<'_>) -> bool {
        let v = labels.get(&self.name).unwrap_or("");
        match &self.kind {
            Kind::Eq(want) => v == want,
            Kind::Ne(want) => v != want,
            Kind::Re(re) => re.is_match(v),
            Kind::NotRe(re) => !re.is_match(v),
        }
    }
}

fn unquote(v: &str) -> Option<String> {
    match v.strip_prefix('"') {
        None => Some(v.to_owned()),
        Some(inner) => {
            let inner = inner.strip_suffix('"')?;
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.push(match chars.next()? {
                        'n' => '\n',
                        other => other,
                    });
                } else {
                    out.push(c);
                }
            }
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn labels(pairs: &[(&'static str, &'static str)]) -> Labels<'static> {
        Labels(
            pairs
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
                .collect(),
        )
    }

    #[test]
    fn matcher_forms() {
        let l = labels(&[("env", "prod"), ("instance", "i-0a1")]);
        for (m, want) in [
            ("env=\"prod\"", true),
            ("env=prod", true),
            ("env!=\"prod\"", false),
            ("instance=~\"i-0.*\"", true),
            ("instance=~\"0a1\"", false),
            ("instance!~\"i-9.*\"", true),
            ("missing=\"\"", true),
            ("missing!=\"\"", false),
        ] {
            assert_eq!(Matcher::parse(m).unwrap().matches(&l), want, "{m}");
        }
        for bad in ["env", "9x=1", "env=~\"(\"", "env=\"open"] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
    }
}
