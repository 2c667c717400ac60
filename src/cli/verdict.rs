//! `ripcord approve`, `reject`, `ack` and `resume`: a human's verdict from the shell.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{JournalArgs, open_journal, open_journal_for};
use ripcord::action::ops;
use ripcord::journal::Verdict;

#[derive(clap::Args)]
pub struct VerdictArgs {
    /// The incident id (inc-…).
    id: String,
    /// Who decides; recorded on the timeline.
    #[arg(long, env = "USER")]
    by: String,
    #[arg(long, default_value = "")]
    note: String,
    /// Approving a batch incident: the blast radius to roll back:
    /// `breaching` (the breaching instances, the default), `batch` (every
    /// instance of the batch) or instance names separated by commas.
    #[arg(long, default_value = "breaching")]
    scope: String,
    #[command(flatten)]
    at: JournalArgs,
}

pub fn verdict(v: VerdictArgs, verdict: Option<Verdict>) -> Result<ExitCode> {
    let (_, mut j) = open_journal(&v.at)?;
    let now = ripcord::time::Clock::now(&ripcord::time::SystemClock);
    let scope = match ops::Scope::parse(&v.scope) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ripcord: --scope: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if verdict != Some(Verdict::Approve) && scope != ops::Scope::Breaching {
        eprintln!("ripcord: --scope only goes with approve");
        return Ok(ExitCode::from(2));
    }
    let result = match verdict {
        Some(verdict) => ops::decide(
            &mut *j,
            &v.id,
            verdict,
            &v.by,
            &v.note,
            ripcord::journal::Via::Cli,
            now,
            &scope,
        ),
        None => ops::ack(&mut *j, &v.id, &v.by, now),
    };
    match result {
        Ok(done) => {
            println!("{}: {} ({})", done.incident, done.result, done.detail);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("ripcord: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

pub fn resume(service: &str, by: &str, at: &JournalArgs) -> Result<ExitCode> {
    let (cfg, j) = open_journal_for(at, true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let journal: ripcord::journal::SharedJournal = Arc::new(std::sync::Mutex::new(j));
    let now = ripcord::time::Clock::now(&ripcord::time::SystemClock);
    match rt.block_on(ops::resume(
        &(&journal).into(),
        &cfg.actions,
        service,
        by,
        now,
    )) {
        Ok(done) => {
            println!("{}", done.detail);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("ripcord: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
