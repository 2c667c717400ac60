//! WeCom channel (being written).

use super::{SendContext, SendOutcome};
use crate::action::message::Message;
use crate::config::Errors;
use crate::config::yaml::MapReader;

#[derive(Debug)]
pub struct WeCom {}

impl WeCom {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<WeCom> {
        m.err(
            errs,
            m.node(),
            "type",
            "the wecom channel is not available in this build",
        );
        None
    }

    pub async fn send(&self, _ctx: &SendContext<'_>, _msg: &Message) -> SendOutcome {
        SendOutcome::Reject("wecom is not available in this build".into())
    }
}
