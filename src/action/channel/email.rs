//! Email over SMTP (lettre): multipart/alternative, plain text and HTML.
//!
//! ```yaml
//! oncall-mail:
//!   type: email
//!   host: smtp.example.com
//!   port: 587                       # default by tls: 587 starttls, 465 tls, 25 none
//!   tls: starttls                   # starttls (default) | tls (implicit, "SMTPS") | none
//!   username: ripcord@example.com   # username and password: both or neither
//!   password: {env: SMTP_PASSWORD}
//!   from: "ripcord <ripcord@example.com>"
//!   to: [oncall@example.com, "SRE lead <lead@example.com>"]
//!   subject_prefix: "[ripcord]"     # the default
//!   ca_file: /etc/ripcord/smtp-ca.pem   # optional: also trust this CA (PEM)
//! ```
//!
//! `tls: none` sends the password and the messages in clear text, so it is
//! only accepted for a loopback host (tests, a local relay). With `starttls`
//! the upgrade is required: a server that does not offer STARTTLS is an
//! error, never a silent fall back to clear text. Certificates are checked
//! against the platform's roots plus `ca_file`.
//!
//! One recipient list per channel: per-tier recipients are separate email
//! channels routed per tier.
//!
//! Outcomes (RFC 5321 §4.2.1 reply codes): 2xx after DATA is sent (with the
//! server's answer, which usually names the queue id); 4xx is transient
//! (greylisting, mailbox busy, 421 service closing, 454 temporary auth
//! failure), as are connection failures and timeouts; 5xx is permanent
//! (550 no such user, 535 authentication failed, 554 rejected) and so is a
//! server certificate that is not trusted or a server that lacks what the
//! configuration requires (STARTTLS, an AUTH mechanism).

use std::error::Error as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lettre::message::header::{self, ContentType};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::kit::{Channel, Class, Registration, SendContext, SendOutcome, Sending};
use crate::action::message::{Kind, Message, truncate_utf8};
use crate::config::Errors;
use crate::config::secret::read_secret;
use crate::config::yaml::MapReader;
use crate::text::escape_html;

/// How long lettre waits to connect (the delivery worker's `timeout`
/// bounds the whole send).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Subjects are one line; very long ones are cut (bytes, on a character).
const SUBJECT_MAX: usize = 250;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS (required).
    StartTls,
    /// TLS from the first byte ("implicit TLS", SMTPS).
    Tls,
    /// Clear text: loopback hosts only.
    None,
}

impl TlsMode {
    fn default_port(self) -> u16 {
        match self {
            TlsMode::StartTls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            TlsMode::StartTls => "starttls",
            TlsMode::Tls => "tls",
            TlsMode::None => "none",
        }
    }
}

pub struct Email {
    /// Built once; holds the host, port, TLS settings and credentials.
    transport: AsyncSmtpTransport<Tokio1Executor>,
    host: String,
    port: u16,
    tls: TlsMode,
    authenticated: bool,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject_prefix: String,
}

/// Never shows the password (nor lettre's internals).
impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.as_str())
            .field("authenticated", &self.authenticated)
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .field("subject_prefix", &self.subject_prefix)
            .finish()
    }
}

impl Email {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Email> {
        let before = errs.0.len();
        let host = m.str("host", errs).map(str::trim).map(str::to_owned);
        if host.is_none() && !m.has("host") {
            m.err(errs, m.node(), "host", "is required (the SMTP server)");
        }
        let host = host.filter(|h| {
            let ok = !h.is_empty() && !h.contains(char::is_whitespace);
            if !ok {
                let n = m.node_of("host").unwrap_or(m.node());
                m.err(errs, n, "host", "must be a host name or address");
            }
            ok
        });

