//! The daemon's page as an engineer uses it, in headless Chromium driven by Playwright for
//! Python (`tests/browser/page_check.py`): a daemon samples `cshift`, whose balance flips
//! from 75/25 (`a3_hot`/`b3_cold`) to 25/75 halfway; the page must draw the fixture in the
//! timeline, draw its memory (the row's sparkline, the timeline's memory series), narrow the
//! range on a drag, show the fixture's frames in place on a row's click, report a search's
//! share, zoom and go Back, and show what grew in the comparison.
//! Screenshots go to `target/page-screens/` for a person to look at.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sprofd_tests::daemon::*;
use sprofd_tests::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium and Playwright for Python are there, or the test is skipped (a failure under
/// `SPROFD_REQUIRE_LIVE=1`).
fn browser_ready(test: &str) -> bool {
    let playwright = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .output()
        .is_ok_and(|o| o.status.success());
    let reason = if !Path::new(CHROMIUM).is_file() {
        format!("{CHROMIUM} missing (apt install chromium)")
    } else if !playwright {
        "Playwright for Python missing (pip install playwright)".to_string()
    } else {
        return true;
    };
    skip(test, &reason);
    false
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn sleep_until(t: f64) {
    let left = t - unix_now();
    if left > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(left));
    }
}

/// `Matched: 74.8%` → 0.748.
fn matched_share(text: &str) -> f64 {
    let n = text
        .trim()
        .strip_prefix("Matched: ")
        .and_then(|t| t.strip_suffix('%'))
        .unwrap_or_else(|| panic!("not a matched share: {text:?}"));
    n.parse::<f64>().unwrap() / 100.0
}

