//! `-o NAME.timeline.svg`: resident memory and CPU use over time. `tests/fixtures/rssstep.c`
//! grows to a known peak in steps, holds it, frees half and burns CPU, then prints its own
//! `ru_maxrss`; the chart, drawn in headless Chromium (`tests/fixtures/timeline_check.py`),
//! must label a peak within 10% of it, for `record`, for `attach`, for each process of a
//! tree and in `--mode memory` (where markers say how many MiB a function added).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sprofd_tests::*;

/// `maxrss pid=PID kib=N` lines: each process's own peak, MiB by pid.
fn maxrss(stdout: &str) -> HashMap<u32, f64> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("maxrss pid=")?;
            let (pid, kib) = rest.split_once(" kib=")?;
            Some((pid.parse().ok()?, kib.trim().parse::<f64>().ok()? / 1024.0))
        })
        .collect()
}

/// What the browser saw of a chart.
fn seen_in_browser(chart: &Path, dir: &TempDir) -> serde_json::Value {
    let seen = run_with_timeout(
        Command::new("python3")
            .arg(fixtures_dir().join("timeline_check.py"))
            .arg(chart)
            .arg(dir.path())
            .env("HOME", std::env::temp_dir()),
        Duration::from_secs(120),
    );
    assert!(
        seen.status.success(),
        "timeline_check.py{}",
        seen.describe()
    );
    let v: serde_json::Value = serde_json::from_str(&seen.stdout).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{}", seen.stdout);
    assert_eq!(v["parse_error"], false, "{}", seen.stdout);
    v
}

/// The MiB of each drawn peak label, by pid.
fn peak_labels(v: &serde_json::Value) -> HashMap<u32, f64> {
    v["peaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p["width"].as_f64().unwrap() > 20.0, "a drawn label: {p}");
            let text = p["text"].as_str().unwrap();
            let mib = text
                .strip_prefix("peak ")
                .and_then(|t| t.split(" MiB").next())
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("peak label {text:?}"));
            (p["pid"].as_str().unwrap().parse().unwrap(), mib)
        })
        .collect()
}

fn assert_within_10_percent(label: f64, own: f64, what: &str) {
    assert!(
        (label - own).abs() <= 0.1 * own,
        "{what}: chart's peak {label:.1} MiB, the program's ru_maxrss {own:.1} MiB"
    );
}

/// The stretch (from, to) of the marker of `function`, if marked.
fn marker(v: &serde_json::Value, function: &str) -> Option<(f64, f64)> {
    v["markers"].as_array().unwrap().iter().find_map(|m| {
        (m["function"] == function)
            .then(|| (m["from"].as_f64().unwrap(), m["to"].as_f64().unwrap()))
    })
}

#[test]
fn record_draws_the_peak_and_the_hot_functions() {
    if !live("record_draws_the_peak_and_the_hot_functions") {
        return;
    }
    let _serial = serial();
    let exe = c_fixture("rssstep", FP);
    let dir = TempDir::new("timeline-record");
    let out = run_ok(
        sprofd()
            .args(["record", "-F", FREQ, "-q", "-o", "m.timeline.svg", "--"])
            .arg(&exe)
            .args(["200", "2", "0.6"])
            .current_dir(dir.path()),
    );
    let own = maxrss(&out.stdout);
    let v = seen_in_browser(&dir.join("m.timeline.svg"), &dir);
    let peaks = peak_labels(&v);
    assert_eq!(peaks.len(), 1, "one process, one peak: {}", v["peaks"]);
    let (pid, label) = peaks.into_iter().next().unwrap();
    let own = *own
        .get(&pid)
        .unwrap_or_else(|| panic!("pid {pid} not in {own:?}{}", out.describe()));
    assert_within_10_percent(label, own, "record");
    assert!(own > 190.0, "the fixture grew to 200 MiB: {own:.1}");
    assert_eq!(v["rss"].as_array().unwrap().len(), 1, "{}", v["rss"]);
    assert!(
        v["rss"][0]["width"].as_f64().unwrap() > 500.0,
        "a line across the chart: {}",
        v["rss"]
    );
    // 0.6 s of spin_after on one core.
    let cpu: f64 = v["cpu"][0]["max_percent"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (60.0..=130.0).contains(&cpu),
        "CPU use peaks at {cpu}% of a core"
    );
    // spin_after burnt its CPU after the peak, touch_pages (if marked) before.
    let peak_at: f64 = v["peaks"][0]["text"]
        .as_str()
        .unwrap()
        .rsplit(" at ")
        .next()
        .and_then(|t| t.trim_end_matches(" s").parse().ok())
        .unwrap();
    let (spin_from, spin_to) =
        marker(&v, "spin_after").unwrap_or_else(|| panic!("{}", v["markers"]));
    assert!(
        spin_to > peak_at,
        "spin_after at {spin_from}-{spin_to} s, peak at {peak_at} s"
    );
    if let Some((from, _)) = marker(&v, "touch_pages") {
        assert!(
            from < peak_at,
            "touch_pages at {from} s, peak at {peak_at} s"
        );
    }
}