        let tls = match m.str("tls", errs) {
            None => Some(TlsMode::StartTls),
            Some("starttls") => Some(TlsMode::StartTls),
            Some("tls") => Some(TlsMode::Tls),
            Some("none") => Some(TlsMode::None),
            Some(other) => {
                let n = m.node_of("tls").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "tls",
                    format!("unknown mode `{other}`; expected starttls, tls or none"),
                );
                None
            }
        };
        if let (Some(TlsMode::None), Some(h)) = (tls, &host) {
            if !is_loopback(h) {
                let n = m.node_of("tls").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "tls",
                    format!(
                        "`none` sends the password and messages in clear text and is only \
                         allowed for a loopback host (localhost, 127.0.0.1, ::1), not `{h}`; \
                         use starttls or tls"
                    ),
                );
            }
        }
        let port = m.int("port", 1..=65535, errs).map(|p| p as u16);

        let username = m.str("username", errs).map(str::to_owned);
        let password = read_secret(m, "password", errs);
        match (username.is_some() || m.has("username"), m.has("password")) {
            (true, false) => {
                let n = m.node_of("username").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "password",
                    "is required with username (both or neither)",
                );
            }
            (false, true) => {
                let n = m.node_of("password").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "username",
                    "is required with password (both or neither)",
                );
            }
            _ => {}
        }

        let from = match m.str("from", errs) {
            Some(s) => {
                let n = m.node_of("from");
                mailbox(m, "from", n, s, errs)
            }
            None => {
                if !m.has("from") {
                    m.err(
                        errs,
                        m.node(),
                        "from",
                        "is required (the sender, e.g. \"ripcord <ripcord@example.com>\")",
                    );
                }
                None
            }
        };
        let mut to = Vec::new();
        match m.str_list("to", errs) {
            Some(list) if list.is_empty() => {
                let n = m.node_of("to").unwrap_or(m.node());
                m.err(errs, n, "to", "needs at least one recipient");
            }
            Some(list) => {
                for (s, node) in list {
                    if let Some(mb) = mailbox(m, "to", Some(node), s, errs) {
                        to.push(mb);
                    }
                }
            }
            None => {
                if !m.has("to") {
                    m.err(errs, m.node(), "to", "is required (one or more recipients)");
                }
            }
        }

        let subject_prefix = m
            .str("subject_prefix", errs)
            .unwrap_or("[ripcord]")
            .to_owned();
        if subject_prefix.contains(['\r', '\n']) {
            let n = m.node_of("subject_prefix").unwrap_or(m.node());
            m.err(errs, n, "subject_prefix", "must be one line");
        }

        let ca = m.str("ca_file", errs).and_then(|p| {
            let n = m.node_of("ca_file").unwrap_or(m.node());
            if tls == Some(TlsMode::None) {
                m.err(errs, n, "ca_file", "has no use with `tls: none`");
                return None;
            }
            let path = crate::config::relative_to(m.file(), p);
            match read_ca(&path) {
                Ok(c) => Some(c),
                Err(e) => {
                    m.err(errs, n, "ca_file", e);
                    None
                }
            }
        });

        if errs.0.len() > before {
            return None;
        }
        let (host, tls, from) = (host?, tls?, from?);
        let port = port.unwrap_or_else(|| tls.default_port());

        let params = |host: &str| -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(host.to_owned());
            if let Some(c) = ca.clone() {
                b = b.add_root_certificate(c);
            }
            b.build().map_err(|e| format!("cannot set up TLS: {e}"))
        };
        let lettre_tls = match tls {
            TlsMode::None => Ok(Tls::None),
            TlsMode::StartTls => params(&host).map(Tls::Required),
            TlsMode::Tls => params(&host).map(Tls::Wrapper),
        };
        let lettre_tls = match lettre_tls {
            Ok(t) => t,
            Err(e) => {
                let n = m.node_of("tls").unwrap_or(m.node());
                m.err(errs, n, "tls", e);
                return None;
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(lettre_tls)
            .timeout(Some(CONNECT_TIMEOUT));
        let authenticated = username.is_some() && password.is_some();
        if let (Some(u), Some(p)) = (username, password) {
            builder = builder.credentials(Credentials::new(u, p.expose().to_owned()));
        }
        Some(Email {
            transport: builder.build(),
            host,
            port,
            tls,
            authenticated,
            from,
            to,
            subject_prefix,
        })
    }

    /// The email for `msg` (also used by tests to look at what is sent).
    pub fn build(&self, msg: &Message, now: crate::time::Ts) -> Result<lettre::Message, String> {
        let mut b = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject(&self.subject_prefix, &msg.title))
            .date(std::time::UNIX_EPOCH + Duration::from_millis(now.0.max(0) as u64))
            .message_id(Some(message_id(self.from.email.domain(), now)))
            .user_agent(format!("ripcord/{}", env!("CARGO_PKG_VERSION")));
        for t in &self.to {
            b = b.to(t.clone());
        }
        if let Some(id) = &msg.incident {
            // Mail clients thread every message of an incident together.
            b = b.header(header::References::from(format!(
                "<{}@{}>",
                id_token(id),
                self.from.email.domain()
            )));
        }
        let body = MultiPart::alternative()
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(msg.plain()),
            )
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html(msg)),
            );
        b.multipart(body)
            .map_err(|e| format!("cannot build the email: {e}"))
    }

    async fn post(&self, ctx: &SendContext<'_>, msg: &Message) -> SendOutcome {
        let email = match self.build(msg, ctx.now) {
            Ok(e) => e,
            Err(e) => return SendOutcome::Reject(e),
        };
        match self.transport.send(email).await {
            Ok(resp) => {
                let text = resp.message().collect::<Vec<_>>().join(" ");
                SendOutcome::Sent(format!(
                    "SMTP {}: {}",
                    resp.code(),
                    truncate_utf8(text.trim(), 200)
                ))
            }
            Err(e) => outcome_of(&e),
        }
    }
}

