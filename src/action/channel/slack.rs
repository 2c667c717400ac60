//! Slack through an incoming webhook: Block Kit with a plain-text fallback.
//!
//! ```yaml
//! ops-slack:
//!   type: slack
//!   webhook: {env: SLACK_WEBHOOK_URL}   # a secret: the URL is the credential
//!   mention: "<!here>"                  # optional: used when a message asks for on-call
//! ```
//!
//! The payload is `text` (what notifications and old clients show) plus
//! `blocks`: a header with the title, the body in mrkdwn sections, a context
//! line (tier, severity, incident) and one link button per link. Slack's
//! documented limits are kept here, on character boundaries:
//!
//! - header text ≤ 150 characters, section text ≤ 3,000, ≤ 50 blocks,
//!   button text ≤ 75, button URL ≤ 3,000, ≤ 25 elements in an actions block
//!   (Block Kit reference: header block, section block, actions block,
//!   button element);
//! - `&`, `<` and `>` are control characters in mrkdwn and must be sent as
//!   `&amp;`, `&lt;`, `&gt;` (Slack "Formatting text": escaping);
//! - all the blocks together hold at most [`TOTAL_MAX`] characters: Slack
//!   refuses messages whose blocks hold much more than that in total
//!   (`msg_blocks_too_long`, reported near 13,000 characters; 12,000 is the
//!   documented total for markdown blocks) even when every block is within
//!   its own limit. What does not fit is summarised by count.
//!
//! Lengths are counted in UTF-16 code units, which is never less than the
//! number of characters, so the limits hold however Slack counts.
//!
//! Answers (Slack's incoming-webhook errors): 200 `ok` is sent; 429 carries
//! `Retry-After`; 5xx (`rollup_error`) is passing; 400 (`invalid_payload`,
//! `invalid_blocks`, `user_not_found`), 403 (`action_prohibited`), 404
//! (`channel_not_found`, `no_service`) and 410 (`channel_is_archived`) are
//! refusals: retrying will not help.

use std::time::Duration;

use serde_json::{Value, json};

use super::kit::{self, Channel, Class, Registration, SendContext, SendOutcome, Sending};
use crate::action::message::{Kind, Message, truncate_utf8};
use crate::config::Errors;
use crate::config::secret::{Secret, read_secret};
use crate::config::yaml::MapReader;
use crate::text::redact::Redact;

/// Header block text.
pub const HEADER_MAX: usize = 150;
/// Text of one section block.
pub const SECTION_MAX: usize = 3000;
/// All the text in a message's blocks (see the module docs); the body gets
/// what the title, links and facts leave.
pub const TOTAL_MAX: usize = 12_000;
/// Link buttons' text and URLs together.
pub const LINKS_MAX: usize = 4_000;
/// Links shown as text (those that cannot be buttons).
pub const LINK_TEXT_MAX: usize = 1_500;
/// Blocks in one message.
pub const BLOCKS_MAX: usize = 50;
/// Button text.
pub const BUTTON_TEXT_MAX: usize = 75;
/// Button URL.
pub const BUTTON_URL_MAX: usize = 3000;
/// Elements of one actions block.
pub const ACTIONS_MAX: usize = 25;
/// The `text` fallback: notifications show only its start, and Slack
/// advises keeping it short (it truncates past 40,000 characters).
pub const TEXT_MAX: usize = 3000;

pub struct Slack {
    webhook: Secret,
    mention: Option<String>,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack")
            .field("webhook", &self.webhook)
            .field("mention", &self.mention)
            .finish()
    }
}

