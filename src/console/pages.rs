//! The console's pages, rendered from what the journal holds: pure
//! functions from data to HTML, so they are tested without a server.
//!
//! Every piece of text from events (labels, annotations, notes, names) goes
//! through [`esc`]; every path segment built from one through [`seg`].

use std::fmt::Write;

use super::timeline::BatchStep;
use crate::action::config::Step;
use crate::action::links::Verb;
use crate::gate::Answer;
use crate::journal::{ApprovalRow, EscalationRow, IncidentRow, RolloutRow, UpgradeRow};
use crate::report::html::clock;
use crate::report::{Review, human};
use crate::silence::{Scope, Silence, SilenceState};
use crate::time::{Dur, Ts};

use super::auth::{May, Viewer};

/// Text from anywhere, for an HTML element or attribute.
pub fn esc(s: &str) -> String {
    crate::text::html(s)
}

/// A path segment from event text: percent-encoded, so a `/` or `..` in a
/// label never names another route.
pub fn seg(s: &str) -> String {
    let out = crate::text::percent_encode(s);
    if out == "." || out == ".." {
        out.replace('.', "%2E")
    } else {
        out
    }
}

/// What every page shares: who is looking, and their CSRF token.
pub struct Frame<'a> {
    pub viewer: &'a Viewer,
    pub csrf: &'a str,
    pub now: Ts,
    /// Signing in can give the right to act (an API token exists).
    pub can_sign_in: bool,
    pub proxy_header: Option<&'a str>,
}

/// The page around `main`. `live` pages refresh themselves (live.js).
pub fn layout(f: &Frame<'_>, title: &str, current: &str, live: bool, main: &str) -> String {
    let mut o = String::with_capacity(main.len() + 2048);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{} · ripcord</title>\
         <link rel=\"stylesheet\" href=\"/console/style.css\">\
         <script src=\"/console/live.js\" defer></script></head><body>",
        esc(title)
    );
    o.push_str("<a class=\"skip\" href=\"#main\">Skip to content</a><header class=\"top\"><a class=\"brand\" href=\"/\">ripcord</a><nav aria-label=\"console\">");
    for (href, label) in [
        ("/", "Incidents"),
        ("/rollouts", "Rollouts"),
        ("/silences", "Silences"),
    ] {
        let cur = if href == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(o, "<a href=\"{href}\"{cur}>{label}</a>");
    }
    o.push_str("</nav><span class=\"who\">");
    match (&f.viewer.user, f.viewer.may) {
        (Some(u), may) => {
            let _ = write!(
                o,
                "{} <small>({})</small>",
                esc(u),
                if may == May::Act { "may act" } else { "reads" }
            );
            // Reading with a read token: the way to the right to act.
            if may < May::Act && f.can_sign_in {
                o.push_str(" <a href=\"/signin\">sign in to act</a>");
            }
            if f.viewer.session {
                let _ = write!(
                    o,
                    "<form method=\"post\" action=\"/signout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button class=\"link\">sign out</button></form>",
                    esc(f.csrf)
                );
            }
        }
        (None, May::Act) => o.push_str("API token"),
        (None, _) if f.can_sign_in => o.push_str("read only · <a href=\"/signin\">sign in</a>"),
        (None, _) => o.push_str("read only"),
    }
    o.push_str("</span></header>");
    let _ = write!(
        o,
        "<main id=\"main\"{}>{main}</main><footer><span id=\"live-state\">{}</span> · page drawn {}</footer></body></html>",
        if live { " data-live" } else { "" },
        if live { "updates by itself" } else { "" },
        f.now
    );
    o
}

fn label<'a>(i: &'a IncidentRow, k: &str) -> &'a str {
    i.labels.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

/// `pay/i-wd1`, or what there is of it.
pub fn target(i: &IncidentRow) -> String {
    if let Some(b) = &i.batch {
        return b.name();
    }
    match (label(i, "service"), label(i, "instance")) {
        ("", "") => i.partition.clone(),
        (s, "") => s.to_owned(),
        ("", n) => n.to_owned(),
        (s, n) => format!("{s}/{n}"),
    }
}

fn ago(now: Ts, t: Ts) -> String {
    let secs = now.since(t).millis() / 1000;
    match secs {
        ..=0 => "just now".into(),
        1..60 => format!("{secs}s ago"),
        _ => format!("{} ago", human(Dur::from_secs(secs))),
    }
}

/// A span in words a person reads at a glance: `45 s`, `3 min`, `2 h 5 min`, `3 d 4 h`.
fn span_words(secs: i64) -> String {
    let secs = secs.abs();
    match secs {
        ..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => match (secs / 3600, secs % 3600 / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
        _ => match (secs / 86_400, secs % 86_400 / 3600) {
            (d, 0) => format!("{d} d"),
            (d, h) => format!("{d} d {h} h"),
        },
    }
}

/// `t` relative to `now`: `just now`, `3 min ago`, `in 2 min`.
pub fn relative(now: Ts, t: Ts) -> String {
    // Signed: `since` stops at zero, a time to come is `in …`.
    let secs = (now.millis() - t.millis()) / 1000;
    match secs {
        -4..=4 => "just now".into(),
        s if s > 0 => format!("{} ago", span_words(s)),
        s => format!("in {}", span_words(s)),
    }
}

/// `t` both ways, relative first: `<time>3 min ago</time> (10:02:03 UTC)`.
pub fn when(now: Ts, t: Ts) -> String {
    format!(
        "<time datetime=\"{t}\" title=\"{t}\">{}</time> <span class=\"abs\">({} UTC)</span>",
        relative(now, t),
        clock(t)
    )
}

/// What an attention entry (`rollback:running`) means for a person;
/// `None` when it waits for nobody (an approval request already approved:
/// its rollback speaks for itself).
fn waiting(entry: &str) -> Option<String> {
    let (action, state) = entry.split_once(':').unwrap_or((entry, ""));
    if (action, state) == ("request_approval", "approved") {
        return None;
    }
    let action = action.replace('_', " ");
    Some(match state {
        "awaiting_approval" => "waits for a human to approve the rollback".into(),
        "running" => format!("{action} running"),
        "pending" => format!("{action} about to start"),
        "unknown" => format!("{action}: outcome unknown, check the host"),
        "failed" => format!("{action} failed"),
        "approved" => format!("{action} approved, starting"),
        other => format!("{action}: {}", other.replace('_', " ")),
    })
}

/// Filters of the incident list.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ListFilter {
    #[serde(default)]
    pub tier: String,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub q: String,
}

impl ListFilter {
    /// The filter as the journal reads open incidents with it.
    pub fn to_journal(&self) -> crate::journal::IncidentFilter {
        let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        crate::journal::IncidentFilter {
            tier: some(&self.tier),
            severity: some(&self.severity),
            text: some(&self.q).map(|q| q.to_lowercase()),
        }
    }

    fn keeps(&self, i: &IncidentRow) -> bool {
        (self.tier.is_empty() || i.tier == self.tier)
            && (self.severity.is_empty() || i.severity == self.severity)
            && (self.q.is_empty() || {
                let q = self.q.to_lowercase();
                target(i).to_lowercase().contains(&q)
                    || i.rule.to_lowercase().contains(&q)
                    || i.id.contains(&q)
            })
    }
}

fn select(name: &str, current: &str, options: &[&str]) -> String {
    let mut o = format!(
        "<select name=\"{name}\" aria-label=\"{name}\"><option value=\"\">any {name}</option>"
    );
    for v in options {
        let sel = if *v == current { " selected" } else { "" };
        let _ = write!(o, "<option{sel}>{v}</option>");
    }
    o.push_str("</select>");
    o
}

/// Open incidents the list draws (the rest are counted).
pub const MAX_CARDS: usize = 200;

/// What ripcord did for an incident and whether paging waits for an ack,
/// for its card on the list.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// `rollback done`, `pause rollout done`, `notify skipped`, …
    pub did: Vec<String>,
    /// Paging runs and nobody acknowledged yet.
    pub awaits_ack: bool,
    /// Who acknowledged the paging.
    pub acked_by: Option<String>,
}