/// Maps lettre's error to an outcome. Its messages carry the server's
/// reply, never the credentials.
fn outcome_of(e: &lettre::transport::smtp::Error) -> SendOutcome {
    let reason = truncate_utf8(&chain(e), 300);
    if e.is_permanent() {
        return SendOutcome::Reject(format!("SMTP {reason}"));
    }
    if e.is_transient() {
        return SendOutcome::Retry {
            after: None,
            reason: format!("SMTP {reason}"),
        };
    }
    // Problems of configuration that the next attempt will meet again: no
    // STARTTLS on the server, no AUTH mechanism in common, an untrusted
    // certificate.
    if reason.to_lowercase().contains("certificate") {
        return SendOutcome::Reject(format!(
            "SMTP {reason} (the server's certificate is not trusted for this host; \
             for a private CA set ca_file)"
        ));
    }
    if e.is_client() || e.is_tls() {
        return SendOutcome::Reject(format!("SMTP {reason}"));
    }
    SendOutcome::Retry {
        after: None,
        reason: format!("SMTP {reason}"),
    }
}

/// The error and its causes, for a reason a person can act on.
fn chain(e: &lettre::transport::smtp::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        source = inner.source();
    }
    // lettre nests its connection errors: say it once.
    while s.contains("Connection error: Connection error: ") {
        s = s.replace("Connection error: Connection error: ", "Connection error: ");
    }
    s
}

fn mailbox(
    m: &MapReader<'_>,
    key: &str,
    node: Option<&crate::config::yaml::Node>,
    s: &str,
    errs: &mut Errors,
) -> Option<Mailbox> {
    match s.trim().parse::<Mailbox>() {
        Ok(mb) => Some(mb),
        Err(e) => {
            m.err(
                errs,
                node.unwrap_or(m.node()),
                key,
                format!(
                    "`{s}` is not a valid mailbox ({e}); expected name@example.com or \
                     \"Name <name@example.com>\""
                ),
            );
            None
        }
    }
}

fn read_ca(path: &std::path::Path) -> Result<Certificate, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.eq_ignore_ascii_case("localhost.")
        || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `prefix title`, one line (whatever the title holds: a header line
/// must never be broken or reordered).
fn subject(prefix: &str, title: &str) -> String {
    let title = crate::text::one_line(title);
    let s = if prefix.is_empty() {
        title.trim().to_owned()
    } else {
        format!("{prefix} {}", title.trim())
    };
    truncate_utf8(&s, SUBJECT_MAX)
}

/// Characters safe in a Message-ID / References left part.
fn id_token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn message_id(domain: &str, now: crate::time::Ts) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("<ripcord.{}.{}.{seq}@{domain}>", now.0, std::process::id())
}

fn accent(msg: &Message) -> &'static str {
    match msg.kind {
        Kind::Resolved => "#1e8e3e",
        _ => match msg.severity {
            crate::decision::Severity::Severe => "#c5221f",
            crate::decision::Severity::Functional => "#e37400",
            crate::decision::Severity::Minor => "#1a73e8",
        },
    }
}