impl Slack {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Slack> {
        let webhook = read_secret(m, "webhook", errs);
        if webhook.is_none() && !m.has("webhook") {
            m.err(
                errs,
                m.node(),
                "webhook",
                "is required (the incoming webhook URL, e.g. {env: SLACK_WEBHOOK_URL})",
            );
        }
        if let Some(w) = webhook.as_ref().filter(|w| !w.is_unresolved()) {
            if let Err(e) = check_webhook(w.expose()) {
                let n = m.node_of("webhook").unwrap_or(m.node());
                m.err(errs, n, "webhook", e);
            }
        }
        let mention = m.str("mention", errs).map(str::trim).map(str::to_owned);
        if let Some(mention) = &mention {
            if let Err(e) = check_mention(mention) {
                let n = m.node_of("mention").unwrap_or(m.node());
                m.err(errs, n, "mention", e);
            }
        }
        Some(Slack {
            webhook: webhook?,
            mention: mention.filter(|s| !s.is_empty()),
        })
    }

    /// The JSON body for `msg`, within Slack's limits.
    pub fn payload(&self, msg: &Message) -> Value {
        payload(msg, self.mention.as_deref().filter(|_| msg.mention))
    }

    async fn post(&self, ctx: &SendContext<'_>, msg: &Message) -> SendOutcome {
        let body = self.payload(msg).to_string();
        let outcome = match kit::exchange(kit::post(
            ctx.http,
            self.webhook.expose(),
            kit::JSON,
            body,
        ))
        .await
        {
            // 200 `ok`: reported as Slack wrote it. 429 and 5xx are
            // passing, 408 too; the other 4xx are Slack's refusals,
            // reported with its error string.
            Ok(a) => a.by_body(|text| {
                let text = truncate_utf8(text.trim(), 100);
                SendOutcome::Sent(format!("HTTP {}: {text}", a.status.as_u16()))
            }),
            Err(o) => o,
        };
        // The hook's URL is its credential (its path holds the token): an
        // answer that echoes it must not carry it into the journal or log.
        let mut redact = Redact::new().url(self.webhook.expose());
        if let Some((_, path)) = self.webhook.expose().split_once("/services/") {
            // `T…/B…/<secret>`: the whole path names and opens the hook.
            redact = redact.secret(path);
        }
        outcome.redacted(&redact)
    }
}

/// The webhook must be an http(s) URL, and https unless it points at this
/// machine (tests, local relays). The URL is a credential: never echoed.
fn check_webhook(url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url)
        .map_err(|e| format!("is not a URL ({e}); expected https://hooks.slack.com/services/…"))?;
    match u.scheme() {
        "https" => Ok(()),
        "http" if u.host_str().is_some_and(is_loopback) => Ok(()),
        "http" => {
            Err("must be an https:// URL (plain http is only accepted for a loopback host)".into())
        }
        other => Err(format!(
            "has scheme `{other}`; expected https://hooks.slack.com/services/…"
        )),
    }
}

/// `localhost` or a loopback address (IPv6 in brackets, as URLs write it).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `<!here>`, `<!channel>`, `<@U123>`, `<!subteam^S123>`, several separated
/// by spaces: Slack's mention syntax, sent as is.
fn check_mention(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty; write e.g. \"<!here>\" or \"<@U0123ABCD>\"".into());
    }
    for token in s.split_whitespace() {
        let inner = token
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .filter(|t| t.len() > 1 && (t.starts_with('!') || t.starts_with('@')))
            .filter(|t| !t[1..].contains(['<', '>', '&']));
        if inner.is_none() {
            return Err(format!(
                "`{token}` is not a Slack mention; expected <!here>, <!channel>, <@U0123ABCD> \
                 or <!subteam^S0123ABCD> (several separated by spaces)"
            ));
        }
    }
    Ok(())
}

