//! `ripcord drill`: a rehearsal of a tier's whole response, and its review.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{incidents::render_review, run::init_logging};
use super::{load, report, write_out};
use ripcord::journal::SqliteJournal;
use ripcord::rule::load::{self as rules};

#[derive(clap::Args)]
pub struct DrillArgs {
    /// The tier whose policy the built-in bad batch exercises.
    #[arg(long, default_value = "low", value_parser = ["low", "medium", "high"])]
    tier: String,
    /// A recorded scenario (JSON lines of events with `ts`; lines after
    /// `{"drill": "after_rollback"}` are the recovery).
    #[arg(long)]
    scenario: Option<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Stand-ins for every channel and executor.
    #[arg(long)]
    dry_run: bool,
    /// auto: the drill approves the rollback as soon as it is asked; wait:
    /// a human approves (link, API or `ripcord approve`).
    #[arg(long, default_value = "auto", value_parser = ["auto", "wait"])]
    approve: String,
    /// Who the automatic approval is recorded as.
    #[arg(long, default_value = "drill")]
    approver: String,
    /// Ring the configured SMS and voice channels (a drill does not unless asked).
    #[arg(long)]
    page_phones: bool,
    /// Event time runs this many times faster than the wall (1: a real drill).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Give up after this long (wall time).
    #[arg(long, default_value = "30m")]
    timeout: String,
    #[arg(long, default_value = "ripcord-drill")]
    service: String,
    #[arg(long, default_value = "i-drill-1")]
    instance: String,
    /// Keep the drill's journal here (for `ripcord report` later).
    #[arg(long)]
    state: Option<PathBuf>,
    /// With brokers configured: the topic the drill plays onto (never one
    /// the responder reads).
    #[arg(long)]
    topic: Option<String>,
    #[arg(long, default_value = "md", value_parser = ["md", "html"])]
    format: String,
    /// Write the review here (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn drill(args: DrillArgs) -> Result<ExitCode> {
    use ripcord::drill::{self, Approve, DrillOptions, Scenario};
    let (cfg, files) = match load(args.config.as_deref(), args.rules.as_deref()) {
        Err(errs) => {
            report(&errs);
            return Ok(ExitCode::from(2));
        }
        Ok(x) => x,
    };
    let tier: ripcord::decision::Tier = args.tier.parse().map_err(anyhow::Error::msg)?;
    let scenario = match &args.scenario {
        Some(p) => Some(Scenario::from_file(p)?),
        None => None,
    };
    if !(args.speed >= 1.0 && args.speed <= 1000.0) {
        anyhow::bail!("--speed {}: expected 1 to 1000", args.speed);
    }
    let timeout: ripcord::time::Dur = args.timeout.parse()?;
    if !args.dry_run && !cfg.actions.is_unconfigured() && args.instance == "i-drill-1" {
        anyhow::bail!(
            "the configured executors would roll back `i-drill-1`: name a staging instance with              --instance, or rehearse with --dry-run"
        );
    }
    init_logging(&ripcord::settings::LogConfig {
        level: Some("warn".into()),
        ..cfg.log.clone()
    });
    let opts = DrillOptions {
        tier,
        scenario,
        approve: match args.approve.as_str() {
            "wait" => Approve::Wait,
            _ => Approve::Auto {
                by: args.approver.clone(),
            },
        },
        speed: args.speed,
        page_phones: args.page_phones,
        dry_run: args.dry_run,
        timeout: timeout.to_std(),
        service: args.service.clone(),
        instance: args.instance.clone(),
        state: args.state.clone(),
        topic: args.topic.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("cannot start the async runtime")?;
    let rules = Arc::new(rules::rule_set(&files));
    let budgets = cfg.budgets;
    let run = match rt.block_on(drill::run(cfg, rules, opts, |line: &str| {
        eprintln!("{line}")
    })) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ripcord drill: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    drill_review(&run, &budgets, &args)
}

/// The drill's review, marked as a drill; exit 1 naming each missed budget.
pub fn drill_review(
    run: &ripcord::drill::DrillRun,
    budgets: &ripcord::report::Budgets,
    args: &DrillArgs,
) -> Result<ExitCode> {
    let j = SqliteJournal::open(&run.journal, false)?;
    let Some(id) = &run.incident else {
        eprintln!(
            "drill: MISSED: nothing was detected (no incident opened for {})",
            args.service
        );
        return Ok(ExitCode::from(1));
    };
    let mut review = ripcord::report::Review::build(&j, id, budgets, run.ended)?;
    review.drill = Some(ripcord::report::DrillInfo {
        scenario: run.scenario.clone(),
        speed: run.speed,
        notes: run.notes.clone(),
    });
    write_out(args.out.as_deref(), &render_review(&review, &args.format))?;
    let missed = review.missed();
    for b in &review.budgets {
        eprintln!(
            "drill: {:<7} {} (measured {})",
            b.verdict.as_str(),
            b.name,
            b.measured.map_or("-".into(), ripcord::report::human)
        );
    }
    if missed.is_empty() {
        eprintln!("drill: every budget met");
        Ok(ExitCode::SUCCESS)
    } else {
        let names: Vec<&str> = missed.iter().map(|b| b.name.as_str()).collect();
        eprintln!("drill: MISSED: {}", names.join("; "));
        Ok(ExitCode::from(1))
    }
}
