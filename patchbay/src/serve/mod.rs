//! The devtools web view: `patchbay serve DIR...` serves run directories
//! (lab outdirs, `bench --out` directories, a test's kept outdir; see
//! `docs/artifacts.md`) to a page embedded in the binary (no CDN, works
//! offline). See `docs/devtools.md`.
//!
//! The server only reads: it lists the served directories, returns their
//! files, and windows `events.jsonl` and the per-node logs by virtual time
//! (so a 100k-event run ships only what the visible window shows). It binds
//! 127.0.0.1 unless another address is asked for, answers only requests
//! whose `Host` is that address or `localhost` when bound to loopback (no
//! DNS rebinding), and refuses any path that leaves a served directory
//! (`..`, absolute paths, symlinks pointing outside).
//!
//! Needs no privileges and no kernel features.
//!
//! ```no_run
//! # async fn demo() -> Result<(), patchbay::serve::ServeError> {
//! use patchbay::serve::{ServeOpts, Server};
//! let server = Server::bind(ServeOpts::new(vec!["target/patchbay-bench".into()])).await?;
//! println!("open http://{}/", server.local_addr());
//! server.run().await
//! # }
//! ```

mod api;
mod compare;
mod dirs;
mod events;
mod logs;
mod qlog;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use dirs::Served;

/// Errors of the devtools server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A directory to serve does not exist or cannot be read.
    #[error(
        "cannot serve {path}: {source} (pass a run directory: a lab outdir or a `bench --out` directory)"
    )]
    Dir {
        /// The directory as given.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Nothing to serve.
    #[error("no directory to serve: pass at least one run directory")]
    NoDirs,
    /// Binding the listening socket failed.
    #[error(
        "cannot listen on {addr}: {source} (pick another --port, or --port 0 for any free port)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("serving failed: {0}")]
    Io(#[source] std::io::Error),
}

/// What to serve and where.
#[derive(Debug, Clone)]
pub struct ServeOpts {
    /// The run directories, in the page's order.
    pub dirs: Vec<PathBuf>,
    /// Listening address; 127.0.0.1:8717 by default. Any non-loopback
    /// address exposes the directories to the network: ask for it only on
    /// purpose.
    pub addr: SocketAddr,
}

impl ServeOpts {
    /// Serve `dirs` on 127.0.0.1:8717.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        ServeOpts {
            dirs,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8717),
        }
    }
}

/// A bound devtools server; [`Server::run`] serves until the task is dropped.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<Served>,
}

impl Server {
    /// Opens the directories and binds the listening socket.
    pub async fn bind(opts: ServeOpts) -> Result<Server, ServeError> {
        if opts.dirs.is_empty() {
            return Err(ServeError::NoDirs);
        }
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: opts.addr,
                source,
            })?;
        let local = listener.local_addr().map_err(ServeError::Io)?;
        let state = Arc::new(Served::open(&opts.dirs, local)?);
        Ok(Server { listener, state })
    }

    /// The address the server listens on (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// Serves requests until the future is dropped.
    pub async fn run(self) -> Result<(), ServeError> {
        axum::serve(self.listener, router(self.state))
            .await
            .map_err(ServeError::Io)
    }
}

/// The page: every file of `web/`, compiled in.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        include_str!("web/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "/app.js",
        include_str!("web/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/draw.js",
        include_str!("web/draw.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/topo.js",
        include_str!("web/topo.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/logs.js",
        include_str!("web/logs.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/app.css",
        include_str!("web/app.css"),
        "text/css; charset=utf-8",
    ),
];

fn router(state: Arc<Served>) -> Router {
    let mut r = Router::new();
    for &(path, body, ty) in ASSETS {
        r = r.route(
            path,
            get(move || async move { ([(header::CONTENT_TYPE, ty)], body) }),
        );
    }
    r.merge(api::routes())
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Refuses requests for another host when bound to loopback (a page on
/// another site could otherwise reach the server through DNS rebinding),
/// and marks every answer as not cacheable (a live run changes).
async fn guard(State(s): State<Arc<Served>>, req: Request, next: Next) -> Response {
    if s.addr.ip().is_loopback() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !host_is_local(host) {
            return (
                StatusCode::FORBIDDEN,
                format!("host {host:?} refused: use http://{}/", s.addr),
            )
                .into_response();
        }
    }
    let mut r = next.run(req).await;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Whether a `Host` header names this machine's loopback.
fn host_is_local(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        for ok in ["127.0.0.1:8717", "localhost:1", "[::1]:80", "localhost"] {
            assert!(host_is_local(ok), "{ok}");
        }
        for bad in ["evil.example:8717", "10.0.0.1:8717", "", "[fe80::1]:80"] {
            assert!(!host_is_local(bad), "{bad}");
        }
    }
}
