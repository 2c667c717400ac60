//! Sources: where events come from. Kafka ([`kafka`]) is the main feed;
//! the HTTP receiver ([`http`]) takes Alertmanager's webhook and events
//! posted directly. Both hand bytes to the [`crate::pipeline`].

pub mod embedded;
pub mod forward;
pub mod http;
pub mod kafka;
pub mod kafka_client;
pub mod kafka_config;
pub mod kafka_history;
pub mod kafka_shards;