/// The HTML part: the title as a heading, the body line by line, the links
/// as buttons (only http, https and mailto links are made clickable).
fn html(msg: &Message) -> String {
    let color = accent(msg);
    let mut h = String::with_capacity(msg.body.len() * 2 + 1024);
    h.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\n\
         <body style=\"font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;\
         font-size:14px;color:#202124\">\n",
    );
    h.push_str(&format!(
        "<h2 style=\"margin:0 0 12px;padding-left:8px;border-left:4px solid {color}\">{}</h2>\n",
        escape_html(msg.title.trim())
    ));
    h.push_str("<div style=\"line-height:1.5\">\n");
    for line in msg.body.lines() {
        if line.trim().is_empty() {
            h.push_str("<br>\n");
        } else {
            h.push_str(&format!("<div>{}</div>\n", escape_html(line)));
        }
    }
    h.push_str("</div>\n");
    if !msg.links.is_empty() {
        h.push_str("<p style=\"margin:16px 0\">\n");
        for l in &msg.links {
            let label = escape_html(l.label.trim());
            if clickable(&l.url) {
                h.push_str(&format!(
                    "<a href=\"{}\" style=\"display:inline-block;margin:0 8px 8px 0;\
                     padding:8px 16px;background:{color};color:#ffffff;text-decoration:none;\
                     border-radius:4px;font-weight:600\">{label}</a>\n",
                    escape_html(&l.url)
                ));
            } else {
                h.push_str(&format!(
                    "<span>{label}: {}</span><br>\n",
                    escape_html(&l.url)
                ));
            }
        }
        h.push_str("</p>\n");
    }
    let mut facts = vec![
        format!("tier {}", msg.tier),
        format!("severity {}", msg.severity),
    ];
    if let Some(id) = &msg.incident {
        facts.push(format!("incident {}", escape_html(id)));
    }
    h.push_str(&format!(
        "<p style=\"color:#5f6368;font-size:12px;margin-top:24px\">ripcord · {}</p>\n",
        facts.join(" · ")
    ));
    h.push_str("</body></html>\n");
    h
}

fn clickable(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|p| lower.starts_with(p))
}

pub const CHANNEL: Registration = Registration {
    kind: "email",
    read: |m, errs| Some(Box::new(Email::from_config(m, errs)?)),
};

impl Channel for Email {
    fn class(&self) -> Class {
        Class::Email
    }

    /// What a shared SMTP relay takes without throttling.
    fn default_rate(&self) -> (u32, Duration) {
        (30, Duration::from_secs(60))
    }

