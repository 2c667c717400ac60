//! Secrets: tokens, webhook keys, SMTP passwords. Never printed: `Debug` and
//! `Display` show `**REDACTED**`, so a secret can sit in any config struct
//! without leaking through logs or error messages.

use std::fmt;
use std::path::Path;

use super::error::Errors;
use super::yaml::{MapReader, Node, Value};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself: call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
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
        Value::Str(s) if !s.is_empty() => Some(Secret(s.clone())),
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
                        m.err(
                            errs,
                            node,
                            key,
                            format!("environment variable `{arg}` is not set"),
                        );
                        return None;
                    }
                },
                "file" => {
                    let path = super::relative_to(m.file(), arg);
                    match std::fs::read_to_string(&path) {
                        Ok(v) => v.trim_end_matches(['\n', '\r']).to_owned(),
                        Err(e) => {
                            m.err(
                                errs,
                                node,
                                key,
                                format!("cannot read secret file {}: {e}", display(&path)),
                            );
                            return None;
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
            Some(Secret(value))
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
