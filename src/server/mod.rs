//! The HTTP server: ripcord's own accept loop around hyper, so hostile or
//! broken clients cannot hold what the responder needs.
//!
//! - At most `max_connections` at once (kept under the process's file
//!   limit minus a reserve for executors, the journal and Kafka), and at
//!   most `max_connections_per_peer` from one address (an IPv6 /64 is one).
//! - At the cap a new connection still gets in when an idle one can make
//!   room: the one silent longest since it was accepted (it never sent a
//!   byte), else the keep-alive connection idle longest, is closed for it.
//!   Only when every connection has a request in flight (or its head half
//!   sent) does a newcomer get `503` with `Retry-After`. A client that
//!   sends its request when it connects (Alertmanager, a phone) always gets
//!   in, however many connections others hold open and silent.
//! - A connection's first request head must arrive within `header_timeout`
//!   of the accept (a silent connection is gone then), later heads within
//!   `header_timeout` of their first byte; a body within `body_timeout`
//!   (408 after it); a keep-alive connection with nothing in flight is
//!   closed after `idle_timeout`.
//! - Out of file descriptors, accept backs off instead of spinning.
//! - Shutdown: stop accepting, let requests in flight finish (bounded by
//!   the caller's grace).

pub mod config;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use config::HttpLimits;

/// File descriptors kept free for everything but HTTP clients: executors
/// (a rollback script's pipes), the journal, Kafka, channel sends.
pub const FD_RESERVE: u64 = 256;

/// Raises the soft open-file limit to the hard one (a service's limit is
/// often 1024 soft, far more hard) and returns how many connections fit
/// under it with [`FD_RESERVE`] to spare.
pub fn connection_cap(wanted: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    };
    let room = soft.saturating_sub(FD_RESERVE).max(8);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Every open connection: its peer, its phase, how to close it.
#[derive(Default)]
struct Registry {
    conns: std::collections::HashMap<u64, Entry>,
    per_peer: std::collections::HashMap<IpAddr, usize>,
    next_id: u64,
}

struct Entry {
    peer: IpAddr,
    phase: Arc<Phase>,
    close: Arc<Notify>,
}

/// The registry, locked only for bookkeeping (never across an await).
type Shared = Arc<Mutex<Registry>>;

impl Registry {
    /// An idle connection to close for a newcomer: silent since accept
    /// first (oldest first), then idle between requests (longest first).
    fn idlest(&self) -> Option<u64> {
        self.conns
            .iter()
            .filter_map(|(id, e)| {
                let since = e.phase.since_ms.load(Ordering::Relaxed);
                match e.phase.phase.load(Ordering::Relaxed) {
                    SILENT => Some(((0u8, since), *id)),
                    IDLE => Some(((1u8, since), *id)),
                    _ => None,
                }
            })
            .min()
            .map(|(_, id)| id)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let std::collections::hash_map::Entry::Occupied(mut n) = self.per_peer.entry(e.peer) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
        Some(e)
    }
}

/// Takes a connection out of the registry when its task ends.
struct Registered {
    id: u64,
    registry: Shared,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.id);
    }
}

/// The address a peer's connections are counted under: IPv4 as it is, an
/// IPv6 address by its /64.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then waits for
/// requests in flight (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let registry: Shared = Default::default();
    let epoch = Instant::now();
    let max_connections = max_connections.max(1);
    let per_peer = limits.max_connections_per_peer.max(1);
    let mut conns = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(c) => {
                backoff = Duration::from_millis(5);
                c
            }
            Err(e) => {
                // EMFILE / ENFILE: wait for connections to close rather
                // than spin; the reserve keeps executors going meanwhile.
                tracing::warn!(error = %e, retry_in = ?backoff, "accepting a connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let phase = Arc::new(Phase {
            epoch,
            phase: AtomicU8::new(SILENT),
            since_ms: AtomicU64::new(epoch.elapsed().as_millis() as u64),
            in_flight: AtomicU64::new(0),
        });
        let close = Arc::new(Notify::new());
        let key = peer_key(peer.ip());
        let admitted = {
            let mut r = registry.lock().unwrap_or_else(|e| e.into_inner());
            let from_peer = r.per_peer.get(&key).copied().unwrap_or(0);
            let room = if from_peer >= per_peer {
                Err("too many connections from your address")
            } else if r.conns.len() < max_connections {
                Ok(())
            } else if let Some(victim) = r.idlest() {
                // Room made by the idlest: closed at once, counted out now.
                if let Some(e) = r.remove(victim) {
                    e.close.notify_one();
                }
                Ok(())
            } else {
                Err("too many connections")
            };
            room.map(|()| {
                let id = r.next_id;
                r.next_id += 1;
                r.conns.insert(
                    id,
                    Entry {
                        peer: key,
                        phase: phase.clone(),
                        close: close.clone(),
                    },
                );
                *r.per_peer.entry(key).or_insert(0) += 1;
                Registered {
                    id,
                    registry: registry.clone(),
                }
            })
        };
        let registered = match admitted {
            Ok(r) => r,
            Err(why) => {
                tracing::debug!(%peer, why, "connection refused");
                conns.spawn(refuse(stream, why));
                continue;
            }
        };
        let app = app.clone();
        let stop = shutdown.clone();
        conns.spawn(async move {
            serve_one(stream, peer, app, limits, phase, close, stop).await;
            drop(registered);
        });
    }
    while conns.join_next().await.is_some() {}
}

