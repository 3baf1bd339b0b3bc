//! The HTTP API: a router over an injected [`Backend`], so tests drive it without sockets
//! (and without sampling) and the daemon serves it with axum on tokio.
//!
//! Every handler that reads files, merges profiles or renders runs on tokio's blocking pool;
//! the sampling thread is never waited on except for a scrape's start and end.
//!
//! Any local user can reach the API, so what one request may cost is bounded: at most
//! [`Limits::taps`] scrapes and [`Limits::long_queries`] long range queries run at once (503
//! with `Retry-After` beyond), and one query reads at most [`MAX_WINDOWS`] windows and
//! [`MAX_QUERY_BYTES`] of them. Requests naming a host other than an IP address or
//! `localhost` are refused (DNS rebinding), and no answer may be sniffed into another type.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flamegraph_out::{ExportOptions, Exporter, OutputFormat};
use sprof_core::{PythonView, SymbolizedProfile};
use sprof_store::{parse_time, unix_millis};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::config::compile_comm;
use super::query::{self, QueryError, Selection, Sources, Viewer};
use super::sampling::StackFilter;
use super::summary::{Filled, SummaryCache};

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

/// Longest query string accepted.
const MAX_QUERY: usize = 4096;
/// Most stored windows one request reads (a day of 10 s windows).
pub const MAX_WINDOWS: usize = 8640;
/// Most bytes of stored windows one request reads: reading and merging costs about 40 ms
/// of CPU per MiB (the review's day of 48 KiB windows, 405 MiB, took 16 s and 166 MB), so
/// this keeps one query to a few seconds. Longer ranges: `sprofd report`.
pub const MAX_QUERY_BYTES: u64 = 64 << 20;

/// How many costly requests run at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Scrapes (`/debug/pprof/profile`) open at once: each holds a merged profile for up to
    /// 300 s and costs the sampling thread a merge per slice.
    pub taps: usize,
    /// Range queries over more than `long_windows` windows (or 8 MiB of them) at once.
    pub long_queries: usize,
    pub long_windows: usize,
    /// Range queries of any length at once: many short ones (each up to a few hundred ms
    /// of CPU, going on after their client left) must not fill the blocking pool either.
    pub queries: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            taps: 16,
            // Two cores and MemoryMax=256M in the unit: two long merges at once at most.
            long_queries: 2,
            // An hour of 10 s windows.
            long_windows: 360,
            queries: 16,
        }
    }
}

/// Bytes of windows beyond which a query counts as long whatever its window count.
const LONG_QUERY_BYTES: u64 = 8 << 20;
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

/// Query parameters, each at most once, only the allowed ones.
pub(super) fn params(
    raw: Option<String>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let raw = raw.unwrap_or_default();
    if raw.len() > MAX_QUERY {
        return Err(ApiError(
            StatusCode::URI_TOO_LONG,
            format!("query string longer than {MAX_QUERY} bytes"),
        ));
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(&raw).map_err(|_| ApiError::bad("malformed query string"))?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad(format!(
                "unknown parameter {:?} (accepted: {})",
                k.chars().take(64).collect::<String>(),
                allowed.join(", ")
            )));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::bad(format!("parameter {k:?} given twice")));
        }
    }
    Ok(out)
}

/// The selection of `from`, `to`, `pid`, `comm`, with the defaults `from=-10m`, `to=now`.
/// Whose processes the request may see: what the server found out of its connection's
/// peer (see `server::Visibility`); every process for a request that did not come through
/// it (the router's tests).
pub(super) type ViewerExt = Option<axum::Extension<Viewer>>;

pub(super) fn viewer_of(v: ViewerExt) -> Viewer {
    v.map_or(Viewer::All, |axum::Extension(v)| v)
}

pub(super) fn selection(
    p: &HashMap<String, String>,
    default_from: &str,
    viewer: Viewer,
) -> Result<Selection, ApiError> {
    let now = SystemTime::now();
    let time = |key: &str, default: &str| {
        let text = p.get(key).map_or(default, String::as_str);
        parse_time(text, now).map_err(|e| ApiError::bad(format!("{key}: {e}")))
    };
    let (from, to) = (time("from", default_from)?, time("to", "now")?);
    if from > to {
        return Err(ApiError::bad("from is after to (the range is reversed)"));
    }
    Ok(Selection {
        from_ms: unix_millis(from),
        to_ms: unix_millis(to),
        pid: pid(p)?,
        comm: comm(p)?,
        viewer,
    })
}

pub(super) fn pid(p: &HashMap<String, String>) -> Result<Option<u32>, ApiError> {
    match p.get("pid") {
        None => Ok(None),
        Some(v) => match v.parse::<u32>() {
            Ok(pid) if pid > 0 && pid <= 1 << 22 => Ok(Some(pid)),
            _ => Err(ApiError::bad(format!(
                "pid: {:?} is not a process id",
                v.chars().take(32).collect::<String>()
            ))),
        },
    }
}

