//! What ripcord tells people, before any channel formats it.
//!
//! A [`Message`] carries the incident's facts (what, where, value vs
//! threshold, tier, severity, what ripcord did, what it waits for) and its
//! one-click links; each channel renders it in its own payload format and
//! within its own size limits.

use std::fmt::Write as _;

use crate::decision::{Action, Decision, Severity, Tier};
use crate::text::one_line;

/// Why a message is sent; channels may format kinds differently (e.g. a
/// DingTalk actionCard with buttons for an approval request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A breach: what happened and what ripcord does about it.
    Incident,
    /// A human must approve (or reject) a rollback.
    ApprovalRequest,
    /// On-call is being paged: someone must acknowledge.
    Page,
    /// What an action did (rollback done, verification failed, …).
    Outcome,
    Resolved,
    /// Upgrade progress from the rollout orchestrator.
    Progress,
    /// Several messages merged while a channel was rate limited, or the
    /// periodic status update for management.
    Digest,
}

/// A link a person can follow: approve, reject, acknowledge, open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub label: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    /// One line, no markup: "[HIGH/severe] payments/i-pay-2: http_5xx_ratio 0.12 > 0.05".
    pub title: String,
    /// Plain text, one fact per line; channels may add markup around it.
    pub body: String,
    pub tier: Tier,
    pub severity: Severity,
    pub incident: Option<String>,
    pub links: Vec<Link>,
    /// Mention on-call (DingTalk / WeCom @mobiles, Slack <!here>).
    pub mention: bool,
}

impl Message {
    /// The message for a decision, with what ripcord does and waits for
    /// (`now`: when it is written, for the times it names).
    pub fn for_decision(d: &Decision, links: Vec<Link>, now: crate::time::Ts) -> Message {
        let kind = match d.action {
            Action::Resolve => Kind::Resolved,
            Action::RequestApproval => Kind::ApprovalRequest,
            Action::Page => Kind::Page,
            _ if d.incident.is_none() => Kind::Progress,
            _ => Kind::Incident,
        };
        // Text from events (labels, annotations) is data: each value is put
        // on one line, so it can never start a line of its own.
        let title = title(d);
        let mut body = String::new();
        // Said once: progress is titled with its own text.
        if title != d.message {
            let _ = writeln!(body, "{}", one_line(&d.message));
        }
        let whom: Vec<String> = d
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", one_line(k), one_line(v)))
            .collect();
        if !whom.is_empty() {
            let _ = writeln!(body, "where: {}", whom.join(", "));
        }
        if let Some(b) = &d.batch {
            let names = b.instances();
            if !names.is_empty() {
                let _ = writeln!(
                    body,
                    "breaching: {}{}",
                    crate::text::compact_names(&names, 200),
                    if b.size > 0 {
                        format!(" ({} of {} instances of the batch)", names.len(), b.size)
                    } else {
                        String::new()
                    }
                );
            }
        }
        if let (Some(v), Some(t)) = (d.value, d.threshold) {
            let _ = writeln!(body, "value: {} (threshold {})", num(v), num(t));
        }
        if d.incident.is_some() {
            let _ = writeln!(
                body,
                "tier: {}, severity: {}, rule: {}",
                d.tier, d.severity, d.rule
            );
        }
        if let Some(id) = &d.incident {
            let _ = writeln!(body, "ripcord: {}", doing(d.action));
            let _ = writeln!(
                body,
                "incident: {id} (at {})",
                crate::time::clock_words(now, d.at)
            );
        }
        Message {
            kind,
            title: one_line(&title).into_owned(),
            body: body.trim_end().to_owned(),
            tier: d.tier,
            severity: d.severity,
            incident: d.incident.as_ref().map(|i| i.to_string()),
            links,
            mention: matches!(kind, Kind::Page | Kind::ApprovalRequest)
                || d.severity == Severity::Severe,
        }
    }

    /// A short message about an incident (outcomes, withdrawals, refusals).
    pub fn note(
        kind: Kind,
        tier: Tier,
        severity: Severity,
        incident: Option<&str>,
        title: String,
        body: String,
    ) -> Message {
        // The title is one line; the body keeps its lines, each made safe.
        let body = crate::text::each_line(&body);
        Message {
            kind,
            title: one_line(&title).into_owned(),
            body,
            tier,
            severity,
            incident: incident.map(str::to_owned),
            links: Vec::new(),
            mention: false,
        }
    }

    /// Title and body as plain text.
    pub fn plain(&self) -> String {
        let mut s = format!("{}\n{}", self.title, self.body);
        for l in &self.links {
            let _ = write!(s, "\n{}: {}", l.label, l.url);
        }
        s
    }

    /// A digest's title for `total` messages, of which `parts` are known:
    /// a page keeps its PAGE header (whoever is paged must see a page, not
    /// "2 updates").
    pub fn digest_title(parts: &[Message], total: usize) -> String {
        match parts.iter().find(|m| m.kind == Kind::Page) {
            Some(page) if total > 1 => {
                format!("{} (+{} more updates)", page.title, total - 1)
            }
            Some(page) => page.title.clone(),
            None => format!("ripcord: {total} updates"),
        }
    }

