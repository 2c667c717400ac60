//! The email channel against a real SMTP server: Python's aiosmtpd
//! (Debian's python3-aiosmtpd, installed by scripts/setup), started per
//! test with a small handler that saves what it receives, parsed by
//! Python's `email` package, as JSON. Covers clear text to a local relay,
//! AUTH (right and wrong password), STARTTLS and implicit TLS with a
//! private CA made by the `openssl` CLI, and the SMTP answers that map to
//! retry or refusal.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use ripcord::action::channel::{SendContext, SendOutcome, channel_from_yaml};
use ripcord::action::message::{Kind, Link, Message};
use ripcord::decision::{Severity, Tier};
use ripcord::time::Ts;
use support::{make_ca, make_server_cert};

const USER: &str = "ripcord";
const PASSWORD: &str = "correct horse battery staple";

const SERVER: &str = r#"
import email, json, logging, os, ssl, sys, warnings
from email import policy
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, outdir, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cert, key = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
USER, PASSWORD = b"ripcord", b"correct horse battery staple"
# Quiet: aiosmtpd warns about AUTH without TLS, which the tests want.
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nosuchuser@"):
            return "550 5.1.1 <%s>: Recipient address rejected: no such user" % address
        if address.startswith("busy@"):
            return "451 4.3.0 <%s>: mailbox busy, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(outdir) if f.endswith(".json")])
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=policy.default)
        parts = []
        if msg.is_multipart():
            for p in msg.iter_parts():
                parts.append({"type": p.get_content_type(),
                              "charset": p.get_content_charset(),
                              "content": p.get_content()})
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        summary = {
            "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["From"]), "to": str(msg["To"]), "subject": str(msg["Subject"]),
            "message_id": str(msg["Message-ID"]), "references": str(msg["References"]),
            "date": str(msg["Date"]), "content_type": msg.get_content_type(),
            "parts": parts,
            # STARTTLS sets session.ssl; implicit TLS shows on the transport.
            "tls": session.ssl is not None
                   or server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": bool(session.authenticated), "login": login,
            "raw": raw.decode("ascii", "replace"),
        }
        path = os.path.join(outdir, "%03d.json" % n)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(summary, f, ensure_ascii=False)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 Ok: queued as RC%03d" % n


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER and auth_data.password == PASSWORD
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def context():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


kw = {}
if mode == "auth":
    kw = dict(authenticator=authenticator, auth_required=True, auth_require_tls=False)
elif mode == "starttls":
    kw = dict(tls_context=context(), require_starttls=True,
              authenticator=authenticator, auth_required=True)
elif mode == "tls":
    # aiosmtpd only counts STARTTLS as TLS for AUTH: the whole connection
    # is TLS here.
    kw = dict(ssl_context=context(), authenticator=authenticator, auth_required=True,
              auth_require_tls=False)
controller = Controller(Handler(), hostname="127.0.0.1", port=port, **kw)
controller.start()
print("READY", flush=True)
try:
    sys.stdin.read()
finally:
    controller.stop()
"#;

/// A Python with aiosmtpd: `$RIPCORD_PYTHON`, `python3` on the PATH, or
/// Debian's own (a pyenv or venv python3 first on the PATH does not see
/// Debian's python3-aiosmtpd).
fn python() -> String {
    let candidates = std::env::var("RIPCORD_PYTHON")
        .into_iter()
        .chain(["python3".to_owned(), "/usr/bin/python3".to_owned()]);
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py;
        }
    }
    panic!("python3-aiosmtpd is not installed: run scripts/setup");
}

/// A running aiosmtpd and the directory its messages land in.
struct Smtp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Auth,
    StartTls,
    Tls,
}

