//! The journal connections of a running process: PostgreSQL (a cluster's
//! shared journal: one pool, shared by every part of this process) or
//! SQLite (a connection per part, so no part waits on another's lock).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::journal::{
    Journal, JournalConfig, JournalError, PgJournal, SharedJournal, SqliteJournal,
};
use crate::time::Clock;

/// How often the journal's WAL is checkpointed (outside the pipeline's
/// commits): at 10k events/s that keeps it to a few hundred pages.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Opens a journal connection for each part that asks.
pub struct Journals {
    pg: Option<PgJournal>,
    cfg: JournalConfig,
    clock: Arc<dyn Clock>,
}

impl Journals {
    pub fn open(cfg: &JournalConfig, clock: Arc<dyn Clock>) -> Result<Journals, JournalError> {
        let pg = match &cfg.url {
            Some(url) => Some(PgJournal::connect(
                url,
                cfg.ca_file.as_deref(),
                clock.clone(),
            )?),
            None => None,
        };
        Ok(Journals {
            pg,
            cfg: cfg.clone(),
            clock,
        })
    }

    /// The pipeline's connection: SQLite's checkpoints run beside it, not
    /// in its commits.
    pub fn pipeline(&self) -> Result<Box<dyn Journal>, JournalError> {
        Ok(match &self.pg {
            Some(p) => Box::new(p.another()),
            None => Box::new(
                SqliteJournal::open_with_clock(&self.cfg.path, false, self.clock.clone())?
                    .checkpoint_in_background(CHECKPOINT_EVERY)?,
            ),
        })
    }

    /// Another part's connection (the pipeline's checkpoints for all).
    pub fn part(&self) -> Result<Box<dyn Journal>, JournalError> {
        Ok(match &self.pg {
            Some(p) => Box::new(p.another()),
            None => Box::new(
                SqliteJournal::open_with_clock(&self.cfg.path, false, self.clock.clone())?
                    .without_checkpoints()?,
            ),
        })
    }

    /// [`Journals::part`], shared by async code.
    pub fn shared(&self) -> Result<SharedJournal, JournalError> {
        Ok(Arc::new(Mutex::new(self.part()?)))
    }
}
