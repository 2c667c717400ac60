//! Debian's real `amtool` (package prometheus-alertmanager) against `ripcord
//! run`, over Alertmanager's v2 API with a bearer token from
//! `--http.config.file`: silences added with `=~` and `!=` matchers, queried
//! with filters, expired, exported and imported; alerts added and queried;
//! ripcord's error messages printed by amtool as they are.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::{Responder, need_tool, wait_until};

const TOKEN: &str = "amtool-test-token-0123456789";

fn ripcord(dir: &Path) -> Responder {
    support::ripcord_with_token(dir, TOKEN, "")
}

/// A fresh ripcord and amtool speaking to it with the token.
fn setup() -> (tempfile::TempDir, Responder, Amtool) {
    need_tool("amtool", "prometheus-alertmanager");
    let dir = tempfile::tempdir().unwrap();
    let r = ripcord(dir.path());
    let am = Amtool::new(&r, dir.path(), TOKEN);
    (dir, r, am)
}

struct Amtool {
    url: String,
    http_config: String,
}

impl Amtool {
    fn new(r: &Responder, dir: &Path, token: &str) -> Amtool {
        let cfg = dir.join(format!("http-{}.yml", token.len()));
        std::fs::write(&cfg, format!("authorization:\n  credentials: {token}\n")).unwrap();
        Amtool {
            url: r.url(""),
            http_config: cfg.to_string_lossy().into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("amtool")
            .arg(format!("--alertmanager.url={}", self.url))
            .arg(format!("--http.config.file={}", self.http_config))
            .args(args)
            .output()
            .expect("run amtool")
    }

    /// Runs and expects success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "amtool {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs and expects failure; stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "amtool {args:?} should have failed: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stderr).unwrap()
    }

    fn ids(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["silence", "query", "-q"];
        all.extend_from_slice(args);
        self.ok(&all).lines().map(str::to_owned).collect()
    }
}