impl Smtp {
    fn start(mode: Mode, certs: Option<&Certs>) -> Smtp {
        let python = python();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("smtpd.py");
        std::fs::write(&script, SERVER).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mode = match mode {
            Mode::Plain => "plain",
            Mode::Auth => "auth",
            Mode::StartTls => "starttls",
            Mode::Tls => "tls",
        };
        // A port just freed: retried if someone takes it first.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut cmd = Command::new(&python);
            cmd.arg(&script)
                .arg(port.to_string())
                .arg(&out)
                .arg(mode)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some(c) = certs {
                cmd.arg(&c.server_cert).arg(&c.server_key);
            }
            let mut child = cmd.spawn().expect("start aiosmtpd");
            let mut line = String::new();
            let stdout = child.stdout.take().unwrap();
            let _ = BufReader::new(stdout).read_line(&mut line);
            if line.trim() == "READY" {
                return Smtp { child, port, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("aiosmtpd did not start");
    }

    /// The messages received so far, oldest first.
    fn received(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private CA and a server certificate for 127.0.0.1 / localhost.
struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca", "ripcord test CA");
    make_server_cert(d);
    Certs {
        ca: d.join("ca.pem"),
        server_cert: d.join("server.pem"),
        server_key: d.join("server.key"),
        _dir: dir,
    }
}

fn incident() -> Message {
    let mut m = Message::note(
        Kind::ApprovalRequest,
        Tier::High,
        Severity::Severe,
        Some("inc-0a1b2c3d4e5f"),
        "[HIGH/severe] 支付服务/i-pay-2: 错误率 0.12 vs 0.05".into(),
        "错误率超过阈值 <5%> & 仍在上升\nwhere: service=payments, zone=华东-1\nripcord: 回滚已准备好，等待批准"
            .into(),
    );
    m.links = vec![
        Link {
            label: "批准回滚 Approve".into(),
            url: "https://ripcord.example/approve/inc-0a1b2c3d4e5f?token=a1&sig=b2".into(),
        },
        Link {
            label: "Reject".into(),
            url: "https://ripcord.example/reject/inc-0a1b2c3d4e5f".into(),
        },
    ];
    m
}

async fn send(yaml: &str, msg: &Message) -> SendOutcome {
    let spec = channel_from_yaml("mail", yaml).unwrap_or_else(|e| panic!("config: {e:?}"));
    let http = reqwest::Client::new();
    let ctx = SendContext {
        http: &http,
        now: Ts(1_795_255_200_000),
    };
    let started = Instant::now();
    let out = spec.channel.send(&ctx, msg).await;
    eprintln!("outcome: {out:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        !format!("{out:?}").contains(PASSWORD),
        "the password leaked: {out:?}"
    );
    out
}

fn sent(out: &SendOutcome) -> &str {
    match out {
        SendOutcome::Sent(s) => s,
        other => panic!("not sent: {other:?}"),
    }
}

#[tokio::test]
async fn a_local_relay_gets_both_parts_intact() {
    let smtp = Smtp::start(Mode::Plain, None);
    let yaml = format!(
        "type: email\nhost: 127.0.0.1\nport: {}\ntls: none\n\
         from: \"ripcord <ripcord@example.com>\"\n\
         to: [\"值班 <oncall@example.com>\", lead@example.com]\n",
        smtp.port
    );
    let msg = incident();
    let out = send(&yaml, &msg).await;
    let detail = sent(&out);
    assert!(detail.starts_with("SMTP 250"), "{detail}");
    assert!(detail.contains("queued as RC000"), "{detail}");

    let got = smtp.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m["mail_from"], "ripcord@example.com");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["oncall@example.com", "lead@example.com"])
    );
    assert_eq!(m["from"], "ripcord <ripcord@example.com>");
    assert_eq!(m["to"], "值班 <oncall@example.com>, lead@example.com");
    assert_eq!(
        m["subject"],
        "[ripcord] [HIGH/severe] 支付服务/i-pay-2: 错误率 0.12 vs 0.05"
    );
    assert_eq!(m["content_type"], "multipart/alternative");
    assert!(m["message_id"].as_str().unwrap().ends_with("@example.com>"));
    assert_eq!(m["references"], "<inc-0a1b2c3d4e5f@example.com>");
    assert!(
        m["date"].as_str().unwrap().contains("21 Nov 2026"),
        "{}",
        m["date"]
    );
    // The wire form is 7-bit (encoded words, quoted-printable or base64).
    assert!(m["raw"].as_str().unwrap().is_ascii());

