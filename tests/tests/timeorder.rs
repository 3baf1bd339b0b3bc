//! speedscope keeps time: `-o NAME.speedscope.json` writes the samples as they happened, per
//! thread, so that speedscope's default *Time Order* view shows a phase change where it
//! happened. Checked on the JSON and in the real speedscope app (npm `speedscope`) in
//! headless Chromium, on `tests/fixtures/phases.c` (1 s of `phase_one`, then 1 s of
//! `phase_two`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sprofd_tests::*;

/// speedscope's page, as `npm install -g speedscope` puts it.
fn speedscope_index() -> Option<PathBuf> {
    let root = Command::new("npm").args(["root", "-g"]).output().ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&root.stdout).trim())
        .join("speedscope/dist/release/index.html");
    path.is_file().then_some(path)
}

#[live_test]
fn speedscope_shows_samples_in_time_order() {
    let _serial = serial();
    let exe = c_fixture("phases", FP);
    let dir = TempDir::new("timeorder");
    let out = run_ok(
        sprofd()
            .args(["record", "-F", FREQ, "-q", "-o", "p.speedscope.json", "--"])
            .arg(&exe)
            .args(["1", "1"])
            .current_dir(dir.path()),
    );
    let text = std::fs::read_to_string(dir.join("p.speedscope.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let frames = json["shared"]["frames"].as_array().unwrap();
    let profile = &json["profiles"][0];
    let phase = |sample: &serde_json::Value| -> Option<u8> {
        let names: Vec<&str> = sample
            .as_array()?
            .iter()
            .map(|i| {
                frames[i.as_u64().unwrap() as usize]["name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        if names.contains(&"phase_one") {
            Some(1)
        } else if names.contains(&"phase_two") {
            Some(2)
        } else {
            None
        }
    };
    let seq: Vec<u8> = profile["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(phase)
        .collect();
    let ones = seq.iter().filter(|&&p| p == 1).count();
    let twos = seq.len() - ones;
    // ~1 s each at 999 Hz.
    assert!(
        ones > 600 && twos > 600,
        "{ones} + {twos} samples{}",
        out.describe()
    );
    let last_one = seq.iter().rposition(|&p| p == 1).unwrap();
    let first_two = seq.iter().position(|&p| p == 2).unwrap();
    assert!(
        last_one < first_two,
        "every phase_one sample before every phase_two sample: last one at {last_one}, first two at {first_two}"
    );
    // Each sample weighs its own period (~1 ms), not an aggregate.
    let weights = profile["weights"].as_array().unwrap();
    assert_eq!(weights.len(), profile["samples"].as_array().unwrap().len());
    assert!(
        weights.iter().all(|w| w.as_u64().unwrap() < 10_000_000),
        "per-sample weights"
    );

    // The real app, in its default view.
    let Some(index) = speedscope_index() else {
        assert!(
            std::env::var("SPROFD_REQUIRE_LIVE").as_deref() != Ok("1"),
            "npm speedscope missing (SPROFD_REQUIRE_LIVE=1)"
        );
        eprintln!("SKIP speedscope_shows_samples_in_time_order (app): npm speedscope missing");
        return;
    };
    let seen = run_with_timeout(
        Command::new("python3")
            .arg(fixtures_dir().join("speedscope_check.py"))
            .arg(&index)
            .arg(dir.join("p.speedscope.json"))
            .arg(dir.path())
            .args(["0.05", "0.95"])
            .env("HOME", std::env::temp_dir()),
        Duration::from_secs(120),
    );
    assert!(
        seen.status.success(),
        "speedscope_check.py{}",
        seen.describe()
    );
    let v: serde_json::Value = serde_json::from_str(&seen.stdout).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{}", seen.stdout);
    assert!(
        v["toolbar"].as_str().unwrap().contains("Time Order"),
        "{}",
        seen.stdout
    );
    let column = |x: &str| -> Vec<String> {
        v["columns"][x]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let (left, right) = (column("0.05"), column("0.95"));
    let has = |col: &[String], name: &str| col.iter().any(|t| t.contains(name));
    assert!(
        has(&left, "phase_one") && !has(&left, "phase_two"),
        "start: {left:?}"
    );
    assert!(
        has(&right, "phase_two") && !has(&right, "phase_one"),
        "end: {right:?}"
    );
    // Line information shows in the frames.
    assert!(
        has(&left, "phases.c:"),
        "file:line in the tooltip: {left:?}"
    );
}
