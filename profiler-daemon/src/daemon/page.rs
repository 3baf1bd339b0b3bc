//! The page at `/`: the processes of a time range ranked by CPU, with their memory, each
//! linking to its flamegraph, the whole host's flamegraph, and a form to choose the range:
//! plain HTML from the server, readable without JavaScript. Its script (`page.js`, inlined)
//! adds the timeline (CPU or memory), each process's memory sparkline, the inline flamegraph
//! with search and comparison, grouping, sorting and a filter, all drawn from the API (`/api/v1/timeline`, `/api/v1/profile?format=folded`,
//! `/api/v1/diff`, `/api/v1/processes`) and keeping its state in the URL. Nothing is fetched
//! from elsewhere: the page works on a host without internet.

use std::collections::HashMap;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::http::ApiError;
use super::query::ProcessSummary;

/// The query parameters the page accepts: the range (the server's), and the script's state.
pub const PARAMS: &[&str] = &[
    "from",
    "to",
    "pid",
    "comm",
    "view",
    "by",
    "metric",
    "q",
    "zoom",
    "compare",
    "base_from",
    "base_to",
    "group",
    "sort",
    "filter",
];

/// Checks the script's state parameters (the server does not use them, but a link with a
/// typo should say so rather than show something else).
pub fn check_state(p: &HashMap<String, String>) -> Result<(), ApiError> {
    let one_of = |key: &str, allowed: &[&str]| match p.get(key) {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::bad(format!(
            "{key}: {:?} is not {}",
            v.chars().take(32).collect::<String>(),
            allowed.join(" or ")
        ))),
        _ => Ok(()),
    };
    one_of("view", &["python", "mixed", "native"])?;
    one_of("by", &["process", "comm"])?;
    one_of("metric", &["cpu", "memory"])?;
    one_of("compare", &["", "before", "range"])?;
    one_of("group", &["0", "1"])?;
    Ok(())
}

/// `GET /favicon.ico`: a small flame, so that browsers find one (and log no error).
pub async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        FAVICON,
    )
        .into_response()
}

const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#222"/><rect x="2" y="11" width="12" height="3" fill="#e5533d"/><rect x="3" y="7.5" width="7" height="3" fill="#f0883e"/><rect x="4" y="4" width="4" height="3" fill="#f5c542"/></svg>"##;

pub struct PageData<'a> {
    pub describe: &'a str,
    /// The range as the user wrote it (`-1h`, `now`), and resolved.
    pub from_text: &'a str,
    pub to_text: &'a str,
    pub from_ms: u64,
    pub to_ms: u64,
    pub processes: &'a [ProcessSummary],
    /// Stored windows not summarized in time for this answer (their processes are missing).
    pub missing_windows: usize,
}

use flamegraph_out::escape_xml as esc;

fn link(path: &str, params: &[(&str, String)]) -> String {
    let q = serde_urlencoded::to_string(params).unwrap_or_default();
    esc(&format!("{path}?{q}"))
}