    let parts = m["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "text/plain");
    assert_eq!(parts[1]["type"], "text/html");
    let plain = parts[0]["content"].as_str().unwrap();
    assert!(plain.contains("错误率超过阈值 <5%> & 仍在上升"), "{plain}");
    assert!(plain.contains("ripcord: 回滚已准备好，等待批准"));
    assert!(plain.contains(
        "批准回滚 Approve: https://ripcord.example/approve/inc-0a1b2c3d4e5f?token=a1&sig=b2"
    ));
    let html = parts[1]["content"].as_str().unwrap();
    assert!(
        html.contains("支付服务/i-pay-2: 错误率 0.12 vs 0.05</h2>"),
        "{html}"
    );
    assert!(html.contains("<div>错误率超过阈值 &lt;5%&gt; &amp; 仍在上升</div>"));
    assert!(
        html.contains(
            "href=\"https://ripcord.example/approve/inc-0a1b2c3d4e5f?token=a1&amp;sig=b2\""
        )
    );
    assert!(html.contains(">批准回滚 Approve</a>"));
    assert!(html.contains("href=\"https://ripcord.example/reject/inc-0a1b2c3d4e5f\""));
    assert_eq!(m["tls"], false);
}

#[tokio::test]
async fn smtp_answers_map_to_retry_or_refusal() {
    let smtp = Smtp::start(Mode::Plain, None);
    let yaml = |to: &str| {
        format!(
            "type: email\nhost: localhost\nport: {}\ntls: none\nfrom: ripcord@example.com\nto: {to}\n",
            smtp.port
        )
    };
    let msg = incident();
    match send(&yaml("nosuchuser@example.com"), &msg).await {
        SendOutcome::Reject(r) => assert!(r.contains("550") && r.contains("no such user"), "{r}"),
        other => panic!("550: {other:?}"),
    }
    match send(&yaml("busy@example.com"), &msg).await {
        SendOutcome::Retry { reason, after } => {
            assert!(
                reason.contains("451") && reason.contains("busy"),
                "{reason}"
            );
            assert_eq!(after, None);
        }
        other => panic!("451: {other:?}"),
    }
    assert!(smtp.received().is_empty());

    // A server that does not offer STARTTLS: refused, never clear text.
    let starttls = format!(
        "type: email\nhost: 127.0.0.1\nport: {}\nfrom: ripcord@example.com\nto: a@example.com\n",
        smtp.port
    );
    match send(&starttls, &msg).await {
        SendOutcome::Reject(r) => assert!(r.contains("STARTTLS"), "{r}"),
        other => panic!("no STARTTLS: {other:?}"),
    }
    assert!(smtp.received().is_empty());

    // Nothing listening: passing.
    drop(smtp);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "type: email\nhost: 127.0.0.1\nport: {closed}\ntls: none\nfrom: ripcord@example.com\nto: a@example.com\n"
    );
    assert!(matches!(send(&yaml, &msg).await, SendOutcome::Retry { .. }));
}

#[tokio::test]
async fn auth_with_the_right_and_a_wrong_password() {
    let smtp = Smtp::start(Mode::Auth, None);
    let yaml = |password: &str| {
        format!(
            "type: email\nhost: 127.0.0.1\nport: {}\ntls: none\nusername: {USER}\n\
             password: \"{password}\"\nfrom: ripcord@example.com\nto: oncall@example.com\n",
            smtp.port
        )
    };
    let msg = incident();
    let out = send(&yaml(PASSWORD), &msg).await;
    assert!(sent(&out).starts_with("SMTP 250"));
    let got = smtp.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["authenticated"], true);
    assert_eq!(got[0]["login"], USER);

    match send(&yaml("wrong password"), &msg).await {
        SendOutcome::Reject(r) => assert!(r.contains("535"), "{r}"),
        other => panic!("wrong password: {other:?}"),
    }
    // No credentials where the server requires them: 530, refused.
    let anonymous = format!(
        "type: email\nhost: 127.0.0.1\nport: {}\ntls: none\nfrom: ripcord@example.com\nto: oncall@example.com\n",
        smtp.port
    );
    match send(&anonymous, &msg).await {
        SendOutcome::Reject(r) => assert!(r.contains("530"), "{r}"),
        other => panic!("no credentials: {other:?}"),
    }
    assert_eq!(smtp.received().len(), 1);
}

