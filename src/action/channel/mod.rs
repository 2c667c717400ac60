//! Channels: where messages go. One file per kind, each implementing
//! [`Channel`] and declaring its `type:` name, class and default rate; one
//! line in [`channels!`] below registers it. What channels share lives in
//! [`kit`] (the contract, sending) and [`robot`] (group-chat robot
//! webhooks); this file only reads the `channels:` section through the
//! registry.
//!
//! A channel only formats and sends one message and reports what the
//! provider answered. Rate limits, retries, digests, timeouts and fallbacks
//! are the delivery worker's job ([`crate::action::deliver`]), the same for
//! every channel.

pub mod kit;
pub mod phone;
pub mod robot;

use std::time::Duration;

pub use kit::{Channel, Class, Registration, SendContext, SendOutcome, without_url};

use crate::config::Errors;
use crate::config::yaml::MapReader;
use crate::time::Dur;

/// Declares each channel module and registers its `CHANNEL`.
macro_rules! channels {
    ($($module:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every channel kind, in the order `type:` errors list them.
        pub const REGISTRY: &[Registration] = &[$($module::CHANNEL),*];
    };
}

channels!(
    dingtalk, wecom, feishu, slack, teams, email, sms, voice, webhook, log
);

/// The `type:` names, for config errors.
pub fn types() -> String {
    REGISTRY
        .iter()
        .map(|r| r.kind)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A configured channel: a name, its kind, and the delivery worker's
/// settings for it.
#[derive(Debug)]
pub struct ChannelSpec {
    pub name: String,
    pub channel: Box<dyn Channel>,
    /// At most `rate.0` messages per `rate.1`.
    pub rate: (u32, Duration),
    /// Longest a single send may take.
    pub timeout: Duration,
    /// Attempts after the first, for passing failures.
    pub retries: u32,
}

/// Reads one entry of the `channels:` section: the common settings
/// (`type`, `rate` like `20/min`, `timeout`, `retries`) and the channel's
/// own.
pub fn read_channel(name: &str, mut m: MapReader<'_>, errs: &mut Errors) -> Option<ChannelSpec> {
    let kind = m.str("type", errs).map(str::to_owned);
    if kind.is_none() && !m.has("type") {
        m.err(errs, m.node(), "type", format!("is required ({})", types()));
    }
    let rate = m.str("rate", errs).and_then(|r| match parse_rate(r) {
        Ok(r) => Some(r),
        Err(e) => {
            let n = m.node_of("rate").unwrap_or(m.node());
            m.err(errs, n, "rate", e);
            None
        }
    });
    let timeout = m
        .dur("timeout", Dur::from_secs(1)..=Dur::from_mins(10), errs)
        .unwrap_or(Dur::from_secs(10));
    let retries = m.int("retries", 0..=20, errs).unwrap_or(5) as u32;
    let kind = kind?;
    let registration = REGISTRY.iter().find(|r| r.kind == kind);
    let channel = match registration.and_then(|r| (r.read)(&mut m, errs)) {
        Some(c) => c,
        None => {
            if registration.is_none() {
                let n = m.node_of("type").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "type",
                    format!("unknown channel type `{kind}`; expected {}", types()),
                );
            }
            m.finish(errs);
            return None;
        }
    };
    m.finish(errs);
    let rate = rate.unwrap_or_else(|| channel.default_rate());
    Some(ChannelSpec {
        name: name.to_owned(),
        channel,
        rate,
        timeout: timeout.to_std(),
        retries,
    })
}

/// `20/min`, `1/s`, `100/h`: messages per period.
pub fn parse_rate(s: &str) -> Result<(u32, Duration), String> {
    let (n, per) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not a rate like 20/min or 1/s"))?;
    let n: u32 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}`: the count must be a positive whole number"))?;
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => return Err(format!("`{s}`: unknown period `{other}` (s, min, h)")),
    };
    Ok((n, per))
}

/// A channel from a YAML mapping (tests, examples): `type: …` and settings.
pub fn channel_from_yaml(name: &str, yaml: &str) -> Result<ChannelSpec, Errors> {
    let path = std::path::Path::new("channel.yaml");
    let mut errs = Errors::default();
    let node = crate::config::yaml::parse(path, yaml).map_err(|e| Errors(vec![e]))?;
    let spec = MapReader::new(path, &node, format!("channel `{name}`"), &mut errs)
        .and_then(|m| read_channel(name, m, &mut errs));
    match spec {
        Some(s) if errs.is_empty() => Ok(s),
        _ => Err(errs),
    }
}
