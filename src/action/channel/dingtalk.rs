//! DingTalk channel (being written).

use super::{SendContext, SendOutcome};
use crate::action::message::Message;
use crate::config::Errors;
use crate::config::yaml::MapReader;

#[derive(Debug)]
pub struct DingTalk {}

impl DingTalk {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<DingTalk> {
        m.err(
            errs,
            m.node(),
            "type",
            "the dingtalk channel is not available in this build",
        );
        None
    }

    pub async fn send(&self, _ctx: &SendContext<'_>, _msg: &Message) -> SendOutcome {
        SendOutcome::Reject("dingtalk is not available in this build".into())
    }
}
