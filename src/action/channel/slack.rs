//! Slack channel (being written).

use super::{SendContext, SendOutcome};
use crate::action::message::Message;
use crate::config::Errors;
use crate::config::yaml::MapReader;

#[derive(Debug)]
pub struct Slack {}

impl Slack {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Slack> {
        m.err(
            errs,
            m.node(),
            "type",
            "the slack channel is not available in this build",
        );
        None
    }

    pub async fn send(&self, _ctx: &SendContext<'_>, _msg: &Message) -> SendOutcome {
        SendOutcome::Reject("slack is not available in this build".into())
    }
}
