//! Sms channel (being written).

use super::{SendContext, SendOutcome};
use crate::action::message::Message;
use crate::config::Errors;
use crate::config::yaml::MapReader;

#[derive(Debug)]
pub struct Sms {}

impl Sms {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Sms> {
        m.err(
            errs,
            m.node(),
            "type",
            "the sms channel is not available in this build",
        );
        None
    }

    pub async fn send(&self, _ctx: &SendContext<'_>, _msg: &Message) -> SendOutcome {
        SendOutcome::Reject("sms is not available in this build".into())
    }
}
