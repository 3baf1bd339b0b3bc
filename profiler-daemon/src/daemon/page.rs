//! The page at `/`: the processes of a time range ranked by CPU, each linking to its
//! flamegraph, the whole host's flamegraph, and a form to choose the range. Plain HTML from
//! the server: nothing to build, nothing fetched from elsewhere.

use super::query::ProcessSummary;

pub struct PageData<'a> {
    pub describe: &'a str,
    /// The range as the user wrote it (`-1h`, `now`), and resolved.
    pub from_text: &'a str,
    pub to_text: &'a str,
    pub from_ms: u64,
    pub to_ms: u64,
    pub processes: &'a [ProcessSummary],
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
        rows.push_str(&format!(
            "<tr class=\"process\"><td class=\"num\">{share:.1}%</td><td class=\"num\">{cpu:.2}</td><td class=\"num\">{pid}</td><td>{comm}</td><td class=\"cmd\" title=\"{cmd}\">{cmd_short}</td><td><a class=\"flame\" href=\"{flame}\">flamegraph</a> · <a href=\"{table}\">table</a> · <a href=\"{pprof}\">pprof</a> · <a class=\"heatmap\" href=\"{heatmap}\">heatmap</a></td></tr>\n",
            cpu = p.cpu_seconds,
            pid = p.pid,
            comm = esc(&p.comm),
            cmd = esc(cmd),
            cmd_short = esc(&cmd.chars().take(100).collect::<String>()),
        ));
    }
    if d.processes.is_empty() {
        rows.push_str("<tr><td colspan=\"6\" class=\"empty\">No samples in this range (the daemon may have started after it, or nothing ran).</td></tr>\n");
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
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sprofd</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; margin: 0 0 .2em; }}
.sub {{ color: #666; margin-bottom: 1em; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .25em .6em; border-bottom: 1px solid #eee; }}
td.num, th.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.cmd {{ font-family: monospace; color: #444; max-width: 40em; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }}
form {{ margin: 1em 0; }} input {{ width: 14em; }}
.empty {{ color: #888; font-style: italic; }}
</style></head>
<body>
<h1>sprofd</h1>
<div class="sub">Sampling {describe}.</div>
<form method="get" action="/">
<label>From <input name="from" value="{from_text}"></label>
<label>to <input name="to" value="{to_text}"></label>
<button type="submit">Show</button>
<span class="sub">unix seconds, RFC 3339 or relative (-30s, -15m, -2h, -7d) · {q10} · {q60} · {q1d}</span>
</form>
<p id="range">{from_utc} to {to_utc} (UTC): {n} processes, {total:.2} CPU seconds. <a id="host" href="{host}">Whole-host flamegraph</a></p>
<table id="processes">
<thead><tr><th class="num">CPU</th><th class="num">seconds</th><th class="num">pid</th><th>name</th><th>command</th><th>profile</th></tr></thead>
<tbody>
{rows}</tbody></table>
<p class="sub">API: <a href="/metrics">/metrics</a> · <code>/debug/pprof/profile?seconds=30</code> · <code>/api/v1/profile?from=&amp;to=&amp;pid=&amp;comm=&amp;format=svg|folded|txt|pprof</code> · <code>/api/v1/processes</code></p>
</body></html>
"#,
        describe = esc(d.describe),
        from_text = esc(d.from_text),
        to_text = esc(d.to_text),
        q10 = quick("last 10 minutes", "-10m"),
        q60 = quick("last hour", "-1h"),
        q1d = quick("last day", "-1d"),
        from_utc = utc(d.from_ms),
        to_utc = utc(d.to_ms),
        n = d.processes.len(),
    )
}

#[cfg(test)]
mod tests {
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
        }];
        let html = render(&PageData {
            describe: "every process",
            from_text: "-1h",
            to_text: "now",
            from_ms: 1_000_000,
            to_ms: 2_000_000,
            processes: &procs,
        });
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(
            html.contains("/api/v1/profile?from=1000&amp;to=2000&amp;pid=42&amp;format=svg"),
            "{html}"
        );
        assert!(html.contains("100.0%"));
        assert!(
            html.contains("/api/v1/profile?from=1000&amp;to=2000&amp;pid=42&amp;format=heatmap"),
            "{html}"
        );
    }
}
