//! `sprofd diff`: differential outputs from folded and pprof profiles, normalization, and
//! unreadable inputs as one-line errors. No perf sampling needed.

use std::path::{Path, PathBuf};

use flamegraph_out::{Exporter, Pprof};
use sprof_core::{Frame, FrameKind};
use sprofd_tests::*;

const BEFORE: &str = "app;main;parse 30\napp;main;render 10\n";
const AFTER: &str = "app;main;parse 10\napp;main;render 30\napp;main;gc 20\n";
const TABLE_HEADER: &str = " before %   after %     delta  function";

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `stack -> (before, after)` from differential folded text, every line checked.
fn diff_lines(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .map(|line| {
            let mut parts = line.rsplitn(3, ' ');
            let after = parts.next().and_then(|n| n.parse().ok());
            let before = parts.next().and_then(|n| n.parse().ok());
            match (parts.next(), before, after) {
                (Some(stack), Some(b), Some(a)) => (stack.to_string(), b, a),
                _ => panic!("not `stack before after`: {line:?}\n{text}"),
            }
        })
        .collect()
}

/// The table rows after the header: `(before %, after %, delta, function)`.
fn table_rows(text: &str) -> Vec<(f64, f64, f64, String)> {
    let start = text
        .lines()
        .position(|l| l == TABLE_HEADER)
        .unwrap_or_else(|| panic!("no table header in:\n{text}"));
    text.lines()
        .skip(start + 1)
        .take_while(|l| *l != "---")
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |s: &str| s.parse::<f64>().unwrap_or_else(|_| panic!("row {l:?}"));
            (num(f[0]), num(f[1]), num(f[2]), f[3..].join(" "))
        })
        .collect()
}

fn no_files_but(dir: &Path, expected: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected, "files in {}", dir.display());
}

#[test]
fn folded_profiles_give_svg_folded_and_table() {
    let dir = TempDir::new("diff-folded");
    let before = write(&dir, "before.folded", BEFORE.as_bytes());
    let after = write(&dir, "after.folded", AFTER.as_bytes());
    let out = run_ok(
        sprofd()
            .arg("diff")
            .args([&before, &after])
            .args(["-o", "d.svg", "-o", "d.folded", "-o", "d.txt"])
            .current_dir(dir.path()),
    );

    let svg = std::fs::read_to_string(dir.join("d.svg")).unwrap();
    let titles = svg_titles(&svg).unwrap_or_else(|e| panic!("{e}{}", out.describe()));
    for frame in ["app", "main", "parse", "render", "gc"] {
        assert!(titles_have_frame(&titles, frame), "{frame}: {titles:?}");
    }
    // inferno's differential titles: `name (N samples, X%; ±D%)`, D in points of AFTER.
    let title = |name: &str| {
        titles
            .iter()
            .find(|t| t.starts_with(&format!("{name} (")))
            .unwrap_or_else(|| panic!("{name}: {titles:?}"))
            .clone()
    };
    assert_eq!(title("parse"), "parse (10 samples, 16.67%; -33.33%)");
    assert_eq!(title("render"), "render (30 samples, 50.00%; +33.33%)");
    assert_eq!(title("gc"), "gc (20 samples, 33.33%; +33.33%)");
    assert!(svg.contains("sprofd diff: "), "title missing");
    assert!(svg.contains("before 40 samples · after 60 samples · not normalized"));

    let folded = std::fs::read_to_string(dir.join("d.folded")).unwrap();
    assert_eq!(
        diff_lines(&folded),
        [
            ("app;main;gc".to_string(), 0, 20),
            ("app;main;parse".to_string(), 30, 10),
            ("app;main;render".to_string(), 10, 30),
        ]
    );

    let table = std::fs::read_to_string(dir.join("d.txt")).unwrap();
    let rows = table_rows(&table);
    assert_eq!(rows[0], (75.0, 16.67, -58.33, "parse".to_string()));
    assert_eq!(rows[1].3, "gc");
    assert!(table.contains("Before: 40 samples · After: 60 samples"));
    assert_eq!(table_rows(&out.stdout), rows, "the table is printed too");
    no_files_but(
        dir.path(),
        &[
            "before.folded",
            "after.folded",
            "d.svg",
            "d.folded",
            "d.txt",
        ],
    );
}

/// A pprof profile as sprofd writes it: `app;main;parse` x30, `app;main;render` x10.
fn pprof_bytes() -> Vec<u8> {
    let profile = sprof_testkit::profile(
        vec![
            Frame::bare("app", FrameKind::Root),
            Frame::bare("main", FrameKind::Native),
            Frame::bare("parse", FrameKind::Native),
            Frame::bare("render", FrameKind::Native),
        ],
        &[(&[0, 1, 2], 30), (&[0, 1, 3], 10)],
        1_000_000,
    );
    let mut bytes = Vec::new();
    Pprof::default().export(&profile, &mut bytes).unwrap();
    bytes
}

#[test]
fn pprof_profiles_are_read_back() {
    let dir = TempDir::new("diff-pprof");
    let before = write(&dir, "before.pb.gz", &pprof_bytes());
    let after = write(&dir, "after.folded", AFTER.as_bytes());
    let out = run_ok(
        sprofd()
            .arg("diff")
            .args([&before, &after])
            .args(["-o", "d.folded", "--rows", "1"])
            .current_dir(dir.path()),
    );
    let folded = std::fs::read_to_string(dir.join("d.folded")).unwrap();
    assert_eq!(
        diff_lines(&folded),
        [
            ("app;main;gc".to_string(), 0, 20),
            ("app;main;parse".to_string(), 30, 10),
            ("app;main;render".to_string(), 10, 30),
        ]
    );
    let rows = table_rows(&out.stdout);
    assert_eq!(
        rows,
        [(75.0, 16.67, -58.33, "parse".to_string())],
        "--rows 1"
    );
}