/// Length as Slack may count it: UTF-16 code units (≥ characters).
fn units(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// `s` cut to at most `max` units on a character boundary, ending in `…`
/// when cut. For plain_text fields (no escaping).
fn fit(s: &str, max: usize) -> String {
    if units(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        if used + c.len_utf16() > max.saturating_sub(1) {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

/// One character as mrkdwn.
fn escape_char(c: char, buf: &mut [u8; 4]) -> &str {
    match c {
        '&' => "&amp;",
        '<' => "&lt;",
        '>' => "&gt;",
        _ => c.encode_utf8(buf),
    }
}

/// `&`, `<`, `>` escaped, as Slack requires of text in mrkdwn fields.
pub fn escape_mrkdwn(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut buf = [0u8; 4];
    for c in s.chars() {
        out.push_str(escape_char(c, &mut buf));
    }
    out
}

/// `raw` escaped for mrkdwn and split into pieces of at most `piece_max`
/// units, preferring to break after a newline, never inside a character or
/// an entity; stops at `total_max` units. Returns the pieces and how many
/// characters of `raw` did not fit.
fn mrkdwn_pieces(raw: &str, piece_max: usize, total_max: usize) -> (Vec<String>, usize) {
    let mut pieces = Vec::new();
    let mut cur = String::new();
    let mut cur_units = 0;
    let mut total = 0;
    let mut left_out = 0;
    let mut buf = [0u8; 4];
    for (i, c) in raw.chars().enumerate() {
        let esc = escape_char(c, &mut buf);
        let u = units(esc);
        if total + u > total_max {
            left_out = raw.chars().count() - i;
            break;
        }
        if cur_units + u > piece_max {
            let split = cur.rfind('\n').filter(|&nl| nl > 0 && nl + 1 < cur.len());
            if let Some(nl) = split {
                let tail = cur.split_off(nl + 1);
                pieces.push(std::mem::take(&mut cur));
                cur = tail;
                cur_units = units(&cur);
            }
            if cur_units + u > piece_max {
                pieces.push(std::mem::take(&mut cur));
                cur_units = 0;
            }
        }
        cur.push_str(esc);
        cur_units += u;
        total += u;
    }
    pieces.push(cur);
    let pieces = pieces
        .into_iter()
        .map(|p| p.trim_end().to_owned())
        .filter(|p| !p.trim().is_empty())
        .collect();
    (pieces, left_out)
}

fn kind_word(k: Kind) -> &'static str {
    match k {
        Kind::Incident => "incident",
        Kind::ApprovalRequest => "approval needed",
        Kind::Page => "page",
        Kind::Outcome => "outcome",
        Kind::Resolved => "resolved",
        Kind::Progress => "progress",
        Kind::Digest => "digest",
    }
}

fn button_style(label: &str) -> Option<&'static str> {
    let l = label.to_lowercase();
    if l.contains("reject") || l.contains("deny") || l.contains("abort") {
        Some("danger")
    } else if l.contains("approve") || l.contains("ack") {
        Some("primary")
    } else {
        None
    }
}

/// A link Slack accepts as a button URL.
fn button_url(url: &str) -> bool {
    units(url) <= BUTTON_URL_MAX
        && reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

fn payload(msg: &Message, mention: Option<&str>) -> Value {
    // Text from events must not turn into a link or a mention: `&<>` are
    // escaped below, and bare URLs and `@names` are broken here (ripcord's
    // own links and mentions are added apart from this text).
    let body = crate::text::defang(&msg.body);
    let title = crate::text::defang(&one_line(&msg.title));
    let title = if title.trim().is_empty() {
        "ripcord".to_owned()
    } else {
        title
    };

    // Fallback text: mention, title, then as much of the body as fits.
    let mut text = String::new();
    if let Some(m) = mention {
        text.push_str(m);
        text.push(' ');
    }
    let room = TEXT_MAX.saturating_sub(units(&text) + 1);
    let (pieces, left) = mrkdwn_pieces(&format!("{title}\n{body}"), room, room);
    text.push_str(pieces.first().map_or("", String::as_str));
    if left > 0 || pieces.len() > 1 {
        text.push('…');
    }

    // Everything but the body first, so the body gets what is left of the
    // total.
    let header = fit(&title, HEADER_MAX);
    let mut used = units(&header) + mention.map_or(0, |m| units(m) + 1);

    // Links: buttons while they fit, the others as text lines.
    let mut buttons: Vec<Value> = Vec::new();
    let mut as_text: Vec<String> = Vec::new();
    let mut link_units = 0;
    let mut text_units = 0;
    let mut unshown = 0;
    for l in &msg.links {
        let label = one_line(&l.label);
        let label = if label.trim().is_empty() {
            "open".to_owned()
        } else {
            label
        };
        let button_text = fit(&label, BUTTON_TEXT_MAX);
        let cost = units(&button_text) + units(&l.url);
        if buttons.len() < ACTIONS_MAX && button_url(&l.url) && link_units + cost <= LINKS_MAX {
            link_units += cost;
            let mut b = json!({
                "type": "button",
                "action_id": format!("ripcord-link-{}", buttons.len()),
                "text": {"type": "plain_text", "text": button_text, "emoji": true},
                "url": l.url,
            });
            if let Some(style) = button_style(&label) {
                b["style"] = json!(style);
            }
            buttons.push(b);
            continue;
        }
        let line = escape_mrkdwn(&format!("{label}: {}", l.url));
        if text_units + units(&line) < LINK_TEXT_MAX {
            text_units += units(&line) + 1;
            as_text.push(line);
        } else {
            unshown += 1;
        }
    }
    if unshown > 0 {
        let links = if unshown == 1 { "link" } else { "links" };
        as_text.push(format!(
            "… and {unshown} more {links} (see `ripcord incidents`)"
        ));
    }
    let links_text = as_text.join("\n");
    used += link_units + units(&links_text);

    let mut facts = vec![
        format!("*{}*", kind_word(msg.kind)),
        format!("tier {}", msg.tier),
        format!("severity {}", msg.severity),
    ];
    if let Some(id) = &msg.incident {
        facts.push(format!("incident `{}`", escape_mrkdwn(&fit(id, 200))));
    }
    let facts = facts.join(" · ");
    used += units(&facts);

    // Body sections, within the total and the block count (header,
    // mention, truncation note, links as text, facts and actions are the
    // other blocks).
    const NOTE_RESERVE: usize = 100;
    let budget = TOTAL_MAX.saturating_sub(used + NOTE_RESERVE);
    let (mut sections, mut left) = mrkdwn_pieces(&body, SECTION_MAX, budget);
    let room = BLOCKS_MAX - 6;
    if sections.len() > room {
        left += sections[room..]
            .iter()
            .map(|s| s.chars().count())
            .sum::<usize>();
        sections.truncate(room);
    }

    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": header, "emoji": true},
    })];
    if let Some(m) = mention {
        match sections.first_mut() {
            Some(first) if units(m) + 1 + units(first) <= SECTION_MAX => {
                *first = format!("{m} {first}");
            }
            _ => blocks.push(section(m.to_owned())),
        }
    }
    blocks.extend(sections.into_iter().map(section));
    if left > 0 {
        blocks.push(context(format!(
            "… {left} more characters not shown here (see `ripcord incidents`)"
        )));
    }
    if !links_text.is_empty() {
        blocks.push(section(links_text));
    }
    blocks.push(context(facts));
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    debug_assert!(blocks.len() <= BLOCKS_MAX);
    json!({"text": text, "blocks": blocks})
}

