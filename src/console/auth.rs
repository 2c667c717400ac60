//! Who is looking at the console, and what they may do.
//!
//! - Reading: the read token, the API token, a session, a trusted proxy's
//!   user header, or a loopback peer when `open_on_loopback` says so (or
//!   when no token is configured at all: the API is open on loopback then).
//! - Acting: the API token (a browser signs in with it once and gets a
//!   session cookie), or a trusted proxy's user header. A signed one-click
//!   link is its own credential (see `api`).
//! - Every form carries a CSRF token bound to the user, and a form posted
//!   from another site is refused by its `Sec-Fetch-Site` / `Origin`.
//!
//! Sessions and CSRF tokens are HMACs under a key derived from the API
//! token, so every replica accepts them and rotating the token ends them.
//! Sign-in attempts are rate limited per peer and per name
//! ([`SignInLimits`]): guessing a token is a matter of tries.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::host::ConsoleConfig;
use crate::config::Secret;
use crate::time::{Dur, Ts};

/// The session cookie's name.
pub const COOKIE: &str = "ripcord_console";
/// How long a browser stays signed in.
pub const SESSION_TTL: Dur = Dur::from_mins(12 * 60);
/// Longest user name kept (as the API's `by`).
const MAX_USER: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum May {
    Nothing,
    Read,
    Act,
}

/// The person (or client) behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub may: May,
    /// Who acts: the session's or the proxy's user. `None` reading
    /// anonymously or with a token.
    pub user: Option<String>,
    /// Signed in with a session (it can sign out).
    pub session: bool,
}

impl Viewer {
    fn new(may: May, user: Option<String>, session: bool) -> Viewer {
        Viewer { may, user, session }
    }

    /// The user, when they may act.
    pub fn actor(&self) -> Option<&str> {
        (self.may == May::Act)
            .then_some(self.user.as_deref())
            .flatten()
    }
}

pub struct Auth {
    api_token: Option<Secret>,
    read_token: Option<Secret>,
    user_header: Option<String>,
    proxies: Vec<IpAddr>,
    open_on_loopback: bool,
    key: [u8; 32],
    /// Cookies marked `Secure` when ripcord is reached over https.
    secure: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("user_header", &self.user_header)
            .field("proxies", &self.proxies)
            .field("open_on_loopback", &self.open_on_loopback)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(api_token: Option<Secret>, cfg: &ConsoleConfig, public_url: Option<&str>) -> Auth {
        let key = match &api_token {
            Some(t) => Sha256::new()
                .chain_update(b"ripcord console v1\0")
                .chain_update(t.expose().as_bytes())
                .finalize()
                .into(),
            // No token: nobody can sign in to act, so the key only has to
            // outlive the process (CSRF for proxy users).
            None => process_key(),
        };
        Auth {
            api_token,
            read_token: cfg.read_token.clone(),
            user_header: cfg.trusted_user_header.clone(),
            proxies: cfg.trusted_proxies.clone(),
            open_on_loopback: cfg.open_on_loopback,
            key,
            secure: public_url.is_some_and(|u| u.starts_with("https://")),
        }
    }

    /// Whether signing in can ever give the right to act (an API token
    /// exists).
    pub fn can_sign_in(&self) -> bool {
        self.api_token.is_some() || self.read_token.is_some()
    }

    pub fn proxy_header(&self) -> Option<&str> {
        self.user_header.as_deref()
    }