impl Progress {
    pub fn of(actions: &[crate::journal::ActionRow], paging: Option<&EscalationRow>) -> Progress {
        use crate::journal::ActionState as S;
        let did = actions
            .iter()
            .filter(|a| {
                matches!(
                    a.state,
                    S::Done | S::Failed | S::Skipped | S::Rejected | S::Withdrawn
                )
            })
            .map(|a| {
                format!(
                    "{} {}",
                    a.action.as_str().replace('_', " "),
                    a.state.as_str()
                )
            })
            .collect();
        Progress {
            did,
            awaits_ack: paging.is_some_and(awaits_ack),
            acked_by: paging.and_then(|p| p.acked_by.clone()),
        }
    }
}

/// `/`: open incidents by tier and severity, what ripcord did and what waits
/// for whom; the recently resolved. `open` is the journal's page of the
/// most urgent open incidents the filter keeps, in order; `total` how many
/// it keeps in all.
pub fn list(
    f: &Frame<'_>,
    open: &[IncidentRow],
    total: u64,
    resolved: &[IncidentRow],
    progress: &std::collections::HashMap<String, Progress>,
    silences: &[std::sync::Arc<crate::silence::Compiled>],
    filter: &ListFilter,
) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<form class=\"filters\" method=\"get\" action=\"/\">{}{}<input name=\"q\" value=\"{}\" placeholder=\"service, instance, rule\" aria-label=\"filter\"><button>Filter</button></form>",
        select("tier", &filter.tier, &["high", "medium", "low"]),
        select(
            "severity",
            &filter.severity,
            &["severe", "functional", "minor"]
        ),
        esc(&filter.q)
    );
    let total = total.max(open.len() as u64);
    let _ = write!(
        o,
        "<h1>Open incidents <span class=\"count\">{total}</span></h1>"
    );
    if open.is_empty() {
        o.push_str("<p class=\"calm\">Nothing open.</p>");
    }
    // A storm's thousands would make a page too heavy for a phone that
    // reloads it every 5 s: the most urgent MAX_CARDS, then a count.
    let mut room = MAX_CARDS;
    for tier in crate::journal::TIERS_BY_URGENCY {
        let mut of_tier: Vec<&IncidentRow> = open.iter().filter(|i| i.tier == tier).collect();
        // Within a tier the worst first: severe above functional above minor.
        of_tier.sort_by_key(|i| severity_rank(&i.severity));
        if of_tier.is_empty() || room == 0 {
            continue;
        }
        let _ = write!(
            o,
            "<h2 class=\"tier-{tier}\">{tier} risk</h2><ul class=\"incidents\">"
        );
        for i in of_tier.into_iter().take(room) {
            o.push_str(&card(f, i, progress.get(&i.id), silences));
            room -= 1;
        }
        o.push_str("</ul>");
    }
    let shown = (MAX_CARDS - room) as u64;
    if total > shown {
        let _ = write!(
            o,
            "<p class=\"hint more\">… and {} more open incidents, less urgent: filter by tier, severity or text to see them.</p>",
            total - shown
        );
    }
    let recent: Vec<&IncidentRow> = resolved
        .iter()
        .filter(|i| filter.keeps(i))
        .take(20)
        .collect();
    if !recent.is_empty() {
        o.push_str("<h2>Recently resolved</h2><ul class=\"incidents resolved\">");
        for i in recent {
            o.push_str(&card(f, i, progress.get(&i.id), silences));
        }
        o.push_str("</ul>");
    }
    o
}

/// Sorts severities worst first (an unknown one last).
fn severity_rank(severity: &str) -> u8 {
    match severity {
        "severe" | "critical" => 0,
        "functional" => 1,
        "minor" => 2,
        _ => 3,
    }
}

/// What the silences in force at `now` that match `i` say, one line each.
fn silenced(
    i: &IncidentRow,
    silences: &[std::sync::Arc<crate::silence::Compiled>],
    now: Ts,
) -> Vec<String> {
    let labels = crate::silence::labels_of_incident(i);
    silences
        .iter()
        .filter(|c| c.silence.state(now) == SilenceState::Active && c.matches(&labels))
        .map(|c| {
            let s = &c.silence;
            format!(
                "silenced ({}) by {} until {} UTC: {}",
                s.scope.as_str(),
                s.created_by,
                clock(s.ends_at),
                s.comment
            )
        })
        .collect()
}

fn card(
    f: &Frame<'_>,
    i: &IncidentRow,
    progress: Option<&Progress>,
    silences: &[std::sync::Arc<crate::silence::Compiled>],
) -> String {
    let mut items: Vec<String> = i.attention.iter().filter_map(|a| waiting(a)).collect();
    if progress.is_some_and(|p| p.awaits_ack) {
        items.push("paging: waits for on-call to acknowledge".into());
    }
    let waits = if items.is_empty() {
        String::new()
    } else {
        format!("<p class=\"waits\">{}</p>", esc(&items.join("; ")))
    };
    let did = match progress {
        Some(p) if !p.did.is_empty() => {
            format!("<p class=\"did\">ripcord: {}</p>", esc(&p.did.join(", ")))
        }
        _ => String::new(),
    };
    let mut marks = String::new();
    if let Some(by) = progress.and_then(|p| p.acked_by.as_deref()) {
        let _ = write!(
            marks,
            "<p class=\"mark acked\"><span class=\"badge\">acked</span> by {}</p>",
            esc(by)
        );
    }
    if i.resolved_at.is_none() {
        for s in silenced(i, silences, f.now) {
            let _ = write!(
                marks,
                "<p class=\"mark silenced\"><span class=\"badge\">silenced</span> {}</p>",
                esc(s.trim_start_matches("silenced "))
            );
        }
    }
    let when = match i.resolved_at {
        Some(r) => format!("resolved {}", relative(f.now, r)),
        None => format!("open since {}", relative(f.now, i.opened_at)),
    };
    // A batch incident is one card: its members, compactly.
    let members = match &i.batch {
        Some(b) => {
            let names = b.instances();
            let back = b.members.iter().filter(|m| m.recovered).count();
            let mut line = format!(
                "{} of {} instances breached: {}",
                names.len(),
                b.size.max(b.batch_instances.len() as u32),
                crate::text::compact_names(&names, 120)
            );
            if back > 0 {
                line.push_str(&format!(" ({back} recovered)"));
            }
            if !b.outside.is_empty() {
                line.push_str(&format!(
                    "; also {} not upgraded: maybe not the upgrade",
                    b.outside.len()
                ));
            }
            format!("<p class=\"members\">{}</p>", esc(&line))
        }
        None => String::new(),
    };
    format!(
        "<li class=\"incident sev-{sev}\"><a href=\"/incidents/{id_seg}\"><span class=\"badge tier-{tier}\">{tier}</span> \
         <span class=\"badge sev-{sev}\">{sev}</span> <b>{target}</b> <span class=\"rule\">{rule}</span></a>\
         <p class=\"meta\">{when} · <code>{id}</code></p>{members}{did}{marks}{waits}</li>",
        sev = esc(&i.severity),
        tier = esc(&i.tier),
        id_seg = seg(&i.id),
        id = esc(&i.id),
        target = esc(&target(i)),
        rule = esc(&i.rule),
    )
}

/// What the alert says in one line: its `summary` annotation, else its
/// `description`, else the opening decision's message (`pay/i-1:
/// http_5xx_ratio last over 30s is 0.4 (> 0.05) for 1m`).
pub fn summary(r: &Review) -> Option<&str> {
    let note = |k: &str| {
        r.annotations
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    };
    note("summary").or_else(|| note("description")).or_else(|| {
        // The timeline says `rollback: <message>`.
        r.journal.iter().find(|t| t.kind == "decision").map(|t| {
            t.message
                .split_once(": ")
                .map_or(t.message.as_str(), |(_, m)| m)
        })
    })
}

