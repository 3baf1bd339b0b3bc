//! What a request may ask: its query string read into parameters, a [`Selection`], a pid,
//! a `comm` regular expression or a Python view, each refused with a one-line 400 when
//! malformed; and the bounds on how much one request (and all of them at once) may cost.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::http::StatusCode;
use sprof_core::PythonView;
use sprof_store::{parse_time, unix_millis};

use super::super::config::compile_comm;
use super::super::query::{Selection, Viewer};
use super::ApiError;

/// Longest query string accepted.
pub(super) const MAX_QUERY: usize = 4096;
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
pub(super) const LONG_QUERY_BYTES: u64 = 8 << 20;

/// Query parameters, each at most once, only the allowed ones.
pub(in crate::daemon) fn params(
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
pub(in crate::daemon) type ViewerExt = Option<axum::Extension<Viewer>>;

pub(in crate::daemon) fn viewer_of(v: ViewerExt) -> Viewer {
    v.map_or(Viewer::All, |axum::Extension(v)| v)
}

pub(in crate::daemon) fn selection(
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

pub(in crate::daemon) fn pid(p: &HashMap<String, String>) -> Result<Option<u32>, ApiError> {
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

pub(in crate::daemon) fn comm(
    p: &HashMap<String, String>,
) -> Result<Option<regex::Regex>, ApiError> {
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

pub(in crate::daemon) fn view(p: &HashMap<String, String>) -> Result<PythonView, ApiError> {
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