pub(super) fn comm(p: &HashMap<String, String>) -> Result<Option<regex::Regex>, ApiError> {
    match p.get("comm").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(re) if re.len() > 256 => Err(ApiError::bad(
            "comm: regular expression longer than 256 bytes",
        )),
        Some(re) => compile_comm(re)
            .map(Some)
            .map_err(|e| ApiError::bad(format!("comm: invalid regular expression: {e}"))),
    }
}

pub(super) fn view(p: &HashMap<String, String>) -> Result<PythonView, ApiError> {
    match p.get("view").map(String::as_str) {
        None | Some("python") => Ok(PythonView::Python),
        Some("mixed") => Ok(PythonView::Mixed),
        Some("native") => Ok(PythonView::Native),
        Some(v) => Err(ApiError::bad(format!(
            "view: {:?} is not python, mixed or native",
            v.chars().take(32).collect::<String>()
        ))),
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()))
}

/// Counts the answer.
pub(super) fn counted(backend: &Arc<dyn Backend>, r: ApiResult) -> Response {
    let response = r.unwrap_or_else(IntoResponse::into_response);
    backend.count(response.status());
    response
}

async fn healthz(State(s): State<AppState>) -> Response {
    let r = match s.backend.health() {
        Ok(()) => Ok("ok\n".into_response()),
        Err(reason) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, reason)),
    };
    counted(&s.backend, r)
}

async fn metrics(State(s): State<AppState>, v: ViewerExt) -> Response {
    let mut text = s.backend.metrics();
    let processes = s.backend.process_metrics(viewer_of(v));
    // The exposition ends with `# EOF`: the processes' families go before it.
    match text.strip_suffix("# EOF\n") {
        Some(body) => text = format!("{body}{processes}# EOF\n"),
        None => text.push_str(&processes),
    }
    counted(
        &s.backend,
        Ok((
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response()),
    )
}

/// `GET /debug/pprof/profile?seconds=N`: the pprof of the next N seconds, as Go's
/// net/http/pprof answers it.
async fn scrape(State(s): State<AppState>, v: ViewerExt, RawQuery(q): RawQuery) -> Response {
    let r = scrape_inner(&s, q, viewer_of(v)).await;
    counted(&s.backend, r)
}

async fn scrape_inner(s: &AppState, q: Option<String>, viewer: Viewer) -> ApiResult {
    let p = params(q, &["seconds", "pid", "comm", "view"])?;
    let seconds = match p.get("seconds") {
        None => 30,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=300).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(format!(
                    "seconds: {:?} is not between 1 and 300",
                    v.chars().take(32).collect::<String>()
                )))
            }
        },
    };
    let sel = Selection {
        pid: pid(&p)?,
        comm: comm(&p)?,
        viewer,
        ..Default::default()
    };
    let view = view(&p)?;
    // Held until the answer is built; dropped with the request if the client goes away.
    let _permit = s.taps.clone().try_acquire_owned().map_err(|_| {
        s.backend.count_busy();
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} scrapes are already running, the most at once; try again when one ends",
                s.limits.taps
            ),
        )
    })?;
    let unavailable = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "sampling has stopped".into(),
        )
    };
    let id = s
        .backend
        .open_tap(Box::new(move |p, st| sel.keeps(p, st)))
        .ok_or_else(unavailable)?
        .await
        .map_err(|_| unavailable())?;
    let mut shutdown = s.shutdown.clone();
    let started = std::time::Instant::now();
    let stopping = async {
        // With nobody left to signal a shutdown, there will be none: just wait.
        if shutdown.wait_for(|&stop| stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        _ = stopping => {}
    }
    let mut profile = s
        .backend
        .close_tap(id)
        .ok_or_else(unavailable)?
        .await
        .map_err(|_| unavailable())?;
    profile.meta.duration_secs = started.elapsed().as_secs_f64();
    let bytes =
        blocking(move || export(profile.with_python_view(view), OutputFormat::Pprof)).await??;
    Ok(with_type(bytes, OutputFormat::Pprof))
}

pub(super) fn export(
    profile: SymbolizedProfile,
    format: OutputFormat,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    format
        .exporter_with(&ExportOptions {
            by_line: false,
            table_rows: Some(200),
            ..Default::default()
        })
        .export(&profile, &mut out)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(out)
}

