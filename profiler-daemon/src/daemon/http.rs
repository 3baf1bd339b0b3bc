//! The HTTP API: a router over an injected [`Backend`], so tests drive it without sockets
//! (and without sampling) and the daemon serves it with axum on tokio.
//!
//! Every handler that reads files, merges profiles or renders runs on tokio's blocking pool;
//! the sampling thread is never waited on except for a scrape's start and end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flamegraph_out::{ExportOptions, OutputFormat};
use sprof_core::{PythonView, SymbolizedProfile};
use sprof_store::{parse_time, unix_millis};
use tokio::sync::{oneshot, watch};

use super::config::compile_comm;
use super::query::{self, QueryError, Selection, Sources};
use super::sampling::StackFilter;

/// What the API needs from the daemon.
pub trait Backend: Send + Sync + 'static {
    /// Sampling runs.
    fn healthy(&self) -> bool;
    /// Stored windows and live slices for a selection.
    fn sources(&self, sel: &Selection) -> Result<Sources, QueryError>;
    /// A window file could not be read: move it aside (and count it).
    fn quarantine(&self, path: &std::path::Path, reason: &str);
    /// Starts collecting samples for a scrape; `None` if sampling has stopped.
    fn open_tap(&self, keep: StackFilter) -> Option<oneshot::Receiver<u64>>;
    fn close_tap(&self, id: u64) -> Option<oneshot::Receiver<SymbolizedProfile>>;
    fn metrics(&self) -> String;
    /// What is sampled, for the page.
    fn describe(&self) -> String;
    /// Counts an answered request.
    fn count(&self, status: StatusCode);
}

/// Longest query string accepted.
const MAX_QUERY: usize = 4096;
/// Most stored windows one request reads (a day of 10 s windows).
pub const MAX_WINDOWS: usize = 8640;

#[derive(Clone)]
struct AppState {
    backend: Arc<dyn Backend>,
    /// Turns true when the daemon shuts down: scrapes in progress answer at once.
    shutdown: watch::Receiver<bool>,
}

/// The API's router.
pub fn router(backend: Arc<dyn Backend>, shutdown: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/debug/pprof/profile", get(scrape))
        .route("/api/v1/profile", get(profile))
        .route("/api/v1/processes", get(processes))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(AppState { backend, shutdown })
}

/// A request the API refuses: its status and a one-line reason.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(reason: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, reason.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("error: {}\n", self.1),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} (see / for the page, /api/v1/profile, /api/v1/processes, /debug/pprof/profile, /metrics, /healthz)",
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
fn params(raw: Option<String>, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
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
fn selection(p: &HashMap<String, String>, default_from: &str) -> Result<Selection, ApiError> {
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
    })
}

fn pid(p: &HashMap<String, String>) -> Result<Option<u32>, ApiError> {
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

fn comm(p: &HashMap<String, String>) -> Result<Option<regex::Regex>, ApiError> {
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

fn view(p: &HashMap<String, String>) -> Result<PythonView, ApiError> {
    match p.get("view").map(String::as_str) {
        None | Some("python") => Ok(PythonView::Python),
        Some("mixed") => Ok(PythonView::Mixed),
        Some(v) => Err(ApiError::bad(format!(
            "view: {:?} is not python or mixed",
            v.chars().take(32).collect::<String>()
        ))),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()))
}

/// Counts the answer.
fn counted(backend: &Arc<dyn Backend>, r: ApiResult) -> Response {
    let response = r.unwrap_or_else(IntoResponse::into_response);
    backend.count(response.status());
    response
}

async fn healthz(State(s): State<AppState>) -> Response {
    let r = if s.backend.healthy() {
        Ok("ok\n".into_response())
    } else {
        Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "sampling is not running".into(),
        ))
    };
    counted(&s.backend, r)
}

