//! `ripcord mock-broker`: librdkafka's mock cluster on a port, for trying ripcord out.

use std::io;
use std::process::ExitCode;

use anyhow::{Context, Result};

pub fn mock_broker(topics: &[String], partitions: i32) -> Result<ExitCode> {
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
