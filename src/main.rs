//! The `ripcord` command line. Thin: parses arguments, wires the library's
//! stages together and maps outcomes to exit codes.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use ripcord::action::ops;
use ripcord::cases;
use ripcord::config::Errors;
use ripcord::engine::Engine;
use ripcord::journal::{Journal, SqliteJournal, Verdict};
use ripcord::rule::load::{self as rules, RuleFile};
use ripcord::settings::{Config, LogFormat};

/// `eprintln!` that never panics: a closed stderr (`ripcord … 2>&1 | head
/// -1`) is no reason to crash.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

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

#[derive(clap::Args)]
struct DrillArgs {
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

#[derive(Subcommand)]
enum SilenceCmd {
    /// Mute what matches for a while: `ripcord silence add service=web
    /// --for 2h --comment "kernel patch"`.
    Add {
        /// Label matchers in Alertmanager's syntax: `service=web`,
        /// `instance=~"i-web-.*"`, `env!=dev`. Also matched: `rule`,
        /// `alertname`, `tier`, `severity`.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long, from now (e.g. 2h).
        #[arg(long = "for", conflicts_with_all = ["until", "until_batch"])]
        duration: Option<String>,
        /// When it ends (RFC 3339).
        #[arg(long, conflicts_with = "until_batch")]
        until: Option<String>,
        /// Until batch BATCH of SERVICE completes: `SERVICE:BATCH`.
        #[arg(long, value_name = "SERVICE:BATCH")]
        until_batch: Option<String>,
        /// When it starts (RFC 3339; default now).
        #[arg(long)]
        start: Option<String>,
        /// notify: mute messages only (actions still run); all: actions too.
        #[arg(long, default_value = "notify", value_parser = ["notify", "all"])]
        scope: String,
        /// Who silences (default: $USER, else the login name).
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        at: JournalArgs,
    },
    /// List silences (active and pending; `--all` adds expired ones).
    Ls {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: JournalArgs,
    },
    /// End a silence now.
    Expire {
        id: String,
        /// Who expires it (default: $USER, else the login name).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        at: JournalArgs,
    },
}

/// Where the journal is: `--state`, else the config's `journal.path`.
#[derive(clap::Args)]
struct JournalArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// Journal (SQLite) file.
    #[arg(long)]
    state: Option<PathBuf>,
}