async fn metrics(State(s): State<AppState>) -> Response {
    let text = s.backend.metrics();
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
async fn scrape(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let r = scrape_inner(&s, q).await;
    counted(&s.backend, r)
}

async fn scrape_inner(s: &AppState, q: Option<String>) -> ApiResult {
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
        ..Default::default()
    };
    let view = view(&p)?;
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

fn export(profile: SymbolizedProfile, format: OutputFormat) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    format
        .exporter_with(&ExportOptions {
            by_line: false,
            table_rows: Some(200),
        })
        .export(&profile, &mut out)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(out)
}

fn with_type(bytes: Vec<u8>, format: OutputFormat) -> Response {
    let (ctype, disposition) = match format {
        OutputFormat::Svg => ("image/svg+xml", None),
        OutputFormat::Folded | OutputFormat::Table => ("text/plain; charset=utf-8", None),
        OutputFormat::Pprof => (
            "application/octet-stream",
            Some("attachment; filename=\"profile.pb.gz\""),
        ),
        OutputFormat::Speedscope => ("application/json", None),
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
async fn with_sources<T: Send + 'static>(
    s: &AppState,
    sel: Selection,
    f: impl FnOnce(&Sources, &Selection) -> (T, Vec<(std::path::PathBuf, String)>) + Send + 'static,
) -> Result<T, ApiError> {
    let backend = s.backend.clone();
    blocking(move || {
        let sources = backend
            .sources(&sel)
            .map_err(|e| ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
        let (out, bad) = f(&sources, &sel);
        for (path, reason) in bad {
            backend.quarantine(&path, &reason);
        }
        Ok(out)
    })
    .await?
}

/// `GET /api/v1/profile`: the stored windows and the window in progress for a range.
async fn profile(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let r = profile_inner(&s, q).await;
    counted(&s.backend, r)
}

async fn profile_inner(s: &AppState, q: Option<String>) -> ApiResult {
    let p = params(q, &["from", "to", "pid", "comm", "format", "view"])?;
    let format = match p.get("format").map(String::as_str) {
        None | Some("svg") => OutputFormat::Svg,
        Some("folded") => OutputFormat::Folded,
        Some("txt") => OutputFormat::Table,
        Some("pprof") => OutputFormat::Pprof,
        Some("speedscope") => OutputFormat::Speedscope,
        Some(f) => {
            return Err(ApiError::bad(format!(
                "format: {:?} is not svg, folded, txt, pprof or speedscope",
                f.chars().take(32).collect::<String>()
            )))
        }
    };
    let sel = selection(&p, "-10m")?;
    let view = view(&p)?;
    let title = title(&s.backend.describe(), &sel);
    let profile = with_sources(s, sel, query::merged).await?;
    let bytes = blocking(move || {
        let mut profile = profile.with_python_view(view);
        profile.meta.target = title;
        export(profile, format)
    })
    .await??;
    Ok(with_type(bytes, format))
}

fn title(describe: &str, sel: &Selection) -> String {
    let mut t = describe.split(';').next().unwrap_or_default().to_string();
    if let Some(pid) = sel.pid {
        t = format!("pid {pid}: {t}");
    }
    if let Some(c) = &sel.comm {
        t = format!("/{}/: {t}", c.as_str());
    }
    t
}

/// `GET /api/v1/processes`: JSON, one entry per process with samples in the range.
async fn processes(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let r = async {
        let p = params(q, &["from", "to", "pid", "comm"])?;
        let sel = selection(&p, "-10m")?;
        let list = with_sources(&s, sel, query::processes).await?;
        let json = serde_json::to_vec_pretty(&list)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
    }
    .await;
    counted(&s.backend, r)
}

/// `GET /`: the page for a person.
async fn page(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let r = async {
        let p = params(q, &["from", "to"])?;
        let sel = selection(&p, "-1h")?;
        let range = (
            p.get("from").cloned().unwrap_or_else(|| "-1h".into()),
            p.get("to").cloned().unwrap_or_else(|| "now".into()),
        );
        let describe = s.backend.describe();
        let (from_ms, to_ms) = (sel.from_ms, sel.to_ms);
        let list = with_sources(&s, sel, query::processes).await?;
        let html = super::page::render(&super::page::PageData {
            describe: &describe,
            from_text: &range.0,
            to_text: &range.1,
            from_ms,
            to_ms,
            processes: &list,
        });
        Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
    }
    .await;
    counted(&s.backend, r)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::UNIX_EPOCH;

    use axum::body::to_bytes;
    use axum::http::Request;
    use sprof_core::{Frame, FrameKind, ProfileMeta, SampledStack, ThreadRef};
    use sprof_store::{Retention, WindowStore};
    use tower::ServiceExt;

    use super::*;

    /// Two processes: 1 (`app`: main -> hot 30, main -> cold 10) and 2 (`db`: query 5).
    fn profile() -> SymbolizedProfile {
        let f = |name: &str, kind| {
            let mut f = Frame::bare(name, kind);
            if kind == FrameKind::Native {
                f.module = Some("app".into());
                f.file = Some("app.c".into());
                f.line = Some(3);
            }
            f
        };
        let frames = vec![
            f("app", FrameKind::Root),
            f("main", FrameKind::Native),
            f("hot", FrameKind::Native),
            f("cold", FrameKind::Native),
            f("db", FrameKind::Root),
            f("query", FrameKind::Native),
        ];
        let stack = |frames: Vec<u32>, samples: u64, pid: u32| SampledStack {
            frames,
            samples,
            period: samples * 10_000_000,
            thread: Some(ThreadRef { pid, tid: pid }),
        };
        SymbolizedProfile {
            meta: ProfileMeta {
                frequency: 100,
                ..Default::default()
            },
            frames,
            stacks: vec![
                stack(vec![0, 1, 2], 30, 1),
                stack(vec![0, 1, 3], 10, 1),
                stack(vec![4, 5], 5, 2),
            ],
            ..Default::default()
        }
    }

    struct Fake {
        store: Mutex<WindowStore>,
        healthy: bool,
    }

    impl Backend for Fake {
        fn healthy(&self) -> bool {
            self.healthy
        }
        fn sources(&self, sel: &Selection) -> Result<Sources, QueryError> {
            Sources::gather(&self.store.lock().unwrap(), Vec::new(), sel, MAX_WINDOWS)
        }
        fn quarantine(&self, path: &std::path::Path, reason: &str) {
            self.store.lock().unwrap().quarantine(path, reason);
        }
        fn open_tap(&self, _keep: StackFilter) -> Option<oneshot::Receiver<u64>> {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(7);
            Some(rx)
        }
        fn close_tap(&self, id: u64) -> Option<oneshot::Receiver<SymbolizedProfile>> {
            assert_eq!(id, 7);
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(profile());
            Some(rx)
        }
        fn metrics(&self) -> String {
            "# EOF\n".into()
        }
        fn describe(&self) -> String {
            "test".into()
        }
        fn count(&self, _: StatusCode) {}
    }

    fn app(name: &str, healthy: bool) -> (Router, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("sprofd-http-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let retention = Retention {
            max_age: Duration::from_secs(86400 * 365 * 100),
            max_bytes: 1 << 30,
        };
        let (mut store, _) = WindowStore::open(&dir, retention).unwrap();
        let start = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let bytes = super::super::sampling::encode(&profile(), start);
        store
            .write(
                start,
                start + Duration::from_secs(10),
                &bytes,
                SystemTime::now(),
            )
            .unwrap();
        let backend = Arc::new(Fake {
            store: Mutex::new(store),
            healthy,
        });
        let (_tx, rx) = watch::channel(false);
        (router(backend, rx), dir)
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, String, Vec<u8>) {
        get_method(app, "GET", uri).await
    }

    async fn get_method(app: &Router, method: &str, uri: &str) -> (StatusCode, String, Vec<u8>) {
        let r = app
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = r.status();
        let ctype = r
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = to_bytes(r.into_body(), 1 << 24).await.unwrap().to_vec();
        (status, ctype, body)
    }

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
}
