//! The log channel: each message as lines on ripcord's stderr. A stand-in
//! for every channel under `ripcord run --dry-run` (and on a first run with
//! nothing configured), and a plain channel of its own for a laptop:
//!
//! ```yaml
//! console: {type: log}
//! ```

use std::time::Duration;

use super::kit::{Channel, Class, Registration, SendContext, SendOutcome, Sending};
use crate::action::message::Message;
use crate::config::Errors;
use crate::config::yaml::MapReader;
use crate::text::one_line;

#[derive(Debug, Default)]
pub struct Log;

impl Log {
    pub fn from_config(_: &mut MapReader<'_>, _: &mut Errors) -> Option<Log> {
        Some(Log)
    }

    /// The lines a message is shown as: its title, then each body line
    /// and link, indented. Text from events cannot start a line of its own.
    pub fn lines(msg: &Message) -> Vec<String> {
        let mut out = vec![format!("message: {}", one_line(&msg.title))];
        for l in msg.body.lines().filter(|l| !l.trim().is_empty()) {
            out.push(format!("  | {}", one_line(l)));
        }
        for l in &msg.links {
            out.push(format!("  | {}: {}", one_line(&l.label), one_line(&l.url)));
        }
        out
    }

    async fn post(&self, _: &SendContext<'_>, msg: &Message) -> SendOutcome {
        for l in Log::lines(msg) {
            crate::output::say(&l);
        }
        SendOutcome::Sent("logged".into())
    }
}

pub const CHANNEL: Registration = Registration {
    kind: "log",
    read: |m, errs| Some(Box::new(Log::from_config(m, errs)?)),
};

impl Channel for Log {
    fn class(&self) -> Class {
        Class::Record
    }

    /// Only ripcord's own stderr.
    fn default_rate(&self) -> (u32, Duration) {
        (100, Duration::from_secs(1))
    }

    fn send<'a>(&'a self, ctx: &'a SendContext<'a>, msg: &'a Message) -> Sending<'a> {
        Box::pin(self.post(ctx, msg))
    }
}
