//! ripcord's one template syntax: literal text with `{name}` placeholders,
//! a name being a label name (`{service}`, `{instance}`, `{title}`).
//! JSON's own braces (`{"a": 1}`, `{ }`, `{}`) are text, so a JSON body is
//! a template as it is. Executors parse theirs strictly ([`Template`]:
//! every placeholder must be filled, or nothing runs); message bodies of
//! webhooks and SMS gateways are filled leniently ([`fill`]), their
//! unknown placeholders having been refused when the config was read
//! ([`placeholders`]). What a value is escaped with is the caller's:
//! nothing for argv, percent-encoding in URLs, JSON escaping in bodies.

use super::is_label_name;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

impl Template {
    /// Parses `s`; a `{` that opens neither JSON nor a `{name}` is an error.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            if opens_json(after) {
                push_text(&mut parts, &rest[..start + 1]);
                rest = after;
                continue;
            }
            if start > 0 {
                push_text(&mut parts, &rest[..start]);
            }
            let end = after
                .find('}')
                .ok_or_else(|| format!("`{s}`: `{{` without a closing `}}`"))?;
            let name = &after[..end];
            if !is_label_name(name) {
                return Err(format!("`{s}`: `{{{name}}}` is not a label or fact name"));
            }
            parts.push(Part::Var(name.to_owned()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            push_text(&mut parts, rest);
        }
        Ok(Template { parts })
    }

    /// The placeholders' names, in order.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Renders with `value(name)` for each placeholder (already escaped
    /// for where it goes); the first refusal stops it.
    pub fn render(
        &self,
        mut value: impl FnMut(&str) -> Result<String, String>,
    ) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(name) => out.push_str(&value(name)?),
            }
        }
        Ok(out)
    }
}

/// Whether the text after a `{` is JSON's, not a placeholder's.
fn opens_json(after: &str) -> bool {
    after.starts_with(['"', '}']) || after.starts_with(char::is_whitespace)
}

/// Appends literal text, joined to the text before it.
fn push_text(parts: &mut Vec<Part>, t: &str) {
    match parts.last_mut() {
        Some(Part::Text(prev)) => prev.push_str(t),
        _ => parts.push(Part::Text(t.to_owned())),
    }
}

/// Fills every `{name}` that `value` knows; any other `{…}` stays as
/// written.
pub fn fill(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let known = after
            .find('}')
            .and_then(|end| value(&after[..end]).map(|v| (v, end)));
        match known {
            Some((v, end)) => {
                out.push_str(&v);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `{name}` placeholders written in `template` (names that are label
/// names; JSON's braces are not placeholders), in order.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        rest = after;
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if is_label_name(name) {
            out.push(name);
        }
    }
    out
}

/// `v` JSON-escaped, without the quotes (for a value inside a JSON string).
pub fn json_escaped(v: &str) -> String {
    let quoted = serde_json::to_string(v).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_braces_are_text_and_names_are_placeholders() {
        let t = Template::parse(r#"{"host": "{instance}", "x": { }, "y": {}}"#).unwrap();
        assert_eq!(t.vars().collect::<Vec<_>>(), ["instance"]);
        let out = t.render(|n| Ok(format!("<{n}>"))).unwrap();
        assert_eq!(out, r#"{"host": "<instance>", "x": { }, "y": {}}"#);
        assert!(Template::parse("a {b").is_err());
        assert!(Template::parse("a {b-c}").is_err());
        assert_eq!(t.render(|_| Err("no".into())), Err("no".into()));
    }

    #[test]
    fn fill_leaves_what_it_does_not_know() {
        let out = fill("{a} {b} {\"c\": 1} {", |n| {
            (n == "a").then(|| "A".to_owned())
        });
        assert_eq!(out, "A {b} {\"c\": 1} {");
        assert_eq!(placeholders("{a} {\"c\"} {b_2} {x y}"), ["a", "b_2"]);
        assert_eq!(json_escaped("a\"b\n"), "a\\\"b\\n");
    }
}