#[live_test]
fn the_page_shows_when_what_ran_and_what_changed() {
    const TEST: &str = "the_page_shows_when_what_ran_and_what_changed";
    if !browser_ready(TEST) {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("page");
    let d = Daemon::start(&dir.join("data"), &["-F", "99", "--window", "2"]);
    // 16 s of work, flipped after 8. The ranges compared keep 2 s (a window) clear of the
    // flip on each side: a range takes every window it overlaps.
    let target = Target::spawn(&c_fixture("cshift", FP), &["16", "8"]);
    let start = unix_now();
    let t0 = start.floor() as u64;
    let (base_end, after_start, end) = (t0 + 6, t0 + 11, t0 + 16);
    // The last window cut after the end, and 1.5 s for the daemon to store it.
    sleep_until(start + 16.0 + 3.5);
    let pid = target.pid.to_string();
    drop(target);

    let shots = workspace_root().join("target/page-screens");
    std::fs::create_dir_all(&shots).unwrap();
    let script = workspace_root().join("tests/browser/page_check.py");
    let out = run_with_timeout(
        Command::new("python3")
            .arg(&script)
            .arg(format!("http://{}", d.addr))
            .arg(&pid)
            .args([t0, base_end, after_start, end].map(|t| t.to_string()))
            .arg(&shots),
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "page_check.py failed{}\ndaemon log:\n{}",
        out.describe(),
        d.log()
    );
    let r: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("page_check.py printed no JSON ({e}){}", out.describe()));
    eprintln!("page_check: {r}");

    assert_eq!(r["console_errors"], serde_json::json!([]), "console errors");
    assert_eq!(
        r["requests_failed"],
        serde_json::json!([]),
        "failed requests"
    );
    // The timeline has the busy fixture's series.
    let series: Vec<&str> = r["timeline_series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(series.contains(&pid.as_str()), "series {series:?}");
    let hover = r["hover"].as_str().unwrap();
    assert!(hover.contains("cshift"), "hover: {hover}");
    assert!(
        r["by_comm_series"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "cshift"),
        "{r}"
    );
    // Its memory: a sparkline in its row, a series in the memory timeline, in MiB.
    assert!(
        r["sparkline_points"].as_u64().unwrap() >= 2,
        "sparkline {}",
        r["sparkline_points"]
    );
    let cell = r["memory_cell"].as_str().unwrap();
    assert!(cell.contains("peak ") && cell.contains(" MiB"), "{cell}");
    let memory: Vec<&str> = r["memory_series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(memory.contains(&pid.as_str()), "memory series {memory:?}");
    assert!(r["url_memory"].as_str().unwrap().contains("metric=memory"));
    let hover = r["memory_hover"].as_str().unwrap();
    assert!(
        hover.contains("MiB") && hover.contains("cshift"),
        "hover: {hover}"
    );
    // The drag over the middle half narrowed the range, and Back restored it.
    let (from, to) = (
        r["dragged"]["from"].as_u64().unwrap(),
        r["dragged"]["to"].as_u64().unwrap(),
    );
    assert!(
        t0 < from && from < to && to < end + 2 && to - from < end - t0,
        "dragged to {from}..{to} in {t0}..{end}"
    );
    assert!(
        r["url_after_back"]
            .as_str()
            .unwrap()
            .contains(&format!("from={t0}")),
        "{r}"
    );
    // The row's click showed its frames in place.
    assert_eq!(r["no_navigation"], true, "the page was reloaded");
    assert!(r["url_after_click"]
        .as_str()
        .unwrap()
        .contains(&format!("pid={pid}")));
    let subtitle = r["subtitle"].as_str().unwrap();
    assert!(
        subtitle.contains(" samples") && subtitle.contains("% of the range's"),
        "{subtitle}"
    );
    // The search's share: a3_hot is 75% of the fixture's CPU before the flip.
    let share = matched_share(r["matched_text"].as_str().unwrap());
    assert!((0.65..0.85).contains(&share), "a3_hot matched {share:.3}");
    assert!(r["highlighted"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "a3_hot"));
    // The zoom filled the width with b1 (a quarter before it); Back undid it, then the click.
    let (zoomed, unzoomed, width) = (
        r["zoomed_width"].as_f64().unwrap(),
        r["unzoomed_width"].as_f64().unwrap(),
        r["flame_width"].as_f64().unwrap(),
    );
    assert!(zoomed > 0.95 * width, "zoomed b1 {zoomed} of {width}");
    assert!(
        (0.1 * width..0.45 * width).contains(&unzoomed),
        "b1 {unzoomed} of {width}"
    );
    let back1 = r["url_back_1"].as_str().unwrap();
    assert!(
        back1.contains(&format!("pid={pid}")) && !back1.contains("zoom="),
        "{back1}"
    );
    assert!(!r["url_back_2"].as_str().unwrap().contains("pid="), "{r}");
    // The comparison: b3_cold grew from a quarter to three quarters, a3_hot shrank.
    let change = |name: &str| {
        r["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == name)
            .unwrap_or_else(|| panic!("{name} not in the changes: {}", r["changes"]))[3]
            .as_f64()
            .unwrap()
    };
    assert!(change("b3_cold") > 30.0, "b3_cold {}", r["changes"]);
    assert!(change("a3_hot") < -30.0, "a3_hot {}", r["changes"]);
    let colour = r["diff_cold_colour"].as_str().unwrap();
    let rgb: Vec<u32> = colour
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(", ")
        .map(|c| c.parse().unwrap())
        .collect();
    assert!(
        rgb[0] == 255 && rgb[1] < 200 && rgb[2] < 200,
        "b3_cold is not red: {colour}"
    );
    assert!(r["group_count"].as_str().unwrap().contains("1 process"));
    assert!(
        r["group_url"]
            .as_str()
            .unwrap()
            .contains("comm=%5Ecshift%24"),
        "{r}"
    );
    let pids: Vec<u64> = r["pids_sorted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(
        pids.len() > 1 && pids.windows(2).all(|w| w[0] < w[1]),
        "rows by pid: {pids:?}"
    );
    eprintln!(
        "screenshots in {} (first contentful paint {} ms)",
        shots.display(),
        r["first_paint_ms"]
    );
}
