//! The sections `ripcord run` needs: kafka, http, journal, log, shutdown.

use std::net::SocketAddr;

use crate::config::error::Errors;
use crate::config::secret::{Secret, read_secret, secret_from_node};
use crate::config::yaml::{MapReader, Value};
use crate::console::host::ConsoleConfig;
use crate::journal::JournalConfig;
use crate::time::Dur;

/// Where events come from on Kafka. `brokers: None` starts the embedded
/// broker (librdkafka's mock cluster) so ripcord runs with no servers.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// `false`: no Kafka at all (an Alertmanager-only responder): no
    /// consumer, no embedded broker; events come over HTTP only.
    pub enabled: bool,
    pub brokers: Option<String>,
    pub topics: Vec<String>,
    pub group: String,
    /// Which consumer group protocol the consumer speaks.
    pub group_protocol: GroupProtocol,
    /// Poison messages are copied here (with their error) when set.
    pub dead_letter_topic: Option<String>,
    /// Extra librdkafka consumer properties; they win over ripcord's.
    /// Values are [`Secret`]s whatever the key, so a `sasl.password` can
    /// never reach a log through this struct's `Debug`.
    pub properties: Vec<(String, Secret)>,
    /// Re-read each assigned partition's lookback to warm the windows.
    pub warm_up: bool,
    /// Most messages handled per journal transaction.
    pub max_batch: usize,
    /// Partitions of the topic the embedded broker creates.
    pub embedded_partitions: i32,
    /// Where the embedded broker takes connections (no `brokers`). None:
    /// 127.0.0.1:9092 when free (so the usual tools work as they are),
    /// else any free port.
    pub embedded_listen: Option<std::net::SocketAddr>,
    /// Warm-up reads at most this many messages back when the broker cannot
    /// look offsets up by time.
    pub warm_up_max_messages: usize,
    /// Act on events a drill produced (they carry the drill marker, see
    /// `crate::drill::MARKER_HEADER`). Only `ripcord drill` sets it, for
    /// its own responder; never read from the config: production refuses
    /// a drill's events.
    pub accept_drill_events: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            enabled: true,
            brokers: None,
            topics: vec!["ripcord-events".into()],
            group: "ripcord".into(),
            group_protocol: GroupProtocol::Classic,
            dead_letter_topic: None,
            properties: Vec::new(),
            warm_up: true,
            max_batch: 2048,
            embedded_partitions: 4,
            embedded_listen: None,
            warm_up_max_messages: 1_000_000,
            accept_drill_events: false,
        }
    }
}

/// `kafka.group_protocol`: how the consumer group shares partitions out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// The original protocol: every member rejoins on each rebalance
    /// (eager: all partitions are revoked, then handed out again); the
    /// client sets `session.timeout.ms` and `heartbeat.interval.ms`.
    #[default]
    Classic,
    /// KIP-848 (`group.protocol=consumer`, Kafka 4.x brokers): the broker
    /// assigns, members take and give partitions incrementally (no
    /// stop-the-world), and the broker sets sessions and heartbeats
    /// (`group.consumer.session.timeout.ms`).
    Consumer,
}

impl GroupProtocol {
    /// librdkafka's name for it (`group.protocol`).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

/// Consumer properties the KIP-848 protocol takes from the broker instead
/// (librdkafka refuses to start with them set).
const CLASSIC_ONLY_PROPERTIES: [&str; 4] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
];

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer token for every endpoint that can trigger an action. Required
    /// unless `listen` is a loopback address.
    pub token: Option<Secret>,
    pub max_body_bytes: usize,
    /// Requests waiting for the pipeline; beyond this, 503 and retry later.
    pub queue: usize,
    /// How ripcord is reached from outside (for links in messages); its
    /// host is the one the console and the links answer to.
    pub public_url: Option<String>,
    /// Other `Host` names the console and the links answer to (`host` or
    /// `host:port`; a port-forward's `localhost:9464`). See
    /// `crate::console::host`.
    pub allowed_hosts: Vec<String>,
    /// What a client may hold of the server (see [`crate::server`]).
    pub limits: HttpLimits,
    /// `/healthz` turns 503 when the pipeline loop has not turned for this
    /// long (outside a warm-up).
    pub stall_after: crate::time::Dur,
    /// Who may read and act in the web console.
    pub console: ConsoleConfig,
}

