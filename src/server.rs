//! The HTTP server: ripcord's own accept loop around hyper, so hostile or
//! broken clients cannot hold what the responder needs.
//!
//! - At most `max_connections` at once (kept under the process's file
//!   limit minus a reserve for executors, the journal and Kafka); past it a
//!   new connection gets `503` with `Retry-After` and is closed.
//! - A request's headers must arrive within `header_timeout` of its first
//!   byte, its body within `body_timeout` (408 after it); a keep-alive
//!   connection with nothing in flight is closed after `idle_timeout`.
//! - Out of file descriptors, accept backs off instead of spinning.
//! - Shutdown: stop accepting, let requests in flight finish (bounded by
//!   the caller's grace).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::HttpLimits;

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

/// Serves `app` on `listener` until `shutdown` turns true, then waits for
/// requests in flight (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            conns.spawn(refuse(stream));
            continue;
        };
        let app = app.clone();
        let stop = shutdown.clone();
        conns.spawn(async move {
            serve_one(stream, peer, app, limits, stop).await;
            drop(slot);
        });
    }
    while conns.join_next().await.is_some() {}
}

/// Past the connection cap: a short 503 and close, without reading.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 43\r\nConnection: close\r\n\r\n{\"error\":\"too many connections; retry\"}\r\n\r\n",
        ),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// Where a connection is: idle between requests, reading a request's
/// head, or with a request in flight.
const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// A connection's phase and since when (ms since `epoch`), shared by its
/// reader (first byte of a head), its service (request in flight) and its
/// watchdog.
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
            HEAD if age > limits.header_timeout.to_std() => Some("headers"),
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
        if buf.filled().len() > before && self.phase.phase.load(Ordering::Relaxed) == IDLE {
            self.phase.set(HEAD);
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
    mut shutdown: watch::Receiver<bool>,
) {
    let phase = Arc::new(Phase {
        epoch: Instant::now(),
        phase: AtomicU8::new(IDLE),
        since_ms: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
    });
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
