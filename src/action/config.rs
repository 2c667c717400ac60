//! The action sections of `ripcord.yaml`: `channels`, `routing`,
//! `escalation`, `approvals`, `status` and `executors`.
//!
//! ```yaml
//! channels:
//!   ops-chat:   {type: dingtalk, webhook: {env: DINGTALK_WEBHOOK}, secret: {env: DINGTALK_SECRET}}
//!   oncall-sms: {type: sms, provider: twilio, ...}
//! routing:          # per tier; defaults: every chat/email/webhook channel notifies
//!   high: {notify: [ops-chat], approve: [ops-chat], fallback: ops-email}
//! escalation:       # per tier; default: chat at once, SMS after 5m, voice after 10m
//!   high: [{after: 0s, channels: [ops-chat]}, {after: 5m, channels: [oncall-sms]}, {after: 10m, channels: [oncall-voice]}]
//! approvals: {expire_after: 30m, on_timeout: {medium: escalate, high: escalate}, link_secret: {env: RIPCORD_LINK_SECRET}}
//! status: {channels: [mgmt-email], every: 15m}
//! executors:
//!   rollback: {command: {argv: [deploy/rollback.sh, "{instance}"]}, verify: {delay: 1m, command: {...}}, budget: {per_service: 5, overall: 20, window: 10m}}
//!   pause_rollout: {command: {argv: [deploy/pause-rollout.sh, "{service}"]}}
//!   resume_rollout: {command: {argv: [deploy/pause-rollout.sh, --resume, "{service}"]}}
//!   switch_traffic: {command: {argv: [deploy/switch-traffic.sh, --lb, alb, switch, "{service}"]}}
//!   restore_traffic: {command: {argv: [deploy/switch-traffic.sh, --lb, alb, restore, "{service}"]}}
//!   label_patterns: {instance: "i-[0-9a-f]{8,17}"}
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use super::channel::log::Log;
use super::channel::{ChannelSpec, Class, read_channel};
use super::executor::{Executor, Patterns};
use crate::config::Errors;
use crate::config::secret::{Secret, read_secret};
use crate::config::yaml::{MapReader, Node, Value};
use crate::decision::Tier;
use crate::time::Dur;

/// Where a tier's messages go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub notify: Vec<String>,
    /// Approval requests (with their links); default: `notify`.
    pub approve: Vec<String>,
    /// Takes what a channel refuses for good.
    pub fallback: Option<String>,
}

/// One step of a paging chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Since paging started.
    pub after: Dur,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    Escalate,
    Rollback,
}

#[derive(Debug)]
pub struct Approvals {
    /// How long a request (and its links) stays valid.
    pub expire_after: Dur,
    /// Per tier (low, medium, high).
    pub on_timeout: [OnTimeout; 3],
    /// Key for signing one-click links; no links without it.
    pub link_secret: Option<Secret>,
}

#[derive(Debug)]
pub struct Status {
    pub channels: Vec<String>,
    pub every: Dur,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub per_service: u32,
    pub overall: u32,
    pub window: Dur,
}

impl Default for Budget {
    /// The plan: at most 5 rollbacks per 10 minutes per service.
    fn default() -> Self {
        Budget {
            per_service: 5,
            overall: 20,
            window: Dur::from_mins(10),
        }
    }
}

/// The plan's order of checks after a rollback: system, services,
/// business. Each stage runs only once the one before passed.
#[derive(Debug)]
pub struct Verify {
    /// Wait this long after the rollback before the first stage.
    pub delay: Dur,
    pub stages: Vec<Stage>,
}

#[derive(Debug)]
pub struct Stage {
    pub name: String,
    pub probe: Probe,
    /// Runs after the first failure before the stage fails.
    pub retries: u32,
    /// The pause before each retry.
    pub retry_delay: Dur,
}

#[derive(Debug)]
pub enum Probe {
    /// A command or HTTP check (its own timeout inside).
    Check(Box<Executor>),
    /// ripcord's own windows: passes once the incident's rule cleared (the
    /// breached rule back under its threshold for its `clear_for`, at
    /// least its `for`), fails if it has not within `timeout`.
    Windows { timeout: Dur },
}