fn utc(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// A process's memory cell: its latest resident size, the peak in the title (the script
/// adds the sparkline from `/api/v1/processes`).
fn memory_cell(p: &ProcessSummary) -> (String, String) {
    match &p.rss {
        Some(m) => (
            format!(" data-mem=\"{}\"", m.peak.total()),
            format!(
                "<td class=\"num mem\" title=\"peak {} at {} (UTC)\">{}</td>",
                mib(m.peak.total()),
                utc(m.peak.t_ms),
                mib(m.latest.total())
            ),
        ),
        None => (String::new(), "<td class=\"num mem\"></td>".into()),
    }
}

/// The most processes listed.
const MAX_ROWS: usize = 200;

/// The table rows: one per process, most CPU first.
fn rows(d: &PageData<'_>, from: &str, to: &str) -> (String, f64) {
    let total: f64 = d.processes.iter().map(|p| p.cpu_seconds).sum();
    let mut rows = String::new();
    for p in d.processes.iter().take(MAX_ROWS) {
        let share = if total > 0.0 {
            100.0 * p.cpu_seconds / total
        } else {
            0.0
        };
        let cmd = if p.cmdline.is_empty() {
            &p.comm
        } else {
            &p.cmdline
        };
        let profile = |format: &str| {
            link(
                "/api/v1/profile",
                &[
                    ("from", from.to_string()),
                    ("to", to.to_string()),
                    ("pid", p.pid.to_string()),
                    ("format", format.into()),
                ],
            )
        };
        let (flame, table, pprof) = (profile("svg"), profile("txt"), profile("pprof"));
        let heatmap = profile("heatmap");
        let (mem_attr, mem) = memory_cell(p);
        rows.push_str(&format!(
            "<tr class=\"process\" data-pid=\"{pid}\" data-comm=\"{comm}\" data-cpu=\"{cpu}\"{mem_attr}><td class=\"num\">{share:.1}%</td><td class=\"num\">{cpu:.2}</td>{mem}<td class=\"num\">{pid}</td><td>{comm}</td><td class=\"cmd\" title=\"{cmd}\">{cmd_short}</td><td><a class=\"flame\" href=\"{flame}\">flamegraph</a> · <a href=\"{table}\">table</a> · <a href=\"{pprof}\">pprof</a> · <a class=\"heatmap\" href=\"{heatmap}\">heatmap</a></td></tr>\n",
            cpu = p.cpu_seconds,
            pid = p.pid,
            comm = esc(&p.comm),
            cmd = esc(cmd),
            cmd_short = esc(&cmd.chars().take(100).collect::<String>()),
        ));
    }
    if d.processes.is_empty() {
        rows.push_str("<tr class=\"none\"><td colspan=\"7\" class=\"empty\">No samples in this range (the daemon may have started after it, or nothing ran).</td></tr>\n");
    }
    (rows, total)
}

pub fn render(d: &PageData<'_>) -> String {
    let (from, to) = (
        (d.from_ms / 1000).to_string(),
        d.to_ms.div_ceil(1000).to_string(),
    );
    let (rows, total) = rows(d, &from, &to);
    let host = link(
        "/api/v1/profile",
        &[
            ("from", from.clone()),
            ("to", to.clone()),
            ("format", "svg".into()),
        ],
    );
    let quick = |label: &str, f: &str| {
        format!(
            "<a href=\"{}\">{label}</a>",
            link("/", &[("from", f.to_string()), ("to", "now".into())])
        )
    };
    let missing = if d.missing_windows > 0 {
        format!(
            " <span class=\"warn\">{} stored windows were not read in time and are left out: reload for the rest.</span>",
            d.missing_windows
        )
    } else {
        String::new()
    };
    format!(
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sprofd</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<style>{CSS}</style></head>
<body data-from="{from_ms}" data-to="{to_ms}">
<h1>sprofd</h1>
<div class="sub">Sampling {describe}.</div>
<form method="get" action="/" id="rangeform">
<label>From <input name="from" value="{from_text}"></label>
<label>to <input name="to" value="{to_text}"></label>
<button type="submit">Show</button>
<span class="sub">unix seconds, RFC 3339 or relative (-30s, -15m, -2h, -7d) · {q10} · {q60} · {q1d}</span>
</form>
<p id="range">{from_utc} to {to_utc} (UTC): {n} processes, {total:.2} CPU seconds. <a id="host" href="{host}">Whole-host flamegraph</a>{missing}</p>
<section id="timeline-box" class="js">
<div class="bar"><b id="tl-title">CPU over time</b> (<span id="tl-unit">CPUs busy</span>) · <label><input type="radio" name="metric" value="cpu" checked> CPU</label> <label><input type="radio" name="metric" value="memory"> memory</label> · stacked <label><input type="radio" name="by" value="process" checked> by process</label> <label><input type="radio" name="by" value="comm"> by command</label> · drag over the chart to choose a range <span id="hover"></span></div>
<div id="timeline"></div>
</section>
<section id="flame-box" class="js">
<div class="bar"><b id="selection">Whole host</b> <a href="#" id="show-host">(whole host)</a> · view <select id="view"><option value="python">python</option><option value="mixed">mixed</option><option value="native">native</option></select>
· <input id="search" type="search" placeholder="search frames (regex)" size="24"> <span id="matched"></span>
· compare with <select id="compare"><option value="">nothing</option><option value="before">the same length before</option><option value="range">a range…</option></select>
<span id="base-range" hidden><input id="base_from" size="12" placeholder="base from"> <input id="base_to" size="12" placeholder="base to"> <button id="base-go" type="button">Compare</button></span></div>
<div id="subtitle" class="sub"></div>
<div id="flamegraph"></div>
<table id="changes" hidden><thead><tr><th class="num">before %</th><th class="num">after %</th><th class="num">change</th><th>function</th></tr></thead><tbody></tbody></table>
</section>
<div class="bar js"><input id="filter" type="search" placeholder="filter processes" size="24"> <label><input type="checkbox" id="group"> group by command</label> · click a row for its flamegraph, a heading to sort</div>
<table id="processes">
<thead><tr><th class="num" data-sort="cpu">CPU</th><th class="num" data-sort="cpu">seconds</th><th class="num" data-sort="mem" title="resident memory: latest (peak in the tooltip)">memory</th><th class="num" data-sort="pid">pid</th><th data-sort="comm">name</th><th data-sort="cmd">command</th><th>profile</th></tr></thead>
<tbody>
{rows}</tbody></table>
<p class="sub">API: <a href="/metrics">/metrics</a> · <code>/debug/pprof/profile?seconds=30</code> · <code>/api/v1/profile?from=&amp;to=&amp;pid=&amp;comm=&amp;format=svg|folded|txt|pprof</code> · <code>/api/v1/processes?from=&amp;to=&amp;step=</code> · <code>/api/v1/timeline?from=&amp;to=&amp;step=&amp;by=process|comm&amp;metric=cpu|memory</code> · <code>/api/v1/diff?from=&amp;to=&amp;base_from=&amp;base_to=&amp;format=svg|folded|txt|json</code></p>
<script>{JS}</script>
</body></html>
"##,
        describe = esc(d.describe),
        from_text = esc(d.from_text),
        to_text = esc(d.to_text),
        q10 = quick("last 10 minutes", "-10m"),
        q60 = quick("last hour", "-1h"),
        q1d = quick("last day", "-1d"),
        from_utc = utc(d.from_ms),
        to_utc = utc(d.to_ms),
        from_ms = d.from_ms,
        to_ms = d.to_ms,
        n = d.processes.len(),
    )
}

/// The page's style; `.js` parts are hidden until the script runs.
const CSS: &str = include_str!("page.css");
/// The page's script: no dependencies, no build step.
const JS: &str = include_str!("page.js");

#[cfg(test)]
mod tests {
    use super::super::rss::RssPoint;
    use super::*;

    #[test]
    fn names_are_escaped_and_links_carry_the_range() {
        let procs = [ProcessSummary {
            pid: 42,
            comm: "<script>".into(),
            cmdline: "sh -c 'a&b'".into(),
            cgroup: "/".into(),
            samples: 10,
            cpu_seconds: 0.5,
            first_seen: 1.0,
            last_seen: 2.0,
            rss: Some(super::super::memory::ProcessMemory {
                latest: RssPoint {
                    t_ms: 1_500_000,
                    anon: 3 << 20,
                    file: 1 << 20,
                    shmem: 0,
                },
                peak: RssPoint {
                    t_ms: 1_200_000,
                    anon: 150 << 20,
                    file: 1 << 20,
                    shmem: 0,
                },
                step_ms: 10_000,
                times: vec![1_200_000],
                anon: vec![150 << 20],
                file: vec![1 << 20],
                shmem: vec![0],
            }),
        }];
        let html = render(&PageData {
            describe: "every process",
            from_text: "-1h",
            to_text: "now",
            from_ms: 1_000_000,
            to_ms: 2_000_000,
            processes: &procs,
            missing_windows: 0,
        });
        // The page's own script is the only one.
        assert_eq!(html.matches("<script>").count(), 1);
        assert!(html.contains("&lt;script&gt;"));
        assert!(
            html.contains("/api/v1/profile?from=1000&amp;to=2000&amp;pid=42&amp;format=svg"),
            "{html}"
        );
        assert!(html.contains("100.0%"));
        // Its memory: the latest size, the peak in the title.
        assert!(html.contains(">4.0 MiB</td>"), "{html}");
        assert!(html.contains("title=\"peak 151.0 MiB at 1970-01-01T00:20:00Z (UTC)\""));
        assert!(
            html.contains("/api/v1/profile?from=1000&amp;to=2000&amp;pid=42&amp;format=heatmap"),
            "{html}"
        );
    }
}
