//! One way to keep secrets out of what people and logs see: provider
//! answers, driver errors and gateway bodies may echo a URL, a token or a
//! header they were sent. A [`Redact`] is built from what must never show
//! and applied to any text before it leaves ripcord's hands.

/// The secrets to take out of text, each with what it is replaced by.
#[derive(Debug, Clone, Default)]
pub struct Redact {
    needles: Vec<(String, &'static str)>,
}

/// Shorter values are not taken out: they would cut ordinary words.
const MIN_SECRET_BYTES: usize = 4;
/// A last path segment at least this long is taken for a token
/// (`/bot/v2/hook/<token>`, `/services/T0/B0/<secret>`).
const MIN_PATH_TOKEN_BYTES: usize = 16;

impl Redact {
    pub fn new() -> Redact {
        Redact::default()
    }

    /// A secret value as a whole (a signing secret, a header's value).
    pub fn secret(mut self, value: &str) -> Redact {
        if value.len() >= MIN_SECRET_BYTES {
            self.needles.push((value.to_owned(), "<redacted>"));
        }
        self
    }

    /// A URL that is a credential or carries some: the URL itself (as
    /// written and as parsed), its password, its query and each query
    /// value, and a long last path segment.
    pub fn url(mut self, url: &str) -> Redact {
        if url.is_empty() {
            return self;
        }
        self.needles.push((url.to_owned(), "<url>"));
        let Ok(u) = reqwest::Url::parse(url) else {
            return self;
        };
        if u.as_str() != url {
            self.needles.push((u.as_str().to_owned(), "<url>"));
        }
        if let Some(p) = u.password().filter(|p| !p.is_empty()) {
            self.needles.push((p.to_owned(), "<password>"));
            // Decoded, as a driver may print it.
            let decoded = percent_encoding::percent_decode_str(p).decode_utf8_lossy();
            if decoded.len() >= MIN_SECRET_BYTES {
                self.needles.push((decoded.into_owned(), "<password>"));
            }
            // As written, before percent-decoding.
            if let Some(raw) = url
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once('@'))
                .and_then(|(userinfo, _)| userinfo.split_once(':'))
                .map(|(_, p)| p)
            {
                self.needles.push((raw.to_owned(), "<password>"));
            }
        }
        if let Some(q) = u.query() {
            self.needles
                .push((format!("{}?{q}", u.path()), "<redacted>"));
            self.needles.push((q.to_owned(), "<redacted>"));
            for (_, v) in u.query_pairs() {
                if v.len() >= MIN_SECRET_BYTES {
                    self.needles.push((v.into_owned(), "<redacted>"));
                }
            }
        }
        if let Some(last) = u.path_segments().and_then(|mut s| s.next_back()) {
            if last.len() >= MIN_PATH_TOKEN_BYTES {
                self.needles.push((last.to_owned(), "<redacted>"));
            }
        }
        self
    }

    /// `text` with every secret replaced, longest first, so a part never
    /// leaves a piece of a longer one behind.
    pub fn apply(&self, text: &str) -> String {
        let mut needles: Vec<&(String, &str)> = self.needles.iter().collect();
        needles.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        needles
            .into_iter()
            .fold(text.to_owned(), |s, (n, with)| s.replace(n.as_str(), with))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_and_every_credential_in_it_are_taken_out() {
        let r = Redact::new()
            .url(
                "https://u:pa%2Fss@h.example/services/T0/B0/XyZsecretToken1234567?key=abcd1234&v=1",
            )
            .secret("sig-secret-5");
        let out = r.apply(
            "refused https://u:pa%2Fss@h.example/services/T0/B0/XyZsecretToken1234567?key=abcd1234&v=1 \
             (key abcd1234, token XyZsecretToken1234567, password pa/ss, raw pa%2Fss, sig-secret-5, v=1)",
        );
        for leak in [
            "abcd1234",
            "XyZsecretToken1234567",
            "pa/ss",
            "pa%2Fss",
            "sig-secret-5",
        ] {
            assert!(!out.contains(leak), "{leak} in {out}");
        }
        assert!(out.contains("refused <url>"), "{out}");
        assert!(out.contains("v=1)"), "short values stay: {out}");
    }

    #[test]
    fn nothing_to_hide_changes_nothing() {
        assert_eq!(Redact::new().url("").secret("ab").apply("a b"), "a b");
    }
}