impl Stage {
    /// The longest the stage may take, retries included.
    pub fn longest(&self) -> Dur {
        match &self.probe {
            Probe::Check(e) => {
                let one = (e.timeout().as_millis() as i64).saturating_add(self.retry_delay.0);
                Dur(one.saturating_mul(i64::from(self.retries) + 1))
            }
            Probe::Windows { timeout } => *timeout,
        }
    }
}

impl Verify {
    /// Longer than any one stage may take, so no stage runs twice at once.
    pub fn lease(&self) -> Dur {
        let longest = self.stages.iter().map(Stage::longest).max();
        Dur(longest.unwrap_or(Dur::ZERO).0.saturating_add(60_000))
    }
}

#[derive(Debug)]
pub struct Rollback {
    pub executor: Option<Executor>,
    pub verify: Option<Verify>,
    pub budget: Budget,
}

#[derive(Debug)]
pub struct ActionsConfig {
    pub channels: Vec<Arc<ChannelSpec>>,
    routing: [Route; 3],
    escalation: [Vec<Step>; 3],
    pub approvals: Approvals,
    pub status: Option<Status>,
    pub rollback: Rollback,
    pub pause: Option<Executor>,
    pub resume: Option<Executor>,
    /// Shifts a service's traffic to its standby pool (`switch_traffic`,
    /// released with an approved rollback of a severe high-risk incident).
    pub switch: Option<Executor>,
    /// Sends it back to the primary pool (`restore_traffic`, released when
    /// the rollout is resumed).
    pub restore: Option<Executor>,
    pub patterns: Patterns,
    /// Whom to tell of a severe incident beside the team (`vendor:`).
    pub vendor: Option<super::vendor::Vendor>,
    /// The share of a finished batch's instances (percent, 0: off) the
    /// verification stages run on, per tier (`sample_check:`).
    pub sample_check: [f64; 3],
}

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig {
            channels: Vec::new(),
            routing: Default::default(),
            escalation: Default::default(),
            approvals: Approvals {
                expire_after: Dur::from_mins(30),
                on_timeout: [OnTimeout::Escalate; 3],
                link_secret: None,
            },
            status: None,
            rollback: Rollback {
                executor: None,
                verify: None,
                budget: Budget::default(),
            },
            pause: None,
            resume: None,
            switch: None,
            restore: None,
            patterns: Patterns::default(),
            vendor: None,
            sample_check: SAMPLE_CHECK_DEFAULT,
        }
    }
}

fn idx(t: Tier) -> usize {
    t as usize
}

impl ActionsConfig {
    pub fn route(&self, t: Tier) -> &Route {
        &self.routing[idx(t)]
    }

    pub fn escalation(&self, t: Tier) -> &[Step] {
        &self.escalation[idx(t)]
    }

    pub fn on_timeout(&self, t: Tier) -> OnTimeout {
        self.approvals.on_timeout[idx(t)]
    }

    /// The percentage of a finished batch sample-checked on tier `t` (0:
    /// none).
    pub fn sample_percent(&self, t: Tier) -> f64 {
        self.sample_check[idx(t)]
    }

    /// Nothing to act with: no channel and no executor at all (a first run).
    pub fn is_unconfigured(&self) -> bool {
        self.channels.is_empty()
            && self.rollback.executor.is_none()
            && self.rollback.verify.is_none()
            && self.pause.is_none()
            && self.resume.is_none()
            && self.switch.is_none()
            && self.restore.is_none()
    }

    /// Sends what would ring a phone (SMS, voice) to the log instead,
    /// keeping each channel's name (so routing and paging keep their
    /// shape). Returns the channels changed.
    pub fn phones_to_log(&mut self) -> Vec<String> {
        let mut muted = Vec::new();
        for spec in &mut self.channels {
            if spec.channel.class().rings_a_phone() {
                muted.push(spec.name.clone());
                *spec = Arc::new(ChannelSpec {
                    name: spec.name.clone(),
                    channel: Box::new(Log),
                    rate: spec.rate,
                    timeout: spec.timeout,
                    retries: 0,
                });
            }
        }
        muted
    }