/// Past a connection cap: a short 503 and close, without reading.
async fn refuse(mut stream: TcpStream, why: &'static str) {
    let body = format!("{{\"error\":\"{why}; retry\"}}\r\n");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await
    })
    .await;
    let _ = stream.shutdown().await;
}

/// Where a connection is: accepted and silent so far, idle between
/// requests, reading a request's head, or with a request in flight.
const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;
const SILENT: u8 = 3;

/// A connection's phase and since when (ms since the server's `epoch`, one
/// clock for every connection), shared by its reader (first byte of a
/// head), its service (request in flight), its watchdog and the accept
/// loop (which closes the idlest for a newcomer at the cap).
struct Phase {
    epoch: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
    in_flight: AtomicU64,
}

impl Phase {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn set(&self, p: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(p, Ordering::Relaxed);
    }

    /// How long the connection has been in its phase, if that is too long.
    fn overdue(&self, limits: &HttpLimits) -> Option<&'static str> {
        let age = Duration::from_millis(self.now_ms() - self.since_ms.load(Ordering::Relaxed));
        match self.phase.load(Ordering::Relaxed) {
            IDLE if age > limits.idle_timeout.to_std() => Some("idle"),
            HEAD | SILENT if age > limits.header_timeout.to_std() => Some("headers"),
            _ => None,
        }
    }
}

/// The socket, noting the first byte a head arrives with.
struct Watched {
    inner: TcpStream,
    phase: Arc<Phase>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            match self.phase.phase.load(Ordering::Relaxed) {
                IDLE => self.phase.set(HEAD),
                // The first head's deadline runs from the accept.
                SILENT => self.phase.phase.store(HEAD, Ordering::Relaxed),
                _ => {}
            }
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: HttpLimits,
    phase: Arc<Phase>,
    close: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Watched {
        inner: stream,
        phase: phase.clone(),
    });
    let tracked = phase.clone();
    let service = tower::service_fn(move |mut req: axum::extract::Request| {
        let tracked = tracked.clone();
        let mut app = app.clone();
        // Who is on the other end: the console opens reading to loopback
        // peers and believes a user header only from trusted proxies.
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        async move {
            tracked.in_flight.fetch_add(1, Ordering::Relaxed);
            tracked.set(BUSY);
            let out = tower::Service::call(&mut app, req).await;
            if tracked.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
                tracked.set(IDLE);
            }
            out
        }
    });
    let body_timeout = limits.body_timeout.to_std();
    let service = tower::ServiceBuilder::new()
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .map_request(|req: hyper::Request<_>| req.map(axum::body::Body::new))
        .service(service);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The watchdog times heads from their first byte; hyper's own
        // header timer would also run while the connection is idle.
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let stopping = tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = tick.tick() => {
                if let Some(what) = phase.overdue(&limits) {
                    tracing::debug!(%peer, waited_for = what, "closing a connection that took too long");
                    return;
                }
                false
            }
            // Closed to make room for a newcomer: it was idle or silent.
            _ = close.notified() => {
                tracing::debug!(%peer, "closing an idle connection to make room");
                return;
            }
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if stopping {
            // Finish what is in flight, take no new request.
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
            return;
        }
    }
}
