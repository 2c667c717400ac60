//! The whole `ripcord.yaml`: [`Config`], parsed then validated as a whole.
//!
//! Every section is optional; what is left out takes the operating plan's
//! defaults. All problems are reported at once with file and line, before
//! anything starts. This sits above every section it holds (each section's
//! type lives with the module that uses it); the reading blocks they share
//! (YAML with spans, errors, secrets) are [`crate::config`], below them all.

use std::path::{Path, PathBuf};

pub use crate::server::config::{HttpConfig, HttpLimits};
pub use crate::source::kafka_config::{GroupProtocol, KafkaConfig};
pub use crate::telemetry::log::{LogConfig, LogFormat};

use crate::config::relative_to;
use crate::config::yaml::{self, MapReader};
use crate::config::{ConfigError, Errors};
use crate::journal::JournalConfig;

use crate::engine::EngineConfig;
use crate::time::Dur;

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; `None` when running on defaults.
    pub path: Option<PathBuf>,
    pub engine: EngineConfig,
    /// Rules directory from the config file (the command line wins).
    pub rules_dir: Option<PathBuf>,
    pub kafka: KafkaConfig,
    pub http: HttpConfig,
    pub journal: JournalConfig,
    pub log: LogConfig,
    /// How long a graceful shutdown may take before in-flight work is left
    /// for the next start to pick up.
    pub shutdown_grace: Dur,
    /// Live input stamped further ahead of the clock than this is refused.
    pub max_future: Dur,
    /// Channels, routing, escalation, approvals, status and executors.
    pub actions: std::sync::Arc<crate::action::config::ActionsConfig>,
    /// What the rollout gates ask of a batch before the next may start.
    pub gates: std::sync::Arc<crate::gate::GateConfig>,
    /// Limits on silences; maintenance and freeze windows.
    pub silences: std::sync::Arc<crate::silence::SilenceConfig>,
    /// The plan's time budgets, for reviews and drills.
    pub budgets: crate::report::Budgets,
    /// Where alert incidents' charts come from (optional).
    pub prometheus: Option<crate::report::prometheus::PrometheusConfig>,
    /// Memory budgets in bytes; the process's shared counters live in
    /// `engine.budgets`, built from these.
    pub limits: crate::limits::LimitsConfig,
    /// How the pipeline spreads its work (`pipeline.shards`).
    pub pipeline: crate::pipeline::PipelineConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            engine: EngineConfig::default(),
            rules_dir: None,
            kafka: KafkaConfig::default(),
            http: HttpConfig::default(),
            journal: JournalConfig::default(),
            log: LogConfig::default(),
            shutdown_grace: Dur::from_secs(10),
            max_future: Dur::from_mins(5),
            actions: Default::default(),
            gates: Default::default(),
            silences: Default::default(),
            budgets: Default::default(),
            prometheus: None,
            limits: Default::default(),
            pipeline: Default::default(),
        }
    }
}

