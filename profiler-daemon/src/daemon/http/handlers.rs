//! The endpoints the router serves itself (`/`, `/healthz`, `/metrics`, the pprof scrape and
//! `/api/v1/profile`), and the helpers every endpoint shares: running work on the blocking
//! pool, counting answers, exporting a profile with its content type, and the permits that
//! bound how many costly queries run at once.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use flamegraph_out::{ExportOptions, Exporter, OutputFormat};
use sprof_core::SymbolizedProfile;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::super::query::{self, Selection, Sources, Viewer};
use super::super::summary::Filled;
use super::params::{
    comm, params, pid, selection, view, viewer_of, Limits, ViewerExt, LONG_QUERY_BYTES,
    MAX_QUERY_BYTES, MAX_WINDOWS,
};
use super::{ApiError, ApiResult, AppState, Backend};

pub(in crate::daemon) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()))
}

/// Counts the answer.
pub(in crate::daemon) fn counted(backend: &Arc<dyn Backend>, r: ApiResult) -> Response {
    let response = r.unwrap_or_else(IntoResponse::into_response);
    backend.count(response.status());
    response
}

pub(super) async fn healthz(State(s): State<AppState>) -> Response {
    let r = match s.backend.health() {
        Ok(()) => Ok("ok\n".into_response()),
        Err(reason) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, reason)),
    };
    counted(&s.backend, r)
}

pub(super) async fn metrics(State(s): State<AppState>, v: ViewerExt) -> Response {
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
pub(super) async fn scrape(
    State(s): State<AppState>,
    v: ViewerExt,
    RawQuery(q): RawQuery,
) -> Response {
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

pub(in crate::daemon) fn export(
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

pub(in crate::daemon) fn with_type(bytes: Vec<u8>, format: OutputFormat) -> Response {
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
pub(in crate::daemon) async fn with_sources<T: Send + 'static>(
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
pub(in crate::daemon) async fn with_summaries(
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
            .sources(&sel, super::super::summary::MAX_CACHED, u64::MAX)
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
pub(super) async fn profile(
    State(s): State<AppState>,
    v: ViewerExt,
    RawQuery(q): RawQuery,
) -> Response {
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

pub(in crate::daemon) fn title(describe: &str, sel: &Selection) -> String {
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
pub(super) async fn page(
    State(s): State<AppState>,
    v: ViewerExt,
    RawQuery(q): RawQuery,
) -> Response {
    let r = async {
        // The page's own state (what the script keeps in the URL) is accepted too.
        let p = params(q, super::super::page::PARAMS)?;
        super::super::page::check_state(&p)?;
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
        let list = super::super::api::process_list(&filled, &sel, None);
        let html = super::super::page::render(&super::super::page::PageData {
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
