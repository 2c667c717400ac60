//! The fallback stage: a message a channel did not send (refused for
//! good, out of retries) goes to the tier's fallback channel once, with
//! the sender still waiting for the final outcome; otherwise the sender
//! hears how it ended.

use super::{Delivered, Delivery, Worker};
use crate::action::channel::SendOutcome;

impl Worker {
    pub(super) async fn answer_or_fall_back(
        &self,
        d: Delivery,
        outcome: SendOutcome,
        incidents: Vec<String>,
    ) {
        let failed = !matches!(outcome, SendOutcome::Sent(_));
        match (&d.fallback, failed) {
            (Some(fb), true) if self.others.has(fb) => {
                self.note(
                    &incidents,
                    &format!("handing the message to fallback channel {fb}"),
                )
                .await;
                let forwarded = Delivery {
                    message: d.message.clone(),
                    fallback: None,
                    done: d.done,
                    incidents,
                };
                if let Err(e) = self.others.send(fb, forwarded).await {
                    tracing::error!(error = %e, "fallback channel unavailable");
                }
            }
            _ => {
                if let Some(tx) = d.done {
                    let _ = tx.send(Delivered {
                        channel: self.spec.name.clone(),
                        outcome,
                    });
                }
            }
        }
    }
}