#[derive(clap::Args)]
struct VerdictArgs {
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

#[derive(clap::Args)]
struct GateArgs {
    service: String,
    /// The batch just done (default: the last one reported).
    #[arg(long)]
    batch: Option<String>,
    /// The revision being rolled out: only promotions of it count.
    #[arg(long)]
    revision: Option<String>,
    /// Wait until the answer is go or nogo, asking every --interval.
    #[arg(long)]
    wait: bool,
    #[arg(long, default_value = "15s")]
    interval: ripcord::time::Dur,
    /// Give up waiting after this long (exit 2, hold).
    #[arg(long)]
    timeout: Option<ripcord::time::Dur>,
    /// Where ripcord listens (default: http.public_url, else http.listen of --config).
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the whole answer as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Kafka bootstrap servers, HOST:PORT,… (default: config, else embedded broker).
    #[arg(long)]
    brokers: Option<String>,
    /// Topic to consume (repeatable).
    #[arg(long)]
    topic: Vec<String>,
    /// Consumer group.
    #[arg(long)]
    group: Option<String>,
    /// HTTP listen address (default 127.0.0.1:9464).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Journal (SQLite) file (default ./ripcord-state.db).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// How decisions are printed on stdout (default: pretty on a terminal,
    /// json on a pipe).
    #[arg(long, value_parser = ["pretty", "json"])]
    output: Option<String>,
    /// Where the embedded broker takes Kafka clients (default 127.0.0.1:9092
    /// when free, else any free port).
    #[arg(long)]
    kafka_listen: Option<std::net::SocketAddr>,
    /// Stand-ins for every channel and executor: messages are logged and
    /// rollbacks, pauses and checks say what they would do. Nothing real is
    /// touched. Used by default when the config has no channels and no
    /// executors.
    #[arg(long)]
    dry_run: bool,
    /// No Kafka at all (an Alertmanager-only responder): no consumer and no
    /// embedded broker; events come over HTTP. Same as `kafka.enabled: false`.
    #[arg(long, conflicts_with = "kafka_listen")]
    no_kafka: bool,
}

fn main() -> ExitCode {
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

/// [`load`] for commands that send nothing (`check`, `test`, `replay`): a
/// secret they cannot read (a production config on a laptop) is one
/// warning each, not an error.
fn load_offline(
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
fn load(
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
fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

fn report(errs: &Errors) -> ExitCode {
    eprintln!("{errs}");
    eprintln!(
        "ripcord: {} {}",
        errs.len(),
        plural(errs.len(), "error", "errors")
    );
    ExitCode::from(1)
}

fn check(config: Option<&Path>, rules_dir: Option<&Path>) -> Result<ExitCode> {
    match load_offline(config, rules_dir, "check") {
        Err(errs) => Ok(report(&errs)),
        Ok((cfg, files)) => {
            // Rules as written: one tuned per tier counts once.
            let n: usize = files
                .iter()
                .map(|f| {
                    let mut families: Vec<&str> = f.rules.iter().map(|r| &*r.family).collect();
                    families.dedup();
                    families.len()
                })
                .sum();
            println!(
                "ok: config {}, {n} {} in {} {}",
                cfg.path
                    .as_deref()
                    .map_or("(defaults)".into(), |p| p.display().to_string()),
                plural(n, "rule", "rules"),
                files.len(),
                plural(files.len(), "file", "files"),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn test(config: Option<&Path>, rules_dir: Option<&Path>, strict: bool) -> Result<ExitCode> {
    let (cfg, files) = match load_offline(config, rules_dir, "test") {
        Err(errs) => return Ok(report(&errs)),
        Ok(x) => x,
    };
    let mut out = io::stdout().lock();
    let (mut passed, mut failed) = (0, 0);
    let mut gaps = Vec::new();
    for file in &files {
        let results = cases::run_file(file, &cfg.engine);
        gaps.extend(cases::gaps(file, &results));
        for r in results {
            if r.passed() {
                passed += 1;
                writeln!(out, "ok    {}:{} {}", r.file, r.line, r.name)?;
            } else {
                failed += 1;
                writeln!(out, "FAIL  {}:{} {}", r.file, r.line, r.name)?;
                for f in &r.failures {
                    writeln!(out, "      {f}")?;
                }
            }
        }
    }
    for (rule, path) in rules::untested_rules(&files) {
        writeln!(
            out,
            "note  {}:{} rule `{}` has no test case expecting it",
            path.display(),
            rule.origin.line,
            rule.name
        )?;
    }
    let word = if strict { "FAIL " } else { "note " };
    for g in &gaps {
        writeln!(out, "{word} {g}")?;
    }
    let gaps_failed = if strict { gaps.len() } else { 0 };
    writeln!(
        out,
        "{passed} passed, {failed} failed{}",
        match (gaps.len(), strict) {
            (0, _) => String::new(),
            (n, true) => format!(", {n} tier {} untested", plural(n, "gap", "gaps")),
            (n, false) => format!(
                "; {n} tier {} untested (--strict fails on them)",
                plural(n, "gap", "gaps")
            ),
        }
    )?;
    Ok(if failed == 0 && gaps_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Opens the journal the config (or `--state`) names: the PostgreSQL one
/// of `journal.url`, else the SQLite file, which must exist.
fn open_journal(at: &JournalArgs) -> Result<(Config, Box<dyn Journal>)> {
    open_journal_for(at, false)
}

/// [`open_journal`] for a command that may act (`resume` runs an
/// executor): every secret must resolve. Commands that only read or
/// write the journal never need a channel's secret.
fn open_journal_for(at: &JournalArgs, acts: bool) -> Result<(Config, Box<dyn Journal>)> {
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

fn silence(cmd: SilenceCmd) -> Result<ExitCode> {
    use ripcord::silence::{self as sil, MatcherSpec, PostableSilence, Scope, UntilBatch};
    use ripcord::time::{Dur, Ts};
    let now = Ts(jiff::Timestamp::now().as_millisecond());
    match cmd {
        SilenceCmd::Add {
            matchers,
            duration,
            until,
            until_batch,
            start,
            scope,
            by,
            comment,
            at,
        } => {
            let matchers = matchers
                .iter()
                .map(|m| MatcherSpec::parse(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("matcher {e}"))?;
            let starts = match &start {
                Some(s) => Ts::parse_rfc3339_general(s)?,
                None => now,
            };
            let until_batch = until_batch
                .map(|sb| UntilBatch::parse(&sb))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--until-batch {e}"))?;
            let ends_at = match (duration, until, &until_batch) {
                (Some(d), _, _) => Some(starts.saturating_add(d.parse::<Dur>()?).to_string()),
                (None, Some(u), _) => Some(u),
                (None, None, Some(_)) => None,
                (None, None, None) => {
                    anyhow::bail!(
                        "say how long: --for DURATION, --until TIME or --until-batch SERVICE:BATCH"
                    )
                }
            };
            let (cfg, mut j) = open_journal(&at)?;
            let seen = seen_label_names(&cfg, &*j)?;
            for w in sil::unseen_label_warnings(&matchers, seen.iter().map(String::as_str)) {
                eprintln!("warning: {w}");
            }
            let post = PostableSilence {
                id: None,
                matchers,
                starts_at: starts.to_string(),
                ends_at,
                until: until_batch,
                created_by: who(by)?,
                comment,
                scope: Scope::parse(&scope).unwrap_or_default(),
            };
            // The silences in force, to count the new one's bytes against
            // limits.silences_bytes as a running responder would.
            let guard = sil::Guard::new(
                cfg.silences.windows.clone(),
                cfg.silences.limits,
                cfg.engine.budgets.silences.clone(),
            );
            guard.set(j.silences(now, false)?);
            let s = sil::create(&mut *j, post, &guard, now)?;
            println!("{}", s.id);
            eprintln!("silence {}", s.describe());
        }
        SilenceCmd::Ls { all, json, at } => {
            let (_, j) = open_journal(&at)?;
            let rows = j.silences(now, all)?;
            if json {
                let v: Vec<_> = rows.iter().map(|s| sil::http::gettable(s, now)).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if rows.is_empty() {
                eprintln!("no silences");
            } else {
                for s in &rows {
                    println!(
                        "{:<8} {}",
                        s.state(now).as_str(),
                        ripcord::text::one_line(&s.describe())
                    );
                }
            }
        }
        SilenceCmd::Expire { id, by, at } => {
            let by = who(by)?;
            let (_, mut j) = open_journal(&at)?;
            let s = sil::expire(&mut *j, &id, &by, now)?;
            eprintln!("silence {} expired by {by}", s.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Who runs the command: `--by`, else `$USER`, else `$LOGNAME`, else the
/// login name of the process's user (a container often sets no `$USER`).
fn who(by: Option<String>) -> Result<String> {
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

/// Every label name the rules and the journal's incidents use: what a
/// silence's matcher can sensibly name.
fn seen_label_names(cfg: &Config, j: &dyn Journal) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    // The rules as `run` would load them; broken rules only lose the hint.
    if let Ok(files) = rules::load(cfg.rules_dir.as_deref()) {
        for r in files.iter().flat_map(|f| &f.rules) {
            names.extend(r.group_by.iter().map(|l| l.to_string()));
            names.extend(r.matchers.iter().map(|m| m.name.clone()));
        }
    }
    if let Some(g) = &cfg.engine.grouping {
        names.extend([g.service_label.to_string(), g.batch_label.to_string()]);
    }
    for i in j.incidents(None)? {
        if let Some(o) = i.labels.as_object() {
            names.extend(o.keys().cloned());
        }
    }
    Ok(names)
}

fn now_ts() -> ripcord::time::Ts {
    ripcord::time::Ts(jiff::Timestamp::now().as_millisecond())
}

/// Writes `text` to `out`, or stdout.
fn write_out(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            let mut o = io::stdout().lock();
            o.write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

fn render_review(r: &ripcord::report::Review, format: &str) -> String {
    match format {
        "html" => ripcord::report::html::render(r),
        _ => ripcord::report::markdown::render(r),
    }
}

fn report_cmd(id: &str, format: &str, out: Option<&Path>, at: &JournalArgs) -> Result<ExitCode> {
    let (cfg, j) = open_journal(at)?;
    let review = ripcord::report::Review::build(&*j, id, &cfg.budgets, now_ts())?;
    write_out(out, &render_review(&review, format))?;
    Ok(ExitCode::SUCCESS)
}

fn incidents_review(
    at: &JournalArgs,
    status: &str,
    since: Option<&str>,
    format: &str,
) -> Result<ExitCode> {
    let (cfg, j) = open_journal(at)?;
    let now = now_ts();
    let from = match since {
        Some(s) => now.saturating_sub(
            s.parse::<ripcord::time::Dur>()
                .with_context(|| format!("--since {s}: expected a span like 30d or 90d"))?,
        ),
        None => ripcord::time::Ts::MIN,
    };
    let mut rows = j.incidents(if status == "all" { None } else { Some(status) })?;
    rows.retain(|r| r.opened_at >= from);
    rows.sort_by_key(|r| r.opened_at);
    let reviews = rows
        .iter()
        .map(|r| ripcord::report::Review::build(&*j, &r.id, &cfg.budgets, now))
        .collect::<Result<Vec<_>, _>>()?;
    let text = match format {
        "csv" => ripcord::report::list::csv(&reviews),
        _ => ripcord::report::list::markdown(&reviews),
    };
    write_out(None, &text)?;
    Ok(ExitCode::SUCCESS)
}

fn incidents(at: &JournalArgs, status: &str, json: bool) -> Result<ExitCode> {
    let (_, j) = open_journal(at)?;
    let rows = j.incidents(if status == "all" { None } else { Some(status) })?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows_text: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let whom: Vec<String> = r
                .labels
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            let waiting = if r.attention.is_empty() {
                String::new()
            } else {
                format!(" [{}]", r.attention.join(", "))
            };
            [
                r.id.clone(),
                r.state.clone(),
                r.tier.clone(),
                r.severity.clone(),
                ripcord::time::day_clock_words(r.opened_at),
                r.rule.clone(),
                ripcord::text::one_line(&format!("{}{}", whom.join(","), waiting)).into_owned(),
            ]
        })
        .collect();
    let header = [
        "ID",
        "STATE",
        "TIER",
        "SEVERITY",
        "OPENED",
        "RULE",
        "WHERE / WAITING",
    ];
    // Columns as wide as their widest cell, so times of any precision line up.
    let mut widths = header.map(str::len);
    for row in &rows_text {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |out: &mut io::StdoutLock<'_>, cells: &[&str]| -> io::Result<()> {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())
    };
    print(&mut out, &header)?;
    for row in &rows_text {
        print(&mut out, &row.each_ref().map(String::as_str))?;
    }
    if rows.is_empty() {
        writeln!(out, "(no {status} incidents)")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn show(id: &str, at: &JournalArgs) -> Result<ExitCode> {
    let (_, j) = open_journal(at)?;
    let Some(inc) = j.incident(id)? else {
        eprintln!("ripcord: no incident {id}");
        return Ok(ExitCode::from(1));
    };
    let mut out = io::stdout().lock();
    let when = |t| ripcord::time::clock_words(now_ts(), t);
    writeln!(
        out,
        "{} {} ({} tier, {}), {} since {}",
        inc.id,
        inc.rule,
        inc.tier,
        inc.severity,
        inc.state,
        when(inc.opened_at)
    )?;
    writeln!(out, "labels: {}", inc.labels)?;
    if let Some(a) = j.approval(id)? {
        writeln!(
            out,
            "approval: {} (requested {}, expires {}{})",
            a.state,
            when(a.requested_at),
            when(a.expires_at),
            a.decided_by
                .map(|b| format!(", by {b}"))
                .unwrap_or_default()
        )?;
    }
    if let Some(e) = j.escalation(id)? {
        // A next step only while paging runs; `step` counts the steps sent.
        let sent = format!(
            "{} {} sent",
            e.step,
            plural(e.step as usize, "step", "steps")
        );
        let line = match (e.state.as_str(), &e.acked_by) {
            ("active", _) => format!("active ({sent}; next: step {})", e.step + 1),
            (_, Some(by)) => format!("acknowledged by {by} ({sent})"),
            (state, None) => format!("{state} ({sent})"),
        };
        writeln!(out, "paging: {line}")?;
    }
    writeln!(out, "actions:")?;
    for a in j.actions_of(id)? {
        writeln!(
            out,
            "  {:<17} {:<18} {}",
            a.action.as_str(),
            a.state.as_str(),
            a.detail.unwrap_or_default()
        )?;
    }
    writeln!(out, "timeline:")?;
    for t in j.timeline(id)? {
        writeln!(out, "  {}  {:<8} {}", when(t.at), t.kind, t.message)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn verdict(v: VerdictArgs, verdict: Option<Verdict>) -> Result<ExitCode> {
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

fn resume(service: &str, by: &str, at: &JournalArgs) -> Result<ExitCode> {
    let (cfg, j) = open_journal_for(at, true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let journal: ripcord::journal::SharedJournal = Arc::new(std::sync::Mutex::new(j));
    let now = ripcord::time::Clock::now(&ripcord::time::SystemClock);
    match rt.block_on(ops::resume(&journal, &cfg.actions, service, by, now)) {
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

fn gate(args: &GateArgs) -> Result<ExitCode> {
    // Only asks a running ripcord: no channel secret is needed.
    let (loaded, _) =
        ripcord::config::secret::with_unresolved_allowed(|| Config::load(args.config.as_deref()));
    let cfg = match loaded {
        Ok(c) => c,
        Err(errs) => return Ok(report(&errs)),
    };
    let base = match &args.url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => match &cfg.http.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", cfg.http.listen),
        },
    };
    let mut url = reqwest::Url::parse(&base).with_context(|| format!("--url {base}"))?;
    url.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("--url {base} cannot take a path"))?
        .pop_if_empty()
        .extend(["api", "v1", "rollouts", args.service.as_str(), "gate"]);
    {
        let mut q = url.query_pairs_mut();
        if let Some(b) = &args.batch {
            q.append_pair("batch", b);
        }
        if let Some(r) = &args.revision {
            q.append_pair("revision", r);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let started = std::time::Instant::now();
    loop {
        let answer: serde_json::Value = match rt.block_on(async {
            let resp = client.get(url.clone()).send().await?.error_for_status()?;
            resp.json::<serde_json::Value>().await
        }) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("ripcord gate: cannot ask {}: {e}", url.as_str());
                return Ok(ExitCode::from(3));
            }
        };
        let decision = answer["decision"].as_str().unwrap_or("?").to_owned();
        let reasons: Vec<&str> = answer["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let waited_out = args
            .timeout
            .is_some_and(|t| started.elapsed() >= t.to_std());
        // A name ripcord has never seen (a typo in the pipeline) never
        // turns into go: say so and stop, even with --wait.
        let unknown = answer["known_service"] == serde_json::Value::Bool(false);
        if decision == "hold" && args.wait && !waited_out && !unknown {
            eprintln!(
                "ripcord gate: {}: hold ({}); asking again in {}",
                args.service,
                reasons.first().copied().unwrap_or("no reason given"),
                args.interval
            );
            std::thread::sleep(args.interval.to_std());
            continue;
        }
        if args.json {
            println!("{answer}");
        } else {
            println!("{}: {decision}", args.service);
            for r in &reasons {
                println!("  - {r}");
            }
        }
        return Ok(ExitCode::from(match decision.as_str() {
            _ if unknown => 3,
            "go" => 0,
            "nogo" => 1,
            "hold" => 2,
            _ => 3,
        }));
    }
}

fn demo() -> Result<ExitCode> {
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

fn drill(args: DrillArgs) -> Result<ExitCode> {
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

fn mock_broker(topics: &[String], partitions: i32) -> Result<ExitCode> {
    use std::io::BufRead;
    let mock = rdkafka::mocking::MockCluster::new(1).context("cannot start the mock cluster")?;
    for t in topics {
        mock.create_topic(t, partitions, 1)
            .with_context(|| format!("cannot create topic {t}"))?;
    }
    eprintln!(
        "kafka bootstrap: {} topic: {}",
        mock.bootstrap_servers(),
        topics.join(",")
    );
    for line in io::stdin().lock().lines() {
        match line?.trim() {
            "down" => mock.broker_down(1).context("broker down")?,
            "up" => mock.broker_up(1).context("broker up")?,
            "" => continue,
            other => {
                eprintln!("mock-broker: unknown command {other:?} (down, up)");
                continue;
            }
        }
        eprintln!("mock-broker: ok");
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(cfg: &ripcord::settings::LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cfg.filter()));
    use std::io::IsTerminal;
    // Through a pipe of its own: a stderr nobody reads never stops ripcord.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(ripcord::output::StderrLog);
    match cfg.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let (mut cfg, files) = match load(args.config.as_deref(), args.rules.as_deref()) {
        Err(errs) => return Ok(report(&errs)),
        Ok(x) => x,
    };
    if let Some(b) = args.brokers {
        cfg.kafka.brokers = Some(b);
    }
    if !args.topic.is_empty() {
        cfg.kafka.topics = args.topic;
    }
    if let Some(g) = args.group {
        cfg.kafka.group = g;
    }
    if let Some(l) = args.listen {
        cfg.http.listen = l;
    }
    if let Some(s) = args.state {
        cfg.journal.path = s;
    }
    match args.log_format.as_deref() {
        Some("json") => cfg.log.format = LogFormat::Json,
        Some(_) => cfg.log.format = LogFormat::Text,
        None => {}
    }
    if let Some(addr) = args.kafka_listen {
        cfg.kafka.embedded_listen = Some(addr);
    }
    if args.no_kafka {
        cfg.kafka.enabled = false;
        cfg.kafka.brokers = None;
    }
    if let Err(errs) = cfg.validate_overrides() {
        return Ok(report(&errs));
    }
    init_logging(&cfg.log);
    if args.dry_run || cfg.actions.is_unconfigured() {
        let why = if args.dry_run {
            "--dry-run"
        } else {
            "no channels and no executors are configured"
        };
        if let Some(actions) = Arc::get_mut(&mut cfg.actions) {
            actions.use_stand_ins();
        }
        ripcord::output::say(&format!(
            "stand-ins ({why}): messages go to this log and rollbacks, pauses and checks \
             only say what they would do; nothing outside is touched"
        ));
    }
    let rules = Arc::new(rules::rule_set(&files));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("cannot start the async runtime")?;
    let mut runtime = ripcord::app::Runtime::new(rules);
    runtime.format = ripcord::output::Format::for_stdout(args.output.as_deref());
    let result = rt.block_on(ripcord::app::run(cfg, runtime, shutdown_signal()));
    // Tasks still running (a send stuck on a dead channel) get a second,
    // not a wait without end: SIGTERM ends ripcord within grace + 1 s.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    ripcord::output::stderr().flush(std::time::Duration::from_millis(200));
    result?;
    Ok(ExitCode::SUCCESS)
}

fn replay(
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

/// The drill's review, marked as a drill; exit 1 naming each missed budget.
fn drill_review(
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