/// The alert's annotations, one row each (links stay text: data, never a
/// link a page would follow).
fn annotations_table(r: &Review) -> String {
    let mut o = String::from("<table class=\"annotations\">");
    for (k, v) in &r.annotations {
        let _ = write!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    o.push_str("</table>");
    o
}

/// The incident's labels, one row each.
fn labels_table(i: &IncidentRow) -> String {
    let mut o = String::from("<table class=\"labels\">");
    if let Some(obj) = i.labels.as_object() {
        for (k, v) in obj {
            let _ = write!(
                o,
                "<tr><th>{}</th><td>{}</td></tr>",
                esc(k),
                esc(v.as_str().unwrap_or_default())
            );
        }
    }
    o.push_str("</table>");
    o
}

/// What approving does, in words, for the confirmation page.
pub fn consequence(verb: Verb, i: &IncidentRow) -> String {
    let service = label(i, "service");
    let instance = label(i, "instance");
    let on = match (service, instance) {
        ("", "") => format!("the group {}", i.partition),
        (s, "") => format!("service {s}"),
        ("", n) => format!("instance {n}"),
        (s, n) => format!("service {s} on instance {n}"),
    };
    let on = match &i.batch {
        Some(b) => b.name(),
        None => on,
    };
    let paused = match i.tier.as_str() {
        "high" => " The staged rollout stays paused until someone resumes it.",
        _ => "",
    };
    match (verb, &i.batch) {
        (Verb::Approve | Verb::ApproveBatch, Some(_)) => format!(
            "ripcord rolls back the instances of {on} you choose below, each with the configured \
             rollback, within seconds.{paused}"
        ),
        (Verb::Approve | Verb::ApproveBatch, None) => {
            format!("ripcord rolls back {on} with the configured rollback, within seconds.{paused}")
        }
        (Verb::Reject, _) => format!("No rollback of {on} will run. The incident stays open."),
        (Verb::Ack, _) => format!("Paging for {on} stops. Nothing is rolled back by this."),
    }
}

/// The blast radius of a batch incident's approval, for a thumb: three
/// large choices with their counts (the breaching instances, the whole
/// batch, chosen instances, each of the batch's instances a checkbox).
/// `chosen` preselects one (`breaching` or `batch`). `ticks`: the batch's
/// instances as checkboxes (the phone page); else one text field of names
/// separated by commas (the console's form).
pub fn scope_choice(b: &crate::decision::BatchInfo, chosen: &str, ticks: bool) -> String {
    let breaching = b.breaching_targets();
    let names = |v: &[String]| {
        crate::text::compact_names(&v.iter().map(String::as_str).collect::<Vec<_>>(), 120)
    };
    let mut whole: std::collections::BTreeSet<String> =
        b.batch_instances.iter().map(|i| i.to_string()).collect();
    whole.extend(b.instances().into_iter().map(str::to_owned));
    let whole: Vec<String> = whole.into_iter().collect();
    let check = |v: &str| if v == chosen { " checked" } else { "" };
    let mut o = String::from("<fieldset class=\"scope\"><legend>Roll back</legend>");
    let _ = write!(
        o,
        "<label class=\"choice\"><input type=\"radio\" name=\"scope\" value=\"breaching\"{}>\
         <span><b>The {} breaching instance{}</b> <small>{}</small></span></label>",
        check("breaching"),
        breaching.len(),
        if breaching.len() == 1 { "" } else { "s" },
        esc(&names(&breaching))
    );
    let _ = write!(
        o,
        "<label class=\"choice\"><input type=\"radio\" name=\"scope\" value=\"batch\"{}>\
         <span><b>The whole batch: {} instance{}</b> <small>{}</small></span></label>",
        check("batch"),
        whole.len(),
        if whole.len() == 1 { "" } else { "s" },
        esc(&names(&whole))
    );
    let _ = write!(
        o,
        "<label class=\"choice\"><input type=\"radio\" name=\"scope\" value=\"chosen\"{}>\
         <span><b>Only the instances ticked below</b></span></label><div class=\"instances\">",
        check("chosen")
    );
    if ticks {
        for n in whole.iter().take(500) {
            let breach = if breaching.contains(n) {
                " breaching"
            } else {
                ""
            };
            let _ = write!(
                o,
                "<label class=\"tick{breach}\"><input type=\"checkbox\" name=\"instances\" value=\"{v}\">{v}</label>",
                v = esc(n)
            );
        }
    } else {
        let _ = write!(
            o,
            "<label>Instances, separated by commas <input name=\"instances\" maxlength=\"65536\" placeholder=\"{}\"></label>",
            esc(&names(&whole))
        );
    }
    o.push_str("</div></fieldset>");
    o
}

/// A batch incident's members: who breaches, who is back, and the
/// instances outside the batch that breach too.
fn members_block(b: &crate::decision::BatchInfo) -> String {
    let mut o = format!(
        "<h2>Members</h2><p class=\"meta\">{} of {} instances of {} breached</p>\
         <table class=\"members\"><tr><th>instance</th><th>rule</th><th>severity</th><th>joined</th><th>state</th></tr>",
        b.instances().len(),
        b.size.max(b.batch_instances.len() as u32),
        esc(&b.name())
    );
    for m in &b.members {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td class=\"st-{st}\">{st}</td></tr>",
            if m.instance.is_empty() {
                "(the batch as a whole)".to_owned()
            } else {
                esc(&m.instance)
            },
            esc(&m.rule),
            m.severity,
            m.joined,
            clock(m.joined),
            st = if m.recovered {
                "recovered"
            } else {
                "breaching"
            },
        );
    }
    o.push_str("</table>");
    if !b.outside.is_empty() {
        let names: Vec<&str> = b.outside.iter().map(|s| &**s).collect();
        let _ = write!(
            o,
            "<p class=\"warn\">Also breaching on {} of {} instances not upgraded ({}): the fault may not be the upgrade.</p>",
            b.outside.len(),
            b.outside_seen.max(b.outside.len() as u32),
            esc(&crate::text::compact_names(&names, 200))
        );
    }
    o
}

fn approval_state(a: &ApprovalRow, now: Ts) -> String {
    match (a.state.as_str(), &a.decided_by) {
        ("awaiting", _) => format!(
            "waiting for approval; expires in {} (at {})",
            human(Dur::from_secs(
                a.expires_at.since(now).millis().max(0) / 1000
            )),
            crate::time::clock_words(now, a.expires_at)
        ),
        (state, Some(by)) => {
            let via = a
                .decided_via
                .map(|v| format!(" via {}", v.as_str()))
                .unwrap_or_default();
            format!(
                "{state} by {by}{via}{}",
                a.decided_at
                    .map(|t| format!(" at {}", crate::time::clock_words(now, t)))
                    .unwrap_or_default()
            )
        }
        (state, None) => state.to_owned(),
    }
}

/// The approval on the incident page, its times relative and absolute.
fn approval_line(a: &ApprovalRow, now: Ts) -> String {
    match (a.state.as_str(), &a.decided_by) {
        ("awaiting", _) => format!(
            "<p>Approval: waiting; expires {}</p>",
            when(now, a.expires_at)
        ),
        (state, Some(by)) => format!(
            "<p>Approval: {} by {}{}{}</p>",
            esc(state),
            esc(by),
            a.decided_via
                .map(|v| format!(" via {}", v.as_str()))
                .unwrap_or_default(),
            a.decided_at
                .map(|t| format!(" {}", when(now, t)))
                .unwrap_or_default()
        ),
        (state, None) => format!("<p>Approval: {}</p>", esc(state)),
    }
}

/// Paging runs, or ran every step, and nobody acknowledged it.
fn awaits_ack(p: &EscalationRow) -> bool {
    p.acked_by.is_none() && matches!(p.state.as_str(), "active" | "exhausted")
}

/// Paging's state and its chain, drawn as steps: each with its delay and
/// channels, who was reached when (relative and absolute), the next one and
/// when, and the acknowledgement that ended it. `acked_at`: when the
/// acknowledgement landed (from the timeline).
fn paging_block(p: &EscalationRow, chain: &[Step], now: Ts, acked_at: Option<Ts>) -> String {
    let mut o = match (&p.acked_by, p.state.as_str()) {
        (Some(by), _) => format!(
            "<p class=\"acked\">Paging: acknowledged by {}{}</p>",
            esc(by),
            acked_at
                .map(|t| format!(" {}", when(now, t)))
                .unwrap_or_default()
        ),
        (None, "active") => format!(
            "<p class=\"waits\">Paging: waits for on-call to acknowledge; next step {} of {}{}</p>",
            p.step + 1,
            chain.len(),
            p.next_at
                .map(|t| format!(" {}", when(now, t)))
                .unwrap_or_default()
        ),
        (None, "exhausted") => {
            "<p class=\"waits\">Paging: every step sent; nobody has acknowledged yet</p>".to_owned()
        }
        (None, s) => format!("<p>Paging {}</p>", esc(s)),
    };
    if !chain.is_empty() {
        o.push_str("<ol class=\"chain\" aria-label=\"escalation chain\">");
        for (k, step) in chain.iter().enumerate() {
            let state = match (k as u32).cmp(&p.step) {
                std::cmp::Ordering::Less => "sent",
                std::cmp::Ordering::Equal if p.state == "active" && p.acked_by.is_none() => "next",
                _ => "not needed",
            };
            let at = p.started_at.saturating_add(step.after);
            let reached = match state {
                "sent" => format!("reached {}", when(now, at)),
                "next" => format!("next, {}", when(now, p.next_at.unwrap_or(at))),
                _ if p.acked_by.is_some() => "not needed: acknowledged".to_owned(),
                _ => "not needed".to_owned(),
            };
            let _ = write!(
                o,
                "<li class=\"step step-{}\"><span class=\"step-head\">Step {} · {}</span> \
                 <span class=\"channels\">{}</span> <span class=\"step-state\">{reached}</span></li>",
                state.replace(' ', "-"),
                k + 1,
                if step.after == Dur::ZERO {
                    "at once".to_owned()
                } else {
                    format!("after {}", human(step.after))
                },
                esc(&step.channels.join(", "))
            );
        }
        o.push_str("</ol>");
    }
    o
}