#[test]
fn normalize_scales_before_to_after_total() {
    let dir = TempDir::new("diff-normalize");
    // AFTER is the same mix over twice the samples: a longer run, nothing changed.
    let before = write(
        &dir,
        "before.folded",
        b"app;main;parse 30\napp;main;render 10\n",
    );
    let after = write(
        &dir,
        "after.folded",
        b"app;main;parse 60\napp;main;render 20\n",
    );
    let diff = |normalize: bool| {
        let mut cmd = sprofd();
        cmd.arg("diff")
            .args([&before, &after])
            .args(["-q", "-o", "d.folded", "-o", "d.svg", "-o", "d.txt"])
            .current_dir(dir.path());
        if normalize {
            cmd.arg("--normalize");
        }
        let out = run_ok(&mut cmd);
        assert!(out.stdout.is_empty(), "-q prints nothing{}", out.describe());
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        (diff_lines(&read("d.folded")), read("d.svg"), read("d.txt"))
    };

    let (plain, svg, table) = diff(false);
    assert_eq!(
        plain,
        [
            ("app;main;parse".to_string(), 30, 60),
            ("app;main;render".to_string(), 10, 20),
        ]
    );
    let titles = svg_titles(&svg).unwrap();
    assert!(
        titles
            .iter()
            .any(|t| t == "parse (60 samples, 75.00%; +37.50%)"),
        "without --normalize everything grew: {titles:?}"
    );

    let (normalized, svg, normalized_table) = diff(true);
    assert_eq!(
        normalized,
        [
            ("app;main;parse".to_string(), 60, 60),
            ("app;main;render".to_string(), 20, 20),
        ]
    );
    let titles = svg_titles(&svg).unwrap();
    assert!(
        titles
            .iter()
            .any(|t| t == "parse (60 samples, 75.00%; 0.00%)"),
        "normalized, nothing changed: {titles:?}"
    );
    assert!(svg.contains("normalized (before ×2.000)"));
    // Shares are shares: the table is the same either way, and shows no change.
    assert_eq!(table, normalized_table);
    assert!(table_rows(&table).iter().all(|r| r.2 == 0.0), "{table}");
}

/// Runs a diff that must fail with one line naming `culprit`, writing nothing.
fn expect_diff_error(dir: &TempDir, before: &Path, after: &Path, culprit: &str) {
    let before_files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    let out = run(sprofd()
        .arg("diff")
        .args([before, after])
        .args(["-o", "err.svg", "-o", "err.txt"])
        .current_dir(dir.path()));
    assert_clean_error(&out);
    assert_eq!(out.stderr_lines().len(), 1, "{}", out.describe());
    assert!(
        out.stderr.contains(culprit),
        "the error names {culprit}{}",
        out.describe()
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        before_files.len(),
        "no output and no temporary file left{}",
        out.describe()
    );
}

#[test]
fn unreadable_inputs_are_one_line_errors() {
    let dir = TempDir::new("diff-errors");
    let good = write(&dir, "good.folded", AFTER.as_bytes());
    let missing = dir.join("missing.folded");
    expect_diff_error(&dir, &missing, &good, "missing.folded");

    let svg = write(&dir, "before.svg", b"<svg/>");
    expect_diff_error(&dir, &svg, &good, "before.svg");
    let no_ext = write(&dir, "profile", AFTER.as_bytes());
    expect_diff_error(&dir, &good, &no_ext, "profile");

    let mut corrupt = pprof_bytes();
    corrupt.truncate(corrupt.len() / 2);
    let corrupt = write(&dir, "corrupt.pb.gz", &corrupt);
    expect_diff_error(&dir, &good, &corrupt, "corrupt.pb.gz");
    let garbage = write(
        &dir,
        "garbage.pprof",
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    );
    expect_diff_error(&dir, &garbage, &good, "garbage.pprof");

    let bad = write(&dir, "bad.folded", b"app;main 3\napp;main;parse three\n");
    expect_diff_error(&dir, &bad, &good, "bad.folded: not folded stacks: line 2");
}

#[test]
fn bad_outputs_are_usage_errors() {
    let dir = TempDir::new("diff-outputs");
    let a = write(&dir, "a.folded", BEFORE.as_bytes());
    let b = write(&dir, "b.folded", AFTER.as_bytes());
    for (output, culprit) in [
        ("d.pb.gz", "d.pb.gz"),
        ("d.png", "d.png"),
        ("no-such-dir/d.svg", "no-such-dir"),
    ] {
        let out = run(sprofd()
            .arg("diff")
            .args([&a, &b])
            .args(["-o", output])
            .current_dir(dir.path()));
        assert_clean_error(&out);
        assert!(out.stderr.contains(culprit), "{}", out.describe());
    }
    no_files_but(dir.path(), &["a.folded", "b.folded"]);
    let out = run(sprofd().args(["diff", "a.folded"]).current_dir(dir.path()));
    assert_clean_error(&out);
}