    /// Stand-ins for everything that reaches the outside world: one `log`
    /// channel takes every message (routing, paging and status keep their
    /// timing), and every executor becomes a dry run that says what it
    /// would do (showing the configured command or request, if any).
    /// For a drill on stand-ins without `verify`: the plan's three stages
    /// (system, services, business) as stand-ins that say what they would
    /// check, so the drill plays the staged verification and the sample
    /// check too.
    pub fn stand_in_verify(&mut self) {
        use super::executor::dry::DryRun;
        if self.rollback.verify.is_some() {
            return;
        }
        let stage = |name: &str| Stage {
            name: name.to_owned(),
            probe: Probe::Check(Box::new(Executor::new(DryRun::new(
                "verify", "instance", None,
            )))),
            retries: 0,
            retry_delay: Dur::ZERO,
        };
        self.rollback.verify = Some(Verify {
            delay: Dur::ZERO,
            stages: vec![stage("system"), stage("services"), stage("business")],
        });
    }

    pub fn use_stand_ins(&mut self) {
        use super::executor::dry::DryRun;
        let log = "log".to_owned();
        self.channels = vec![Arc::new(ChannelSpec {
            name: log.clone(),
            channel: Box::new(Log),
            rate: (100, std::time::Duration::from_secs(1)),
            timeout: std::time::Duration::from_secs(5),
            retries: 0,
        })];
        for t in Tier::ALL {
            let i = idx(t);
            self.routing[i] = Route {
                notify: vec![log.clone()],
                approve: vec![log.clone()],
                fallback: None,
            };
            if self.escalation[i].is_empty() {
                self.escalation[i] = vec![Step {
                    after: Dur::ZERO,
                    channels: vec![log.clone()],
                }];
            }
            for step in &mut self.escalation[i] {
                step.channels = vec![log.clone()];
            }
        }
        if let Some(s) = &mut self.status {
            s.channels = vec![log.clone()];
        }
        let rollback = self.rollback.executor.take();
        self.rollback.executor = Some(Executor::new(DryRun::new(
            "roll back",
            "instance",
            rollback,
        )));
        if let Some(v) = &mut self.rollback.verify {
            for stage in &mut v.stages {
                if let Probe::Check(check) = &mut stage.probe {
                    let real = std::mem::replace(
                        &mut **check,
                        Executor::new(DryRun::new("verify", "instance", None)),
                    );
                    **check = Executor::new(DryRun::new("verify", "instance", Some(real)));
                }
            }
        }
        let pause = self.pause.take();
        self.pause = Some(Executor::new(DryRun::new(
            "pause the rollout of",
            "service",
            pause,
        )));
        let resume = self.resume.take();
        self.resume = Some(Executor::new(DryRun::new(
            "resume the rollout of",
            "service",
            resume,
        )));
        let switch = self.switch.take();
        self.switch = Some(Executor::new(DryRun::new(
            "shift to the standby pool the traffic of",
            "service",
            switch,
        )));
        let restore = self.restore.take();
        self.restore = Some(Executor::new(DryRun::new(
            "send back to the primary pool the traffic of",
            "service",
            restore,
        )));
    }

    /// Tiers whose approval timeout rolls back.
    pub fn rollback_on_timeout(&self) -> Vec<Tier> {
        Tier::ALL
            .into_iter()
            .filter(|t| self.on_timeout(*t) == OnTimeout::Rollback)
            .collect()
    }

    fn of_class(&self, classes: &[Class]) -> Vec<String> {
        self.channels
            .iter()
            .filter(|c| classes.contains(&c.channel.class()))
            .map(|c| c.name.clone())
            .collect()
    }
}