    /// Merges messages held back by a rate limit into one digest. Each part
    /// keeps its title, its first line (a withdrawal or refusal is said
    /// there) and its links, labelled with their incident so that a
    /// digest of several approval requests still lets each be approved.
    pub fn digest(parts: &[Message]) -> Message {
        let worst = parts
            .iter()
            .map(|m| m.severity)
            .max()
            .unwrap_or(Severity::Minor);
        let tier = parts.iter().map(|m| m.tier).max().unwrap_or(Tier::Low);
        let several_incidents = parts
            .iter()
            .filter(|m| !m.links.is_empty())
            .filter_map(|m| m.incident.as_deref())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1;
        let mut body = String::new();
        let mut links = Vec::new();
        let mut unshown = 0;
        for m in parts {
            let _ = write!(body, "- {}", m.title);
            if let Some(first) = m.body.lines().next().filter(|l| !l.trim().is_empty()) {
                let _ = write!(body, ": {}", clip(first.trim(), DIGEST_LINE_CHARS));
            }
            if let (Some(id), false) = (&m.incident, m.links.is_empty()) {
                let _ = write!(body, " ({id})");
            }
            body.push('\n');
            for l in &m.links {
                if links.len() == DIGEST_LINKS {
                    unshown += 1;
                    continue;
                }
                links.push(match (&m.incident, several_incidents) {
                    (Some(id), true) => Link {
                        label: format!("{} ({id})", l.label),
                        url: l.url.clone(),
                    },
                    _ => l.clone(),
                });
            }
        }
        if unshown > 0 {
            let _ = writeln!(
                body,
                "… {unshown} more links not shown: see `ripcord incidents`"
            );
        }
        Message {
            kind: Kind::Digest,
            title: Message::digest_title(parts, parts.len()),
            body: body.trim_end().to_owned(),
            tier,
            severity: worst,
            incident: None,
            links,
            mention: parts.iter().any(|m| m.mention),
        }
    }
}

/// A digest line keeps this much of a part's first body line.
const DIGEST_LINE_CHARS: usize = 160;
/// Links a digest carries: ten approval requests' approve / reject / ack.
const DIGEST_LINKS: usize = 30;

/// `s` cut to `max` characters, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

fn title(d: &Decision) -> String {
    let whom: Vec<&str> = ["service", "instance", "batch"]
        .iter()
        .filter_map(|k| d.label(k))
        .collect();
    let whom = match &d.batch {
        // One thing for people: the batch, and for one member's rollback,
        // the member.
        Some(b) => match d.label("instance") {
            Some(i) => format!("{} {i}", b.name()),
            None => b.name(),
        },
        None if whom.is_empty() => d.rule.to_string(),
        None => whom.join("/"),
    };
    match d.action {
        Action::Resolve => format!(
            "[{}] resolved: {whom} ({})",
            d.tier.as_str().to_uppercase(),
            d.rule
        ),
        _ if d.incident.is_none() => d.message.clone(),
        _ => format!(
            "[{}/{}] {whom}: {}",
            d.tier.as_str().to_uppercase(),
            d.severity,
            short_fact(d)
        ),
    }
}

fn short_fact(d: &Decision) -> String {
    match (d.value, d.threshold) {
        (Some(v), Some(t)) => format!("{} {} vs {}", d.rule, num(v), num(t)),
        _ => d.rule.to_string(),
    }
}

/// The first thing whoever is paged or asked about a high-risk incident
/// must read: what became of its rollout's pause (`actions`: the
/// incident's actions as the journal has them); `None` when the incident
/// pauses no rollout.
pub fn rollout_line(actions: &[crate::journal::ActionRow]) -> Option<String> {
    use crate::journal::ActionState;
    let pause = actions
        .iter()
        .filter(|a| a.action == Action::PauseRollout)
        .max_by_key(|a| a.decision.at)?;
    let service = pause
        .decision
        .label("service")
        .map_or_else(|| "the service".to_owned(), |s| one_line(s).into_owned());
    Some(match pause.state {
        ActionState::Done => {
            format!("Rollout of {service} paused: no next batch until a human resumes it.")
        }
        ActionState::Failed | ActionState::Unknown => {
            format!("Pausing the rollout of {service} FAILED: stop it by hand.")
        }
        ActionState::Skipped => format!(
            "The rollout of {service} was NOT paused ({}).",
            one_line(pause.detail.as_deref().unwrap_or("skipped"))
        ),
        _ => format!("Pausing the rollout of {service} now."),
    })
}

/// Whether the incident's rollout pause is still under way (recorded or
/// running): a page or an approval request waits a little for it, so that
/// its first line can say the rollout is paused.
pub fn pause_under_way(actions: &[crate::journal::ActionRow]) -> bool {
    use crate::journal::ActionState;
    actions.iter().any(|a| {
        a.action == Action::PauseRollout
            && matches!(a.state, ActionState::Pending | ActionState::Running)
    })
}

