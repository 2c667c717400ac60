//! Which `Host` the console and the one-click links answer to.
//!
//! A page served for any Host name can be read by any site: a page on
//! `attacker.example` whose DNS name is then pointed at ripcord's address
//! (DNS rebinding) is same-origin with what it fetches, so its browser
//! sends `Sec-Fetch-Site: same-origin` and the cookies of that name. The
//! browser always sends the name it resolved as `Host`, so ripcord answers
//! only to its own names: the host of `http.public_url`, the names in
//! `http.allowed_hosts`, and addresses written as IP literals or
//! `localhost` (no DNS name another party controls). Everything else gets
//! 421 Misdirected Request and nothing of the page.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Errors;
use crate::config::secret::read_secret;
use crate::config::yaml::MapReader;

/// `http.console`: who may see and use the console (see `crate::console`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConsoleConfig {
    /// Lets a browser read (not act) after signing in with it, or a client
    /// with it as bearer token.
    pub read_token: Option<crate::config::Secret>,
    /// A reverse proxy's header naming the signed-in user (oauth2-proxy
    /// behind nginx `auth_request`, which sets it on every request it
    /// passes). Trusted, to read and act, only from `trusted_proxies`,
    /// which must then be given.
    pub trusted_user_header: Option<String>,
    /// Peers whose user header is believed. Never assumed: every peer of a
    /// proxy on the same host, a `kubectl port-forward` or a mesh sidecar
    /// is loopback, and so is anyone those let through.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Reading without credentials from a loopback peer (default false:
    /// see `trusted_proxies`). Without any token configured the API is
    /// open on loopback, and so is reading the console.
    pub open_on_loopback: bool,
}

/// One allowed `host[:port]`; no port: any port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    host: String,
    port: Option<u16>,
}

impl Allowed {
    /// `name`, `name:port`, `[v6]` or `[v6]:port`, lower-cased; `None` for
    /// anything else (a scheme, a path, a bad port).
    pub fn parse(s: &str) -> Option<Allowed> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() || s.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        let (host, port) = match s.strip_prefix('[') {
            Some(rest) => {
                let (h, after) = rest.split_once(']')?;
                h.parse::<std::net::Ipv6Addr>().ok()?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':')?.parse().ok()?),
                };
                (format!("[{h}]"), port)
            }
            None => match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_owned(), Some(p.parse().ok()?)),
                Some(_) => return None,
                None => (s, None),
            },
        };
        (!host.is_empty()).then_some(Allowed { host, port })
    }

    fn admits(&self, asked: &Allowed) -> bool {
        self.host == asked.host
            && match (self.port, asked.port) {
                (None, _) => true,
                (Some(p), Some(q)) => p == q,
                // No port in the request: the scheme's default.
                (Some(p), None) => p == 80 || p == 443,
            }
    }

    /// An IP literal or `localhost`: a name no one else's DNS decides.
    fn is_address(&self) -> bool {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok()
    }
}

/// The host (and port: the scheme's default when the URL names none) of a
/// URL like `https://ripcord.example.com/base`.
pub fn authority_of(url: &str) -> Option<Allowed> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let mut a = Allowed::parse(authority)?;
    a.port = a.port.or(Some(default));
    Some(a)
}

/// The names this ripcord answers to.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    allowed: Vec<Allowed>,
}

impl Hosts {
    /// From `http.public_url` and `http.allowed_hosts` (both checked when
    /// the config was read; what does not parse is left out).
    pub fn new(public_url: Option<&str>, allowed_hosts: &[String]) -> Hosts {
        let allowed = public_url
            .and_then(authority_of)
            .into_iter()
            .chain(allowed_hosts.iter().filter_map(|h| Allowed::parse(h)))
            .collect();
        Hosts { allowed }
    }

    /// Whether a request with this `Host` header is for us.
    pub fn admits(&self, host: Option<&str>) -> bool {
        let Some(asked) = host.and_then(Allowed::parse) else {
            return false;
        };
        asked.is_address() || self.allowed.iter().any(|a| a.admits(&asked))
    }
}

/// Middleware: 421 for a `Host` ripcord does not answer to.
pub async fn check(State(hosts): State<Arc<Hosts>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if hosts.admits(host) {
        return next.run(req).await;
    }
    let shown = crate::text::html(crate::text::clip_bytes(host.unwrap_or("(none)"), 200));
    super::html(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "<!doctype html><title>ripcord: wrong host</title><p>ripcord does not answer to the host \
             name <code>{shown}</code>: use its address (http.public_url), or list the name in \
             http.allowed_hosts.</p>"
        ),
    )
    .into_response()
}

/// `http.console`, read here beside [`ConsoleConfig`].
pub fn read_config(mut m: MapReader<'_>, c: &mut ConsoleConfig, errs: &mut Errors) {
    c.read_token = read_secret(&mut m, "read_token", errs);
    if let Some(h) = m.str("trusted_user_header", errs) {
        let n = m.node_of("trusted_user_header").unwrap_or(m.node());
        match axum::http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(_) => c.trusted_user_header = Some(h.to_ascii_lowercase()),
            Err(_) => m.err(
                errs,
                n,
                "trusted_user_header",
                format!("`{h}` is not an HTTP header name"),
            ),
        }
    }
    if let Some(list) = m.str_list("trusted_proxies", errs) {
        for (ip, node) in list {
            match ip.parse::<std::net::IpAddr>() {
                Ok(a) => c.trusted_proxies.push(a),
                Err(_) => m.err(
                    errs,
                    node,
                    "trusted_proxies",
                    format!("`{ip}` is not an IP address"),
                ),
            }
        }
    }
    if let Some(b) = m.bool("open_on_loopback", errs) {
        c.open_on_loopback = b;
    }
    if c.trusted_user_header.is_some() && c.trusted_proxies.is_empty() {
        let n = m.node_of("trusted_user_header").unwrap_or(m.node());
        m.err(
            errs,
            n,
            "trusted_user_header",
            "name the proxy in trusted_proxies: the header is believed only from listed \
             addresses (loopback is not assumed: a proxy on this host, kubectl port-forward \
             and a mesh sidecar all connect from loopback, with whatever header their client sent)",
        );
    }
    m.finish(errs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_and_addresses_are_answered() {
        let h = Hosts::new(
            Some("https://ripcord.example.com/base"),
            &["localhost:9464".into(), "ripcord.ops.svc".into()],
        );
        for ok in [
            "ripcord.example.com",
            "RIPCORD.example.com:443",
            "ripcord.ops.svc:9464",
            "127.0.0.1:9464",
            "[::1]:9464",
            "localhost:9999",
        ] {
            assert!(h.admits(Some(ok)), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:9464",
            "ripcord.example.com:8443",
            "ripcord.example.com.attacker.example",
            "",
            "a/b",
        ] {
            assert!(!h.admits(Some(bad)), "{bad}");
        }
        assert!(!h.admits(None), "no Host at all");
        // Nothing configured: addresses only.
        let bare = Hosts::new(None, &[]);
        assert!(bare.admits(Some("127.0.0.1:9464")));
        assert!(!bare.admits(Some("rebound.attacker.example:9464")));
        assert_eq!(
            authority_of("http://127.0.0.1:9464"),
            Allowed::parse("127.0.0.1:9464")
        );
        assert!(authority_of("ftp://x").is_none());
        assert!(Allowed::parse("https://x").is_none());
    }
}