    /// Who sends this request, from what it carries and where it comes from.
    pub fn viewer(&self, headers: &HeaderMap, peer: Option<SocketAddr>, now: Ts) -> Viewer {
        let peer_ip = peer.map(|p| p.ip());
        if let (Some(name), Some(ip)) = (&self.user_header, peer_ip) {
            // Only listed proxies: loopback is never assumed (a proxy on
            // this host, a port-forward, a sidecar are all loopback).
            if self.proxies.contains(&ip) {
                if let Some(user) = headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .and_then(valid_user)
                {
                    return Viewer::new(May::Act, Some(user.to_owned()), false);
                }
            }
        }
        if let Some(token) = bearer(headers) {
            if self
                .api_token
                .as_ref()
                .is_some_and(|t| t.matches(token.as_bytes()))
            {
                return Viewer::new(May::Act, None, false);
            }
            if self
                .read_token
                .as_ref()
                .is_some_and(|t| t.matches(token.as_bytes()))
            {
                return Viewer::new(May::Read, None, false);
            }
        }
        if let Some((may, user)) = cookie(headers).and_then(|c| self.check_session(c, now)) {
            return Viewer::new(may, Some(user), true);
        }
        // Without any token the API itself is open on loopback (the only
        // listen address allowed then); the console reads the same.
        let open = self.open_on_loopback || (self.api_token.is_none() && self.read_token.is_none());
        if open && peer_ip.is_some_and(|ip| ip.is_loopback()) {
            return Viewer::new(May::Read, None, false);
        }
        Viewer::new(May::Nothing, None, false)
    }

    /// Checks a sign-in: the token decides what the session may do.
    pub fn sign_in(&self, token: &str) -> Option<May> {
        if self
            .api_token
            .as_ref()
            .is_some_and(|t| t.matches(token.as_bytes()))
        {
            Some(May::Act)
        } else if self
            .read_token
            .as_ref()
            .is_some_and(|t| t.matches(token.as_bytes()))
        {
            Some(May::Read)
        } else {
            None
        }
    }

    /// The `Set-Cookie` value of a session for `user`.
    pub fn session_cookie(&self, may: May, user: &str, now: Ts) -> Option<String> {
        let user = valid_user(user)?;
        let role = if may == May::Act { "act" } else { "read" };
        let expires = now.saturating_add(SESSION_TTL).0;
        let payload = format!("v1.{role}.{expires}.{}", URL_SAFE_NO_PAD.encode(user));
        let sig = self.sign(&payload);
        Some(format!(
            "{COOKIE}={payload}.{sig}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_TTL.millis() / 1000,
            if self.secure { "; Secure" } else { "" }
        ))
    }

    /// The `Set-Cookie` value that ends a session.
    pub fn end_session(&self) -> String {
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }

    fn check_session(&self, value: &str, now: Ts) -> Option<(May, String)> {
        let (payload, sig) = value.rsplit_once('.')?;
        let expected = self.sign(payload);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            sig.as_bytes(),
        )) {
            return None;
        }
        let mut parts = payload.split('.');
        let (Some("v1"), Some(role), Some(expires), Some(user), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if expires.parse::<i64>().ok()? <= now.0 {
            return None;
        }
        let user = String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?;
        let may = match role {
            "act" => May::Act,
            "read" => May::Read,
            _ => return None,
        };
        Some((may, user))
    }

    /// The CSRF token of a viewer's forms: bound to who they are.
    pub fn csrf(&self, viewer: &Viewer) -> String {
        self.sign(&format!("csrf.{}", viewer.user.as_deref().unwrap_or("")))
    }

    pub fn csrf_ok(&self, viewer: &Viewer, given: &str) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            self.csrf(viewer).as_bytes(),
            given.as_bytes(),
        ))
    }

    fn sign(&self, payload: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// Sign-in attempts one peer (an IPv4 address, an IPv6 /64) may make at
/// once, then one per [`PEER_EVERY`]: a person mistyping gets in, a guesser
/// gets ten tries a minute.
const PEER_BURST: u32 = 10;
const PEER_EVERY: std::time::Duration = std::time::Duration::from_secs(6);
/// Attempts for one name (from anywhere): 5, then one per 12 s.
const NAME_BURST: u32 = 5;
const NAME_EVERY: std::time::Duration = std::time::Duration::from_secs(12);
/// Names are counted in this many buckets (by a keyed hash), so memory
/// stays bounded whatever names a guesser makes up.
const NAME_BUCKETS: u64 = 4096;
/// Peers remembered before the idle ones are swept.
const MAX_PEERS: usize = 10_000;

type Keyed<K, C> = governor::RateLimiter<
    K,
    governor::state::keyed::DefaultKeyedStateStore<K>,
    C,
    governor::middleware::NoOpMiddleware<<C as governor::clock::Clock>::Instant>,
>;

/// Rate limits on signing in, per peer and per name (governor's GCRA).
pub struct SignInLimits<C: governor::clock::Clock = governor::clock::DefaultClock> {
    per_peer: Keyed<IpAddr, C>,
    per_name: Keyed<u16, C>,
    clock: C,
    hasher: std::hash::RandomState,
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits::with_clock(governor::clock::DefaultClock::default())
    }
}