pub(super) fn with_type(bytes: Vec<u8>, format: OutputFormat) -> Response {
    let (ctype, disposition) = match format {
        OutputFormat::Svg | OutputFormat::Timeline => ("image/svg+xml", None),
        OutputFormat::Folded | OutputFormat::Table | OutputFormat::Lines => {
            ("text/plain; charset=utf-8", None)
        }
        OutputFormat::Pprof => (
            "application/octet-stream",
            Some("attachment; filename=\"profile.pb.gz\""),
        ),
        OutputFormat::Speedscope => ("application/json", None),
        OutputFormat::Heatmap => ("text/html; charset=utf-8", None),
    };
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    if let Some(d) = disposition {
        r.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            header::HeaderValue::from_static(d),
        );
    }
    r
}

/// Reads the sources of a selection on the blocking pool, quarantining unreadable files.
pub(super) async fn with_sources<T: Send + 'static>(
    s: &AppState,
    sel: Selection,
    f: impl FnOnce(&Sources, &Selection) -> (T, Vec<(std::path::PathBuf, String)>) + Send + 'static,
) -> Result<T, ApiError> {
    let backend = s.backend.clone();
    let (limits, long_queries) = (s.limits, s.long_queries.clone());
    // Taken before the work starts and held until it ends, client or no client.
    let any = query_permit(s)?;
    blocking(move || {
        let _any = any;
        let sources = backend
            .sources(&sel, MAX_WINDOWS, MAX_QUERY_BYTES)
            .map_err(|e| ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
        // Held while reading and merging, which goes on even if the client has gone: the
        // permits bound the work, not the waiting.
        let bytes = sources.windows.iter().map(|w| w.bytes).sum();
        let _permit = long_permit(sources.windows.len(), bytes, limits, &long_queries)
            .inspect_err(|_| backend.count_busy())?;
        let (out, bad) = f(&sources, &sel);
        for (path, reason) in bad {
            backend.quarantine(&path, &reason);
        }
        Ok(out)
    })
    .await?
}

/// A permit for any range query, or 503 (counted as busy).
fn query_permit(s: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    s.queries.clone().try_acquire_owned().map_err(|_| {
        s.backend.count_busy();
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} range queries are already running, the most at once; try again soon",
                s.limits.queries
            ),
        )
    })
}

/// A permit if a query reading `windows` windows of `bytes` is long (none needed if it is
/// short), or 503.
fn long_permit(
    windows: usize,
    bytes: u64,
    limits: Limits,
    semaphore: &Arc<Semaphore>,
) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
    if windows <= limits.long_windows && bytes <= LONG_QUERY_BYTES {
        return Ok(None);
    }
    semaphore.clone().try_acquire_owned().map(Some).map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} long range queries (more than {} windows) are already running, the most at once; try again soon or narrow the range",
                limits.long_queries, limits.long_windows
            ),
        )
    })
}

