//! Aliyun (Alibaba Cloud): SMS and voice through its RPC API, signed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Digest as _;

use super::{Attempt, base_url, required_secret, required_str, short};
use crate::action::channel::kit::Answer;
use crate::config::Errors;
use crate::config::secret::Secret;
use crate::config::yaml::MapReader;
use crate::text::percent_encode;
use crate::time::Ts;

// --- Aliyun ---------------------------------------------------------------------

pub(crate) const ALIYUN_SMS_URL: &str = "https://dysmsapi.aliyuncs.com";
pub(crate) const DEFAULT_ALIYUN_PARAM: &str = r#"{"content": "{text}"}"#;

/// Answer codes worth retrying: flow control and passing server trouble.
pub(crate) fn aliyun_transient(code: &str) -> bool {
    code == "isv.BUSINESS_LIMIT_CONTROL"
        || code.starts_with("Throttling")
        || code.starts_with("ServiceUnavailable")
        || code == "InternalError"
        || code == "isp.SYSTEM_ERROR"
        || code == "SignatureNonceUsed"
}

/// Alibaba Cloud RPC API (signature version 1.0), shared by SMS
/// (dysmsapi) and voice (dyvmsapi).
#[derive(Debug)]
pub(crate) struct Aliyun {
    base: String,
    access_key_id: String,
    access_key_secret: Secret,
    /// Requests signed so far: part of the nonce, so two sends of the same
    /// message at the same clock reading still differ.
    signed: AtomicU64,
}

impl Aliyun {
    pub fn from_config(
        m: &mut MapReader<'_>,
        default_base: &str,
        errs: &mut Errors,
    ) -> Option<Aliyun> {
        let base = base_url(m, default_base, errs);
        let id = required_str(m, "access_key_id", errs);
        let secret = required_secret(m, "access_key_secret", errs);
        Some(Aliyun {
            base: base?,
            access_key_id: id?,
            access_key_secret: secret?,
            signed: AtomicU64::new(0),
        })
    }

    /// A signed GET: the common parameters (`Format=JSON`, `Version=
    /// 2017-05-25`, `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`,
    /// `Timestamp` from the injected clock, `SignatureNonce`,
    /// `AccessKeyId`) plus `params` (with `Action`).
    ///
    /// The nonce is derived, not random: the first 128 bits of SHA-256 over
    /// the clock reading (ms), this channel's request counter and every
    /// other parameter, written like a UUID. Unique per request in
    /// practice, and reproducible in tests.
    pub fn request(
        &self,
        http: &reqwest::Client,
        now: Ts,
        params: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut all: Vec<(String, String)> = vec![
            ("AccessKeyId".into(), self.access_key_id.clone()),
            ("Format".into(), "JSON".into()),
            ("SignatureMethod".into(), "HMAC-SHA1".into()),
            ("SignatureVersion".into(), "1.0".into()),
            ("Timestamp".into(), aliyun_timestamp(now)),
            ("Version".into(), "2017-05-25".into()),
        ];
        all.extend(
            params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let count = self.signed.fetch_add(1, Ordering::Relaxed);
        all.push(("SignatureNonce".into(), nonce(now, count, &all)));
        let canonical = canonical_query(&all);
        let signature = rpc_signature(&canonical, self.access_key_secret.expose());
        let url = format!(
            "{}/?Signature={}&{canonical}",
            self.base,
            percent_encode(&signature)
        );
        http.get(url)
    }

    /// JSON `Code`: `OK` is success (the id is `id_field`, e.g. `BizId`,
    /// `CallId`); flow control and server trouble are worth retrying;
    /// anything else is final. Without a JSON answer the HTTP status
    /// decides.
    pub fn interpret(r: &Answer, id_field: &str) -> Attempt {
        let json: Option<serde_json::Value> = serde_json::from_str(&r.text).ok();
        let field = |k: &str| {
            json.as_ref()
                .and_then(|v| v.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let status = r.status.as_u16();
        match field("Code") {
            Some(code) if code == "OK" => Attempt::Ok(
                field(id_field)
                    .map(|id| format!("{id_field} {id}"))
                    .or_else(|| field("RequestId").map(|id| format!("RequestId {id}")))
                    .unwrap_or_else(|| "OK".into()),
            ),
            Some(code) => {
                let message = field("Message").unwrap_or_default();
                let reason = format!("Aliyun {code}: {}", short(&message));
                if aliyun_transient(&code) || r.status.is_server_error() || status == 429 {
                    // Flow control is counted per number and minute (then
                    // hour and day): sooner than a minute is sure to fail.
                    let floor =
                        (code == "isv.BUSINESS_LIMIT_CONTROL").then_some(Duration::from_secs(60));
                    Attempt::Retry {
                        after: r.retry_after.max(floor),
                        reason,
                    }
                } else {
                    Attempt::Reject(reason)
                }
            }
            None if r.status.is_server_error() || status == 429 || status == 408 => {
                Attempt::Retry {
                    after: r.retry_after,
                    reason: format!("HTTP {status}: {}", short(&r.text)),
                }
            }
            None => Attempt::Reject(format!(
                "HTTP {status}, no Code in the answer: {}",
                short(&r.text)
            )),
        }
    }
}

/// ISO 8601 UTC to the second, as Aliyun wants it: `2026-11-21T10:00:00Z`.
pub fn aliyun_timestamp(now: Ts) -> String {
    jiff::Timestamp::from_millisecond(now.millis())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

pub(crate) fn nonce(now: Ts, count: u64, params: &[(String, String)]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"ripcord aliyun nonce\0");
    h.update(now.millis().to_be_bytes());
    h.update(count.to_be_bytes());
    for (k, v) in params {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Parameters sorted by name, names and values percent-encoded, joined
/// with `&`.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `Base64(HMAC-SHA1(secret + "&", "GET&%2F&" + pct(canonical)))`.
pub fn rpc_signature(canonical: &str, secret: &str) -> String {
    let string_to_sign = format!("GET&{}&{}", percent_encode("/"), percent_encode(canonical));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}
