//! What the robot webhooks of group chats (DingTalk, WeCom, Feishu) share:
//! a webhook URL that is itself the credential, `markdown` or `text`
//! format, lists of people to mention, bodies cut to the provider's limit
//! as valid JSON, `errcode` answers, and outcomes scrubbed of the URL, its
//! token and the signing secret.

use crate::action::message::truncate_utf8;
use crate::config::Errors;
use crate::config::secret::{Secret, read_secret};
use crate::config::yaml::MapReader;
use crate::text::one_line;
use serde_json::Value;

/// How a chat robot's messages are formatted (shared with WeCom).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Text,
}

/// Renders with `head` cut (on a character boundary, ending in `…`) to the
/// longest prefix whose serialized JSON is at most `limit` bytes. What JSON
/// escaping adds varies along the text, so the cut is found by bisection
/// (the size only grows with the prefix).
pub fn fit_json(limit: usize, head: &str, render: impl Fn(&str) -> Value) -> String {
    let full = render(head).to_string();
    if full.len() <= limit {
        return full;
    }
    // Invariant: a prefix of `lo` bytes fits (or lo = 0), `hi` does not.
    let (mut lo, mut hi) = (0usize, head.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if render(&truncate_utf8(head, mid)).to_string().len() <= limit {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    render(&truncate_utf8(head, lo)).to_string()
}

/// `errcode` and (shortened) `errmsg` of a chat robot's JSON answer.
pub fn errcode(text: &str) -> Option<(i64, String)> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    let code = v.get("errcode")?.as_i64()?;
    let msg = v.get("errmsg").and_then(Value::as_str).unwrap_or("");
    Some((code, truncate_utf8(msg, 300)))
}

/// Reads a robot's webhook: a secret holding an http(s) URL. Errors never
/// show the URL.
pub fn read_webhook(
    m: &mut MapReader<'_>,
    key: &str,
    example_env: &str,
    errs: &mut Errors,
) -> Option<Secret> {
    let present = m.has(key);
    let Some(url) = read_secret(m, key, errs) else {
        if !present {
            m.err(
                errs,
                m.node(),
                key,
                format!("is required: the robot's webhook URL, e.g. {{env: {example_env}}}"),
            );
        }
        return None;
    };
    let ok = url.is_unresolved()
        || reqwest::Url::parse(url.expose())
            .ok()
            .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !ok {
        let n = m.node_of(key).unwrap_or(m.node());
        m.err(
            errs,
            n,
            key,
            "is not an http(s) URL (the value is a secret and not shown)",
        );
        return None;
    }
    Some(url)
}

/// `format: markdown` (the default) or `format: text`.
pub fn read_format(m: &mut MapReader<'_>, errs: &mut Errors) -> Format {
    match m.str("format", errs) {
        None | Some("markdown") => Format::Markdown,
        Some("text") => Format::Text,
        Some(other) => {
            let n = m.node_of("format").unwrap_or(m.node());
            m.err(
                errs,
                n,
                "format",
                format!("unknown format `{other}`; expected markdown or text"),
            );
            Format::Markdown
        }
    }
}

/// A list of non-empty strings (mobiles, user ids).
pub fn read_list(m: &mut MapReader<'_>, key: &str, errs: &mut Errors) -> Vec<String> {
    let mut out = Vec::new();
    for (s, node) in m.str_list(key, errs).unwrap_or_default() {
        let s = s.trim();
        if s.is_empty() {
            m.err(errs, node, key, "must not be empty");
        } else {
            out.push(s.to_owned());
        }
    }
    out
}

/// A list of user ids that go into a chat's mention markup (Feishu's
/// `<at id=…>`, Teams' `<at>…</at>`): read as [`read_list`] reads, and
/// each id refused unless it is ASCII letters, digits and `also` alone, so
/// no configured id can close the tag or add markup. `what` is the error's
/// "is not …" (what the ids are, and what they may hold). The list comes
/// back either way; the error is in `errs`.
pub fn read_ids(
    m: &mut MapReader<'_>,
    key: &str,
    also: &str,
    what: &str,
    errs: &mut Errors,
) -> Vec<String> {
    let ids = read_list(m, key, errs);
    for id in &ids {
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || also.contains(c))
        {
            let n = m.node_of(key).unwrap_or(m.node());
            m.err(errs, n, key, format!("`{}` is not {what}", one_line(id)));
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use crate::action::channel::channel_from_yaml;

    /// The errors for a channel with `at_users: [id]`, one per line.
    fn errors(kind: &str, id: &str) -> String {
        let yaml = format!(
            "type: {kind}\nwebhook: https://hooks.example/hook/abc\nat_users: [{}]\n",
            serde_json::to_string(id).unwrap()
        );
        match channel_from_yaml("chat", &yaml) {
            Ok(_) => String::new(),
            Err(errs) => errs
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn mention_ids_that_could_hold_markup_are_refused() {
        assert_eq!(errors("feishu", "ou_7d8a6e6d-f7621"), "");
        let e = errors("feishu", "ou_1></at><at id=all");
        assert!(e.contains("is not a Feishu open_id or user_id"), "{e}");
        assert_eq!(errors("teams", "oncall@example.com"), "");
        let e = errors("teams", "a</at>\nb");
        assert!(
            e.contains("`a</at>\\u{a}b` is not a user principal name"),
            "{e}"
        );
    }
}
