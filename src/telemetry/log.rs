//! The `log:` section: the log lines' format and filter.

use crate::config::error::Errors;
use crate::config::yaml::MapReader;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `ripcord=debug,rdkafka=warn`;
    /// `None`: by format (see [`LogConfig::filter`]).
    pub level: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: None,
        }
    }
}

impl LogConfig {
    /// The filter in force: the configured one, else `warn` for text (a
    /// person at a terminal reads ripcord's own lines: what it listens
    /// on, when it is ready, what the stand-ins did) and `info` for JSON
    /// (a log pipeline keeps everything).
    pub fn filter(&self) -> &str {
        match (&self.level, self.format) {
            (Some(l), _) => l,
            (None, LogFormat::Text) => "warn",
            (None, LogFormat::Json) => "info",
        }
    }
}

pub fn read_config(mut m: MapReader<'_>, l: &mut LogConfig, errs: &mut Errors) {
    match m.str("format", errs) {
        Some("text") => l.format = LogFormat::Text,
        Some("json") => l.format = LogFormat::Json,
        Some(other) => {
            let n = m.node_of("format").unwrap_or(m.node());
            m.err(
                errs,
                n,
                "format",
                format!("`{other}`: expected text or json"),
            );
        }
        None => {}
    }
    if let Some(level) = m.str("level", errs) {
        // The same parser `ripcord run` feeds it to, so a typo fails here.
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
            let n = m.node_of("level").unwrap_or(m.node());
            m.err(
                errs,
                n,
                "level",
                format!("`{level}` is not a log filter (e.g. info, ripcord=debug,warn): {e}"),
            );
        }
        l.level = Some(level.to_owned());
    }
    m.finish(errs);
}