impl<C: governor::clock::Clock + Clone> SignInLimits<C> {
    pub fn with_clock(clock: C) -> Self {
        let quota = |burst: u32, every| {
            governor::Quota::with_period(every)
                .expect("a non-zero period")
                .allow_burst(std::num::NonZeroU32::new(burst).expect("non-zero"))
        };
        SignInLimits {
            per_peer: governor::RateLimiter::new(
                quota(PEER_BURST, PEER_EVERY),
                Default::default(),
                clock.clone(),
            ),
            per_name: governor::RateLimiter::new(
                quota(NAME_BURST, NAME_EVERY),
                Default::default(),
                clock.clone(),
            ),
            clock,
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Counts one attempt by `peer` for `name`: `Err` with how long to
    /// wait when either has had too many.
    pub fn check(&self, peer: Option<IpAddr>, name: &str) -> Result<(), std::time::Duration> {
        use std::hash::BuildHasher;
        if self.per_peer.len() > MAX_PEERS {
            self.per_peer.retain_recent();
        }
        let now = self.clock.now();
        let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), peer_key);
        self.per_peer
            .check_key(&peer)
            .map_err(|n| n.wait_time_from(now))?;
        let bucket = (self.hasher.hash_one(name.trim()) % NAME_BUCKETS) as u16;
        self.per_name
            .check_key(&bucket)
            .map_err(|n| n.wait_time_from(now))?;
        Ok(())
    }
}

/// The address a peer is counted under: IPv4 as it is, IPv6 by its /64
/// (one host owns a whole /64).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

/// A key for this process alone: 32 bytes from the kernel's generator.
fn process_key() -> [u8; 32] {
    use std::io::Read;
    let mut k = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut k));
    if read.is_err() {
        // Never expected on Linux; still unguessable enough for CSRF
        // tokens that live as long as the process.
        let seed = format!(
            "{:?}{}{:p}",
            std::time::SystemTime::now(),
            std::process::id(),
            &k
        );
        k.copy_from_slice(&Sha256::digest(seed.as_bytes()));
    }
    k
}