/// Reads every action section present under `top` (the config's root) into
/// `out`, then fills defaults and cross-checks names.
pub fn read(top: &mut MapReader<'_>, out: &mut ActionsConfig, errs: &mut Errors) {
    let file = top.file();
    // Every channel named under `channels:`, even one whose settings are
    // wrong (its own errors say why): a reference to it is no error more.
    let mut declared: HashSet<String> = HashSet::new();
    // Where each channel name is used: (what, name, node).
    let mut refs: Vec<(String, String, Node)> = Vec::new();
    if let Some(mut m) = top.map("channels", errs) {
        for (name, knode, v) in m.take_all() {
            declared.insert(name.to_owned());
            if !is_name(name) {
                m.err(
                    errs,
                    knode,
                    name,
                    "channel names are letters, digits, `-` and `_`",
                );
                continue;
            }
            if let Some(cm) = MapReader::new(file, v, format!("channel `{name}`"), errs) {
                if let Some(spec) = read_channel(name, cm, errs) {
                    out.channels.push(Arc::new(spec));
                }
            }
        }
    }
    let mut given_routing = [false; 3];
    if let Some(mut m) = top.map("routing", errs) {
        for t in Tier::ALL {
            let Some(mut rm) = m.map(t.as_str(), errs) else {
                continue;
            };
            given_routing[idx(t)] = true;
            let r = &mut out.routing[idx(t)];
            r.notify = names(&mut rm, "notify", &format!("routing.{t}"), &mut refs, errs);
            r.approve = names(&mut rm, "approve", &format!("routing.{t}"), &mut refs, errs);
            r.fallback = rm.str("fallback", errs).map(str::to_owned);
            if let (Some(f), Some(n)) = (&r.fallback, rm.node_of("fallback")) {
                refs.push((format!("routing.{t}.fallback"), f.clone(), n.clone()));
            }
            rm.finish(errs);
        }
        m.finish(errs);
    }
    let mut given_escalation = [false; 3];
    if let Some(mut m) = top.map("escalation", errs) {
        for t in Tier::ALL {
            let Some(items) = m.seq(t.as_str(), errs) else {
                continue;
            };
            given_escalation[idx(t)] = true;
            out.escalation[idx(t)] = steps(file, items, t, &mut refs, errs);
        }
        m.finish(errs);
    }
    if let Some(mut m) = top.map("approvals", errs) {
        if let Some(d) = m.dur(
            "expire_after",
            Dur::from_mins(1)..=Dur::from_mins(7 * 24 * 60),
            errs,
        ) {
            out.approvals.expire_after = d;
        }
        if let Some(mut om) = m.map("on_timeout", errs) {
            for t in Tier::ALL {
                match om.str(t.as_str(), errs) {
                    None => {}
                    Some("escalate") => out.approvals.on_timeout[idx(t)] = OnTimeout::Escalate,
                    Some("rollback") => out.approvals.on_timeout[idx(t)] = OnTimeout::Rollback,
                    Some(other) => {
                        let n = om.node_of(t.as_str()).unwrap_or(om.node());
                        om.err(
                            errs,
                            n,
                            t.as_str(),
                            format!("`{other}`: expected escalate or rollback"),
                        );
                    }
                }
            }
            om.finish(errs);
        }
        out.approvals.link_secret = read_secret(&mut m, "link_secret", errs);
        m.finish(errs);
    }
    if let Some(mut m) = top.map("status", errs) {
        let channels = names(&mut m, "channels", "status", &mut refs, errs);
        let every = m
            .dur("every", Dur::from_mins(1)..=Dur::from_mins(24 * 60), errs)
            .unwrap_or(Dur::from_mins(15));
        m.finish(errs);
        out.status = Some(Status { channels, every });
    }
    if let Some(mut m) = top.map("executors", errs) {
        if let Some(mut rm) = m.map("rollback", errs) {
            if rm.has("command") || rm.has("http") {
                out.rollback.executor = Executor::from_config(&mut rm, errs);
            }
            if let Some(vm) = rm.map("verify", errs) {
                out.rollback.verify = verify(file, vm, errs);
            }
            if let Some(mut bm) = rm.map("budget", errs) {
                let b = &mut out.rollback.budget;
                if let Some(n) = bm.int("per_service", 0..=10_000, errs) {
                    b.per_service = n as u32;
                }
                if let Some(n) = bm.int("overall", 0..=100_000, errs) {
                    b.overall = n as u32;
                }
                if let Some(d) = bm.dur("window", Dur::from_secs(1)..=Dur::from_mins(24 * 60), errs)
                {
                    b.window = d;
                }
                bm.finish(errs);
            }
            rm.finish(errs);
        }
        for (key, slot) in [
            ("pause_rollout", &mut out.pause),
            ("resume_rollout", &mut out.resume),
            ("switch_traffic", &mut out.switch),
            ("restore_traffic", &mut out.restore),
        ] {
            if let Some(mut em) = m.map(key, errs) {
                *slot = Executor::from_config(&mut em, errs);
                em.finish(errs);
            }
        }
        if let Some(pm) = m.map("label_patterns", errs) {
            out.patterns = Patterns::from_config(pm, errs);
        }
        m.finish(errs);
    }
    if let Some(m) = top.map("sample_check", errs) {
        read_sample_check(m, &mut out.sample_check, errs);
    }
    if let Some(m) = top.map("vendor", errs) {
        let (vendor, channel) = super::vendor::read(m, errs);
        out.vendor = vendor;
        if let Some((name, node)) = channel {
            refs.push(("vendor.channel".into(), name, node));
        }
    }
    defaults(out, given_routing, given_escalation);
    for (what, name, node) in refs {
        if !declared.contains(&name) {
            errs.push(crate::config::ConfigError::at(
                file,
                &node,
                format!("config: {what}: no channel named `{name}` under `channels:`"),
            ));
        }
    }
}