#[tokio::test]
async fn starttls_with_a_private_ca() {
    let certs = certs();
    let smtp = Smtp::start(Mode::StartTls, Some(&certs));
    let yaml = |ca: bool| {
        let mut y = format!(
            "type: email\nhost: 127.0.0.1\nport: {}\ntls: starttls\nusername: {USER}\n\
             password: \"{PASSWORD}\"\nfrom: ripcord@example.com\nto: oncall@example.com\n",
            smtp.port
        );
        if ca {
            y.push_str(&format!("ca_file: {}\n", certs.ca.display()));
        }
        y
    };
    let msg = incident();
    let out = send(&yaml(true), &msg).await;
    assert!(sent(&out).starts_with("SMTP 250"));
    let got = smtp.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["tls"], true);
    assert_eq!(got[0]["authenticated"], true);
    assert_eq!(
        got[0]["subject"],
        "[ripcord] [HIGH/severe] 支付服务/i-pay-2: 错误率 0.12 vs 0.05"
    );

    // Without the CA the certificate is not trusted: refused for good.
    match send(&yaml(false), &msg).await {
        SendOutcome::Reject(r) => assert!(r.to_lowercase().contains("certificate"), "{r}"),
        other => panic!("untrusted certificate: {other:?}"),
    }
    assert_eq!(smtp.received().len(), 1);
}

#[tokio::test]
async fn implicit_tls_with_a_private_ca() {
    let certs = certs();
    let smtp = Smtp::start(Mode::Tls, Some(&certs));
    let yaml = format!(
        "type: email\nhost: 127.0.0.1\nport: {}\ntls: tls\nusername: {USER}\n\
         password: \"{PASSWORD}\"\nfrom: ripcord@example.com\nto: oncall@example.com\n\
         subject_prefix: \"[ops]\"\nca_file: {}\n",
        smtp.port,
        certs.ca.display()
    );
    let out = send(&yaml, &incident()).await;
    assert!(sent(&out).starts_with("SMTP 250"));
    let got = smtp.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["tls"], true);
    assert!(
        got[0]["subject"]
            .as_str()
            .unwrap()
            .starts_with("[ops] [HIGH/severe]")
    );
}

#[test]
fn config_errors_are_reported() {
    let err = |yaml: &str| {
        channel_from_yaml("mail", yaml)
            .map(|_| ())
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let e = err(
        "type: email\nhost: smtp.example.com\ntls: none\nfrom: a@example.com\nto: b@example.com\n",
    );
    assert!(e.contains("loopback"), "{e}");
    let e =
        err("type: email\nhost: smtp.example.com\nfrom: a@example.com\nto: [b@example, \"x@\"]\n");
    assert!(e.contains("`x@`"), "{e}");
    let e = err(&format!(
        "type: email\nhost: smtp.example.com\nusername: u\nfrom: a@example.com\nto: b@example.com\npassword: \"{PASSWORD}\"\ntls: starttls\nport: 70000\n"
    ));
    assert!(e.contains("70000") && !e.contains(PASSWORD), "{e}");
    let spec = channel_from_yaml(
        "mail",
        "type: email\nhost: smtp.example.com\nfrom: a@example.com\nto: b@example.com\n",
    )
    .unwrap();
    assert_eq!(spec.rate, (30, Duration::from_secs(60)));
}