/// The per-window summaries of a selection on the blocking pool: windows summarized
/// before cost nothing; those not yet summarized are read up to [`MAX_QUERY_BYTES`] per
/// query (the rest are counted in [`Filled::missing`]), under the same caps as any query.
pub(super) async fn with_summaries(
    s: &AppState,
    sel: Selection,
) -> Result<(Filled, Selection), ApiError> {
    let backend = s.backend.clone();
    let (limits, long_queries, cache) = (s.limits, s.long_queries.clone(), s.summaries.clone());
    let any = query_permit(s)?;
    blocking(move || {
        let _any = any;
        // Only the window count bounds the listing (the summaries' cache holds as many):
        // bytes are bounded by what is read.
        let sources = backend
            .sources(&sel, super::summary::MAX_CACHED, u64::MAX)
            .map_err(|e| ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
        let (n, bytes) = cache.uncached(&sources.windows);
        let _permit =
            long_permit(n, bytes, limits, &long_queries).inspect_err(|_| backend.count_busy())?;
        let filled = cache.fill(&sources, MAX_QUERY_BYTES);
        for (path, reason) in &filled.bad {
            backend.quarantine(path, reason);
        }
        Ok((filled, sel))
    })
    .await?
}

/// `GET /api/v1/profile`: the stored windows and the window in progress for a range.
async fn profile(State(s): State<AppState>, v: ViewerExt, RawQuery(q): RawQuery) -> Response {
    let r = profile_inner(&s, q, viewer_of(v)).await;
    counted(&s.backend, r)
}

async fn profile_inner(s: &AppState, q: Option<String>, viewer: Viewer) -> ApiResult {
    let p = params(q, &["from", "to", "pid", "comm", "format", "view"])?;
    let format = match p.get("format").map(String::as_str) {
        None | Some("svg") => OutputFormat::Svg,
        Some("folded") => OutputFormat::Folded,
        Some("txt") => OutputFormat::Table,
        Some("pprof") => OutputFormat::Pprof,
        Some("speedscope") => OutputFormat::Speedscope,
        Some("heatmap") => OutputFormat::Heatmap,
        Some(f) => {
            return Err(ApiError::bad(format!(
                "format: {:?} is not svg, folded, txt, pprof, speedscope or heatmap",
                f.chars().take(32).collect::<String>()
            )))
        }
    };
    let sel = selection(&p, "-10m", viewer)?;
    let view = view(&p)?;
    let title = title(&s.backend.describe(), &sel);
    let from_ms = sel.from_ms;
    let profile = with_sources(s, sel, query::merged).await?;
    let bytes = blocking(move || {
        let mut profile = profile.with_python_view(view);
        profile.meta.target = title;
        if format == OutputFormat::Heatmap {
            return export_heatmap(profile, from_ms);
        }
        export(profile, format)
    })
    .await??;
    Ok(with_type(bytes, format))
}

/// The heatmap page of a range: source files read as `sprofd report` reads them (in the
/// root of each process still running, under the untrusted-file rules), a file modified
/// after the range's start reported as changed.
fn export_heatmap(profile: SymbolizedProfile, from_ms: u64) -> Result<Vec<u8>, ApiError> {
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_millis(from_ms);
    let sources = crate::sources::read_sources(
        &profile,
        &crate::sources::SourceConfig::default(),
        Some(start),
    );
    let mut out = Vec::new();
    flamegraph_out::Heatmap {
        sources: std::sync::Arc::new(sources),
    }
    .export(&profile, &mut out)
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(out)
}

pub(super) fn title(describe: &str, sel: &Selection) -> String {
    let mut t = describe.split(';').next().unwrap_or_default().to_string();
    if let Some(pid) = sel.pid {
        t = format!("pid {pid}: {t}");
    }
    if let Some(c) = &sel.comm {
        t = format!("/{}/: {t}", c.as_str());
    }
    t
}

/// `GET /`: the page for a person.
async fn page(State(s): State<AppState>, v: ViewerExt, RawQuery(q): RawQuery) -> Response {
    let r = async {
        // The page's own state (what the script keeps in the URL) is accepted too.
        let p = params(q, super::page::PARAMS)?;
        super::page::check_state(&p)?;
        let mut sel = selection(&p, "-1h", viewer_of(v))?;
        // `pid` and `comm` choose the page's flamegraph; the table lists every process.
        (sel.pid, sel.comm) = (None, None);
        let range = (
            p.get("from").cloned().unwrap_or_else(|| "-1h".into()),
            p.get("to").cloned().unwrap_or_else(|| "now".into()),
        );
        let describe = s.backend.describe();
        let (from_ms, to_ms) = (sel.from_ms, sel.to_ms);
        let (filled, sel) = with_summaries(&s, sel).await?;
        let list = super::api::process_list(&filled, &sel, None);
        let html = super::page::render(&super::page::PageData {
            describe: &describe,
            from_text: &range.0,
            to_text: &range.1,
            from_ms,
            to_ms,
            processes: &list,
            missing_windows: filled.missing,
        });
        Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
    }
    .await;
    counted(&s.backend, r)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::super::test_api::{
        app, app_with, empty_store, get, get_method, json_of, profile, request,
    };
    use super::*;

    const RANGE: &str = "from=1795999990&to=1796000020";

    #[tokio::test]
    async fn stored_windows_answer_by_range_pid_and_name_in_every_format() {
        let (app, dir) = app("range", true);
        let (status, ctype, body) =
            get(&app, &format!("/api/v1/profile?{RANGE}&format=folded")).await;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, "text/plain; charset=utf-8")
        );
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains("app;main;hot 30") && text.contains("db;query 5"),
            "{text}"
        );
        let (_, _, body) = get(
            &app,
            &format!("/api/v1/profile?{RANGE}&format=folded&pid=2"),
        )
        .await;
        assert_eq!(String::from_utf8(body).unwrap().trim(), "db;query 5");
        let (_, _, body) = get(
            &app,
            &format!("/api/v1/profile?{RANGE}&format=folded&comm=%5Eap"),
        )
        .await;
        let text = String::from_utf8(body).unwrap();
        assert!(!text.contains("db") && text.contains("hot 30"), "{text}");
        // Outside the range: nothing.
        let (_, _, body) = get(
            &app,
            "/api/v1/profile?from=1700000000&to=1700000001&format=folded",
        )
        .await;
        assert!(body.is_empty());
        let (_, ctype, body) = get(&app, &format!("/api/v1/profile?{RANGE}")).await;
        assert_eq!(ctype, "image/svg+xml");
        assert!(String::from_utf8(body).unwrap().contains("hot"));
        let (_, _, body) = get(&app, &format!("/api/v1/profile?{RANGE}&format=pprof")).await;
        let p = flamegraph_out::read_pprof(&body).unwrap();
        assert_eq!(p.total_samples(), 45);
        let (_, ctype, body) = get(&app, &format!("/api/v1/processes?{RANGE}")).await;
        assert_eq!(ctype, "application/json");
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list[0]["pid"], 1);
        assert_eq!(list[0]["comm"], "app");
        assert_eq!(list[0]["samples"], 40);
        assert_eq!(list[1]["comm"], "db");
        let (status, ctype, body) = get(&app, &format!("/?{RANGE}")).await;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, "text/html; charset=utf-8")
        );
        assert!(String::from_utf8(body).unwrap().contains(">app<"));
        // A pid in the page's URL chooses its flamegraph: the table still lists every process.
        let (status, _, body) = get(&app, &format!("/?{RANGE}&pid=2&q=hot&group=1")).await;
        let html = String::from_utf8(body).unwrap();
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains(">app<") && html.contains(">db<"), "{html}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_scrape_answers_the_tap_as_gzipped_pprof() {
        let (app, dir) = app("scrape", true);
        let (status, ctype, body) = get(&app, "/debug/pprof/profile?seconds=1").await;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, "application/octet-stream")
        );
        let p = flamegraph_out::decode_pprof(&body).unwrap();
        let names: Vec<&str> = p
            .sample_type
            .iter()
            .map(|t| p.string_table[t.r#type as usize].as_str())
            .collect();
        assert_eq!(names, ["samples", "cpu"]);
        assert!(p.duration_nanos >= 900_000_000, "{}", p.duration_nanos);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Mutated query strings (what any local user can send) never panic the router nor
    /// get a 5xx other than a busy 503: a 4xx with one line, or an answer.
    #[tokio::test]
    async fn mutated_queries_get_an_answer_or_a_4xx() {
        use sprofd_tests::fuzz;
        let (app, dir) = app("fuzz", true);
        let seeds: [&[u8]; 6] = [
            b"/api/v1/profile?from=-1h&to=now&pid=42&comm=web.*&format=folded&view=mixed",
            b"/api/v1/processes?from=2026-12-01T03:00:00Z&to=-5m&format=json",
            b"/?from=-10m&comm=%5Bpy%5D&pid=3&q=hot&zoom=a%3Bb&compare=before&group=1",
            b"/api/v1/timeline?from=-1h&to=now&step=10s&by=comm&pid=1&comm=x",
            b"/api/v1/diff?from=-10m&base_from=-1h&base_to=-50m&format=json&view=mixed",
            // A valid scrape would wait its seconds: the seed is one mutation away from one.
            b"/debug/pprof/profile?seconds=0&pid=7",
        ];
        let mut rng = fuzz::Rng::new(7);
        for i in 0..fuzz::iterations(2000) {
            let raw = fuzz::mutate(&mut rng, seeds[i % seeds.len()]);
            // Whatever the bytes, a request line carries them percent-encoded.
            let mut uri = String::from("/");
            for &b in raw.iter().skip(1) {
                if b.is_ascii_alphanumeric() || b"/?&=-_.:%".contains(&b) {
                    uri.push(b as char);
                } else {
                    uri.push_str(&format!("%{b:02X}"));
                }
            }
            if axum::http::Uri::try_from(uri.as_str()).is_err() {
                continue;
            }
            let (status, _, body) = get(&app, &uri).await;
            assert!(
                !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
                "{uri}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_timeline_gives_cpus_busy_by_process_and_by_name() {
        let (app, dir) = app("timeline", true);
        let range = "from=1796000000&to=1796000010";
        let (status, ctype, body) = get(&app, &format!("/api/v1/timeline?{range}&step=10")).await;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, "application/json")
        );
        let t = json_of(&body);
        assert_eq!(t["times"], serde_json::json!([1_796_000_000_000u64]));
        assert_eq!(t["step_ms"], 10_000);
        // app: 40 samples of 10 ms over the 10 s window, 0.04 CPUs; db: 5 samples.
        assert_eq!(t["series"][0]["key"], "1");
        assert_eq!(t["series"][0]["comm"], "app");
        assert!(
            (t["series"][0]["values"][0].as_f64().unwrap() - 0.04).abs() < 1e-9,
            "{t}"
        );
        assert!(
            (t["series"][1]["values"][0].as_f64().unwrap() - 0.005).abs() < 1e-9,
            "{t}"
        );
        assert!(
            (t["total"][0].as_f64().unwrap() - 0.045).abs() < 1e-9,
            "{t}"
        );
        // Finer steps than the window spread it evenly; by name; one process.
        let (_, _, body) = get(&app, &format!("/api/v1/timeline?{range}&step=5s&by=comm")).await;
        let t = json_of(&body);
        assert_eq!(t["series"][0]["key"], "app");
        assert_eq!(t["series"][0]["values"], serde_json::json!([0.04, 0.04]));
        let (_, _, body) = get(&app, &format!("/api/v1/timeline?{range}&pid=2")).await;
        let t = json_of(&body);
        assert_eq!(t["series"].as_array().unwrap().len(), 1, "{t}");
        assert_eq!(t["series"][0]["comm"], "db");
        // The default step is the stored resolution.
        assert_eq!(t["step_ms"], 10_000);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_diff_of_two_ranges_shows_what_grew() {
        let (app, dir, fake) = app_with("diff", true, Duration::ZERO, Limits::default());
        // A second window where `hot` doubled.
        let mut grown = profile();
        grown.stacks[0].samples = 60;
        grown.stacks[0].period = 60 * 10_000_000;
        let start = UNIX_EPOCH + Duration::from_secs(1_796_000_010);
        fake.store
            .lock()
            .unwrap()
            .write(
                start,
                start + Duration::from_secs(10),
                &super::super::sampling::encode(&grown, start).unwrap(),
                SystemTime::now(),
            )
            .unwrap();
        let range = "from=1796000011&to=1796000019&base_from=1796000001&base_to=1796000009";
        let (status, ctype, body) = get(&app, &format!("/api/v1/diff?{range}&format=json")).await;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, "application/json")
        );
        let d = json_of(&body);
        assert_eq!(
            (d["before_samples"].as_u64(), d["after_samples"].as_u64()),
            (Some(45), Some(75))
        );
        let first = &d["changes"][0];
        assert!(first["name"] == "hot" || first["name"] == "cold", "{d}");
        let hot = d["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "hot")
            .unwrap();
        assert!(hot["delta"].as_f64().unwrap() > 10.0, "{d}");
        let (_, _, body) = get(&app, &format!("/api/v1/diff?{range}&format=folded")).await;
        let text = String::from_utf8(body).unwrap();
        // Before scaled to the after total: 30 × 75/45 = 50.
        assert!(text.lines().any(|l| l == "app;main;hot 50 60"), "{text}");
        let (_, ctype, body) = get(&app, &format!("/api/v1/diff?{range}")).await;
        assert_eq!(ctype, "image/svg+xml");
        assert!(String::from_utf8(body).unwrap().contains("hot"));
        let (_, _, body) = get(&app, &format!("/api/v1/diff?{range}&format=txt")).await;
        assert!(String::from_utf8(body).unwrap().contains("hot"));
        // Without a base: the same length just before.
        let (_, _, body) = get(
            &app,
            "/api/v1/diff?from=1796000011&to=1796000019&format=json",
        )
        .await;
        let d = json_of(&body);
        assert_eq!(d["base_from_ms"], 1_796_000_003_000u64);
        assert_eq!(d["base_to_ms"], 1_796_000_011_000u64);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn bad_requests_get_a_4xx_with_one_line() {
        let (app, dir) = app("bad", false);
        for (uri, status) in [
            ("/healthz", StatusCode::SERVICE_UNAVAILABLE),
            ("/api/v1/profile?from=yesterday", StatusCode::BAD_REQUEST),
            ("/api/v1/profile?from=now&to=-1h", StatusCode::BAD_REQUEST),
            (
                "/api/v1/profile?to=2026-13-01T00:00:00Z",
                StatusCode::BAD_REQUEST,
            ),
            ("/api/v1/profile?pid=-1", StatusCode::BAD_REQUEST),
            ("/api/v1/profile?pid=99999999999", StatusCode::BAD_REQUEST),
            ("/api/v1/profile?format=exe", StatusCode::BAD_REQUEST),
            ("/api/v1/profile?view=weird", StatusCode::BAD_REQUEST),
            ("/api/v1/profile?comm=%28", StatusCode::BAD_REQUEST),
            ("/api/v1/profile?x=1", StatusCode::BAD_REQUEST),
            ("/api/v1/profile?from=-1h&from=-2h", StatusCode::BAD_REQUEST),
            ("/api/v1/processes?format=svg", StatusCode::BAD_REQUEST),
            ("/api/v1/timeline?step=0", StatusCode::BAD_REQUEST),
            ("/api/v1/timeline?step=50ms", StatusCode::BAD_REQUEST),
            ("/api/v1/timeline?step=abc", StatusCode::BAD_REQUEST),
            ("/api/v1/timeline?step=NaN", StatusCode::BAD_REQUEST),
            ("/api/v1/timeline?from=-1d&step=1", StatusCode::BAD_REQUEST),
            ("/api/v1/timeline?by=thread", StatusCode::BAD_REQUEST),
            ("/api/v1/timeline?format=svg", StatusCode::BAD_REQUEST),
            ("/api/v1/diff?base_from=-2h", StatusCode::BAD_REQUEST),
            (
                "/api/v1/diff?base_from=x&base_to=now",
                StatusCode::BAD_REQUEST,
            ),
            ("/api/v1/diff?format=pprof", StatusCode::BAD_REQUEST),
            ("/api/v1/diff?pid=0", StatusCode::BAD_REQUEST),
            ("/?view=raw", StatusCode::BAD_REQUEST),
            ("/?by=thread", StatusCode::BAD_REQUEST),
            ("/?zzz=1", StatusCode::BAD_REQUEST),
            ("/debug/pprof/profile?seconds=0", StatusCode::BAD_REQUEST),
            ("/debug/pprof/profile?seconds=1000", StatusCode::BAD_REQUEST),
            ("/debug/pprof/profile?seconds=1.5", StatusCode::BAD_REQUEST),
            ("/..%2f..%2fetc/passwd", StatusCode::NOT_FOUND),
            ("/api/v2/profile", StatusCode::NOT_FOUND),
        ] {
            let (got, ctype, body) = get(&app, uri).await;
            let text = String::from_utf8(body).unwrap();
            assert_eq!(got, status, "{uri}: {text}");
            assert_eq!(ctype, "text/plain; charset=utf-8", "{uri}");
            assert!(
                text.starts_with("error: ") && text.matches('\n').count() == 1,
                "{uri}: {text:?}"
            );
        }
        let long = format!("/api/v1/profile?comm={}", "x".repeat(MAX_QUERY));
        assert_eq!(get(&app, &long).await.0, StatusCode::URI_TOO_LONG);
        for method in ["POST", "PUT", "DELETE"] {
            let (got, _, body) = get_method(&app, method, "/api/v1/profile").await;
            assert_eq!(
                got,
                StatusCode::METHOD_NOT_ALLOWED,
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn concurrent_queries_are_all_answered() {
        let (app, dir) = app("concurrent", true);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let app = app.clone();
            let uri = match i % 3 {
                0 => format!("/api/v1/profile?{RANGE}&format=folded"),
                1 => format!("/api/v1/processes?{RANGE}"),
                _ => "/debug/pprof/profile?seconds=1".to_string(),
            };
            tasks.push(tokio::spawn(async move { get(&app, &uri).await.0 }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn only_addresses_and_localhost_are_answered_and_nothing_is_sniffed() {
        let (app, dir) = app("host", true);
        for host in [
            Some("127.0.0.1:7171"),
            Some("localhost:7171"),
            Some("LOCALHOST"),
            Some("[::1]:7171"),
            Some("10.1.2.3:9000"),
            None,
        ] {
            let (status, headers, _) = request(&app, "GET", "/healthz", host).await;
            assert_eq!(status, StatusCode::OK, "{host:?}");
            assert_eq!(headers["x-content-type-options"], "nosniff", "{host:?}");
        }
        for host in [
            "evil.example",
            "evil.example:7171",
            "127.0.0.1.nip.io:7171",
            "localhost.evil.example",
            "[::1]x",
            "127.0.0.1:abc",
            "",
        ] {
            let (status, headers, body) =
                request(&app, "GET", "/api/v1/processes", Some(host)).await;
            let text = String::from_utf8(body).unwrap();
            assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host:?}: {text}");
            assert!(
                text.starts_with("error: Host ") && text.matches('\n').count() == 1,
                "{text:?}"
            );
            assert_eq!(headers["x-content-type-options"], "nosniff");
        }
        // An absolute URI names a host too.
        let (status, _, _) = request(
            &app,
            "GET",
            "http://evil.example/healthz",
            Some("127.0.0.1:7171"),
        )
        .await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        // The page's icon is there (a 404 would be a console error on every visit).
        for icon in ["/favicon.ico", "/favicon.svg"] {
            let (status, headers, body) = request(&app, "GET", icon, Some("localhost")).await;
            assert_eq!(status, StatusCode::OK, "{icon}");
            assert_eq!(headers[header::CONTENT_TYPE], "image/svg+xml");
            assert!(String::from_utf8(body).unwrap().starts_with("<svg"));
        }
        // Every answer carries nosniff: errors, pages, data.
        for uri in [
            "/",
            "/nope",
            "/metrics",
            "/api/v1/profile?format=speedscope&comm=%3C%2Ftitle%3E",
        ] {
            let (_, headers, _) = request(&app, "GET", uri, Some("localhost")).await;
            assert_eq!(headers["x-content-type-options"], "nosniff", "{uri}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn healthz_says_why_sampling_is_unhealthy() {
        let (app, dir) = app("health", false);
        let (status, headers, body) = request(&app, "GET", "/healthz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "error: the sampling loop has not turned for 2.5 s\n"
        );
        assert_eq!(headers[header::RETRY_AFTER], RETRY_AFTER);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn scrapes_beyond_the_cap_get_503_with_retry_after() {
        let limits = Limits {
            taps: 3,
            ..Limits::default()
        };
        let (app, dir, fake) = app_with("taps", true, Duration::ZERO, limits);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                request(&app, "GET", "/debug/pprof/profile?seconds=1", None).await
            }));
        }
        let mut by_status: HashMap<StatusCode, usize> = HashMap::new();
        for t in tasks {
            let (status, headers, body) = t.await.unwrap();
            *by_status.entry(status).or_default() += 1;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(headers[header::RETRY_AFTER], RETRY_AFTER);
                let text = String::from_utf8(body).unwrap();
                assert!(text.contains("3 scrapes are already running"), "{text}");
            }
        }
        assert_eq!(by_status[&StatusCode::OK], 3, "{by_status:?}");
        assert_eq!(
            by_status[&StatusCode::SERVICE_UNAVAILABLE],
            5,
            "{by_status:?}"
        );
        assert_eq!(fake.busy.load(std::sync::atomic::Ordering::SeqCst), 5);
        // Permits come back when scrapes end.
        let (status, _, _) = request(&app, "GET", "/debug/pprof/profile?seconds=1", None).await;
        assert_eq!(status, StatusCode::OK);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The review's follow-up to D5: many short queries at once are capped too.
    #[tokio::test]
    async fn queries_beyond_the_cap_on_all_queries_get_503() {
        let limits = Limits {
            queries: 1,
            ..Limits::default()
        };
        let (app, dir, fake) = app_with("queries", true, Duration::from_millis(400), limits);
        let uri = "/api/v1/processes?from=1700000000&to=1700000001";
        one_of_three_answered(&app, uri, "range queries are already running").await;
        assert_eq!(fake.busy.load(std::sync::atomic::Ordering::SeqCst), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The timeline goes through the same cap (its summaries are read on the blocking pool).
    #[tokio::test]
    async fn timelines_beyond_the_cap_on_all_queries_get_503() {
        let limits = Limits {
            queries: 1,
            ..Limits::default()
        };
        let (app, dir, fake) = app_with("tl-cap", true, Duration::from_millis(400), limits);
        let uri = format!("/api/v1/timeline?{RANGE}");
        one_of_three_answered(&app, &uri, "range queries are already running").await;
        assert_eq!(fake.busy.load(std::sync::atomic::Ordering::SeqCst), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Sends `uri` three times at once: one is answered, two get 503 with `Retry-After` and
    /// a line containing `why`.
    async fn one_of_three_answered(app: &Router, uri: &str, why: &str) {
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (app, uri) = (app.clone(), uri.to_string());
            tasks.push(tokio::spawn(async move {
                request(&app, "GET", &uri, None).await
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            let (status, headers, body) = t.await.unwrap();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(headers[header::RETRY_AFTER], RETRY_AFTER);
                let text = String::from_utf8(body).unwrap();
                assert!(text.contains(why), "{text}");
            }
            statuses.push(status);
        }
        statuses.sort();
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE
            ]
        );
    }

    #[tokio::test]
    async fn long_range_queries_beyond_the_cap_get_503_and_short_ones_do_not_count() {
        let limits = Limits {
            long_queries: 1,
            long_windows: 0,
            ..Limits::default()
        };
        let (app, dir, fake) = app_with("long", true, Duration::from_millis(600), limits);
        let uri = format!("/api/v1/profile?{RANGE}&format=folded");
        one_of_three_answered(&app, &uri, "long range queries").await;
        assert_eq!(fake.busy.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A range with no stored window is not long: never refused.
        let (app, dir2, _) = app_with(
            "short",
            true,
            Duration::from_millis(300),
            Limits {
                long_queries: 1,
                ..Limits::default()
            },
        );
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                request(
                    &app,
                    "GET",
                    "/api/v1/processes?from=1700000000&to=1700000001",
                    None,
                )
                .await
                .0
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(dir2).unwrap();
    }

    #[test]
    fn a_query_over_too_many_bytes_is_refused() {
        let (dir, mut store, start) = empty_store("bytes");
        store
            .write(
                start,
                start + Duration::from_secs(10),
                &[0u8; 4096],
                SystemTime::now(),
            )
            .unwrap();
        let sel = Selection {
            from_ms: 0,
            to_ms: u64::MAX,
            ..Default::default()
        };
        let e = Sources::gather(&store, Vec::new(), &sel, MAX_WINDOWS, 1024)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("MiB of stored windows"), "{e}");
        assert!(Sources::gather(&store, Vec::new(), &sel, MAX_WINDOWS, 4096).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