/// What clients may hold: defaults that suit Alertmanager (a handful of
/// keep-alive connections, bodies in one go) and shed everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once. At it, the idlest connection (silent since
    /// accept, else idle longest) is closed for a newcomer; with none idle
    /// the newcomer gets 503. Also kept under the process's file limit
    /// minus a reserve, so an executor can always start.
    pub max_connections: usize,
    /// Connections from one address (an IPv6 /64) at once; past it 503.
    /// Behind a proxy every client is the proxy: raise it to the cap.
    pub max_connections_per_peer: usize,
    /// From a request's first byte to its last header line; for a
    /// connection's first request, from the accept.
    pub header_timeout: crate::time::Dur,
    /// From the headers to the body's last byte (408 after it).
    pub body_timeout: crate::time::Dur,
    /// A keep-alive connection with no request in flight is closed after
    /// this (Alertmanager reconnects at once).
    pub idle_timeout: crate::time::Dur,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 512,
            max_connections_per_peer: 64,
            header_timeout: crate::time::Dur::from_secs(10),
            body_timeout: crate::time::Dur::from_secs(30),
            idle_timeout: crate::time::Dur::from_secs(60),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token: None,
            max_body_bytes: 4 * 1024 * 1024,
            queue: 256,
            public_url: None,
            allowed_hosts: Vec::new(),
            limits: HttpLimits::default(),
            stall_after: crate::time::Dur::from_secs(20),
            console: ConsoleConfig::default(),
        }
    }
}

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

pub(super) fn read_kafka(mut m: MapReader<'_>, k: &mut KafkaConfig, errs: &mut Errors) {
    if let Some(b) = m.bool("enabled", errs) {
        k.enabled = b;
    }
    if let Some(list) = m.str_list("brokers", errs) {
        let brokers: Vec<&str> = list
            .iter()
            .flat_map(|(s, _)| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        for b in &brokers {
            if !b.contains(':') {
                let n = m.node_of("brokers").unwrap_or(m.node());
                m.err(errs, n, "brokers", format!("`{b}` has no port (HOST:PORT)"));
            }
        }
        k.brokers = (!brokers.is_empty()).then(|| brokers.join(","));
        if !k.enabled && k.brokers.is_some() {
            let n = m.node_of("brokers").unwrap_or(m.node());
            m.err(
                errs,
                n,
                "brokers",
                "kafka.enabled is false: remove the brokers or enable Kafka",
            );
        }
    }
    if let Some(list) = m.str_list("topics", errs) {
        k.topics = list.iter().map(|(s, _)| (*s).to_owned()).collect();
        if k.topics.is_empty() {
            let n = m.node_of("topics").unwrap_or(m.node());
            m.err(errs, n, "topics", "at least one topic");
        }
    }
    if let Some(g) = m.str("group", errs) {
        k.group = g.to_owned();
    }
    if let Some(p) = m.str("group_protocol", errs) {
        match p {
            "classic" => k.group_protocol = GroupProtocol::Classic,
            "consumer" => k.group_protocol = GroupProtocol::Consumer,
            other => {
                let n = m.node_of("group_protocol").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "group_protocol",
                    format!("`{other}` is not a group protocol: classic or consumer (KIP-848)"),
                );
            }
        }
    }
    k.dead_letter_topic = m.str("dead_letter_topic", errs).map(str::to_owned);
    if let Some(mut pm) = m.map("properties", errs) {
        for (key, _, v) in pm.take_all() {
            let value = match &v.value {
                Value::Str(s) => Secret::new(s.clone()),
                Value::Int(i) => Secret::new(i.to_string()),
                Value::Bool(b) => Secret::new(b.to_string()),
                Value::Float(f) => Secret::new(f.to_string()),
                // `sasl.password: {env: KAFKA_PASSWORD}` and the like.
                Value::Map(_) => match secret_from_node(&pm, v, key, errs) {
                    Some(s) => s,
                    None => continue,
                },
                _ => {
                    pm.err(
                        errs,
                        v,
                        key,
                        "expected a scalar value, {env: NAME} or {file: PATH}",
                    );
                    continue;
                }
            };
            if matches!(
                key,
                "enable.auto.offset.store" | "group.id" | "bootstrap.servers"
            ) {
                pm.err(errs, v, key, "is set by ripcord (use kafka.group / kafka.brokers; offsets are stored only after journaling)");
                continue;
            }
            if key == "group.protocol" {
                pm.err(errs, v, key, "is set by ripcord: use kafka.group_protocol");
                continue;
            }
            if k.group_protocol == GroupProtocol::Consumer && CLASSIC_ONLY_PROPERTIES.contains(&key)
            {
                pm.err(
                    errs,
                    v,
                    key,
                    "applies to kafka.group_protocol: classic only; with `consumer` the broker sets it (group.consumer.session.timeout.ms, group.consumer.heartbeat.interval.ms, group.consumer.assignors)",
                );
                continue;
            }
            if let Err(why) = check_kafka_property(key, &value) {
                pm.err(errs, v, key, why);
                continue;
            }
            k.properties.push((key.to_owned(), value));
        }
    }
    if let Some(b) = m.bool("warm_up", errs) {
        k.warm_up = b;
    }
    if let Some(n) = m.int("max_batch", 1..=100_000, errs) {
        k.max_batch = n as usize;
    }
    if let Some(n) = m.int("embedded_partitions", 1..=64, errs) {
        k.embedded_partitions = n as i32;
    }
    if let Some(a) = m.str("embedded_listen", errs) {
        match a.parse() {
            Ok(addr) => k.embedded_listen = Some(addr),
            Err(_) => {
                let n = m.node_of("embedded_listen").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "embedded_listen",
                    format!("`{a}` is not an address like 127.0.0.1:9092"),
                );
            }
        }
    }
    if let Some(n) = m.int("warm_up_max_messages", 0..=100_000_000, errs) {
        k.warm_up_max_messages = n as usize;
    }
    m.finish(errs);
}

