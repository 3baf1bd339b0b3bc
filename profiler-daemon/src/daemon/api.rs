//! The endpoints the page's views are drawn from, for scripts as much as for the page:
//! `GET /api/v1/timeline` (CPU over time by process or by name, from the window summaries)
//! and `GET /api/v1/diff` (`sprofd diff` between two stored ranges).
//!
//! Both go through the router's caps on concurrent queries and the reader's visibility
//! (the [`Selection`]'s viewer), as every range query does.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use flamegraph_out::{DiffSvg, Differential, Stacks};
use serde::Serialize;

use super::http::{
    blocking, counted, params, selection, title, view, viewer_of, with_sources, with_summaries,
    ApiError, ApiResult, AppState, ViewerExt, MAX_QUERY_BYTES,
};
use super::query::{self, Selection};
use super::summary::{self, By};

/// Most steps a timeline has: a chart is a few hundred pixels to a few thousand wide.
pub const MAX_STEPS: u64 = 5000;
/// Steps a timeline has when no `step` is given (fewer when the windows are longer).
const DEFAULT_STEPS: u64 = 600;

/// `GET /api/v1/timeline?from=&to=&step=&pid=&comm=&by=process|comm`: JSON.
pub(super) async fn timeline(
    State(s): State<AppState>,
    v: ViewerExt,
    RawQuery(q): RawQuery,
) -> Response {
    let r = timeline_inner(&s, q, v).await;
    counted(&s.backend, r)
}

async fn timeline_inner(s: &AppState, q: Option<String>, v: ViewerExt) -> ApiResult {
    let p = params(q, &["from", "to", "step", "pid", "comm", "by"])?;
    let sel = selection(&p, "-1h", viewer_of(v))?;
    let by = match p.get("by").map(String::as_str) {
        None | Some("process") => By::Process,
        Some("comm") => By::Comm,
        Some(b) => {
            return Err(ApiError::bad(format!(
                "by: {:?} is not process or comm",
                b.chars().take(32).collect::<String>()
            )))
        }
    };
    let span = sel.to_ms.saturating_sub(sel.from_ms).max(1);
    let step = match p.get("step") {
        None => None,
        Some(v) => Some(step_ms(v, span)?),
    };
    let (filled, sel) = with_summaries(s, sel).await?;
    let t = blocking(move || {
        // At the stored resolution unless asked otherwise, and no more than DEFAULT_STEPS.
        // No window stored yet: the slices of the one in progress are shorter than it.
        let resolution = summary::resolution_ms(&filled.summaries).unwrap_or(1000);
        let step = step.unwrap_or_else(|| {
            let even = span.div_ceil(DEFAULT_STEPS).div_ceil(resolution) * resolution;
            even.max(resolution)
        });
        let mut t = summary::timeline(&filled.summaries, &sel, step, by, filled.missing);
        (t.window_bytes, t.max_profile_bytes) = (filled.bytes, MAX_QUERY_BYTES);
        t
    })
    .await?;
    json(&t)
}

/// A step: seconds (`10`, `0.5`) or a duration (`10s`, `5m`), at least 100 ms, giving at
/// most [`MAX_STEPS`] steps over `span_ms`.
fn step_ms(text: &str, span_ms: u64) -> Result<u64, ApiError> {
    let bad = |why: &str| {
        ApiError::bad(format!(
            "step: {:?} {why}",
            text.chars().take(32).collect::<String>()
        ))
    };
    let ms = match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => (secs * 1000.0) as u64,
        Ok(_) => return Err(bad("is not a positive number of seconds")),
        Err(_) => humantime::parse_duration(text)
            .map_err(|_| bad("is not seconds or a duration such as 10s or 5m"))?
            .as_millis()
            .try_into()
            .map_err(|_| bad("is too long"))?,
    };
    if ms < 100 {
        return Err(bad("is shorter than 100 ms"));
    }
    if span_ms.div_ceil(ms) > MAX_STEPS {
        return Err(bad(&format!(
            "makes more than {MAX_STEPS} steps over the range; use a longer step"
        )));
    }
    Ok(ms)
}

fn json<T: Serialize>(value: &T) -> ApiResult {
    let body = serde_json::to_vec(value).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The diff table as JSON.
#[derive(Serialize)]
struct DiffJson<'a> {
    from_ms: u64,
    to_ms: u64,
    base_from_ms: u64,
    base_to_ms: u64,
    before_samples: u64,
    after_samples: u64,
    /// The functions whose total share changed most, in percentage points.
    changes: Vec<ChangeJson<'a>>,
}

#[derive(Serialize)]
struct ChangeJson<'a> {
    name: &'a str,
    before_pct: f64,
    after_pct: f64,
    delta: f64,
}