fn v1_silence(r: &Responder, id: &str) -> Value {
    reqwest::blocking::Client::new()
        .get(r.url(&format!("/api/v1/silences/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn amtool_adds_queries_expires_and_imports_silences() {
    let (dir, r, am) = setup();

    // Add: one with =~ and != matchers, one plain.
    let pay = am
        .ok(&[
            "silence",
            "add",
            "service=payments",
            "instance=~i-pay-.*",
            "env!=staging",
            "--author",
            "alice",
            "--comment",
            "kernel patch",
            "--duration",
            "1h",
        ])
        .trim()
        .to_owned();
    let web = am
        .ok(&[
            "silence",
            "add",
            "service=web",
            "-a",
            "bob",
            "-c",
            "deploy",
            "-d",
            "2h",
        ])
        .trim()
        .to_owned();
    let stored = v1_silence(&r, &pay);
    let matchers = stored["matchers"].as_array().unwrap();
    let has = |name: &str, regex: bool, equal: bool| {
        matchers
            .iter()
            .any(|m| m["name"] == name && m["isRegex"] == regex && m["isEqual"] == equal)
    };
    assert!(
        has("instance", true, true) && has("env", false, false),
        "{stored}"
    );
    assert_eq!(stored["createdBy"], "alice");
    assert_eq!(stored["scope"], "notify", "ripcord's default scope");

    // Query: the server filters (name, operator and value must match).
    assert_eq!(am.ids(&["service=payments"]), [pay.as_str()]);
    assert_eq!(am.ids(&["instance=~i-pay-.*"]), [pay.as_str()]);
    assert_eq!(am.ids(&["service=web"]), [web.as_str()]);
    assert!(am.ids(&["service=shop"]).is_empty());
    let all = am.ids(&[]);
    assert_eq!(all.len(), 2, "{all:?}");
    // Active silences ending soonest first, as Alertmanager sorts them.
    assert_eq!(all, [pay.clone(), web.clone()]);

    // Expire: gone from the active list, in the expired one.
    am.ok(&["silence", "expire", &web]);
    assert!(am.ids(&["service=web"]).is_empty());
    assert_eq!(am.ids(&["--expired", "service=web"]), [web.as_str()]);
    assert_eq!(v1_silence(&r, &web)["status"]["state"], "expired");
    // Expiring it again is fine (Alertmanager's expire is idempotent).
    am.ok(&["silence", "expire", &web]);

    // Export and import: the silence in force is replaced by a new one (the
    // old one expired, by the importer's author), nothing else changes.
    let exported = am.ok(&["silence", "query", "-o", "json"]);
    let file = dir.path().join("silences.json");
    std::fs::write(&file, &exported).unwrap();
    let imported = am.ok(&["silence", "import", file.to_str().unwrap()]);
    let new_ids: Vec<&str> = imported.lines().collect();
    assert_eq!(new_ids.len(), 1, "{imported}");
    assert_ne!(new_ids[0], pay);
    assert_eq!(am.ids(&["service=payments"]), [new_ids[0].to_owned()]);
    let old = v1_silence(&r, &pay);
    assert_eq!(old["status"]["state"], "expired");
    assert_eq!(old["expiredBy"], "alice");
    // Imported into an empty ripcord (unknown ids): created anew.
    let other = tempfile::tempdir().unwrap();
    let r2 = ripcord(other.path());
    let am2 = Amtool::new(&r2, other.path(), TOKEN);
    let again = am2.ok(&["silence", "import", file.to_str().unwrap()]);
    assert_eq!(again.lines().count(), 1, "{again}");
    assert_eq!(am2.ids(&["env!=staging"]).len(), 1);

    // ripcord's error messages reach the user as amtool prints them.
    let too_long = am.fails(&[
        "silence",
        "add",
        "service=web",
        "-a",
        "bob",
        "-c",
        "long",
        "-d",
        "48h",
    ]);
    assert!(
        too_long.contains("postSilencesBadRequest")
            && too_long.contains("longer than silences.max_duration"),
        "{too_long}"
    );
    let no_name = am.fails(&["silence", "add", "instance=~.*", "-a", "bob", "-c", "all"]);
    assert!(
        no_name.contains("every matcher matches the empty string"),
        "{no_name}"
    );
    let unknown = am.fails(&["silence", "expire", "00000000-0000-0000-0000-000000000000"]);
    assert!(unknown.contains("not found"), "{unknown}");
    // A wrong token reads and changes nothing.
    let wrong = Amtool::new(&r, dir.path(), "wrong-token");
    let refused = wrong.fails(&["silence", "query"]);
    assert!(refused.contains("401"), "{refused}");
    assert_eq!(am.ids(&[]).len(), 1);
}

#[test]
fn amtool_adds_and_queries_alerts() {
    let (_dir, r, am) = setup();

    // `alert add` POSTs /api/v2/alerts: a low-tier critical alert rolls back.
    am.ok(&[
        "alert",
        "add",
        "alertname=InstanceDown",
        "service=web",
        "instance=i-0a1",
        "tier=low",
        "severity=critical",
        "--annotation=summary=port 80 closed",
    ]);
    am.ok(&[
        "alert",
        "add",
        "alertname=DiskSlow",
        "service=shop",
        "instance=i-0b2",
        "tier=medium",
        "severity=warning",
    ]);
    let acted = wait_until(Duration::from_secs(20), || {
        r.decisions().iter().any(|d| d["action"] == "rollback")
    });
    assert!(acted, "no rollback:\n{}", r.stderr.text());

    // `alert query` lists the open incidents, filtered by the server.
    let all = am.ok(&["alert", "query", "-o", "json"]);
    let alerts: Vec<Value> = serde_json::from_str(&all).unwrap();
    assert_eq!(alerts.len(), 2, "{all}");
    let down = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "InstanceDown")
        .unwrap();
    assert_eq!(down["annotations"]["summary"], "port 80 closed");
    assert_eq!(down["status"]["state"], "active");
    let web = am.ok(&["alert", "query", "service=web"]);
    assert!(
        web.contains("InstanceDown") && !web.contains("DiskSlow"),
        "{web}"
    );
    let regex = am.ok(&["alert", "query", "instance=~i-0b.*"]);
    assert!(
        regex.contains("DiskSlow") && !regex.contains("InstanceDown"),
        "{regex}"
    );

    // A silence makes the alert suppressed: hidden from the active list,
    // shown with --silenced.
    let id = am
        .ok(&[
            "silence",
            "add",
            "service=shop",
            "-a",
            "carol",
            "-c",
            "known",
            "-d",
            "1h",
        ])
        .trim()
        .to_owned();
    let active = am.ok(&["alert", "query"]);
    assert!(!active.contains("DiskSlow"), "{active}");
    let silenced = am.ok(&["alert", "query", "--silenced", "-o", "json"]);
    let silenced: Vec<Value> = serde_json::from_str(&silenced).unwrap();
    assert_eq!(silenced.len(), 1);
    assert_eq!(silenced[0]["status"]["silencedBy"][0], id.as_str());

    // A bad alert is refused whole, and amtool prints why.
    let bad = am.fails(&["alert", "add", "service=web"]);
    assert!(bad.contains("alertname"), "{bad}");
}