impl Config {
    /// Reads `path`, or returns the defaults when there is none.
    pub fn load(path: Option<&Path>) -> Result<Config, Errors> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(path, &text),
            Err(e) => Err(Errors(vec![ConfigError::new(
                path,
                0,
                0,
                format!("cannot read config: {e}"),
            )])),
        }
    }

    /// Checks what command-line overrides can break, after they are applied.
    pub fn validate_overrides(&self) -> Result<(), Errors> {
        let mut errs = Errors::default();
        if !self.http.listen.ip().is_loopback() && self.http.token.is_none() {
            errs.push(ConfigError::new(
                Path::new("--listen"),
                0,
                0,
                format!(
                    "{} is not a loopback address and no http.token is configured; \
                     every endpoint that can trigger an action must be authenticated",
                    self.http.listen
                ),
            ));
        }
        errs.into_result(())
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, Errors> {
        let mut errs = Errors::default();
        let root = match yaml::parse(path, text) {
            Ok(n) => n,
            Err(e) => return Err(Errors(vec![e])),
        };
        let mut cfg = Config {
            path: Some(path.to_path_buf()),
            ..Config::default()
        };
        if let Some(mut top) = MapReader::new(path, &root, "config", &mut errs) {
            if let Some(m) = top.map("engine", &mut errs) {
                crate::engine::config::read_engine(
                    m,
                    &mut cfg.engine,
                    &mut cfg.max_future,
                    &mut errs,
                );
            }
            if let Some(m) = top.map("tiers", &mut errs) {
                crate::engine::config::read_tiers(m, &mut cfg.engine, &mut errs);
            }
            if let Some(m) = top.map("policy", &mut errs) {
                crate::engine::config::read_policy(m, &mut cfg.engine, &mut errs);
            }
            if let Some(m) = top.map("grouping", &mut errs) {
                crate::engine::config::read_grouping(m, &mut cfg.engine, &mut errs);
            }
            if let Some(dir) = top.str("rules", &mut errs) {
                cfg.rules_dir = Some(relative_to(path, dir));
            }
            if let Some(m) = top.map("kafka", &mut errs) {
                crate::source::kafka_config::read_kafka(m, &mut cfg.kafka, &mut errs);
            }
            if let Some(m) = top.map("http", &mut errs) {
                crate::server::config::read_config(m, &mut cfg.http, &mut errs);
            }
            if let Some(m) = top.map("journal", &mut errs) {
                crate::journal::read_config(m, &mut cfg.journal, &mut errs);
            }
            if let Some(m) = top.map("log", &mut errs) {
                crate::telemetry::log::read_config(m, &mut cfg.log, &mut errs);
            }
            if let Some(m) = top.map("gates", &mut errs) {
                let mut gates = crate::gate::GateConfig::default();
                crate::gate::read_config(m, &mut gates, &mut errs);
                cfg.gates = std::sync::Arc::new(gates);
            }
            let mut silences = crate::silence::SilenceConfig::default();
            if let Some(m) = top.map("silences", &mut errs) {
                crate::silence::read_config(m, &mut silences.limits, &mut errs);
            }
            if let Some(items) = top.seq("windows", &mut errs) {
                silences.windows = crate::silence::window::read(path, items, &mut errs);
            }
            cfg.silences = std::sync::Arc::new(silences);
            if let Some(m) = top.map("budgets", &mut errs) {
                crate::report::budget::read_config(m, &mut cfg.budgets, &mut errs);
            }
            if let Some(m) = top.map("prometheus", &mut errs) {
                cfg.prometheus = crate::report::prometheus::read_config(m, &mut errs);
            }
            if let Some(m) = top.map("limits", &mut errs) {
                crate::limits::read_config(m, &mut cfg.limits, &mut errs);
            }
            cfg.engine.budgets = crate::limits::Budgets::new(&cfg.limits);
            if let Some(m) = top.map("pipeline", &mut errs) {
                crate::pipeline::read_config(m, &mut cfg.pipeline, &mut errs);
            }
            if let Some(m) = top.map("shutdown", &mut errs) {
                read_shutdown(m, &mut cfg.shutdown_grace, &mut errs);
            }
            let mut actions = crate::action::config::ActionsConfig::default();
            crate::action::config::read(&mut top, &mut actions, &mut errs);
            if let Some(v) = &mut actions.vendor {
                v.public_url = cfg.http.public_url.clone();
            }
            if actions.approvals.link_secret.is_some() && cfg.http.public_url.is_none() {
                let n = top.node_of("approvals").unwrap_or(&root);
                errs.push(ConfigError::at(
                    path,
                    n,
                    "config: approvals: link_secret makes one-click links, which need http.public_url \
                     (how people reach ripcord, e.g. https://ripcord.example.com)",
                ));
            }
            // The gates wait for the sample check of the tiers that run one.
            let sampled = |t| actions.sample_percent(t) > 0.0 && actions.rollback.verify.is_some();
            let mut gates = (*cfg.gates).clone();
            gates.sample_check = crate::gate::PerTier {
                low: sampled(crate::decision::Tier::Low),
                medium: sampled(crate::decision::Tier::Medium),
                high: sampled(crate::decision::Tier::High),
            };
            cfg.gates = std::sync::Arc::new(gates);
            cfg.actions = std::sync::Arc::new(actions);
            let token_given = top.node_of("http").is_some_and(|h| {
                matches!(&h.value, yaml::Value::Map(e) if e.iter().any(|(k, _)| k.as_str() == Some("token")))
            });
            if !cfg.http.listen.ip().is_loopback() && cfg.http.token.is_none() && !token_given {
                let n = top.node_of("http").unwrap_or(&root);
                errs.push(ConfigError::at(
                    path,
                    n,
                    format!(
                        "config: http: listen is {} (not loopback) but no http.token is set; \
                         every endpoint that can trigger an action must be authenticated",
                        cfg.http.listen
                    ),
                ));
            }
            top.finish(&mut errs);
        }
        errs.into_result(cfg)
    }
}

/// `shutdown: {grace}`: the root's own knob (the shutdown is the whole
/// process's).
fn read_shutdown(mut m: MapReader<'_>, grace: &mut Dur, errs: &mut Errors) {
    if let Some(d) = m.dur("grace", Dur::from_secs(1)..=Dur::from_mins(10), errs) {
        *grace = d;
    }
    m.finish(errs);
}

#[cfg(test)]
mod grouping_tests {
    use super::*;

    #[test]
    fn grouping_reads_its_knobs_and_names_each_bad_one_with_its_line() {
        let cfg = Config::parse(
            Path::new("r.yaml"),
            "grouping:\n  by: [svc, wave]\n  wait: 5s\n  batch_failed: 4\n  attribute: false\n",
        )
        .unwrap();
        let g = cfg.engine.grouping.expect("on");
        assert_eq!((&*g.service_label, &*g.batch_label), ("svc", "wave"));
        assert_eq!(g.wait, Dur::from_secs(5));
        assert_eq!(g.batch_failed, Some(4));
        assert!(!g.attribute);
        let off = Config::parse(Path::new("r.yaml"), "grouping: {enabled: false}\n").unwrap();
        assert!(
            off.engine.grouping.is_none(),
            "off: one incident per instance"
        );
        assert!(Config::default().engine.grouping.is_some(), "on by default");
        let errs = Config::parse(
            Path::new("r.yaml"),
            "grouping:\n  by: [service]\n  wait: 2h\n  bogus: 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("r.yaml:2") && errs.contains("two labels"),
            "{errs}"
        );
        assert!(errs.contains("r.yaml:3") && errs.contains("wait"), "{errs}");
        assert!(errs.contains("bogus"), "{errs}");
    }
}
