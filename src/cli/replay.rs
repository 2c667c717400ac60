//! `ripcord replay`: recorded events through the same engine, offline.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{load_offline, report};
use ripcord::engine::Engine;
use ripcord::rule::load::{self as rules};

pub fn replay(
    events: &Path,
    config: Option<&Path>,
    rules_dir: Option<&Path>,
    output: Option<&str>,
) -> Result<ExitCode> {
    let (cfg, files) = match load_offline(config, rules_dir, "replay") {
        Err(errs) => return Ok(report(&errs)),
        Ok(x) => x,
    };
    let mut engine = Engine::new(Arc::new(rules::rule_set(&files)), cfg.engine);
    let stdout = io::stdout().lock();
    let out = io::BufWriter::with_capacity(1 << 16, stdout);
    let warn = io::stderr().lock();
    let format = ripcord::output::Format::for_stdout(output);
    let result = if events == Path::new("-") {
        ripcord::replay::run(&mut engine, io::stdin().lock(), out, warn, format)
    } else {
        let f = File::open(events).with_context(|| format!("cannot open {}", events.display()))?;
        ripcord::replay::run(
            &mut engine,
            BufReader::with_capacity(1 << 20, f),
            out,
            warn,
            format,
        )
    };
    let summary = match result {
        Ok(s) => s,
        // `ripcord replay … | head`: the reader went away; that is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e).context("replay failed"),
    };
    let st = engine.stats();
    eprintln!(
        "replay: {} lines, {} events, {} malformed, {} decisions; samples late {}, unmatched {}, groups {}",
        summary.lines,
        summary.events,
        summary.malformed,
        summary.decisions,
        st.samples_late,
        st.samples_unmatched,
        engine.groups()
    );
    Ok(ExitCode::SUCCESS)
}