fn context(text: String) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// Newlines and other control characters become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub const CHANNEL: Registration = Registration {
    kind: "slack",
    read: |m, errs| Some(Box::new(Slack::from_config(m, errs)?)),
};

impl Channel for Slack {
    fn class(&self) -> Class {
        Class::Chat
    }

    /// Slack's incoming webhooks: one message a second.
    fn default_rate(&self) -> (u32, Duration) {
        (1, Duration::from_secs(1))
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

    fn msg(title: &str, body: &str) -> Message {
        Message::note(
            Kind::Incident,
            Tier::High,
            Severity::Severe,
            Some("inc-1"),
            title.into(),
            body.into(),
        )
    }

    fn section_texts(p: &Value) -> Vec<String> {
        p["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "section")
            .map(|b| b["text"]["text"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn escapes_control_characters() {
        let p = payload(&msg("a < b & c", "x > y & <z>"), None);
        assert_eq!(section_texts(&p), vec!["x &gt; y &amp; &lt;z&gt;"]);
        // Plain text (the header) is not parsed: no escaping.
        assert_eq!(p["blocks"][0]["text"]["text"], "a < b & c");
        assert!(
            p["text"]
                .as_str()
                .unwrap()
                .starts_with("a &lt; b &amp; c\n")
        );
    }

    #[test]
    fn pieces_never_cut_an_entity_or_a_character() {
        let raw = "&回".repeat(2000);
        let (pieces, left) = mrkdwn_pieces(&raw, 100, 1000);
        assert!(left > 0);
        for p in &pieces {
            assert!(units(p) <= 100);
            // Every entity is whole.
            assert!(!p.replace("&amp;", "").contains('&'), "{p}");
        }
        let total: usize = pieces.iter().map(|p| units(p)).sum();
        assert!(total <= 1000);
    }

    #[test]
    fn pieces_prefer_newlines() {
        let raw = format!("{}\n{}", "a".repeat(60), "b".repeat(60));
        let (pieces, left) = mrkdwn_pieces(&raw, 100, 1000);
        assert_eq!(left, 0);
        assert_eq!(pieces, vec!["a".repeat(60), "b".repeat(60)]);
    }

    #[test]
    fn long_title_and_links_fit() {
        let mut m = msg(&"标题".repeat(200), "body");
        m.links = (0..30)
            .map(|i| Link {
                label: format!("approve {i} {}", "x".repeat(100)),
                url: format!("https://ripcord.example/approve/{i}"),
            })
            .collect();
        m.links.push(Link {
            label: "weird".into(),
            url: "ftp://example/x".into(),
        });
        let p = payload(&m, Some("<!here>"));
        let blocks = p["blocks"].as_array().unwrap();
        assert!(blocks.len() <= BLOCKS_MAX);
        let total: usize = blocks.iter().map(|b| units(&b.to_string())).sum();
        assert!(total < TOTAL_MAX + 3000, "{total}");
        assert!(units(blocks[0]["text"]["text"].as_str().unwrap()) <= HEADER_MAX);
        let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
        let elements = actions["elements"].as_array().unwrap();
        assert_eq!(elements.len(), ACTIONS_MAX);
        for e in elements {
            assert!(units(e["text"]["text"].as_str().unwrap()) <= BUTTON_TEXT_MAX);
            assert_eq!(e["style"], "primary");
        }
        let texts = section_texts(&p).join("\n");
        assert!(texts.starts_with("<!here> body"));
        // The 5 buttons over the limit and the ftp link are kept as text.
        assert!(texts.contains("ftp://example/x"));
        assert!(texts.contains("https://ripcord.example/approve/29"));
    }

    #[test]
    fn mention_only_when_the_message_asks() {
        let s = Slack {
            webhook: Secret::new("http://127.0.0.1:1/x"),
            mention: Some("<!here>".into()),
        };
        let mut m = msg("t", "b");
        assert!(!s.payload(&m).to_string().contains("<!here>"));
        m.mention = true;
        let p = s.payload(&m);
        assert!(p["text"].as_str().unwrap().starts_with("<!here> "));
    }

    #[test]
    fn checks_config_values() {
        assert!(check_webhook("https://hooks.slack.com/services/T/B/X").is_ok());
        assert!(check_webhook("http://127.0.0.1:8080/hook").is_ok());
        assert!(check_webhook("http://[::1]:8080/hook").is_ok());
        let e = check_webhook("http://hooks.slack.com/services/T/B/SECRET").unwrap_err();
        assert!(e.contains("https") && !e.contains("SECRET"), "{e}");
        let e = check_webhook("hooks.slack.com/services/T/B/SECRET").unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
        assert!(check_mention("<!here>").is_ok());
        assert!(check_mention("<@U0123> <!subteam^S1>").is_ok());
        assert!(check_mention("@here").is_err());
        assert!(check_mention("<here>").is_err());
    }

    #[test]
    fn debug_hides_the_webhook() {
        let s = Slack {
            webhook: Secret::new("https://hooks.slack.com/services/T/B/SECRET"),
            mention: None,
        };
        assert!(!format!("{s:?}").contains("SECRET"));
    }
}
