//! Voice channel (being written).

use super::{SendContext, SendOutcome};
use crate::action::message::Message;
use crate::config::Errors;
use crate::config::yaml::MapReader;

#[derive(Debug)]
pub struct Voice {}

impl Voice {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Voice> {
        m.err(
            errs,
            m.node(),
            "type",
            "the voice channel is not available in this build",
        );
        None
    }

    pub async fn send(&self, _ctx: &SendContext<'_>, _msg: &Message) -> SendOutcome {
        SendOutcome::Reject("voice is not available in this build".into())
    }
}