    fn send<'a>(&'a self, ctx: &'a SendContext<'a>, msg: &'a Message) -> Sending<'a> {
        Box::pin(self.post(ctx, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::message::Link;
    use crate::decision::{Severity, Tier};

    fn cfg(yaml: &str) -> Result<Email, String> {
        let path = std::path::Path::new("channel.yaml");
        let node = crate::config::yaml::parse(path, yaml).unwrap();
        let mut errs = Errors::default();
        let mut m = MapReader::new(path, &node, "channel `mail`", &mut errs).unwrap();
        let e = Email::from_config(&mut m, &mut errs);
        m.finish(&mut errs);
        match e {
            Some(e) if errs.is_empty() => Ok(e),
            _ => Err(errs
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")),
        }
    }

    #[test]
    fn reads_config_with_defaults() {
        let e = cfg("host: smtp.example.com\nfrom: a@example.com\nto: b@example.com\n").unwrap();
        assert_eq!((e.port, e.tls), (587, TlsMode::StartTls));
        assert_eq!(e.subject_prefix, "[ripcord]");
        let e = cfg("host: smtp.example.com\ntls: tls\nfrom: a@example.com\nto: [b@example.com]\n")
            .unwrap();
        assert_eq!(e.port, 465);
        let e =
            cfg("host: 127.0.0.1\ntls: none\nfrom: a@example.com\nto: [b@example.com]\n").unwrap();
        assert_eq!(e.port, 25);
    }

    #[test]
    fn refuses_clear_text_to_a_remote_host() {
        let err =
            cfg("host: smtp.example.com\ntls: none\nfrom: a@example.com\nto: b@example.com\n")
                .unwrap_err();
        assert!(
            err.contains("loopback") && err.contains("smtp.example.com"),
            "{err}"
        );
        assert!(
            cfg("host: localhost\ntls: none\nfrom: a@example.com\nto: b@example.com\n").is_ok()
        );
        assert!(cfg("host: \"::1\"\ntls: none\nfrom: a@example.com\nto: b@example.com\n").is_ok());
    }

    #[test]
    fn names_bad_addresses() {
        let err = cfg(
            "host: smtp.example.com\nfrom: not an address\nto: [ok@example.com, broken@, \"x <y@z>\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("`not an address`"), "{err}");
        assert!(err.contains("`broken@`"), "{err}");
        assert!(!err.contains("`ok@example.com`"), "{err}");
        let err = cfg("host: smtp.example.com\nfrom: a@example.com\nto: []\n").unwrap_err();
        assert!(err.contains("at least one"), "{err}");
        let err = cfg("host: smtp.example.com\nfrom: a@example.com\n").unwrap_err();
        assert!(err.contains("to"), "{err}");
    }

    #[test]
    fn credentials_come_in_pairs_and_never_show() {
        let err = cfg("host: h.example\nusername: u\nfrom: a@example.com\nto: b@example.com\n")
            .unwrap_err();
        assert!(err.contains("both or neither"), "{err}");
        let err = cfg("host: h.example\npassword: p\nfrom: a@example.com\nto: b@example.com\n")
            .unwrap_err();
        assert!(err.contains("both or neither"), "{err}");
        let e = cfg(
            "host: h.example\nusername: u\npassword: hunter2-secret\nfrom: a@example.com\nto: b@example.com\n",
        )
        .unwrap();
        assert!(e.authenticated);
        assert!(!format!("{e:?}").contains("hunter2"));
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("ripcord-email-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let err = cfg(&format!(
            "host: h.example\nfrom: a@example.com\nto: b@example.com\nca_file: {}\n",
            bad.display()
        ))
        .unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = cfg(&format!(
            "host: h.example\nfrom: a@example.com\nto: b@example.com\nca_file: {}\n",
            dir.join("missing.pem").display()
        ))
        .unwrap_err();
        assert!(err.contains("cannot read CA file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn builds_a_two_part_message() {
        let e = cfg(
            "host: h.example\nfrom: \"ripcord <r@example.com>\"\nto: [a@example.com, b@example.com]\n",
        )
        .unwrap();
        let mut msg = Message::note(
            Kind::ApprovalRequest,
            Tier::High,
            Severity::Severe,
            Some("inc-42"),
            "回滚 <b>&\nsecond line".into(),
            "line <one>\nline 二".into(),
        );
        msg.links = vec![
            Link {
                label: "Approve".into(),
                url: "https://r.example/approve?a=1&b=2".into(),
            },
            Link {
                label: "odd".into(),
                url: "javascript:alert(1)".into(),
            },
        ];
        let built = e.build(&msg, crate::time::Ts(1_795_255_200_000)).unwrap();
        let raw = String::from_utf8(built.formatted()).unwrap();
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain") && raw.contains("text/html"));
        assert!(raw.contains("References: <inc-42@example.com>"), "{raw}");
        let html = html(&msg);
        assert!(html.contains("回滚 &lt;b&gt;&amp;\nsecond line") || html.contains("&lt;b&gt;"));
        assert!(html.contains("href=\"https://r.example/approve?a=1&amp;b=2\""));
        assert!(!html.contains("href=\"javascript:"));
        assert!(html.contains("<div>line &lt;one&gt;</div>"));
        let s = subject("[ripcord]", &msg.title);
        // A line break in a title is shown, never obeyed.
        assert_eq!(s, "[ripcord] 回滚 <b>&\\u{a}second line");
    }

    #[test]
    fn a_subject_can_neither_break_nor_reorder() {
        // A title straight from an event, not cleaned by the message.
        let s = subject("[ripcord]", "db down\r\nBcc: x@evil \u{202E}gnp.exe");
        assert_eq!(
            s,
            "[ripcord] db down\\u{d}\\u{a}Bcc: x@evil \\u{202e}gnp.exe"
        );
    }

    #[test]
    fn maps_nothing_listening_to_retry() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A port nobody listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = cfg(&format!(
            "host: 127.0.0.1\nport: {port}\ntls: none\nfrom: a@example.com\nto: b@example.com\n"
        ))
        .unwrap();
        let http = reqwest::Client::new();
        let ctx = SendContext {
            http: &http,
            now: crate::time::Ts(0),
        };
        let msg = Message::note(
            Kind::Outcome,
            Tier::Low,
            Severity::Minor,
            None,
            "t".into(),
            "b".into(),
        );
        let out = rt.block_on(e.send(&ctx, &msg));
        assert!(matches!(out, SendOutcome::Retry { .. }), "{out:?}");
    }
}