/// A user name as it goes on the timeline: 1 to 128 bytes, no control
/// characters.
fn valid_user(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty() && s.len() <= MAX_USER && !s.chars().any(char::is_control)).then_some(s)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(cfg: ConsoleConfig) -> Auth {
        Auth::new(Some(Secret::new("api-token")), &cfg, None)
    }

    fn loopback() -> Option<SocketAddr> {
        Some("127.0.0.1:5000".parse().unwrap())
    }

    fn remote() -> Option<SocketAddr> {
        Some("10.0.0.9:5000".parse().unwrap())
    }

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_console_config_is_read_and_every_error_named_with_its_line() {
        let path = std::path::Path::new("r.yaml");
        let ok = "http:\n  console:\n    trusted_user_header: X-Auth-Request-User\n    trusted_proxies: [10.0.0.9]\n    open_on_loopback: false\n";
        let c = crate::settings::Config::parse(path, ok)
            .unwrap()
            .http
            .console;
        assert_eq!(
            c.trusted_user_header.as_deref(),
            Some("x-auth-request-user")
        );
        assert_eq!(
            c.trusted_proxies,
            vec!["10.0.0.9".parse::<IpAddr>().unwrap()]
        );
        assert!(!c.open_on_loopback);
        assert!(
            !crate::settings::Config::parse(path, "http: {}\n")
                .unwrap()
                .http
                .console
                .open_on_loopback,
            "loopback is not open unless configured"
        );
        let unlisted = "http:\n  console:\n    trusted_user_header: X-Auth-Request-User\n";
        let errs = crate::settings::Config::parse(path, unlisted)
            .unwrap_err()
            .to_string();
        assert!(
            errs.contains("r.yaml:3") && errs.contains("name the proxy in trusted_proxies"),
            "{errs}"
        );
        let bad = "http:\n  console:\n    trusted_user_header: \"bad header\"\n    trusted_proxies: [proxy.local]\n    colour: red\n";
        let errs = crate::settings::Config::parse(path, bad)
            .unwrap_err()
            .to_string();
        assert!(
            errs.contains("r.yaml:3") && errs.contains("`bad header` is not an HTTP header name"),
            "{errs}"
        );
        assert!(
            errs.contains("r.yaml:4") && errs.contains("`proxy.local` is not an IP address"),
            "{errs}"
        );
        assert!(errs.contains("colour"), "{errs}");
    }

    #[test]
    fn loopback_reads_a_remote_peer_sees_nothing() {
        let a = auth(ConsoleConfig {
            open_on_loopback: true,
            ..Default::default()
        });
        assert_eq!(
            a.viewer(&HeaderMap::new(), loopback(), Ts(0)).may,
            May::Read
        );
        assert_eq!(
            a.viewer(&HeaderMap::new(), remote(), Ts(0)).may,
            May::Nothing
        );
        let closed = auth(ConsoleConfig::default());
        assert_eq!(
            closed.viewer(&HeaderMap::new(), loopback(), Ts(0)).may,
            May::Nothing
        );
    }

    #[test]
    fn a_session_acts_until_it_expires_and_a_forged_one_does_not() {
        let a = auth(ConsoleConfig::default());
        let set = a.session_cookie(May::Act, "alice", Ts(0)).unwrap();
        let value = set.split(';').next().unwrap();
        let v = a.viewer(&with(&[("cookie", value)]), remote(), Ts(1000));
        assert_eq!((v.may, v.user.as_deref()), (May::Act, Some("alice")));
        let late = a.viewer(
            &with(&[("cookie", value)]),
            remote(),
            Ts(SESSION_TTL.millis() + 1),
        );
        assert_eq!(late.may, May::Nothing);
        // Another user's name under alice's signature.
        let forged = value.replace(
            &URL_SAFE_NO_PAD.encode("alice"),
            &URL_SAFE_NO_PAD.encode("bob"),
        );
        assert_eq!(
            a.viewer(&with(&[("cookie", &forged)]), remote(), Ts(1000))
                .may,
            May::Nothing
        );
        // A read session cannot be turned into an acting one.
        let read = a.session_cookie(May::Read, "carol", Ts(0)).unwrap();
        let promoted = read.split(';').next().unwrap().replace(".read.", ".act.");
        assert_eq!(
            a.viewer(&with(&[("cookie", &promoted)]), remote(), Ts(1000))
                .may,
            May::Nothing
        );
    }

    #[test]
    fn the_user_header_is_believed_only_from_a_listed_proxy_never_from_loopback_by_default() {
        let a = auth(ConsoleConfig {
            trusted_user_header: Some("x-auth-request-user".into()),
            ..Default::default()
        });
        let h = with(&[("X-Auth-Request-User", "mallory")]);
        // A same-host proxy passing its client's header: not believed.
        assert_eq!(a.viewer(&h, loopback(), Ts(0)).may, May::Nothing);
        assert_eq!(a.viewer(&h, remote(), Ts(0)).may, May::Nothing);
        let on_host = auth(ConsoleConfig {
            trusted_user_header: Some("x-auth-request-user".into()),
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        });
        let v = on_host.viewer(&h, loopback(), Ts(0));
        assert_eq!((v.may, v.actor()), (May::Act, Some("mallory")));
        let listed = auth(ConsoleConfig {
            trusted_user_header: Some("x-auth-request-user".into()),
            trusted_proxies: vec!["10.0.0.9".parse().unwrap()],
            ..Default::default()
        });
        assert_eq!(listed.viewer(&h, remote(), Ts(0)).may, May::Act);
        assert_eq!(listed.viewer(&h, loopback(), Ts(0)).may, May::Nothing);
    }

    #[test]
    fn without_any_token_loopback_reads_as_the_api_does() {
        let open = Auth::new(None, &ConsoleConfig::default(), None);
        assert_eq!(
            open.viewer(&HeaderMap::new(), loopback(), Ts(0)).may,
            May::Read
        );
        assert_eq!(
            open.viewer(&HeaderMap::new(), remote(), Ts(0)).may,
            May::Nothing
        );
    }

    #[test]
    fn sign_in_guesses_are_limited_per_peer_and_per_name() {
        let clock = governor::clock::FakeRelativeClock::default();
        let l = SignInLimits::with_clock(clock.clone());
        let guesser: Option<IpAddr> = Some("10.0.0.9".parse().unwrap());
        let tried: Vec<bool> = (0..12)
            .map(|i| l.check(guesser, &format!("name-{i}")).is_ok())
            .collect();
        assert_eq!(tried.iter().filter(|ok| **ok).count(), PEER_BURST as usize);
        let wait = l.check(guesser, "another").unwrap_err();
        assert!(
            wait > std::time::Duration::ZERO && wait <= PEER_EVERY,
            "{wait:?}"
        );
        // Another peer is not held back by the guesser; a /64 is one peer.
        assert!(l.check(Some("10.0.0.10".parse().unwrap()), "bob").is_ok());
        let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        for i in 0..PEER_BURST {
            assert!(
                l.check(v6(&format!("2001:db8::{i:x}")), &format!("v6-{i}"))
                    .is_ok()
            );
        }
        assert!(l.check(v6("2001:db8::ffff"), "v6-last").is_err());
        // One name from many peers: its own limit. On a fresh limiter:
        // names share buckets by a hash with a random seed, and one of the
        // ~30 names tried above may share alice's (it did, once, in CI).
        let names = SignInLimits::with_clock(clock.clone());
        let hits = (0..10)
            .filter(|i| {
                names
                    .check(Some(IpAddr::from([10, 1, 0, *i as u8])), "alice")
                    .is_ok()
            })
            .count();
        assert_eq!(hits, NAME_BURST as usize);
        clock.advance(PEER_EVERY);
        assert!(
            l.check(guesser, "later").is_ok(),
            "tries come back with time"
        );
    }

    #[test]
    fn tokens_read_or_act_and_csrf_is_bound_to_the_user() {
        let a = auth(ConsoleConfig {
            read_token: Some(Secret::new("read-token")),
            ..Default::default()
        });
        let act = a.viewer(
            &with(&[("authorization", "Bearer api-token")]),
            remote(),
            Ts(0),
        );
        assert_eq!(act.may, May::Act);
        let read = a.viewer(
            &with(&[("authorization", "Bearer read-token")]),
            remote(),
            Ts(0),
        );
        assert_eq!(read.may, May::Read);
        assert_eq!(a.sign_in("nope"), None);
        let alice = Viewer::new(May::Act, Some("alice".into()), true);
        let bob = Viewer::new(May::Act, Some("bob".into()), true);
        assert!(a.csrf_ok(&alice, &a.csrf(&alice)));
        assert!(!a.csrf_ok(&bob, &a.csrf(&alice)));
        assert!(!a.csrf_ok(&alice, ""));
    }
}