/// `verify: {delay, stages: [...]}`, or the older `verify: {delay,
/// command|http}` as one stage named `check`.
fn verify(file: &std::path::Path, mut vm: MapReader<'_>, errs: &mut Errors) -> Option<Verify> {
    let before = errs.len();
    let delay = vm
        .dur("delay", Dur::ZERO..=Dur::from_mins(60), errs)
        .unwrap_or(Dur::from_secs(30));
    let mut stages = Vec::new();
    if vm.has("stages") {
        if vm.has("command") || vm.has("http") {
            let n = vm.node_of("stages").unwrap_or(vm.node());
            vm.err(
                errs,
                n,
                "stages",
                "give `stages` or one `command`/`http` check, not both",
            );
        }
        let items = vm.seq("stages", errs).unwrap_or_default();
        if items.is_empty() && errs.len() == before {
            let n = vm.node_of("stages").unwrap_or(vm.node());
            vm.err(errs, n, "stages", "needs at least one stage");
        }
        let mut names = HashSet::new();
        for item in items {
            let Some(mut sm) = MapReader::new(file, item, "verify stage".to_owned(), errs) else {
                continue;
            };
            let name = sm.str("name", errs).map(str::to_owned);
            if name.is_none() && !sm.has("name") {
                sm.err(
                    errs,
                    item,
                    "name",
                    "a stage needs a `name` (e.g. system, services, business)",
                );
            }
            if let (Some(n), Some(node)) = (&name, sm.node_of("name")) {
                if !names.insert(n.clone()) {
                    sm.err(errs, node, "name", format!("`{n}` names two stages"));
                }
            }
            let retries = sm.int("retries", 0..=100, errs).unwrap_or(0) as u32;
            let retry_delay = sm
                .dur("retry_delay", Dur::ZERO..=Dur::from_mins(60), errs)
                .unwrap_or(Dur::from_secs(10));
            let windows = sm.bool("windows", errs).unwrap_or(false);
            let probe = if windows {
                let both = [sm.node_of("command"), sm.node_of("http")];
                if both.iter().any(Option::is_some) {
                    sm.err(
                        errs,
                        item,
                        "windows",
                        "a stage is `windows: true` or one `command`/`http` check, not both",
                    );
                }
                let timeout = sm
                    .dur("timeout", Dur::from_secs(1)..=Dur::from_mins(24 * 60), errs)
                    .unwrap_or(Dur::from_mins(10));
                Some(Probe::Windows { timeout })
            } else {
                if let Some(n) = sm.node_of("timeout") {
                    sm.err(
                        errs,
                        n,
                        "timeout",
                        "a check's timeout goes inside it: `command: {argv: [...], timeout: 1m}` or `http: {url: ..., timeout: 10s}`",
                    );
                }
                Executor::from_config(&mut sm, errs).map(|e| Probe::Check(Box::new(e)))
            };
            sm.finish(errs);
            if let (Some(name), Some(probe)) = (name, probe) {
                stages.push(Stage {
                    name,
                    probe,
                    retries,
                    retry_delay,
                });
            }
        }
    } else if let Some(check) = Executor::from_config(&mut vm, errs) {
        stages.push(Stage {
            name: "check".to_owned(),
            probe: Probe::Check(Box::new(check)),
            retries: 0,
            retry_delay: Dur::from_secs(10),
        });
    }
    vm.finish(errs);
    (errs.len() == before).then_some(Verify { delay, stages })
}

