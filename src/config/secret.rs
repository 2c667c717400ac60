//! Secrets: tokens, webhook keys, SMTP passwords. Never printed: `Debug` and
//! `Display` show `**REDACTED**`, so a secret can sit in any config struct
//! without leaking through logs or error messages.

use std::fmt;
use std::path::Path;

use super::error::Errors;
use super::yaml::{MapReader, Node, Value};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String, Resolved);

/// Whether a secret holds its value, or stands in for one a command that
/// sends nothing could not read (see [`with_unresolved_allowed`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resolved {
    Yes,
    No,
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into(), Resolved::Yes)
    }

    /// The secret itself: call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A stand-in for a secret that could not be read: checks of its
    /// value (is it a URL?) do not apply.
    pub fn is_unresolved(&self) -> bool {
        self.1 == Resolved::No
    }

    /// Compares in time independent of where the inputs differ (only the
    /// length can be learned, as with any token).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let a = self.0.as_bytes();
        !a.is_empty() && a.len() == candidate.len() && bool::from(a.ct_eq(candidate))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

thread_local! {
    /// Set while a command that sends nothing (`check`, `test`, `replay`)
    /// reads a config: secrets it cannot resolve are warnings, not errors.
    static UNRESOLVED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a config load) with unresolvable secrets allowed: each one
/// becomes a placeholder and a warning (returned), so a production config
/// can be checked on a laptop that has none of its secret files.
pub fn with_unresolved_allowed<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    UNRESOLVED.with(|u| *u.borrow_mut() = Some(Vec::new()));
    let out = f();
    let warnings = UNRESOLVED
        .with(|u| u.borrow_mut().take())
        .unwrap_or_default();
    (out, warnings)
}

/// A secret that could not be read: an error, unless allowed (see
/// [`with_unresolved_allowed`]), then a warning and a placeholder.
fn unresolved(
    m: &MapReader<'_>,
    node: &Node,
    key: &str,
    why: String,
    errs: &mut Errors,
) -> Option<Secret> {
    let allowed = UNRESOLVED.with(|u| {
        let mut u = u.borrow_mut();
        match u.as_mut() {
            Some(w) => {
                w.push(format!(
                    "{}:{}: {}: {key}: {why}",
                    m.file().display(),
                    node.line,
                    m.what()
                ));
                true
            }
            None => false,
        }
    });
    if allowed {
        return Some(Secret("unresolved-secret".into(), Resolved::No));
    }
    m.err(errs, node, key, why);
    None
}

/// Reads a secret written as `{env: NAME}`, `{file: /run/secrets/x}` or,
/// discouraged, a literal string. Problems are reported at the key's line;
/// the value itself never appears in a message.
pub fn read_secret(m: &mut MapReader<'_>, key: &str, errs: &mut Errors) -> Option<Secret> {
    let node = m.get(key)?;
    secret_from_node(m, node, key, errs)
}

pub fn secret_from_node(
    m: &MapReader<'_>,
    node: &Node,
    key: &str,
    errs: &mut Errors,
) -> Option<Secret> {
    match &node.value {
        Value::Str(s) if !s.is_empty() => Some(Secret::new(s.clone())),
        Value::Map(entries) if entries.len() == 1 => {
            let (k, v) = &entries[0];
            let (Some(kind), Some(arg)) = (k.as_str(), v.as_str()) else {
                m.err(errs, node, key, "expected {env: NAME} or {file: PATH}");
                return None;
            };
            let value = match kind {
                "env" => match std::env::var(arg) {
                    Ok(v) => v,
                    Err(_) => {
                        return unresolved(
                            m,
                            node,
                            key,
                            format!("environment variable `{arg}` is not set"),
                            errs,
                        );
                    }
                },
                "file" => {
                    let path = super::relative_to(m.file(), arg);
                    match std::fs::read_to_string(&path) {
                        Ok(v) => v.trim_end_matches(['\n', '\r']).to_owned(),
                        Err(e) => {
                            return unresolved(
                                m,
                                node,
                                key,
                                format!("cannot read secret file {}: {e}", display(&path)),
                                errs,
                            );
                        }
                    }
                }
                other => {
                    m.err(
                        errs,
                        node,
                        key,
                        format!("unknown secret source `{other}`; expected env or file"),
                    );
                    return None;
                }
            };
            if value.is_empty() {
                m.err(
                    errs,
                    node,
                    key,
                    format!("the secret from {kind} `{arg}` is empty"),
                );
                return None;
            }
            Some(Secret::new(value))
        }
        _ => {
            m.err(
                errs,
                node,
                key,
                "expected {env: NAME}, {file: PATH} or a string",
            );
            None
        }
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "**REDACTED** **REDACTED**");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
        }
        assert!(!format!("{:?}", Holder { token: s }).contains("hunter2"));
    }

    #[test]
    fn compares() {
        let s = Secret::new("abc");
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
        assert!(!s.matches(b"abcd"));
        assert!(!s.matches(b""));
        assert!(!Secret::new("").matches(b""));
    }
}