pub(super) fn read_http(mut m: MapReader<'_>, h: &mut HttpConfig, errs: &mut Errors) {
    if let Some(l) = m.str("listen", errs) {
        match l.parse::<SocketAddr>() {
            Ok(a) => h.listen = a,
            Err(_) => {
                let n = m.node_of("listen").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "listen",
                    format!("`{l}` is not an address like 127.0.0.1:9464 or 0.0.0.0:9464"),
                );
            }
        }
    }
    h.token = read_secret(&mut m, "token", errs);
    if let Some(n) = m.int("max_body_bytes", 1024..=256 * 1024 * 1024, errs) {
        h.max_body_bytes = n as usize;
    }
    if let Some(n) = m.int("queue", 1..=1_000_000, errs) {
        h.queue = n as usize;
    }
    h.public_url = m
        .str("public_url", errs)
        .map(|s| s.trim_end_matches('/').to_owned());
    if let Some(u) = &h.public_url {
        if crate::console::host::authority_of(u).is_none() {
            let n = m.node_of("public_url").unwrap_or(m.node());
            m.err(
                errs,
                n,
                "public_url",
                format!("`{u}` is not a URL like https://ripcord.example.com"),
            );
        }
    }
    if let Some(list) = m.str_list("allowed_hosts", errs) {
        for (host, node) in list {
            match crate::console::host::Allowed::parse(host) {
                Some(_) => h.allowed_hosts.push(host.to_ascii_lowercase()),
                None => m.err(
                    errs,
                    node,
                    "allowed_hosts",
                    format!("`{host}` is not a host name or host:port (no scheme, no path)"),
                ),
            }
        }
    }
    use crate::time::Dur;
    let l = &mut h.limits;
    if let Some(n) = m.int("max_connections", 8..=1_000_000, errs) {
        l.max_connections = n as usize;
    }
    if let Some(n) = m.int("max_connections_per_peer", 1..=1_000_000, errs) {
        l.max_connections_per_peer = n as usize;
    }
    if let Some(d) = m.dur(
        "header_timeout",
        Dur::from_secs(1)..=Dur::from_mins(10),
        errs,
    ) {
        l.header_timeout = d;
    }
    if let Some(d) = m.dur("body_timeout", Dur::from_secs(1)..=Dur::from_mins(10), errs) {
        l.body_timeout = d;
    }
    if let Some(d) = m.dur("idle_timeout", Dur::from_secs(1)..=Dur::from_mins(60), errs) {
        l.idle_timeout = d;
    }
    if let Some(d) = m.dur("stall_after", Dur::from_secs(1)..=Dur::from_mins(60), errs) {
        h.stall_after = d;
    }
    if let Some(c) = m.map("console", errs) {
        read_console(c, &mut h.console, errs);
    }
    m.finish(errs);
}

