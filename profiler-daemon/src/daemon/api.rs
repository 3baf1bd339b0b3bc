//! The endpoints the page's views are drawn from, for scripts as much as for the page:
//! `GET /api/v1/processes` (each process's CPU and memory in a range), `GET /api/v1/timeline`
//! (CPU or memory over time by process or by name, from the window summaries) and
//! `GET /api/v1/diff` (`sprofd diff` between two stored ranges).
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
use super::query::{self, ProcessSummary, Selection};
use super::summary::{self, By, Filled};
use super::timeline::Metric;

/// Most steps a timeline has: a chart is a few hundred pixels to a few thousand wide.
pub const MAX_STEPS: u64 = 5000;
/// Steps a timeline has when no `step` is given (fewer when the windows are longer).
const DEFAULT_STEPS: u64 = 600;
/// Steps of a process's memory series when no `step` is given: a sparkline's worth.
const DEFAULT_MEMORY_STEPS: u64 = 120;

/// `GET /api/v1/processes?from=&to=&pid=&comm=&step=`: JSON, one entry per process with
/// samples in the range, with its memory series (`rss`) where it was read.
pub(super) async fn processes(
    State(s): State<AppState>,
    v: ViewerExt,
    RawQuery(q): RawQuery,
) -> Response {
    let r = async {
        let p = params(q, &["from", "to", "pid", "comm", "step"])?;
        let sel = selection(&p, "-10m", viewer_of(v))?;
        let span = sel.to_ms.saturating_sub(sel.from_ms).max(1);
        let step = p.get("step").map(|v| step_ms(v, span)).transpose()?;
        let (filled, sel) = with_summaries(&s, sel).await?;
        let list = blocking(move || process_list(&filled, &sel, step)).await?;
        let json = serde_json::to_vec_pretty(&list).map_err(ApiError::internal)?;
        Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
    }
    .await;
    counted(&s.backend, r)
}

/// The processes of a selection, most samples first, each with its memory in steps of
/// `step` (default: the stored resolution, at most [`DEFAULT_MEMORY_STEPS`] over the range).
pub(super) fn process_list(
    filled: &Filled,
    sel: &Selection,
    step: Option<u64>,
) -> Vec<ProcessSummary> {
    let mut list = summary::processes(&filled.summaries, sel);
    let step = step.unwrap_or_else(|| default_step(filled, sel, DEFAULT_MEMORY_STEPS));
    super::memory::attach(&mut list, &filled.summaries, sel, step);
    list
}

/// The stored resolution, or coarser (a whole multiple of it) to make at most `steps`
/// steps over the selection. No window stored yet: the slices of the one in progress are
/// shorter than it.
fn default_step(filled: &Filled, sel: &Selection, steps: u64) -> u64 {
    let span = sel.to_ms.saturating_sub(sel.from_ms).max(1);
    let resolution = summary::resolution_ms(&filled.summaries).unwrap_or(1000);
    let even = span.div_ceil(steps).div_ceil(resolution) * resolution;
    even.max(resolution)
}

/// `GET /api/v1/timeline?from=&to=&step=&pid=&comm=&by=process|comm&metric=cpu|memory`:
/// JSON.
pub(super) async fn timeline(
    State(s): State<AppState>,
    v: ViewerExt,
    RawQuery(q): RawQuery,
) -> Response {
    let r = timeline_inner(&s, q, v).await;
    counted(&s.backend, r)
}

