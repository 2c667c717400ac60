//! The `kafka:` section: where events come from, read and checked here
//! beside the source that uses it (librdkafka itself is asked whether it
//! knows each extra property).

use crate::config::error::Errors;
use crate::config::secret::{Secret, secret_from_node};
use crate::config::yaml::{MapReader, Value};

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

pub fn read_kafka(mut m: MapReader<'_>, k: &mut KafkaConfig, errs: &mut Errors) {
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
