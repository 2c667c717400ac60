//! The `http:` section: where ripcord listens, its token, what a client
//! may hold of the server, and how people reach it (`http.console` is the
//! console's own, read by [`crate::console::host::read_config`]).

use std::net::SocketAddr;

use crate::config::error::Errors;
use crate::config::secret::{Secret, read_secret};
use crate::config::yaml::MapReader;
use crate::console::host::ConsoleConfig;

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

pub fn read_config(mut m: MapReader<'_>, h: &mut HttpConfig, errs: &mut Errors) {
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
        crate::console::host::read_config(c, &mut h.console, errs);
    }
    m.finish(errs);
}