async fn timeline_inner(s: &AppState, q: Option<String>, v: ViewerExt) -> ApiResult {
    let p = params(q, &["from", "to", "step", "pid", "comm", "by", "metric"])?;
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
    let metric = match p.get("metric").map(String::as_str) {
        None | Some("cpu") => Metric::Cpu,
        Some("memory") => Metric::Memory,
        Some(m) => {
            return Err(ApiError::bad(format!(
                "metric: {:?} is not cpu or memory",
                m.chars().take(32).collect::<String>()
            )))
        }
    };
    let span = sel.to_ms.saturating_sub(sel.from_ms).max(1);
    let step = p.get("step").map(|v| step_ms(v, span)).transpose()?;
    let (filled, sel) = with_summaries(s, sel).await?;
    let t = blocking(move || {
        // At the stored resolution unless asked otherwise, and no more than DEFAULT_STEPS.
        let step = step.unwrap_or_else(|| default_step(&filled, &sel, DEFAULT_STEPS));
        let (summaries, missing) = (&filled.summaries, filled.missing);
        let mut t = match metric {
            Metric::Cpu => summary::timeline(summaries, &sel, step, by, missing),
            Metric::Memory => super::memory::timeline(summaries, &sel, step, by, missing),
        };
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;

    use super::super::http::Limits;
    use super::super::query::Viewer;
    use super::super::rss::{ProcessRss, RssPoint, Target};
    use super::super::test_api::*;

    const RANGE: &str = "from=1795999990&to=1796000020";
    const T0: u64 = 1_796_000_000_000;

    fn at(s: u64, anon_mib: u64) -> RssPoint {
        RssPoint {
            t_ms: T0 + s * 1000,
            anon: anon_mib << 20,
            file: 2 << 20,
            shmem: 4096,
        }
    }

    /// `app` (pid 1) grows from 10 to 150 MiB in the stored window and ends at 120; `db`
    /// (pid 2) was not read.
    fn rss() -> Vec<ProcessRss> {
        vec![ProcessRss {
            pid: 1,
            uid: Some(1000),
            comm: "app".into(),
            points: vec![at(1, 10), at(4, 150), at(8, 120)],
        }]
    }

    fn total(p: &serde_json::Value) -> u64 {
        ["anon", "file", "shmem"]
            .iter()
            .map(|k| p[k].as_u64().unwrap())
            .sum()
    }

    #[tokio::test]
    async fn processes_carry_their_memory_and_the_timeline_stacks_it() {
        let (app, dir, fake) = app_with_rss("rss", true, Duration::ZERO, Limits::default(), &rss());
        let (status, ctype, body) = get(&app, &format!("/api/v1/processes?{RANGE}")).await;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, "application/json")
        );
        let list = json_of(&body);
        let m = &list[0]["rss"];
        assert_eq!(list[0]["pid"], 1, "{list}");
        assert_eq!(m["peak"]["t_ms"], T0 + 4000);
        assert_eq!(total(&m["peak"]), (152 << 20) + 4096);
        assert_eq!(m["latest"]["anon"], 120u64 << 20);
        // At the stored resolution (the window), its largest reading.
        assert_eq!(m["step_ms"], 10_000);
        assert_eq!(m["times"], serde_json::json!([T0 + 4000]));
        assert_eq!(m["anon"], serde_json::json!([150u64 << 20]));
        assert_eq!(m["shmem"], serde_json::json!([4096]));
        // A window keeps its peak and its last reading: a finer step shows both.
        let (_, _, body) = get(&app, &format!("/api/v1/processes?{RANGE}&step=1s")).await;
        let m = json_of(&body)[0]["rss"].clone();
        assert_eq!(m["times"], serde_json::json!([T0 + 4000, T0 + 8000]));
        // `db` was not read: no rss.
        assert!(list[1].get("rss").is_none(), "{list}");
        // The memory timeline.
        let (status, _, body) = get(
            &app,
            &format!("/api/v1/timeline?{RANGE}&metric=memory&step=10"),
        )
        .await;
        let t = json_of(&body);
        assert_eq!(status, StatusCode::OK, "{t}");
        assert_eq!(t["metric"], "memory");
        assert_eq!(t["series"][0]["key"], "1");
        assert_eq!(t["series"][0]["peak_bytes"], ((152u64 << 20) + 4096) as f64);
        assert_eq!(t["series"].as_array().unwrap().len(), 1, "{t}");
        let (_, _, body) = get(&app, &format!("/api/v1/timeline?{RANGE}&step=10")).await;
        assert_eq!(json_of(&body)["metric"], "cpu");
        // /metrics: the processes' gauge before the end, for readers who may see them.
        fake.latest.lock().unwrap().push((
            Target {
                pid: 1,
                uid: Some(1000),
                comm: "app".into(),
            },
            at(8, 120),
        ));
        let (_, _, body) = get(&app, "/metrics").await;
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.ends_with(
                "sprofd_sampled_process_resident_bytes{pid=\"1\",comm=\"app\",kind=\"shmem\"} 4096\n# EOF\n"
            ),
            "{text}"
        );
        assert_eq!(
            super::super::memory::exposition(&fake.latest.lock().unwrap(), Viewer::Own(7))
                .lines()
                .filter(|l| !l.starts_with('#'))
                .count(),
            0
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn bad_memory_parameters_get_a_400_with_one_line() {
        let (app, dir) = app("rss-bad", true);
        for (query, needle) in [
            (
                "/api/v1/processes?step=0",
                "step: \"0\" is not a positive number",
            ),
            (
                "/api/v1/processes?step=fast",
                "step: \"fast\" is not seconds",
            ),
            ("/api/v1/processes?step=10ms", "shorter than 100 ms"),
            ("/api/v1/processes?from=-1d&step=1", "more than 5000 steps"),
            (
                "/api/v1/processes?metric=memory",
                "unknown parameter \"metric\"",
            ),
            (
                "/api/v1/timeline?metric=rss",
                "metric: \"rss\" is not cpu or memory",
            ),
            ("/api/v1/timeline?metric=memory&metric=cpu", "given twice"),
            ("/?metric=heap", "metric: \"heap\" is not cpu or memory"),
        ] {
            let (status, _, body) = get(&app, query).await;
            let text = String::from_utf8(body).unwrap();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {text}");
            assert!(text.contains(needle), "{query}: {text}");
            assert_eq!(text.lines().count(), 1, "{query}: {text}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
