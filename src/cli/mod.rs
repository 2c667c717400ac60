//! The command line: one file per command (its arguments and its body),
//! the dispatch and what several commands share (loading the config and
//! rules, opening the journal, who acts) here.

mod check;
mod demo;
mod drill;
mod gate;
mod incidents;
mod mock_broker;
mod replay;
mod run;
mod silence;
mod test;
mod verdict;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use ripcord::config::Errors;
use ripcord::journal::{Journal, SqliteJournal, Verdict};
use ripcord::rule::load::{self as rules, RuleFile};
use ripcord::settings::Config;

use check::check;
use demo::demo;
use drill::{DrillArgs, drill};
use gate::{GateArgs, gate};
use incidents::{incidents, incidents_review, report_cmd, show};
use mock_broker::mock_broker;
use replay::replay;
use run::{RunArgs, run};
use silence::{SilenceCmd, silence};
use test::test;
use verdict::{VerdictArgs, resume, verdict};

#[derive(Parser)]
#[command(
    name = "ripcord",
    version,
    about = "Alert-to-rollback responder for staged upgrades"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and every rule file; report all errors at once.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Rules directory (default: the config's `rules:`, else the shipped rules).
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Run the test cases the rule files carry.
    Test {
        #[arg(long)]
        rules: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Fail (not just note) when a rule lacks a case acting, or a blip
        /// staying quiet, on one of its tiers.
        #[arg(long)]
        strict: bool,
    },
    /// A Kafka-protocol broker (librdkafka's mock cluster) in its own process,
    /// for local experiments and tests. Prints `kafka bootstrap: HOST:PORT`;
    /// reads `down` / `up` lines on stdin to take the broker away and back.
    #[command(hide = true)]
    MockBroker {
        #[arg(long, default_value = "ripcord-events")]
        topic: Vec<String>,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
    /// Replay a scripted upgrade incident through the live pipeline (embedded
    /// broker, local stand-ins for the cloud API and chat) and print its
    /// timeline.
    Demo,
    /// Run the responder: Kafka and HTTP in, decisions journaled and acted on.
    /// With no brokers configured, an embedded broker is started.
    Run(RunArgs),
    /// List incidents from the journal (open ones by default).
    Incidents {
        #[command(flatten)]
        at: JournalArgs,
        /// open, resolved or all (default: open; all with --since).
        #[arg(long, value_parser = ["open", "resolved", "all"])]
        status: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only incidents opened in this last span (e.g. 30d, 90d).
        #[arg(long)]
        since: Option<String>,
        /// md or csv: the review's durations and missed budgets per incident.
        #[arg(long, value_parser = ["md", "csv"])]
        format: Option<String>,
    },
    /// The review draft of one incident, from the journal: its timeline,
    /// durations and the plan's budgets; blank root cause and improvements.
    Report {
        id: String,
        #[arg(long, default_value = "md", value_parser = ["md", "html"])]
        format: String,
        /// Write here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        at: JournalArgs,
    },
    /// Show one incident: its approval, paging, actions and timeline.
    Show {
        id: String,
        #[command(flatten)]
        at: JournalArgs,
    },
    /// Approve the rollback an incident waits for.
    Approve(VerdictArgs),
    /// Reject the rollback an incident waits for.
    Reject(VerdictArgs),
    /// Acknowledge an incident: stops its paging.
    Ack(VerdictArgs),
    /// Resume a rollout ripcord paused.
    Resume {
        service: String,
        #[arg(long, env = "USER")]
        by: String,
        #[command(flatten)]
        at: JournalArgs,
    },
    /// Ask a running ripcord whether the next batch of SERVICE may start.
    /// Exit status: 0 go, 1 nogo, 2 hold, 3 ripcord could not be asked.
    Gate(GateArgs),
    /// Rehearse an incident: play a bad batch through the live pipeline,
    /// measure detect -> decide -> approve -> rollback -> recovery against
    /// the plan's budgets and write the review draft. Exit 0 when every
    /// budget is met, 1 when one is missed (named), 2 when the drill could
    /// not run.
    Drill(DrillArgs),
    /// Silences: add, list and expire them (in the journal, so every
    /// replica and every restart sees them).
    #[command(subcommand)]
    Silence(SilenceCmd),
    /// Feed a JSON-lines file of events through the engine in event time and
    /// print every decision as a JSON line. Executes nothing.
    Replay {
        /// The events; `-` reads standard input.
        #[arg(long)]
        events: PathBuf,
        #[arg(long)]
        rules: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// pretty or json (default: pretty on a terminal, json on a pipe).
        #[arg(long, value_parser = ["pretty", "json"])]
        output: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config, rules } => check(config.as_deref(), rules.as_deref()),
        Command::Test {
            rules,
            config,
            strict,
        } => test(config.as_deref(), rules.as_deref(), strict),
        Command::Run(args) => run(args),
        Command::Demo => demo(),
        Command::MockBroker { topic, partitions } => mock_broker(&topic, partitions),
        Command::Incidents {
            at,
            status,
            json,
            since,
            format,
        } => match (since, format) {
            (None, None) => incidents(&at, status.as_deref().unwrap_or("open"), json),
            (since, format) => incidents_review(
                &at,
                status.as_deref().unwrap_or("all"),
                since.as_deref(),
                format.as_deref().unwrap_or("md"),
            ),
        },
        Command::Report {
            id,
            format,
            out,
            at,
        } => report_cmd(&id, &format, out.as_deref(), &at),
        Command::Show { id, at } => show(&id, &at),
        Command::Approve(v) => verdict(v, Some(Verdict::Approve)),
        Command::Reject(v) => verdict(v, Some(Verdict::Reject)),
        Command::Ack(v) => verdict(v, None),
        Command::Resume { service, by, at } => resume(&service, &by, &at),
        Command::Gate(args) => gate(&args),
        Command::Silence(cmd) => silence(cmd),
        Command::Drill(args) => drill(args),
        Command::Replay {
            events,
            rules,
            config,
            output,
        } => replay(
            &events,
            config.as_deref(),
            rules.as_deref(),
            output.as_deref(),
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ripcord: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Where the journal is: `--state`, else the config's `journal.path`.
#[derive(clap::Args)]
pub struct JournalArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// Journal (SQLite) file.
    #[arg(long)]
    state: Option<PathBuf>,
}

/// [`load`] for commands that send nothing (`check`, `test`, `replay`): a
/// secret they cannot read (a production config on a laptop) is one
/// warning each, not an error.
pub fn load_offline(
    config: Option<&Path>,
    rules_dir: Option<&Path>,
    command: &str,
) -> Result<(Config, Vec<RuleFile>), Errors> {
    let (loaded, unresolved) =
        ripcord::config::secret::with_unresolved_allowed(|| load(config, rules_dir));
    for w in &unresolved {
        eprintln!(
            "warning: {w} (ignored: `ripcord {command}` sends nothing; `ripcord run` needs it)"
        );
    }
    loaded
}

/// Loads config and rules together so every error of both is reported.
pub fn load(
    config: Option<&Path>,
    rules_dir: Option<&Path>,
) -> Result<(Config, Vec<RuleFile>), Errors> {
    let mut errs = Errors::default();
    let cfg = Config::load(config).unwrap_or_else(|e| {
        errs.extend(e);
        Config::default()
    });
    let dir = rules_dir
        .map(Path::to_path_buf)
        .or_else(|| cfg.rules_dir.clone());
    let files = rules::load(dir.as_deref()).unwrap_or_else(|e| {
        errs.extend(e);
        Vec::new()
    });
    errs.extend(ripcord::action::executor::placeholders::check(
        &cfg.actions,
        files.iter().flat_map(|f| &f.rules),
        cfg.engine.grouping.as_ref(),
    ));
    errs.into_result((cfg, files))
}

/// `1 rule`, `2 rules`.
pub fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

pub fn report(errs: &Errors) -> ExitCode {
    eprintln!("{errs}");
    eprintln!(
        "ripcord: {} {}",
        errs.len(),
        plural(errs.len(), "error", "errors")
    );
    ExitCode::from(1)
}

/// Opens the journal the config (or `--state`) names: the PostgreSQL one
/// of `journal.url`, else the SQLite file, which must exist.
pub fn open_journal(at: &JournalArgs) -> Result<(Config, Box<dyn Journal>)> {
    open_journal_for(at, false)
}

/// [`open_journal`] for a command that may act (`resume` runs an
/// executor): every secret must resolve. Commands that only read or
/// write the journal never need a channel's secret.
pub fn open_journal_for(at: &JournalArgs, acts: bool) -> Result<(Config, Box<dyn Journal>)> {
    let (loaded, unresolved) = if acts {
        (Config::load(at.config.as_deref()), Vec::new())
    } else {
        ripcord::config::secret::with_unresolved_allowed(|| Config::load(at.config.as_deref()))
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(errs) => anyhow::bail!("{errs}"),
    };
    let clock: Arc<dyn ripcord::time::Clock> = Arc::new(ripcord::time::SystemClock);
    if let (Some(url), None) = (&cfg.journal.url, &at.state) {
        if url.is_unresolved() {
            // The one secret a reading command needs.
            let why = unresolved.iter().find(|w| w.contains("journal: url"));
            anyhow::bail!(
                "{}",
                why.map_or("journal.url cannot be read", String::as_str)
            );
        }
        let j = ripcord::journal::PgJournal::connect(url, cfg.journal.ca_file.as_deref(), clock)?;
        return Ok((cfg, Box::new(j)));
    }
    let path = at.state.clone().unwrap_or_else(|| cfg.journal.path.clone());
    if !path.exists() {
        anyhow::bail!(
            "no journal at {} (use --state PATH or --config)",
            path.display()
        );
    }
    let j = SqliteJournal::open(&path, false)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok((cfg, Box::new(j)))
}

/// Who runs the command: `--by`, else `$USER`, else `$LOGNAME`, else the
/// login name of the process's user (a container often sets no `$USER`).
pub fn who(by: Option<String>) -> Result<String> {
    let named = by
        .into_iter()
        .chain(["USER", "LOGNAME"].map(|v| std::env::var(v).unwrap_or_default()))
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty());
    if let Some(n) = named {
        return Ok(n);
    }
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) if !u.name.is_empty() => Ok(u.name),
        _ => anyhow::bail!("who are you? give --by NAME (no $USER, and uid {uid} has no name)"),
    }
}

pub fn now_ts() -> ripcord::time::Ts {
    ripcord::time::Ts(jiff::Timestamp::now().as_millisecond())
}

/// Writes `text` to `out`, or stdout.
pub fn write_out(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            let mut o = io::stdout().lock();
            o.write_all(text.as_bytes())?;
            Ok(())
        }
    }
}