/// How long a page or an approval request waits for the pause to land.
pub const PAUSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What ripcord does for an action, in words for people.
pub fn doing(a: Action) -> &'static str {
    match a {
        Action::Rollback => "rolling the instance back to its pre-upgrade state",
        Action::RequestApproval => "rollback prepared; waiting for a human to approve it",
        Action::PauseRollout => "pausing the remaining batches of the rollout",
        Action::Page => "paging on-call until someone acknowledges",
        Action::Notify => "reporting",
        Action::Resolve => "the condition cleared",
        Action::SwitchTraffic => "shifting traffic to the standby pool through the load balancer",
        Action::RestoreTraffic => "sending traffic back to the primary pool",
    }
}

fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary; appends `…` when it cut (the ellipsis counts).
pub fn truncate_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    const MORE: &str = "…";
    if max < MORE.len() {
        return String::new();
    }
    let mut end = max - MORE.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &s[..end])
}

/// Splits `s` into pieces of at most `max` bytes, never inside a
/// character, preferring to break after a newline.
pub fn split_utf8(s: &str, max: usize) -> Vec<&str> {
    assert!(max >= 4, "a piece must hold any character");
    let mut out = Vec::new();
    let mut rest = s;
    while rest.len() > max {
        let mut end = max;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if let Some(nl) = rest[..end].rfind('\n') {
            if nl > 0 {
                end = nl + 1;
            }
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn approval(incident: &str) -> Message {
        let mut m = Message::note(
            Kind::ApprovalRequest,
            Tier::Medium,
            Severity::Severe,
            Some(incident),
            format!("[MEDIUM/severe] web/{incident}: http_5xx_ratio 0.2 vs 0.05"),
            "approve the rollback of this instance\nwhere: ...".to_owned(),
        );
        m.links = ["Approve rollback", "Reject", "Acknowledge"]
            .iter()
            .map(|l| Link {
                label: (*l).to_owned(),
                url: format!("https://r.example/l/{incident}/{l}"),
            })
            .collect();
        m
    }

    #[test]
    fn a_digest_keeps_every_approval_link_with_its_incident() {
        let mut parts: Vec<Message> = (0..4).map(|i| approval(&format!("inc-{i}"))).collect();
        parts.push(Message::note(
            Kind::Resolved,
            Tier::Medium,
            Severity::Minor,
            Some("inc-9"),
            "[MEDIUM] resolved: web/i-9".to_owned(),
            "recovered; the approval request is withdrawn\nmore".to_owned(),
        ));
        let d = Message::digest(&parts);
        assert_eq!(d.links.len(), 12, "{:#?}", d.links);
        for i in 0..4 {
            let url = format!("https://r.example/l/inc-{i}/Approve rollback");
            let link = d.links.iter().find(|l| l.url == url).expect("approve link");
            assert_eq!(link.label, format!("Approve rollback (inc-{i})"));
        }
        assert!(
            d.body
                .contains("resolved: web/i-9: recovered; the approval request is withdrawn"),
            "{}",
            d.body
        );
        assert!(!d.body.contains("more"), "only the first line: {}", d.body);
        // One incident's links keep their plain labels.
        let one = Message::digest(&[approval("inc-1"), parts[4].clone()]);
        assert_eq!(one.links[0].label, "Approve rollback");
    }

    #[test]
    fn a_digest_with_a_page_keeps_the_page_header() {
        let mut page = approval("inc-000000000001");
        page.kind = Kind::Page;
        page.title = "[HIGH/severe] PAGE payments/i-pay-2: http-5xx".into();
        let d = Message::digest(&[approval("inc-000000000002"), page]);
        assert_eq!(
            d.title,
            "[HIGH/severe] PAGE payments/i-pay-2: http-5xx (+1 more updates)"
        );
        let plain = Message::digest(&[approval("inc-000000000002"), approval("inc-000000000003")]);
        assert_eq!(plain.title, "ripcord: 2 updates");
    }

    #[test]
    fn a_huge_digest_caps_its_links_and_says_so() {
        let parts: Vec<Message> = (0..15).map(|i| approval(&format!("inc-{i}"))).collect();
        let d = Message::digest(&parts);
        assert_eq!(d.links.len(), DIGEST_LINKS);
        assert!(d.body.contains("15 more links not shown"), "{}", d.body);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_utf8("abc", 3), "abc");
        assert_eq!(truncate_utf8("abcdef", 5), "ab…");
        // "é" is two bytes, "…" three: cutting at 6 keeps "aé" + "…".
        assert_eq!(truncate_utf8("aééé", 6), "aé…");
        assert_eq!(truncate_utf8("回滚回滚", 7), "回…");
    }

    proptest! {
        #[test]
        fn split_pieces_fit_and_rejoin(s in "\\PC{0,300}", max in 4usize..64) {
            let pieces = split_utf8(&s, max);
            prop_assert_eq!(pieces.concat(), s.clone());
            for p in &pieces {
                prop_assert!(p.len() <= max);
            }
        }

        #[test]
        fn truncate_fits_and_is_a_prefix(s in "\\PC{0,200}", max in 3usize..100) {
            let t = truncate_utf8(&s, max);
            prop_assert!(t.len() <= max);
            let kept = t.strip_suffix('…').unwrap_or(&t);
            prop_assert!(s.starts_with(kept));
        }
    }
}
