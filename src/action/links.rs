//! One-click links in chat, SMS and email: `…/l/<incident>/<verb>/<expires>/<sig>`.
//!
//! Each link is good for one incident, one verb (approve, reject, ack) and
//! a limited time (the approval window, 30 minutes by default); the
//! signature is an HMAC-SHA256 over all three with a secret only ripcord
//! holds. Opening a link (GET) only shows a confirmation page; acting takes
//! a POST from that page, so a chat client's link preview or a crawler
//! never approves anything.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::message::Link;
use crate::config::Secret;
use crate::time::{Dur, Ts};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Approve the rollback (of a batch incident: its breaching instances).
    Approve,
    /// Approve the rollback of a batch incident's whole batch: a link of
    /// its own, signed for that blast radius.
    ApproveBatch,
    Reject,
    Ack,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Approve => "approve",
            Verb::ApproveBatch => "approve-batch",
            Verb::Reject => "reject",
            Verb::Ack => "ack",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verb::Approve => "Approve rollback",
            Verb::ApproveBatch => "Approve rollback of the whole batch",
            Verb::Reject => "Reject",
            Verb::Ack => "Acknowledge",
        }
    }

    /// Whether the verb approves a rollback.
    pub fn approves(self) -> bool {
        matches!(self, Verb::Approve | Verb::ApproveBatch)
    }
}

impl FromStr for Verb {
    type Err = ();
    fn from_str(s: &str) -> Result<Verb, ()> {
        match s {
            "approve" => Ok(Verb::Approve),
            "approve-batch" => Ok(Verb::ApproveBatch),
            "reject" => Ok(Verb::Reject),
            "ack" => Ok(Verb::Ack),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link is not valid (it was altered, or it belongs to another ripcord)")]
    BadSignature,
    #[error("this link expired at {0}")]
    Expired(Ts),
}

/// Makes and checks signed links.
#[derive(Debug, Clone)]
pub struct LinkSigner {
    key: Secret,
    /// ripcord's public base URL, without a trailing slash.
    base: String,
    ttl: Dur,
}

impl LinkSigner {
    pub fn new(key: Secret, base: impl Into<String>, ttl: Dur) -> LinkSigner {
        LinkSigner {
            key,
            base: base.into().trim_end_matches('/').to_owned(),
            ttl,
        }
    }

    fn sign(&self, incident: &str, verb: Verb, expires: i64) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.expose().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(format!("ripcord-link|{incident}|{verb}|{expires}").as_bytes());
        let tag = mac.finalize().into_bytes();
        tag[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Links for `verbs`, valid until `now + ttl`.
    /// ripcord's public base URL (where a link's page is served from).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn links(&self, incident: &str, verbs: &[Verb], now: Ts) -> Vec<Link> {
        let expires = now.saturating_add(self.ttl).millis();
        verbs
            .iter()
            .map(|v| Link {
                label: v.label().to_owned(),
                url: format!(
                    "{}/l/{incident}/{v}/{expires}/{}",
                    self.base,
                    self.sign(incident, *v, expires)
                ),
            })
            .collect()
    }

    /// Checks a link's parts. The signature is compared in constant time.
    pub fn verify(
        &self,
        incident: &str,
        verb: Verb,
        expires: i64,
        sig: &str,
        now: Ts,
    ) -> Result<(), LinkError> {
        use subtle::ConstantTimeEq;
        let want = self.sign(incident, verb, expires);
        if want.len() != sig.len() || !bool::from(want.as_bytes().ct_eq(sig.as_bytes())) {
            return Err(LinkError::BadSignature);
        }
        if now.millis() > expires {
            return Err(LinkError::Expired(Ts(expires)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, Verb, i64, String) {
        let p: Vec<&str> = url.rsplit('/').take(4).collect();
        (
            p[3].to_owned(),
            p[2].parse().unwrap(),
            p[1].parse().unwrap(),
            p[0].to_owned(),
        )
    }

    #[test]
    fn links_verify_only_for_their_incident_verb_and_time() {
        let s = LinkSigner::new(
            Secret::new("k"),
            "https://ripcord.example/",
            Dur::from_mins(30),
        );
        let links = s.links("inc-abc", &[Verb::Approve, Verb::Ack], Ts(1_000));
        assert!(
            links[0]
                .url
                .starts_with("https://ripcord.example/l/inc-abc/approve/1801000/")
        );
        let (inc, verb, exp, sig) = parts(&links[0].url);
        assert_eq!(s.verify(&inc, verb, exp, &sig, Ts(2_000)), Ok(()));
        assert_eq!(
            s.verify(&inc, verb, exp, &sig, Ts(1_801_001)),
            Err(LinkError::Expired(Ts(1_801_000)))
        );
        assert_eq!(
            s.verify("inc-other", verb, exp, &sig, Ts(2_000)),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(&inc, Verb::Reject, exp, &sig, Ts(2_000)),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(&inc, verb, exp + 1, &sig, Ts(2_000)),
            Err(LinkError::BadSignature)
        );
        let other = LinkSigner::new(Secret::new("other"), "https://x", Dur::from_mins(30));
        assert_eq!(
            other.verify(&inc, verb, exp, &sig, Ts(2_000)),
            Err(LinkError::BadSignature)
        );
    }
}
