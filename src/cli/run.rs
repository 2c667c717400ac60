//! `ripcord run`: the responder itself, until a signal.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{load, report};
use ripcord::rule::load::{self as rules};
use ripcord::settings::LogFormat;

#[derive(clap::Args)]
pub struct RunArgs {
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

pub fn run(args: RunArgs) -> Result<ExitCode> {
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

pub fn init_logging(cfg: &ripcord::settings::LogConfig) {
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
pub async fn shutdown_signal() {
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