/// Unconfigured routing: every chat, webhook and email channel notifies.
/// Unconfigured escalation: chat at once, SMS after 5 min, voice after 10.
fn defaults(out: &mut ActionsConfig, given_routing: [bool; 3], given_escalation: [bool; 3]) {
    let notify = out.of_class(&[Class::Chat, Class::Email]);
    let chat = out.of_class(&[Class::Chat]);
    let sms = out.of_class(&[Class::Text]);
    let voice = out.of_class(&[Class::Call]);
    for t in Tier::ALL {
        let i = idx(t);
        if !given_routing[i] {
            out.routing[i].notify = notify.clone();
        }
        if out.routing[i].approve.is_empty() {
            out.routing[i].approve = out.routing[i].notify.clone();
        }
        if !given_escalation[i] {
            let mut chain = Vec::new();
            for (after, channels) in [(0, &chat), (5, &sms), (10, &voice)] {
                if !channels.is_empty() {
                    chain.push(Step {
                        after: Dur::from_mins(after),
                        channels: channels.clone(),
                    });
                }
            }
            out.escalation[i] = chain;
        }
    }
}

/// A list of channel names under `key`, each remembered with its node so
/// an unknown one is reported where it is written.
fn names(
    m: &mut MapReader<'_>,
    key: &str,
    what: &str,
    refs: &mut Vec<(String, String, Node)>,
    errs: &mut Errors,
) -> Vec<String> {
    m.str_list(key, errs)
        .map(|l| {
            l.into_iter()
                .map(|(s, n)| {
                    refs.push((what.to_owned(), s.to_owned(), n.clone()));
                    s.to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn steps(
    file: &std::path::Path,
    items: &[Node],
    t: Tier,
    refs: &mut Vec<(String, String, Node)>,
    errs: &mut Errors,
) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for item in items {
        let Some(mut m) = MapReader::new(file, item, format!("escalation.{t} step"), errs) else {
            continue;
        };
        let after = m.dur("after", Dur::ZERO..=Dur::from_mins(24 * 60), errs);
        let channels = names(&mut m, "channels", &format!("escalation.{t}"), refs, errs);
        if channels.is_empty() && !matches!(item.value, Value::Null) {
            m.err(errs, item, "channels", "a step needs at least one channel");
        }
        m.finish(errs);
        let Some(after) = after else {
            errs.push(crate::config::ConfigError::at(
                file,
                item,
                format!("escalation.{t} step: `after` is required (e.g. after: 5m)"),
            ));
            continue;
        };
        if out.last().is_some_and(|prev| prev.after > after) {
            errs.push(crate::config::ConfigError::at(
                file,
                item,
                format!("escalation.{t}: steps must come in order of `after`"),
            ));
        }
        out.push(Step { after, channels });
    }
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The plan: "after the upgrade, sample-check 10% of upgraded instances"
/// on the medium tier; the low tier is not sampled, the high tier watches
/// every batch through its gates and soak (100% may be set).
pub const SAMPLE_CHECK_DEFAULT: [f64; 3] = [0.0, 10.0, 0.0];

/// Reads `sample_check: {medium: 10%, high: 100%, low: off}`: each tier a
/// percentage in (0, 100] or `off` (`0%`); tiers not named keep their
/// default; an unknown tier is an unknown key.
fn read_sample_check(mut m: MapReader<'_>, out: &mut [f64; 3], errs: &mut Errors) {
    for t in Tier::ALL {
        let Some(n) = m.get(t.as_str()) else {
            continue;
        };
        let pct = match &n.value {
            Value::Str(s) if s == "off" => Some(0.0),
            Value::Bool(false) => Some(0.0),
            Value::Str(s) => s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| p.is_finite() && (0.0..=100.0).contains(p)),
            _ => None,
        };
        match pct {
            Some(p) => out[idx(t)] = p,
            None => m.err(
                errs,
                n,
                t.as_str(),
                format!(
                    "expected a percentage from 0% to 100% (or off), got {}",
                    n.describe()
                ),
            ),
        }
    }
    m.finish(errs);
}