/// Which human acts an incident page offers now: each only while it can
/// still act (nothing once the incident is resolved, the approval decided,
/// the paging acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CanDo {
    pub approve: bool,
    pub ack: bool,
}

impl CanDo {
    pub fn of(r: &Review, paging: Option<&EscalationRow>) -> CanDo {
        let open = r.incident.state == "open";
        let awaiting = r.approval.as_ref().is_some_and(|a| a.state == "awaiting");
        let acked = paging.is_some_and(|p| p.acked_by.is_some()) || acked_at(r).is_some();
        CanDo {
            approve: open && awaiting,
            ack: open && !acked && (awaiting || paging.is_some_and(awaits_ack)),
        }
    }

    fn any(self) -> bool {
        self.approve || self.ack
    }
}

/// When the incident was acknowledged, from its timeline.
fn acked_at(r: &Review) -> Option<Ts> {
    r.journal
        .iter()
        .find(|t| t.message.starts_with("acknowledged by "))
        .map(|t| t.at)
}

/// The incident's one acting form: one note box, one name, a button per
/// act it can still do (each button carries its verb).
fn act_form(f: &Frame<'_>, r: &Review, path: &str, can: CanDo) -> String {
    let mut o = format!(
        "<form method=\"post\" action=\"{path}/act\" class=\"act\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(f.csrf)
    );
    if can.approve {
        if let Some(b) = &r.incident.batch {
            o.push_str(&scope_choice(b, "breaching", false));
        }
    }
    if f.viewer.user.is_none() {
        o.push_str("<label>Your name <input name=\"by\" required maxlength=\"128\" autocomplete=\"name\"></label>");
    }
    o.push_str("<label>Note (goes on the timeline) <input name=\"note\" maxlength=\"512\"></label><div class=\"buttons\">");
    if can.approve {
        o.push_str(
            "<button name=\"verb\" value=\"approve\" class=\"primary\">Approve rollback</button>\
                    <button name=\"verb\" value=\"reject\" class=\"danger\">Reject</button>",
        );
    }
    if can.ack {
        o.push_str("<button name=\"verb\" value=\"ack\" class=\"plain\">Acknowledge</button>");
    }
    o.push_str("</div></form>");
    o
}

/// What a person's act did, said once the page comes back from it.
fn did_words(verb: &str) -> Option<&'static str> {
    Some(match verb {
        "approve" | "approve-batch" => {
            "You approved the rollback: it runs now; its outcome lands below."
        }
        "reject" => "You rejected the rollback: nothing is rolled back.",
        "ack" => "You acknowledged: paging stops.",
        _ => return None,
    })
}

/// Every action ripcord took for the incident and how it ended (or that it
/// still runs), as it lands: the page refreshes itself.
fn outcomes(actions: &[(String, String, String)]) -> String {
    let mut o = String::from(
        "<section class=\"outcomes\" aria-labelledby=\"outcomes-h\"><h2 id=\"outcomes-h\">What ripcord did</h2>",
    );
    if actions.is_empty() {
        o.push_str("<p class=\"hint\">No action yet.</p></section>");
        return o;
    }
    o.push_str("<ul class=\"outcomes\" role=\"status\" aria-live=\"polite\">");
    for (a, s, d) in actions {
        let _ = write!(
            o,
            "<li class=\"st-{st}\"><b>{}</b> <span class=\"state\">{}</span>{}</li>",
            esc(&a.replace('_', " ")),
            esc(&s.replace('_', " ")),
            if d.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(d))
            },
            st = esc(s),
        );
    }
    o.push_str("</ul></section>");
    o
}

/// `/incidents/{id}`. `did`: the verb a person just posted (the page they
/// land on says what it did).
pub fn incident(
    f: &Frame<'_>,
    r: &Review,
    paging: Option<&EscalationRow>,
    chain: &[Step],
    actions: &[(String, String, String)],
    did: Option<&str>,
) -> String {
    let i = &r.incident;
    let mut o = String::new();
    let _ = write!(
        o,
        "<h1><span class=\"badge tier-{tier}\">{tier}</span> <span class=\"badge sev-{sev}\">{sev}</span> {target}</h1>\
         <p class=\"meta\">{rule} · <code>{id}</code> · {state}, opened {opened}{resolved}</p>",
        tier = esc(&i.tier),
        sev = esc(&i.severity),
        target = esc(&target(i)),
        rule = esc(&i.rule),
        id = esc(&i.id),
        state = esc(&i.state),
        opened = when(f.now, i.opened_at),
        resolved = i
            .resolved_at
            .map(|t| format!(", resolved {}", when(f.now, t)))
            .unwrap_or_default(),
    );
    if let Some(words) = did.and_then(did_words) {
        let _ = write!(o, "<p class=\"outcome\" role=\"status\">{words}</p>");
    }
    if let Some(s) = summary(r) {
        let _ = write!(o, "<p class=\"summary\">{}</p>", esc(s));
    }
    if let Some(v) = r.value_vs_threshold() {
        let _ = write!(o, "<p class=\"value\">value <b>{}</b></p>", esc(&v));
    }
    // What waits for whom, and the buttons while they can act.
    o.push_str("<section class=\"state\" aria-label=\"what waits for whom\">");
    if let Some(a) = &r.approval {
        o.push_str(&approval_line(a, f.now));
    }
    if let Some(p) = paging {
        o.push_str(&paging_block(p, chain, f.now, acked_at(r)));
    }
    for w in i.attention.iter().filter_map(|a| waiting(a)) {
        let _ = write!(o, "<p class=\"waits\">{}</p>", esc(&w));
    }
    let can = CanDo::of(r, paging);
    let path = format!("/incidents/{}", seg(&i.id));
    if f.viewer.may == May::Act && can.any() {
        o.push_str(&act_form(f, r, &path, can));
    } else if can.any() {
        o.push_str(if f.can_sign_in {
            "<p class=\"hint\"><a href=\"/signin\">Sign in</a> to approve, reject or acknowledge.</p>"
        } else {
            "<p class=\"hint\">Acting from the console needs http.token or a trusted proxy (http.console.trusted_user_header).</p>"
        });
    }
    o.push_str("</section>");
    o.push_str(&outcomes(actions));
    if let Some(b) = &i.batch {
        o.push_str(&members_block(b));
    }
    if !r.annotations.is_empty() {
        o.push_str("<h2>Annotations</h2>");
        o.push_str(&annotations_table(r));
    }
    o.push_str("<h2>Around the incident</h2><div class=\"chart\">");
    o.push_str(&crate::report::html::chart(&r.chart));
    o.push_str("</div>");
    o.push_str("<h2>Labels</h2>");
    o.push_str(&labels_table(i));
    o.push_str("<h2>Timeline</h2><table class=\"timeline\">");
    for t in &r.journal {
        let _ = write!(
            o,
            "<tr><td class=\"at\">{}</td><td class=\"kind\">{}</td><td>{}</td></tr>",
            when(f.now, t.at),
            esc(&t.kind),
            esc(&t.message)
        );
    }
    o.push_str("</table>");
    o
}

