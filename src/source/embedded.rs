//! The embedded Kafka broker: librdkafka's mock cluster, for a responder
//! run without a Kafka of its own (a laptop, a demo, a drill).
//!
//! The mock cluster listens on a port of its own choosing. So that
//! `kcat -b 127.0.0.1:9092` works as the README says, a small forwarder
//! takes bootstrap connections on a fixed address (127.0.0.1:9092 unless
//! told otherwise) and hands them to the mock broker; the broker's metadata
//! then sends clients to its own port on the same host.

use std::net::SocketAddr;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot start the embedded Kafka broker: {0}")]
    Broker(#[from] rdkafka::error::KafkaError),
    #[error("cannot listen for Kafka clients on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct EmbeddedBroker {
    _mock: MockCluster<'static, DefaultProducerContext>,
    /// What clients bootstrap from (the forwarder).
    pub listen: SocketAddr,
    /// The mock broker itself (what ripcord's own clients use).
    pub direct: String,
    forwarder: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl EmbeddedBroker {
    /// Starts the broker with `topics`, then the forwarder on `listen`. If
    /// `listen` is the default address and it is taken (a local Kafka, a
    /// second ripcord), any free port is taken instead; the caller prints
    /// which. An address asked for explicitly must be free.
    pub async fn start(
        topics: &[String],
        partitions: i32,
        listen: SocketAddr,
        must: bool,
    ) -> Result<EmbeddedBroker, EmbeddedError> {
        let mock = MockCluster::new(1)?;
        for t in topics {
            mock.create_topic(t, partitions, 1)?;
        }
        let direct = mock.bootstrap_servers();
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) if !must && e.kind() == std::io::ErrorKind::AddrInUse => {
                let any = SocketAddr::new(listen.ip(), 0);
                TcpListener::bind(any)
                    .await
                    .map_err(|source| EmbeddedError::Listen { addr: any, source })?
            }
            Err(source) => {
                return Err(EmbeddedError::Listen {
                    addr: listen,
                    source,
                });
            }
        };
        let bound = listener
            .local_addr()
            .map_err(|source| EmbeddedError::Listen {
                addr: listen,
                source,
            })?;
        let (stop, stopped) = watch::channel(false);
        let forwarder = tokio::spawn(forward(listener, direct.clone(), stopped));
        Ok(EmbeddedBroker {
            _mock: mock,
            listen: bound,
            direct,
            forwarder,
            stop,
        })
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.forwarder.abort();
    }
}

/// Accepts bootstrap connections and pipes each to the mock broker, until
/// `stop`.
async fn forward(listener: TcpListener, to: String, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((mut client, _)) = accepted else {
            // Out of descriptors, say: a moment later may do.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let to = to.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut broker) = TcpStream::connect(&to).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}