#[test]
fn attach_draws_the_peak() {
    if !live("attach_draws_the_peak") {
        return;
    }
    let _serial = serial();
    let exe = c_fixture("rssstep", FP);
    let dir = TempDir::new("timeline-attach");
    let chart = dir.join("a.timeline.svg");
    let mut target = Command::new(&exe)
        .args(["150", "1.5", "0.3", "go"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn rssstep");
    let mut lines = BufReader::new(target.stdout.take().unwrap());
    let mut ready = String::new();
    lines.read_line(&mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    // fd 3 of sprofd is the pipe the test reads: `ready` once sampling has started.
    let mut sprofd = Command::new("sh")
        .args([
            "-c",
            "exec \"$0\" attach \"$1\" -F 999 -q -o \"$2\" --ready-fd 3 3>&1 >/dev/null",
        ])
        .arg(sprofd_bin())
        .arg(target.id().to_string())
        .arg(&chart)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sprofd");
    let mut line = String::new();
    BufReader::new(sprofd.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read the ready pipe");
    assert_eq!(line, "ready\n", "sprofd wrote {line:?} on --ready-fd");
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut lines, &mut rest).unwrap();
    assert!(target.wait().unwrap().success());
    let done = sprofd.wait_with_output().expect("wait sprofd");
    assert!(
        done.status.success(),
        "sprofd: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let own = maxrss(&rest)[&target.id()];
    let v = seen_in_browser(&chart, &dir);
    let peaks = peak_labels(&v);
    assert_within_10_percent(peaks[&target.id()], own, "attach");
}

#[test]
fn a_process_tree_gets_a_line_per_process() {
    if !live("a_process_tree_gets_a_line_per_process") {
        return;
    }
    let _serial = serial();
    let exe = c_fixture("rssstep", FP);
    let dir = TempDir::new("timeline-tree");
    let out = run_ok(
        sprofd()
            .args(["record", "-F", FREQ, "-q", "-o", "t.timeline.svg", "--"])
            .arg(&exe)
            .args(["20", "1.5", "0.2", "-", "120", "50"])
            .current_dir(dir.path()),
    );
    let own = maxrss(&out.stdout);
    assert_eq!(own.len(), 3, "three processes reported{}", out.describe());
    let v = seen_in_browser(&dir.join("t.timeline.svg"), &dir);
    let lines: Vec<&str> = v["rss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["pid"].as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "one line per process: {lines:?}");
    let peaks = peak_labels(&v);
    for (pid, mib) in &own {
        let label = peaks
            .get(pid)
            .unwrap_or_else(|| panic!("no peak for pid {pid}: {peaks:?}"));
        assert_within_10_percent(*label, *mib, &format!("pid {pid}"));
        let legend = v["legend"].as_array().unwrap();
        assert!(
            legend
                .iter()
                .any(|l| l["pid"].as_str() == Some(pid.to_string().as_str())
                    && l["text"].as_str().unwrap().contains("rssstep")),
            "legend names pid {pid}: {legend:?}"
        );
    }
}

#[test]
fn memory_mode_marks_where_memory_grew() {
    if !live("memory_mode_marks_where_memory_grew") {
        return;
    }
    let _serial = serial();
    let exe = c_fixture("rssstep", FP);
    let dir = TempDir::new("timeline-memory");
    let out = run_ok(
        sprofd()
            .args([
                "record",
                "--mode",
                "memory",
                "-q",
                "-o",
                "m.timeline.svg",
                "--",
            ])
            .arg(&exe)
            .args(["200", "2", "0.2"])
            .current_dir(dir.path()),
    );
    let own = maxrss(&out.stdout);
    let v = seen_in_browser(&dir.join("m.timeline.svg"), &dir);
    let (pid, label) = peak_labels(&v).into_iter().next().expect("a peak");
    assert_within_10_percent(label, own[&pid], "--mode memory");
    // touch_pages wrote every page, in 10 steps of 20 MiB 0.2 s apart; its marker sits in a
    // stretch (1/40 of the run) holding one step, and says so in MiB.
    let (from, _) = marker(&v, "touch_pages").unwrap_or_else(|| panic!("{}", v["markers"]));
    let m = v["markers"].as_array().unwrap();
    assert!(
        m.iter()
            .any(|m| m["function"] == "touch_pages" && m["caller"] == "grow_and_free"),
        "{m:?}"
    );
    assert!(from < 2.2, "touch_pages marked at {from} s, while growing");
    let key = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .find(|k| k.contains("grow_and_free → touch_pages"))
        .unwrap_or_else(|| panic!("{}", v["keys"]));
    let grew: f64 = key
        .split(": +")
        .nth(1)
        .and_then(|t| t.split(" MiB").next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{key}"));
    assert!((5.0..=45.0).contains(&grew), "{key}");
}