/// The one-click confirmation page, for a phone: what happens to which
/// instance, the alert, value vs threshold, who else acted, time left,
/// then one name and one big button. Posts to itself.
pub fn confirm(r: Option<&Review>, id: &str, verb: Verb, expires: Ts, now: Ts) -> String {
    let what = match verb {
        Verb::Approve | Verb::ApproveBatch => "Approve the rollback?",
        Verb::Reject => "Reject the rollback?",
        Verb::Ack => "Acknowledge the page?",
    };
    let button = match verb {
        Verb::Approve | Verb::ApproveBatch => ("Approve rollback", "primary"),
        Verb::Reject => ("Reject rollback", "danger"),
        Verb::Ack => ("Acknowledge", "plain"),
    };
    let mut o = format!("<h1>{what}</h1>");
    let Some(r) = r else {
        let _ = write!(
            o,
            "<p>Incident <code>{}</code> is not known here.</p>",
            esc(id)
        );
        return o;
    };
    let i = &r.incident;
    if let Some(done) = used(r, verb, now) {
        return used_page(r, verb, &done);
    }
    let _ = write!(
        o,
        "<p class=\"big\"><span class=\"badge tier-{tier}\">{tier}</span> <span class=\"badge sev-{sev}\">{sev}</span> <b>{target}</b></p>\
         <p class=\"consequence\">{}</p>",
        esc(&consequence(verb, i)),
        tier = esc(&i.tier),
        sev = esc(&i.severity),
        target = esc(&target(i)),
    );
    if let Some(s) = summary(r) {
        let _ = write!(o, "<p class=\"summary\">{}</p>", esc(s));
    }
    if let Some(v) = r.value_vs_threshold() {
        let _ = write!(
            o,
            "<p class=\"value\">value <b>{}</b> ({})</p>",
            esc(&v),
            esc(&i.rule)
        );
    }
    let description = r
        .annotations
        .iter()
        .find(|(k, _)| k == "description")
        .map(|(_, v)| v.as_str())
        .filter(|d| Some(*d) != summary(r));
    if let Some(d) = description {
        let _ = write!(o, "<p class=\"description\">{}</p>", esc(d));
    }
    let _ = write!(
        o,
        "<details class=\"labels\"><summary>All labels{}</summary>{}{}</details>",
        if r.annotations.is_empty() {
            ""
        } else {
            " and annotations"
        },
        labels_table(i),
        if r.annotations.is_empty() {
            String::new()
        } else {
            annotations_table(r)
        }
    );
    let left = expires.since(now);
    let _ = write!(
        o,
        "<p class=\"left\">This link works for <b>{}</b> more (until {}) and only once.</p>",
        human(Dur::from_secs(left.millis().max(0) / 1000)),
        crate::time::clock_words(now, expires)
    );
    let mut acted = Vec::new();
    if let Some(a) = &r.approval {
        if a.state != "awaiting" {
            acted.push(approval_state(a, now));
        }
    }
    acted.extend(
        r.journal
            .iter()
            .filter(|t| {
                t.message.starts_with("acknowledged by ")
                    || t.message.contains("approval request is withdrawn")
            })
            .map(|t| format!("{} ({})", t.message, t.at)),
    );
    if acted.is_empty() {
        o.push_str("<p class=\"others\">Nobody else has acted yet.</p>");
    } else {
        o.push_str("<ul class=\"others\">");
        for a in acted {
            let _ = write!(o, "<li>{}</li>", esc(&a));
        }
        o.push_str("</ul>");
    }
    if i.state != "open" {
        let _ = write!(
            o,
            "<p class=\"warn\">The incident is {} already.</p>",
            esc(&i.state)
        );
    }
    let scope = match (&i.batch, verb) {
        (Some(b), Verb::Approve) => scope_choice(b, "breaching", true),
        (Some(b), Verb::ApproveBatch) => scope_choice(b, "batch", true),
        _ => String::new(),
    };
    let _ = write!(
        o,
        "<form method=\"post\" class=\"confirm\">{scope}<label>Your name<input name=\"by\" required maxlength=\"128\" autocomplete=\"name\" autocapitalize=\"none\"></label>\
         <label>Note (optional)<input name=\"note\" maxlength=\"512\"></label>\
         <button type=\"submit\" class=\"{} huge\">{}</button></form>",
        button.1, button.0
    );
    o
}

/// What was already done with what the link does (approved by…,
/// acknowledged by…), with its time: then the link can do nothing more.
fn used(r: &Review, verb: Verb, now: Ts) -> Option<(String, Ts)> {
    match verb {
        Verb::Ack => crate::action::ops::acknowledged(&r.journal),
        Verb::Approve | Verb::ApproveBatch | Verb::Reject => r
            .approval
            .as_ref()
            .filter(|a| a.state != "awaiting")
            .map(|a| (approval_state(a, now), a.decided_at.unwrap_or(now))),
    }
}

