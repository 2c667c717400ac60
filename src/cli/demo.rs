//! `ripcord demo`: a bad upgrade played end to end on stand-ins.

use std::io::{self};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::report;
use super::run::init_logging;
use ripcord::rule::load::{self as rules};

pub fn demo() -> Result<ExitCode> {
    let files = match rules::load_builtin() {
        Ok(f) => f,
        Err(errs) => return Ok(report(&errs)),
    };
    init_logging(&ripcord::settings::LogConfig {
        level: Some("warn".into()),
        ..Default::default()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("cannot start the async runtime")?;
    let mut out = io::stdout();
    rt.block_on(ripcord::demo::run(
        Arc::new(rules::rule_set(&files)),
        &mut out,
    ))?;
    Ok(ExitCode::SUCCESS)
}