/// Rows of the diff table and of its JSON.
const DIFF_ROWS: usize = 50;

/// `GET /api/v1/diff?from=&to=&base_from=&base_to=&pid=&comm=&view=&format=svg|folded|txt|json`:
/// `sprofd diff` of the base range (before) against the range (after), the before counts
/// scaled to the after total. Without a base, the same length just before the range.
pub(super) async fn diff(
    State(s): State<AppState>,
    v: ViewerExt,
    RawQuery(q): RawQuery,
) -> Response {
    let r = diff_inner(&s, q, v).await;
    counted(&s.backend, r)
}

async fn diff_inner(s: &AppState, q: Option<String>, v: ViewerExt) -> ApiResult {
    let p = params(
        q,
        &[
            "from",
            "to",
            "base_from",
            "base_to",
            "pid",
            "comm",
            "view",
            "format",
        ],
    )?;
    let format = match p.get("format").map(String::as_str) {
        None | Some("svg") => "svg",
        Some("folded") => "folded",
        Some("txt") => "txt",
        Some("json") => "json",
        Some(f) => {
            return Err(ApiError::bad(format!(
                "format: {:?} is not svg, folded, txt or json",
                f.chars().take(32).collect::<String>()
            )))
        }
    };
    let after = selection(&p, "-10m", viewer_of(v))?;
    let before = base(&p, &after)?;
    let view = view(&p)?;
    let describe = s.backend.describe();
    let names = (
        format!("{} to {}", utc(before.from_ms), utc(before.to_ms)),
        format!("{} to {}", utc(after.from_ms), utc(after.to_ms)),
    );
    let what = title(&describe, &after);
    let (ranges, rows) = (
        [after.from_ms, after.to_ms, before.from_ms, before.to_ms],
        DIFF_ROWS,
    );
    let after_p = with_sources(s, after, query::merged).await?;
    let before_p = with_sources(s, before, query::merged).await?;
    let body = blocking(move || -> Result<Vec<u8>, ApiError> {
        let stacks = |p: sprof_core::SymbolizedProfile| {
            Stacks::from_profile(&p.with_python_view(view)).map_err(ApiError::internal)
        };
        let (b, a) = (stacks(before_p)?, stacks(after_p)?);
        let d = Differential::new(&b, &a, true).map_err(ApiError::internal)?;
        let mut out = Vec::new();
        match format {
            "svg" => {
                let mut svg = DiffSvg::new(&names.0, &names.1, &d);
                svg.title = format!("{what}: {} → {}", names.0, names.1);
                d.write_svg(&svg, &mut out)
            }
            "folded" => d.write_folded(&mut out),
            "txt" => d.write_table(Some(rows), &mut out),
            _ => {
                let j = DiffJson {
                    from_ms: ranges[0],
                    to_ms: ranges[1],
                    base_from_ms: ranges[2],
                    base_to_ms: ranges[3],
                    before_samples: d.before_total,
                    after_samples: d.after_total,
                    changes: d
                        .changes
                        .iter()
                        .take(rows)
                        .map(|c| ChangeJson {
                            name: &c.name,
                            before_pct: c.before_pct,
                            after_pct: c.after_pct,
                            delta: c.delta,
                        })
                        .collect(),
                };
                serde_json::to_writer(&mut out, &j).map_err(ApiError::internal)?;
                Ok(())
            }
        }
        .map_err(ApiError::internal)?;
        Ok(out)
    })
    .await??;
    let ctype = match format {
        "svg" => "image/svg+xml",
        "json" => "application/json",
        _ => "text/plain; charset=utf-8",
    };
    Ok(([(header::CONTENT_TYPE, ctype)], body).into_response())
}

/// The base range: `base_from`/`base_to` (both or neither), else the same length before.
fn base(p: &HashMap<String, String>, after: &Selection) -> Result<Selection, ApiError> {
    let mut before = after.clone();
    match (p.get("base_from"), p.get("base_to")) {
        (None, None) => {
            let len = after.to_ms - after.from_ms;
            before.to_ms = after.from_ms;
            before.from_ms = after.from_ms.saturating_sub(len);
        }
        (Some(f), Some(t)) => {
            let mut q = HashMap::new();
            q.insert("from".to_string(), f.clone());
            q.insert("to".to_string(), t.clone());
            let b = selection(&q, "-10m", after.viewer).map_err(|e| e.prefixed("base_"))?;
            (before.from_ms, before.to_ms) = (b.from_ms, b.to_ms);
        }
        _ => {
            return Err(ApiError::bad(
                "base_from and base_to go together (neither: the same length before the range)",
            ))
        }
    }
    Ok(before)
}

fn utc(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}