fn read_console(mut m: MapReader<'_>, c: &mut ConsoleConfig, errs: &mut Errors) {
    c.read_token = read_secret(&mut m, "read_token", errs);
    if let Some(h) = m.str("trusted_user_header", errs) {
        let n = m.node_of("trusted_user_header").unwrap_or(m.node());
        match axum::http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(_) => c.trusted_user_header = Some(h.to_ascii_lowercase()),
            Err(_) => m.err(
                errs,
                n,
                "trusted_user_header",
                format!("`{h}` is not an HTTP header name"),
            ),
        }
    }
    if let Some(list) = m.str_list("trusted_proxies", errs) {
        for (ip, node) in list {
            match ip.parse::<std::net::IpAddr>() {
                Ok(a) => c.trusted_proxies.push(a),
                Err(_) => m.err(
                    errs,
                    node,
                    "trusted_proxies",
                    format!("`{ip}` is not an IP address"),
                ),
            }
        }
    }
    if let Some(b) = m.bool("open_on_loopback", errs) {
        c.open_on_loopback = b;
    }
    if c.trusted_user_header.is_some() && c.trusted_proxies.is_empty() {
        let n = m.node_of("trusted_user_header").unwrap_or(m.node());
        m.err(
            errs,
            n,
            "trusted_user_header",
            "name the proxy in trusted_proxies: the header is believed only from listed \
             addresses (loopback is not assumed: a proxy on this host, kubectl port-forward \
             and a mesh sidecar all connect from loopback, with whatever header their client sent)",
        );
    }
    m.finish(errs);
}

pub(super) fn read_journal(mut m: MapReader<'_>, j: &mut JournalConfig, errs: &mut Errors) {
    if let Some(p) = m.str("path", errs) {
        j.path = crate::config::relative_to(m.file(), p);
    }
    j.url = read_secret(&mut m, "url", errs);
    if let Some(p) = m.str("ca_file", errs) {
        let path = crate::config::relative_to(m.file(), p);
        let n = m.node_of("ca_file").unwrap_or(m.node());
        if j.url.is_none() {
            m.err(errs, n, "ca_file", "is for PostgreSQL: give `url` too");
        } else if let Err(e) = std::fs::metadata(&path) {
            m.err(errs, n, "ca_file", format!("{}: {e}", path.display()));
        }
        j.ca_file = Some(path);
    }
    if let Some(url) = j.url.as_ref().filter(|u| !u.is_unresolved()) {
        let n = m.node_of("url").unwrap_or(m.node());
        if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) {
            m.err(
                errs,
                n,
                "url",
                "expected postgres://user@host:5432/database (the value is a secret and not shown)",
            );
        } else if let Err(e) = url.expose().parse::<tokio_postgres::Config>() {
            m.err(
                errs,
                n,
                "url",
                format!(
                    "is not a PostgreSQL connection string: {}",
                    crate::journal::postgres::scrub(&e.to_string(), url.expose())
                ),
            );
        }
        if m.has("path") {
            let n = m.node_of("path").unwrap_or(m.node());
            m.err(
                errs,
                n,
                "path",
                "give `url` (PostgreSQL) or `path` (SQLite), not both",
            );
        }
    }
    m.finish(errs);
}

/// Keys whose values are credentials: librdkafka's complaint about them
/// is not repeated (it quotes the value).
fn is_sensitive_kafka_property(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || matches!(key, "ssl.key.pem" | "sasl.oauthbearer.config")
}

/// Asks librdkafka itself whether it knows the property and takes the
/// value (names are checked, and so are features this build lacks, such as
/// `security.protocol: sasl_ssl` without TLS), so `ripcord check` catches
/// it rather than the first start.
fn check_kafka_property(key: &str, value: &Secret) -> Result<(), String> {
    let mut c = rdkafka::ClientConfig::new();
    c.set(key, value.expose());
    match c.create_native_config() {
        Ok(_) => Ok(()),
        Err(_) if is_sensitive_kafka_property(key) => {
            Err("librdkafka rejects this value (not shown: it is a credential)".to_owned())
        }
        Err(rdkafka::error::KafkaError::ClientConfig(_, desc, _, _)) => {
            Err(format!("librdkafka rejects it: {desc}"))
        }
        Err(e) => Err(format!("librdkafka rejects it: {e}")),
    }
}

pub(super) fn read_log(mut m: MapReader<'_>, l: &mut LogConfig, errs: &mut Errors) {
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

pub(super) fn read_shutdown(mut m: MapReader<'_>, grace: &mut Dur, errs: &mut Errors) {
    if let Some(d) = m.dur("grace", Dur::from_secs(1)..=Dur::from_mins(10), errs) {
        *grace = d;
    }
    m.finish(errs);
}