/// The link's page once it can act no more (it is where the link sends
/// the phone after its POST): what was done, what happened since, and the
/// way to the incident; no button.
fn used_page(r: &Review, verb: Verb, (done, at): &(String, Ts)) -> String {
    let i = &r.incident;
    let title = match verb {
        Verb::Ack => "Page acknowledged",
        _ => "Rollback decided",
    };
    let mut o = format!(
        "<h1>{title}</h1><p class=\"big\"><span class=\"badge tier-{tier}\">{tier}</span> <span class=\"badge sev-{sev}\">{sev}</span> <b>{target}</b></p>\
         <p class=\"done\">{}.</p>",
        esc(&upper_first(done)),
        tier = esc(&i.tier),
        sev = esc(&i.severity),
        target = esc(&target(i)),
    );
    let since: Vec<_> = r.timeline.iter().filter(|m| m.at >= *at).collect();
    if since.is_empty() {
        o.push_str(match verb {
            Verb::Approve | Verb::ApproveBatch if done.starts_with("approved") => {
                "<p class=\"outcome\">The rollback starts within seconds: reload this page to see how it went.</p>"
            }
            _ => "<p class=\"outcome\">Nothing has happened since.</p>",
        });
    } else {
        o.push_str("<h2>Since then</h2><ul class=\"outcome\">");
        for m in since {
            let _ = write!(o, "<li>{}: {}</li>", clock(m.at), esc(&m.what));
        }
        o.push_str("</ul>");
    }
    let _ = write!(
        o,
        "<p>The incident is {}. <a href=\"/incidents/{}\">Open the incident</a></p>",
        esc(&i.state),
        seg(&i.id)
    );
    o
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// An upgrade on the rollouts page: its gate, what its orchestrator last
/// asked about, its recent progress (oldest first), its promotions and the
/// pause holding it, if any.
pub struct UpgradeView {
    pub upgrade: UpgradeRow,
    pub gate: Option<Answer>,
    pub asked: Option<crate::gate::http::Asked>,
    pub log: Vec<UpgradeRow>,
    pub promotions: Vec<crate::gate::Promotion>,
    pub pause: Option<RolloutRow>,
}

/// An upgrade's batches in the order they ran, from its progress log.
pub fn batch_steps(log: &[UpgradeRow]) -> Vec<BatchStep> {
    let mut steps: Vec<BatchStep> = Vec::new();
    let mut done_before: Option<u64> = None;
    for u in log {
        let Some(b) = u.batch.as_deref() else {
            continue;
        };
        if steps.last().is_none_or(|s| s.batch != b) {
            done_before = steps.last().and_then(|s| s.done).or(done_before);
            steps.push(BatchStep {
                batch: b.to_owned(),
                started: u.updated_at,
                last: u.updated_at,
                stage: u.stage.clone(),
                size: None,
                done: None,
                total: None,
            });
        }
        let s = steps.last_mut().expect("pushed above");
        s.last = u.updated_at;
        s.stage = u.stage.clone();
        if u.done.is_some() {
            s.done = u.done;
            s.total = u.total.or(s.total);
            s.size = u.done.map(|d| d.saturating_sub(done_before.unwrap_or(0)));
        }
    }
    steps
}

/// `/rollouts`: each upgrade as steps (its batches with their sizes, the
/// soak, the gate's verdict and why, who promoted, the incident that
/// paused it), running ones first; paused rollouts with a resume button.
pub fn rollouts(f: &Frame<'_>, upgrades: &[UpgradeView], paused: &[RolloutRow]) -> String {
    let mut o = String::from("<h1>Rollouts</h1>");
    let held: Vec<&RolloutRow> = paused.iter().filter(|r| r.paused).collect();
    if !held.is_empty() {
        o.push_str("<h2>Paused by ripcord</h2><ul class=\"incidents\">");
        for r in held {
            let _ = write!(
                o,
                "<li class=\"incident sev-critical\"><b>{}</b> paused {} by {}{}",
                esc(&r.service),
                relative(f.now, r.changed_at),
                esc(&r.changed_by),
                r.incident
                    .as_ref()
                    .map(|i| format!(" for <a href=\"/incidents/{}\">{}</a>", seg(i), esc(i)))
                    .unwrap_or_default()
            );
            if f.viewer.may == May::Act {
                let _ = write!(
                    o,
                    "<form method=\"post\" action=\"/rollouts/{}/resume\" class=\"act\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{}<button class=\"primary\">Resume rollout</button></form>",
                    seg(&r.service),
                    esc(f.csrf),
                    if f.viewer.user.is_none() {
                        "<label>Your name <input name=\"by\" required maxlength=\"128\"></label>"
                    } else {
                        ""
                    }
                );
            }
            o.push_str("</li>");
        }
        o.push_str("</ul>");
    }
    o.push_str("<h2>Upgrades</h2>");
    if upgrades.is_empty() {
        o.push_str("<p class=\"calm\">No upgrade has reported progress.</p>");
        return o;
    }
    o.push_str("<div class=\"rollouts\">");
    for (k, v) in upgrades.iter().enumerate() {
        o.push_str(&rollout_card(f, k, v));
    }
    o.push_str("</div>");
    o
}

/// One upgrade as a column of steps, the way Argo Rollouts draws one.
fn rollout_card(f: &Frame<'_>, k: usize, v: &UpgradeView) -> String {
    let u = &v.upgrade;
    let status = match (&v.pause, u.open) {
        (Some(_), _) => "paused",
        (None, true) => "running",
        (None, false) => "ended",
    };
    let mut o = format!(
        "<article class=\"rollout run-{status}\" aria-labelledby=\"ro-{k}\"><h3 id=\"ro-{k}\">{} \
         <span class=\"badge run-{status}\">{status}</span></h3>\
         <p class=\"meta\">last report: {}{} {}</p>",
        esc(&u.service),
        esc(&u.stage),
        match (u.done, u.total) {
            (Some(d), Some(t)) => format!(", {d} of {t} instances upgraded"),
            _ => String::new(),
        },
        when(f.now, u.updated_at),
    );
    if let Some(p) = &v.pause {
        let _ = write!(
            o,
            "<p class=\"warn\">Paused by {}{} {}</p>",
            esc(&p.changed_by),
            p.incident
                .as_ref()
                .map(|i| format!(
                    " for incident <a href=\"/incidents/{}\">{}</a>",
                    seg(i),
                    esc(i)
                ))
                .unwrap_or_default(),
            when(f.now, p.changed_at)
        );
    }
    let mut steps = batch_steps(&v.log);
    if steps.is_empty() {
        if let Some(b) = &u.batch {
            steps.push(BatchStep {
                batch: b.clone(),
                started: u.updated_at,
                last: u.updated_at,
                stage: u.stage.clone(),
                size: None,
                done: u.done,
                total: u.total,
            });
        }
    }
    let last = steps.len().saturating_sub(1);
    let steps: Vec<(BatchStep, &'static str)> = steps
        .into_iter()
        .enumerate()
        .map(|(n, s)| {
            let state = match s.stage.as_str() {
                "failed" => "failed",
                "batch_done" | "completed" if n < last || !u.open => "done",
                "batch_done" => "soaking",
                _ if n < last => "done",
                _ => "running",
            };
            (s, state)
        })
        .collect();
    o.push_str(&super::timeline::batch_timeline(
        f.now,
        &u.service,
        &steps,
        u.open,
        v.gate.as_ref(),
        v.pause.as_ref(),
    ));
    o.push_str("<ol class=\"steps\">");
    for (n, (s, state)) in steps.iter().enumerate() {
        let state = *state;
        let _ = write!(
            o,
            "<li class=\"step batch b-{state}\"><span class=\"step-head\">Batch {}</span> \
             <span class=\"size\">{}</span> · <span class=\"step-state\">{state}: {} {}</span>",
            esc(&s.batch),
            match s.size {
                Some(n) => format!("{n} instance{}", if n == 1 { "" } else { "s" }),
                None => "size not reported".to_owned(),
            },
            esc(&s.stage),
            when(f.now, s.last)
        );
        // The soak of the batch the gate judges.
        if let Some(g) = v.gate.as_ref().filter(|_| n == last) {
            if g.min_soak_s > 0 && state == "running" {
                let _ = write!(
                    o,
                    "<span class=\"soak\">soaks {} once the batch is done</span>",
                    span_words(g.min_soak_s as i64)
                );
            } else if g.min_soak_s > 0 && state == "soaking" {
                let soaked = g.min_soak_s.saturating_sub(g.soak_remaining_s);
                let _ = write!(
                    o,
                    "<span class=\"soak\"><progress max=\"{max}\" value=\"{soaked}\" aria-label=\"soak of batch {b}\"></progress> \
                     soaked {} of {}</span>",
                    span_words(soaked as i64),
                    span_words(g.min_soak_s as i64),
                    max = g.min_soak_s,
                    b = esc(&s.batch),
                );
            }
        }
        // The batch's sample check, instance by instance.
        if let Some(g) = v
            .gate
            .as_ref()
            .filter(|g| n == last && !g.sample_check.is_empty())
        {
            let passed = g
                .sample_check
                .iter()
                .filter(|r| r.state == crate::journal::SampleState::Passed)
                .count();
            let _ = write!(
                o,
                "<div class=\"sample\">sample check: {passed} of {} passed<ul>",
                g.sample_check.len()
            );
            for r in &g.sample_check {
                let _ = write!(
                    o,
                    "<li class=\"sample-{state}\">{} <b>{state}</b>{}{}</li>",
                    esc(&r.instance),
                    if r.detail.is_empty() { "" } else { ": " },
                    esc(&r.detail),
                    state = r.state.as_str(),
                );
            }
            o.push_str("</ul></div>");
        }
        o.push_str("</li>");
    }
    if let Some(g) = &v.gate {
        let _ = write!(
            o,
            "<li class=\"step gate-step\"><span class=\"step-head\">Gate</span> \
             <span class=\"gate gate-{d}\">{d}</span> <span class=\"reason\">{}</span>{}</li>",
            esc(&g.reasons.join("; ")),
            g.promoted_by
                .as_ref()
                .map(|b| format!(" <span class=\"promoted\">promoted by {}</span>", esc(b)))
                .unwrap_or_default(),
            d = g.decision.as_str()
        );
    }
    o.push_str("</ol>");
    if !v.promotions.is_empty() {
        o.push_str("<ul class=\"promotions\">");
        for p in v.promotions.iter().rev().take(5) {
            let _ = write!(
                o,
                "<li>{} promoted {} {}{}</li>",
                esc(&p.by),
                p.batch
                    .as_ref()
                    .map(|b| format!("batch {}", esc(b)))
                    .unwrap_or_else(|| "the rollout".to_owned()),
                when(f.now, p.at),
                if p.note.is_empty() {
                    String::new()
                } else {
                    format!(": {}", esc(&p.note))
                }
            );
        }
        o.push_str("</ul>");
    }
    o.push_str(&promote_form(f, u, v.gate.as_ref(), v.asked.as_ref()));
    o.push_str("</article>");
    o
}

/// "Promote this batch", for someone who may act, while the gate holds a
/// batch a promotion can let go on: for the revision the orchestrator
/// last asked about, or every revision when none has asked (here).
fn promote_form(
    f: &Frame<'_>,
    u: &UpgradeRow,
    gate: Option<&Answer>,
    asked: Option<&crate::gate::http::Asked>,
) -> String {
    let (Some(batch), Some(gate)) = (u.batch.as_deref(), gate) else {
        return String::new();
    };
    if f.viewer.may != May::Act || !u.open || gate.decision != crate::gate::Decision::Hold {
        return String::new();
    }
    let (revision, which) = match asked {
        Some(a) => (
            a.revision.as_str(),
            format!(
                "revision {}, asked about {}",
                esc(&a.revision),
                ago(f.now, a.at)
            ),
        ),
        None => (
            "",
            "every revision: no orchestrator has asked here yet".to_owned(),
        ),
    };
    format!(
        "<form method=\"post\" action=\"/rollouts/{}/promote\" class=\"act\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"batch\" value=\"{}\">\
         <input type=\"hidden\" name=\"revision\" value=\"{}\">{}\
         <button>Promote this batch</button> <small>batch {} ({which}); lifts the soak and data holds, never an incident or a freeze</small></form>",
        seg(&u.service),
        esc(f.csrf),
        esc(batch),
        esc(revision),
        if f.viewer.user.is_none() {
            "<label>Your name <input name=\"by\" required maxlength=\"128\"></label>"
        } else {
            ""
        },
        esc(batch),
    )
}

/// What the silence form had in it (kept on a preview or an error).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct SilenceForm {
    #[serde(default)]
    pub matchers: String,
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub until_batch: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub intent: String,
}

/// `/silences`: what is in force, the form (with the preview of what it
/// would mute), the expired.
pub fn silences(
    f: &Frame<'_>,
    all: &[Silence],
    form: &SilenceForm,
    preview: Option<&[IncidentRow]>,
    problems: &[String],
) -> String {
    let mut o = String::from("<h1>Silences</h1>");
    let (live, over): (Vec<&Silence>, Vec<&Silence>) = all
        .iter()
        .partition(|s| s.state(f.now) != SilenceState::Expired);
    if live.is_empty() {
        o.push_str("<p class=\"calm\">No silence in force.</p>");
    } else {
        o.push_str("<ul class=\"silences\">");
        for s in live {
            o.push_str(&silence_item(f, s, true));
        }
        o.push_str("</ul>");
    }
    if f.viewer.may == May::Act {
        o.push_str("<h2>New silence</h2>");
        for p in problems {
            let _ = write!(o, "<p class=\"warn\">{}</p>", esc(p));
        }
        if let Some(hits) = preview {
            let scope = Scope::parse(&form.scope).unwrap_or_default();
            let _ = write!(
                o,
                "<div class=\"preview\"><p><b>Preview:</b> scope {} {}. It matches {} open incident(s) now:</p><ul>",
                scope.as_str(),
                match scope {
                    Scope::Notify =>
                        "mutes informational messages only; rollbacks, pages and approval requests still go",
                    Scope::All =>
                        "holds back actions too: rollbacks, pauses, pages and approval requests",
                },
                hits.len()
            );
            for i in hits {
                let _ = write!(
                    o,
                    "<li><a href=\"/incidents/{}\">{}</a> {} ({})</li>",
                    seg(&i.id),
                    esc(&target(i)),
                    esc(&i.rule),
                    esc(&i.tier)
                );
            }
            o.push_str("</ul><p>New breaches that match are held back the same way while it lasts.</p></div>");
        }
        let _ = write!(
            o,
            "<form method=\"post\" action=\"/silences\" class=\"silence\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <div class=\"field\"><label for=\"matchers\">Matchers, one per line</label>\
             <textarea id=\"matchers\" name=\"matchers\" rows=\"3\" required aria-describedby=\"matchers-help\">{m}</textarea>\
             <p id=\"matchers-help\" class=\"hint examples\">For example <code>service=web</code> · <code>instance=~i-web-.*</code> · <code>tier!=high</code></p></div>\
             <label>For <input name=\"duration\" value=\"{d}\" placeholder=\"2h\"></label>\
             <label>or until batch (service:batch) completes <input name=\"until_batch\" value=\"{u}\" placeholder=\"web:3\"></label>\
             <label>Scope <select name=\"scope\"><option value=\"notify\"{sn}>notify: messages only</option><option value=\"all\"{sa}>all: actions too</option></select></label>\
             {by}<label>Comment <input name=\"comment\" value=\"{c}\" required maxlength=\"2000\"></label>\
             <div class=\"buttons\"><button name=\"intent\" value=\"preview\" class=\"plain\">Preview</button>\
             <button name=\"intent\" value=\"create\" class=\"primary\">Create silence</button></div></form>",
            csrf = esc(f.csrf),
            m = esc_block(&form.matchers),
            d = esc(&form.duration),
            u = esc(&form.until_batch),
            sn = if form.scope == "all" { "" } else { " selected" },
            sa = if form.scope == "all" { " selected" } else { "" },
            by = if f.viewer.user.is_none() {
                format!(
                    "<label>Your name <input name=\"by\" value=\"{}\" required maxlength=\"128\"></label>",
                    esc(&form.by)
                )
            } else {
                String::new()
            },
            c = esc(&form.comment),
        );
    } else if f.can_sign_in {
        o.push_str(
            "<p class=\"hint\"><a href=\"/signin\">Sign in</a> to create or expire silences.</p>",
        );
    }
    if !over.is_empty() {
        o.push_str("<h2>Expired</h2><ul class=\"silences over\">");
        for s in over.iter().rev().take(20) {
            o.push_str(&silence_item(f, s, false));
        }
        o.push_str("</ul>");
    }
    o
}

/// Multi-line text for a textarea: each line escaped on its own.
fn esc_block(s: &str) -> String {
    s.lines().map(esc).collect::<Vec<_>>().join("\n")
}

fn silence_item(f: &Frame<'_>, s: &Silence, live: bool) -> String {
    let matchers: Vec<String> = s.matchers.iter().map(ToString::to_string).collect();
    let until = match &s.until {
        Some(u) => format!(
            "until batch {} of {} completes (at the latest {})",
            u.batch,
            u.service,
            crate::time::clock_words(f.now, s.ends_at)
        ),
        None => format!("until {}", crate::time::clock_words(f.now, s.ends_at)),
    };
    let mut o = format!(
        "<li><span class=\"badge scope-{scope}\">{scope}</span> <code>{m}</code> <span class=\"meta\">{state}, {until}, by {by}: {c}{expired}</span> <code class=\"id\">{id}</code>",
        scope = s.scope.as_str(),
        m = esc(&matchers.join(", ")),
        state = s.state(f.now).as_str(),
        until = esc(&until),
        by = esc(&s.created_by),
        c = esc(&s.comment),
        expired = s
            .expired_by
            .as_ref()
            .map(|b| format!(" (expired by {})", esc(b)))
            .unwrap_or_default(),
        id = esc(&s.id),
    );
    if live && f.viewer.may == May::Act {
        let _ = write!(
            o,
            "<form method=\"post\" action=\"/silences/{}/expire\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{}<button class=\"danger small\">Expire</button></form>",
            seg(&s.id),
            esc(f.csrf),
            if f.viewer.user.is_none() {
                "<input name=\"by\" required maxlength=\"128\" placeholder=\"your name\" aria-label=\"your name\">"
            } else {
                ""
            }
        );
    }
    o.push_str("</li>");
    o
}

/// `/signin`.
pub fn sign_in(problem: Option<&str>, header: Option<&str>) -> String {
    let mut o = String::from("<h1>Sign in</h1>");
    if let Some(p) = problem {
        let _ = write!(o, "<p class=\"warn\">{}</p>", esc(p));
    }
    o.push_str(
        "<form method=\"post\" action=\"/signin\" class=\"confirm\"><label>Your name (it goes on the timeline of what you do)\
         <input name=\"by\" required maxlength=\"128\" autocomplete=\"name\"></label>\
         <label>Token (ripcord's API token to act, the read token to look)<input name=\"token\" type=\"password\" required autocomplete=\"current-password\"></label>\
         <button class=\"primary huge\">Sign in</button></form>",
    );
    if let Some(h) = header {
        let _ = write!(
            o,
            "<p class=\"hint\">Behind the configured proxy you are signed in by its <code>{}</code> header.</p>",
            esc(h)
        );
    }
    o
}

/// A short page saying what happened (or why not).
pub fn message(title: &str, text: &str, back: Option<(&str, &str)>) -> String {
    let mut o = format!("<h1>{}</h1><p>{}</p>", esc(title), esc(text));
    if let Some((href, label)) = back {
        let _ = write!(o, "<p><a href=\"{}\">{}</a></p>", esc(href), esc(label));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_segment_from_a_label_never_names_another_route() {
        assert_eq!(seg("web"), "web");
        assert_eq!(seg("../api/v1/alerts"), "..%2Fapi%2Fv1%2Falerts");
        assert_eq!(seg(".."), "%2E%2E");
        assert_eq!(seg("a b?c#d"), "a%20b%3Fc%23d");
    }

    fn hostile() -> IncidentRow {
        IncidentRow {
            id: "inc-1".into(),
            rule: "errors<script>".into(),
            partition: "p".into(),
            tier: "high".into(),
            severity: "critical".into(),
            state: "open".into(),
            opened_at: Ts(0),
            resolved_at: None,
            labels: serde_json::json!({
                "service": "web\"><a href=\"https://evil.example\">x</a>",
                "instance": "../../api/v1/alerts",
                "note": "line one\n[approve](https://evil.example) @all",
            }),
            attention: vec!["request_approval:awaiting_approval".into()],
            batch: None,
        }
    }

    #[test]
    fn text_from_events_never_becomes_markup_or_a_link() {
        let viewer = Viewer {
            may: May::Read,
            user: Some("<b>eve</b>".into()),
            session: true,
        };
        let f = Frame {
            viewer: &viewer,
            csrf: "t",
            now: Ts(60_000),
            can_sign_in: true,
            proxy_header: None,
        };
        let page = layout(
            &f,
            "x",
            "/",
            true,
            &list(
                &f,
                &[hostile()],
                1,
                &[],
                &Default::default(),
                &[],
                &ListFilter::default(),
            ),
        );
        assert!(!page.contains("<a href=\"https://evil.example"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<b>eve</b>"), "{page}");
        assert!(page.contains("&lt;b&gt;eve&lt;/b&gt;"), "{page}");
        // The incident's link is its id, never a label.
        assert!(page.contains("href=\"/incidents/inc-1\""), "{page}");
        let table = labels_table(&hostile());
        assert!(!table.contains("<a "), "{table}");
        assert!(!table.contains('\n'), "a label stays on its line: {table}");
    }

    #[test]
    fn the_paging_chain_marks_what_was_sent_and_what_is_next() {
        let step = |after: i64, ch: &str| Step {
            after: Dur::from_secs(after),
            channels: vec![ch.to_owned()],
        };
        let chain = [step(0, "chat"), step(300, "sms"), step(600, "voice")];
        let mut p = EscalationRow {
            incident: "inc-1".into(),
            tier: crate::decision::Tier::High,
            step: 1,
            started_at: Ts(0),
            next_at: Some(Ts(300_000)),
            state: "active".into(),
            acked_by: None,
        };
        // Three minutes after paging started: step 1 was reached then, step 2
        // is due in two minutes, step 3 may not be needed.
        let now = Ts(180_000);
        let text = |h: String| {
            let mut t = String::new();
            let mut tag = false;
            for ch in h.chars() {
                match ch {
                    '<' => tag = true,
                    '>' => tag = false,
                    c if !tag => t.push(c),
                    _ => {}
                }
            }
            t
        };
        let html = paging_block(&p, &chain, now, None);
        assert!(html.contains("next step 2 of 3"), "{html}");
        let shown = text(html.clone());
        for want in [
            "Step 1 · at once chat reached 3 min ago (00:00:00 UTC)",
            "Step 2 · after 5m sms next, in 2 min (00:05:00 UTC)",
            "Step 3 · after 10m voice not needed",
        ] {
            assert!(shown.contains(want), "`{want}` in {shown}");
        }
        assert_eq!(html.matches("<li class=\"step ").count(), 3, "{html}");
        assert!(awaits_ack(&p));
        p.acked_by = Some("dana".into());
        let acked = text(paging_block(&p, &chain, now, Some(Ts(120_000))));
        assert!(
            acked.contains("acknowledged by dana 1 min ago (00:02:00 UTC)"),
            "{acked}"
        );
        assert!(acked.contains("not needed: acknowledged"), "{acked}");
        assert!(!awaits_ack(&p));
    }

    /// Someone who reads without signing in.
    fn reader() -> Viewer {
        Viewer {
            may: May::Read,
            user: None,
            session: false,
        }
    }

    /// A page's frame for `viewer`, a minute into the epoch.
    fn frame(viewer: &Viewer, can_sign_in: bool) -> Frame<'_> {
        Frame {
            viewer,
            csrf: "t",
            now: Ts(60_000),
            can_sign_in,
            proxy_header: None,
        }
    }

    #[test]
    fn a_storm_lists_the_most_urgent_and_counts_the_rest() {
        let viewer = reader();
        let f = frame(&viewer, false);
        // The journal's page: the most urgent first, 250 open in all.
        let open: Vec<IncidentRow> = (0..MAX_CARDS)
            .map(|k| {
                let mut i = hostile();
                i.id = format!("inc-{}", 249 - k);
                i.tier = if k == 0 { "high" } else { "low" }.into();
                i
            })
            .collect();
        let page = list(
            &f,
            &open,
            250,
            &[],
            &Default::default(),
            &[],
            &ListFilter::default(),
        );
        assert_eq!(page.matches("<li class=\"incident").count(), MAX_CARDS);
        assert!(page.contains("and 50 more open incidents"), "{page}");
        assert!(
            page.contains("href=\"/incidents/inc-249\""),
            "the high one first"
        );
        assert!(page.contains("<span class=\"count\">250</span>"), "{page}");
    }

    #[test]
    fn within_a_tier_severe_comes_above_functional_and_cards_show_ack_and_silence() {
        let viewer = reader();
        let f = frame(&viewer, true);
        let row = |id: &str, severity: &str| {
            let mut i = hostile();
            i.id = id.into();
            i.severity = severity.into();
            i.labels = serde_json::json!({"service": "web", "instance": id});
            i
        };
        let open = [row("inc-f", "functional"), row("inc-s", "severe")];
        let mut progress = std::collections::HashMap::new();
        progress.insert(
            "inc-f".to_owned(),
            Progress {
                acked_by: Some("<i>dana</i>".into()),
                ..Progress::default()
            },
        );
        let silence = crate::silence::Silence {
            id: "s-1".into(),
            matchers: vec![crate::silence::MatcherSpec::parse("instance=inc-s").unwrap()],
            starts_at: Ts(0),
            ends_at: Ts(3_600_000),
            until: None,
            created_by: "erin".into(),
            comment: "kernel <patch>".into(),
            scope: Scope::Notify,
            created_at: Ts(0),
            updated_at: Ts(0),
            expired_by: None,
        };
        let compiled = std::sync::Arc::new(
            crate::silence::Compiled::new(silence, &Default::default()).unwrap(),
        );
        let page = list(
            &f,
            &open,
            2,
            &[],
            &progress,
            &[compiled],
            &ListFilter::default(),
        );
        let severe = page.find("/incidents/inc-s").unwrap();
        let functional = page.find("/incidents/inc-f").unwrap();
        assert!(severe < functional, "severe first: {page}");
        assert!(
            page.contains("acked</span> by &lt;i&gt;dana&lt;/i&gt;"),
            "{page}"
        );
        assert!(
            page.contains(
                "silenced</span> (notify) by erin until 01:00:00 UTC: kernel &lt;patch&gt;"
            ),
            "{page}"
        );
        assert_eq!(page.matches("class=\"mark silenced\"").count(), 1, "{page}");
    }

    #[test]
    fn relative_times_read_as_words() {
        assert_eq!(relative(Ts(200_000), Ts(20_000)), "3 min ago");
        assert_eq!(relative(Ts(0), Ts(120_000)), "in 2 min");
        assert_eq!(relative(Ts(10_000), Ts(8_000)), "just now");
        assert_eq!(relative(Ts(7_500_000), Ts(0)), "2 h 5 min ago");
    }

    #[test]
    fn a_rollout_reads_as_batches_with_their_sizes() {
        let up = |batch: &str, stage: &str, done: Option<u64>, at: i64| UpgradeRow {
            service: "cart".into(),
            batch: Some(batch.into()),
            stage: stage.into(),
            done,
            total: done.map(|_| 100),
            message: None,
            updated_at: Ts(at),
            open: true,
        };
        let steps = batch_steps(&[
            up("1", "batch_started", None, 0),
            up("1", "batch_done", Some(10), 10),
            up("2", "batch_started", None, 20),
            up("2", "batch_done", Some(35), 30),
            up("3", "batch_started", None, 40),
        ]);
        let got: Vec<(&str, Option<u64>, &str)> = steps
            .iter()
            .map(|s| (s.batch.as_str(), s.size, s.stage.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("1", Some(10), "batch_done"),
                ("2", Some(25), "batch_done"),
                ("3", None, "batch_started")
            ]
        );
    }

    #[test]
    fn waiting_says_who_is_waited_for() {
        assert_eq!(
            waiting("request_approval:awaiting_approval").as_deref(),
            Some("waits for a human to approve the rollback")
        );
        assert_eq!(
            waiting("rollback:unknown").as_deref(),
            Some("rollback: outcome unknown, check the host")
        );
        assert_eq!(waiting("request_approval:approved"), None);
    }
}
