//! The HTTP API: a router over an injected [`Backend`], so tests drive it without sockets
//! (and without sampling) and the daemon serves it with axum on tokio.
//!
//! Every handler that reads files, merges profiles or renders runs on tokio's blocking pool;
//! the sampling thread is never waited on except for a scrape's start and end.
//!
//! Any local user can reach the API, so what one request may cost is bounded: at most
//! [`Limits::taps`] scrapes and [`Limits::long_queries`] long range queries run at once (503
//! with `Retry-After` beyond), and one query reads at most
//! [`MAX_WINDOWS`](params::MAX_WINDOWS) windows and [`MAX_QUERY_BYTES`] of them. Requests
//! naming a host other than an IP address or `localhost` are refused (DNS rebinding), and no
//! answer may be sniffed into another type.
//!
//! This module owns the router and what every request goes through: the [`Backend`] it
//! answers from, the shared `AppState`, the Host check of `guard` and the [`ApiError`]
//! every refusal is. The rest is split by what it does:
//!
//! * `params`: reading a query string (parameters, selection, pid, comm, view) and the
//!   bounds on what one request may ask ([`Limits`], `MAX_WINDOWS`, [`MAX_QUERY_BYTES`]);
//! * `handlers`: the endpoints served here (`/`, `/healthz`, `/metrics`, the scrape, the
//!   profile), the export helpers and the permits that bound concurrent work. The JSON API
//!   (`api`) and the page (`page`) live beside this module and use the same helpers.

mod handlers;
mod params;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sprof_core::SymbolizedProfile;
use tokio::sync::{oneshot, watch, Semaphore};

use super::query::{QueryError, Selection, Sources, Viewer};
use super::sampling::StackFilter;
use super::summary::SummaryCache;
use handlers::{healthz, metrics, page, profile, scrape};

// The JSON API (api.rs) reaches these as `super::http::...`, as when http was one file.
pub(super) use handlers::{blocking, counted, title, with_sources, with_summaries};
pub(super) use params::{params, selection, view, viewer_of, ViewerExt};
pub use params::{Limits, MAX_QUERY_BYTES};

/// What the API needs from the daemon.
pub trait Backend: Send + Sync + 'static {
    /// Sampling runs, or why not (one line).
    fn health(&self) -> Result<(), String>;
    /// Stored windows and live slices for a selection, refused beyond `max_windows` windows
    /// or `max_bytes` of them.
    fn sources(
        &self,
        sel: &Selection,
        max_windows: usize,
        max_bytes: u64,
    ) -> Result<Sources, QueryError>;
    /// A window file could not be read: move it aside (and count it).
    fn quarantine(&self, path: &std::path::Path, reason: &str);
    /// Starts collecting samples for a scrape; `None` if sampling has stopped.
    fn open_tap(&self, keep: StackFilter) -> Option<oneshot::Receiver<u64>>;
    fn close_tap(&self, id: u64) -> Option<oneshot::Receiver<SymbolizedProfile>>;
    fn metrics(&self) -> String;
    /// The per-process metrics a reader may see (processes' memory), to go before the end
    /// of [`Backend::metrics`].
    fn process_metrics(&self, _viewer: Viewer) -> String {
        String::new()
    }
    /// What is sampled, for the page.
    fn describe(&self) -> String;
    /// Counts an answered request.
    fn count(&self, status: StatusCode);
    /// Counts a request refused because too many of its kind were running.
    fn count_busy(&self) {}
}

/// What a 503 for a busy daemon asks the client to wait, in seconds.
const RETRY_AFTER: &str = "5";

#[derive(Clone)]
pub(super) struct AppState {
    pub(super) backend: Arc<dyn Backend>,
    /// What each stored window holds by process, for the timeline and the process list.
    summaries: Arc<SummaryCache>,
    /// Turns true when the daemon shuts down: scrapes in progress answer at once.
    shutdown: watch::Receiver<bool>,
    limits: Limits,
    taps: Arc<Semaphore>,
    long_queries: Arc<Semaphore>,
    queries: Arc<Semaphore>,
}

/// The API's router, answering from (and filling) `summaries`.
pub fn router_with(
    backend: Arc<dyn Backend>,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
    summaries: Arc<SummaryCache>,
) -> Router {
    let state = AppState {
        backend,
        shutdown,
        limits,
        summaries,
        taps: Arc::new(Semaphore::new(limits.taps)),
        long_queries: Arc::new(Semaphore::new(limits.long_queries)),
        queries: Arc::new(Semaphore::new(limits.queries)),
    };
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/debug/pprof/profile", get(scrape))
        .route("/api/v1/profile", get(profile))
        .route("/api/v1/processes", get(super::api::processes))
        .route("/api/v1/timeline", get(super::api::timeline))
        .route("/api/v1/diff", get(super::api::diff))
        .route("/favicon.ico", get(super::page::favicon))
        .route("/favicon.svg", get(super::page::favicon))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Every request: refused unless it names this daemon by an IP address or `localhost`
/// (DNS rebinding: a web page whose name an attacker points at 127.0.0.1 would otherwise
/// read the API from a browser on this host), and never sniffed into another type.
async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = match foreign_host(&req) {
        Some(host) => {
            let r = ApiError(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {:?} is not this daemon's address: use an IP address or localhost (names are refused against DNS rebinding)",
                    host.chars().take(64).collect::<String>()
                ),
            )
            .into_response();
            s.backend.count(r.status());
            r
        }
        None => next.run(req).await,
    };
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The host a request names (its `Host` header, or the authority of an absolute URI) if
/// that is neither an IP address nor `localhost`. The port is not checked: a DNS rebinding
/// needs a name, and tunnels (`ssh -L 9000:127.0.0.1:7171`) change the port. A request
/// without a host (HTTP/1.0) is not from a browser, and is answered.
fn foreign_host(req: &Request) -> Option<String> {
    let named = req.uri().authority().map(|a| {
        a.as_str()
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_string()
    });
    let header = req
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    [named, header]
        .into_iter()
        .flatten()
        .find(|host| !local_host(host))
}

/// `127.0.0.1:7171`, `localhost`, `[::1]:7171`, `10.1.2.3`: an address, not a name.
fn local_host(host: &str) -> bool {
    let name = if let Some(v6) = host.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, rest)) if rest.is_empty() || rest.starts_with(':') => {
                return addr.parse::<std::net::Ipv6Addr>().is_ok() && port_ok(rest)
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => {
                if !port_ok(&format!(":{port}")) {
                    return false;
                }
                name
            }
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Empty, or `:` and a port number.
fn port_ok(rest: &str) -> bool {
    rest.is_empty()
        || rest
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A request the API refuses: its status and a one-line reason.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }

    /// The same error, its reason prefixed (`from: …` becomes `base_from: …`).
    pub(super) fn prefixed(self, prefix: &str) -> ApiError {
        ApiError(self.0, format!("{prefix}{}", self.1))
    }

    pub(super) fn bad(reason: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, reason.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("error: {}\n", self.1),
        )
            .into_response();
        // Busy, or sampling restarting: worth trying again soon.
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
        }
        r
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} (see / for the page, /api/v1/profile, /api/v1/processes, /api/v1/timeline, /api/v1/diff, /debug/pprof/profile, /metrics, /healthz)",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed: the API answers GET only"),
    )
}
