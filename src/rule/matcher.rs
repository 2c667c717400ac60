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

    /// [`Matcher::from_parts`] for what people post (silences): a regex
    /// must compile within `max_regex_bytes`, its lazy DFA's cache is held
    /// to the same, so a heavy pattern (`(?:\w{60}){3}`: megabytes of
    /// Unicode classes) is refused instead of compiled. Returns the matcher
    /// and the bytes it may hold: the name and value, and for a regex twice
    /// the smallest of 1 KiB, 4 KiB, … it compiles under (program and
    /// cache).
    pub fn bounded(
        name: &str,
        value: &str,
        is_regex: bool,
        is_equal: bool,
        max_regex_bytes: usize,
    ) -> Result<(Matcher, usize), String> {
        if !is_regex {
            let m = Matcher::from_parts(name, value, false, is_equal)?;
            return Ok((m, name.len() + value.len()));
        }
        if !crate::decode::is_label_name(name) {
            return Err(format!("`{name}` is not a valid label name"));
        }
        let pattern = format!("^(?:{value})$");
        let mut limit = 1024.min(max_regex_bytes);
        loop {
            match regex::RegexBuilder::new(&pattern)
                .size_limit(limit)
                .dfa_size_limit(limit)
                .build()
            {
                Ok(re) => {
                    let kind = if is_equal {
                        Kind::Re(re)
                    } else {
                        Kind::NotRe(re)
                    };
                    let m = Matcher {
                        name: name.to_owned(),
                        value: value.to_owned(),
                        kind,
                    };
                    return Ok((m, name.len() + value.len() + 2 * limit));
                }
                Err(regex::Error::CompiledTooBig(_)) if limit < max_regex_bytes => {
                    limit = limit.saturating_mul(4).min(max_regex_bytes);
                }
                Err(regex::Error::CompiledTooBig(_)) => {
                    return Err(format!(
                        "`{name}`: the regex compiles larger than {max_regex_bytes} bytes \
                         (silences.max_regex_bytes); narrow it (`\\w`, `.` and classes \
                         repeated many times are the heavy parts)"
                    ));
                }
                Err(e) => return Err(format!("`{name}`: bad regex `{value}`: {e}")),
            }
        }
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

    #[test]
    fn a_bounded_regex_is_charged_what_it_may_hold_and_a_heavy_one_refused() {
        let (m, light) = Matcher::bounded("instance", "i-web-.*", true, true, 64 << 10).unwrap();
        assert!(m.matches(&labels(&[("instance", "i-web-7")])));
        assert!(light <= 2 * (16 << 10), "{light}");
        let (_, plain) = Matcher::bounded("service", "web", false, true, 64 << 10).unwrap();
        assert_eq!(plain, "serviceweb".len());
        let heavy = Matcher::bounded("x", "(?:\\w{60}){3}", true, true, 64 << 10).unwrap_err();
        assert!(heavy.contains("silences.max_regex_bytes"), "{heavy}");
        let bad = Matcher::bounded("x", "(", true, true, 64 << 10).unwrap_err();
        assert!(bad.contains("bad regex"), "{bad}");
    }
}
