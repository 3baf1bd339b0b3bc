//! "Which line": the annotated source (`-o NAME.lines.txt`) and `sprofd annotate` on real
//! Python and C processes whose per-line costs are known by construction
//! (`tests/fixtures/python/lines.py`, `tests/fixtures/lines.c`: one-line loops of 4, 3, 2 and
//! 1 units, a line calling a hot function, a decorator, a lambda, a comprehension, a
//! multi-line statement, an inlined function), attached by pid at 999 Hz for 5 s; and
//! `annotate` on a Go program's CPU profile converted by `go tool pprof -proto`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sprofd_tests::*;

/// One function's section of a listing.
#[derive(Debug, Default)]
struct Section {
    file: String,
    /// `Source not shown: …`, if any.
    not_shown: Option<String>,
    /// Line → (samples, self, % of the function, text).
    rows: BTreeMap<u32, (u64, u64, f64, String)>,
}

/// Parses a listing into its sections by function name (the first of each name).
fn parse_listing(text: &str) -> BTreeMap<String, Section> {
    let mut out: BTreeMap<String, Section> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_rows = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Function: ") {
            let name = rest.split(" at line ").next().unwrap_or(rest).to_string();
            in_rows = false;
            current = (!out.contains_key(&name)).then(|| {
                out.insert(name.clone(), Section::default());
                name
            });
            continue;
        }
        let Some(section) = current.as_ref().and_then(|n| out.get_mut(n)) else {
            continue;
        };
        if let Some(file) = line.strip_prefix("File: ") {
            section.file = file.to_string();
        } else if let Some(why) = line.strip_prefix("Source not shown: ") {
            section.not_shown = Some(why.to_string());
        } else if line.starts_with("=====") {
            in_rows = true;
        } else if in_rows && line.len() >= 6 {
            // `{n:>6} {samples:>9} {self:>9} {pct:>7}  text`
            let Ok(n) = line[..6].trim().parse::<u32>() else {
                continue;
            };
            let field = |a: usize, b: usize| line.get(a..b.min(line.len())).unwrap_or("").trim();
            let samples = field(7, 16).parse().unwrap_or(0);
            let self_ = field(17, 26).parse().unwrap_or(0);
            let pct = field(27, 34).parse().unwrap_or(0.0);
            let text = line.get(36..).unwrap_or("").to_string();
            section.rows.insert(n, (samples, self_, pct, text));
        }
    }
    out
}

/// The line of `file` carrying the marker `L:name`.
fn marked(file: &Path, name: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap();
    let tag = format!("L:{name}");
    let hits: Vec<u32> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.split(|c: char| c.is_whitespace() || c == '*')
                .any(|w| w == tag)
        })
        .map(|(i, _)| i as u32 + 1)
        .collect();
    assert_eq!(hits.len(), 1, "marker {tag} in {}", file.display());
    hits[0]
}

fn section<'a>(listing: &'a BTreeMap<String, Section>, name: &str, context: &str) -> &'a Section {
    listing.get(name).unwrap_or_else(|| {
        panic!(
            "no section for {name}; sections {:?}{context}",
            listing.keys()
        )
    })
}

fn pct(s: &Section, line: u32) -> f64 {
    s.rows.get(&line).map_or(0.0, |r| r.2)
}

/// The four one-line loops cost 40/30/20/10 % of their function, each within 3 points.
fn check_loops(s: &Section, src: &Path, context: &str) {
    for (name, want) in [
        ("loop40", 40.0),
        ("loop30", 30.0),
        ("loop20", 20.0),
        ("loop10", 10.0),
    ] {
        let line = marked(src, name);
        let got = pct(s, line);
        assert!(
            (got - want).abs() <= 3.0,
            "line {line} ({name}): {got:.1}% of the function, expected {want}±3{context}"
        );
    }
}

/// `line` holds (nearly) all of the function's samples.
fn check_whole(s: &Section, line: u32, what: &str, context: &str) {
    let got = pct(s, line);
    assert!(
        got >= 97.0,
        "{what}: line {line} has {got:.1}% of its function{context}"
    );
}

fn annotate(args: &[&str], dir: &Path) -> RunOutput {
    run_ok(sprofd().arg("annotate").args(args).current_dir(dir))
}

/// Runs `tests/fixtures/heatmap_check.py` on a heatmap page in headless Chromium; `None`
/// (after a SKIP line, or a failure under `SPROFD_REQUIRE_LIVE=1`) without Playwright or
/// Chromium.
fn heatmap_in_chromium(
    page: &Path,
    file: &str,
    line: u32,
    search: &str,
) -> Option<serde_json::Value> {
    let have = Command::new("python3")
        .args(["-c", "import playwright"])
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new("/usr/bin/chromium").exists();
    if !have {
        assert!(
            std::env::var("SPROFD_REQUIRE_LIVE").as_deref() != Ok("1"),
            "python3 playwright or /usr/bin/chromium missing (SPROFD_REQUIRE_LIVE=1)"
        );
        eprintln!("SKIP heatmap in Chromium: python3 playwright or /usr/bin/chromium missing");
        return None;
    }
    let out = run_with_timeout(
        Command::new("python3")
            .arg(fixtures_dir().join("heatmap_check.py"))
            .arg(page)
            .arg(file)
            .arg(line.to_string())
            .arg(search)
            .env("HOME", std::env::temp_dir()),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "heatmap_check.py{}", out.describe());
    Some(serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}{}", out.describe())))
}

/// The heatmap's rows carry the listing's figures for `lines` of `section`; the page loads
/// nothing, raises nothing, and hover, click, toggle and search answer.
fn check_heatmap(seen: &serde_json::Value, section: &Section, lines: &[u32], function: &str) {
    let ctx = || serde_json::to_string_pretty(seen).unwrap();
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "page errors {}",
        ctx()
    );
    assert_eq!(
        seen["requests"],
        serde_json::json!([]),
        "self-contained {}",
        ctx()
    );
    assert!(
        seen["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g.as_str().unwrap().starts_with("Your code")),
        "{}",
        ctx()
    );
    let rows = seen["rows"].as_array().unwrap();
    for &line in lines {
        let row = rows
            .iter()
            .find(|r| r["line"] == line)
            .unwrap_or_else(|| panic!("no row {line} {}", ctx()));
        let (samples, self_, _, text) = &section.rows[&line];
        assert_eq!(row["total"], *samples, "line {line} total {}", ctx());
        assert_eq!(row["self"], *self_, "line {line} self {}", ctx());
        assert_eq!(row["text"].as_str().unwrap(), text, "line {line} text");
        assert!(
            !row["background"].as_str().unwrap().is_empty(),
            "hot line coloured"
        );
    }
    assert!(
        seen["hover_title"].as_str().unwrap().contains("total"),
        "{}",
        ctx()
    );
    let detail = seen["detail"].as_str().unwrap();
    assert!(
        detail.contains("Callers") && detail.contains("Callees"),
        "{}",
        ctx()
    );
    assert!(
        !seen["callers"].as_array().unwrap().is_empty(),
        "callers listed {}",
        ctx()
    );
    // The title reads `file:N  total T (P%)  self S (Q%)`: the toggle shows P, then Q.
    let title = seen["hover_title"].as_str().unwrap();
    let share_after = |word: &str| {
        let rest = &title[title.find(word).unwrap()..];
        rest[rest.find('(').unwrap() + 1..rest.find(')').unwrap()].to_string()
    };
    assert_eq!(
        seen["total_shown"],
        share_after("total "),
        "total shown {}",
        ctx()
    );
    assert_eq!(
        seen["self_shown"],
        share_after("self "),
        "self shown after the toggle {}",
        ctx()
    );
    assert!(
        seen["search"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with(function)),
        "search finds {function} {}",
        ctx()
    );
}

fn python() -> Option<PathBuf> {
    let root = std::env::var("PYENV_ROOT")
        .unwrap_or_else(|_| format!("{}/.pyenv", std::env::var("HOME").unwrap_or_default()));
    let p = PathBuf::from(format!("{root}/versions/3.12.1/bin/python3.12"));
    p.is_file().then_some(p)
}

#[test]
fn python_lines_as_line_profiler_shows_them() {
    if !live("python_lines_as_line_profiler_shows_them") {
        return;
    }
    let Some(py) = python() else {
        assert!(
            std::env::var("SPROFD_REQUIRE_LIVE").as_deref() != Ok("1"),
            "CPython 3.12.1 (pyenv) missing"
        );
        eprintln!("SKIP python_lines_as_line_profiler_shows_them: CPython 3.12.1 (pyenv) missing");
        return;
    };
    let _serial = serial();
    let dir = TempDir::new("lines-python");
    let src = dir.join("lines.py");
    std::fs::copy(fixtures_dir().join("python/lines.py"), &src).unwrap();
    // Relative, as `python3 lines.py` names it: found through the process's cwd.
    let target = Target::spawn_in(Some(dir.path()), &py, &["lines.py", "0"]);
    let out = run_ok(
        sprofd()
            .args(["attach", &target.pid_arg(), "-d", "5", "-F", FREQ, "-q"])
            .args([
                "-o",
                "p.lines.txt",
                "-o",
                "p.folded",
                "--by-line",
                "--functions",
                "30",
            ])
            .args(["-o", "p.heatmap.html"])
            .current_dir(dir.path()),
    );
    drop(target);
    let text = std::fs::read_to_string(dir.join("p.lines.txt")).unwrap();
    let context = format!("{}\np.lines.txt:\n{text}", out.describe());
    let listing = parse_listing(&text);
    let four = section(&listing, "four_loops", &context);
    assert!(four.not_shown.is_none(), "source shown{context}");
    check_loops(four, &src, &context);
    // The rows carry the file's own text, cold lines included (`a = 0`, no figures).
    let loop40 = marked(&src, "loop40");
    let src_text = std::fs::read_to_string(&src).unwrap();
    let src_lines: Vec<&str> = src_text.lines().collect();
    assert_eq!(
        four.rows[&loop40].3,
        src_lines[loop40 as usize - 1],
        "{context}"
    );
    assert_eq!(
        four.rows[&(loop40 - 1)],
        (0, 0, 0.0, "    a = 0".into()),
        "{context}"
    );
    check_whole(
        section(&listing, "caller", &context),
        marked(&src, "call"),
        "caller",
        &context,
    );
    check_whole(
        section(&listing, "hot", &context),
        marked(&src, "hot"),
        "hot",
        &context,
    );
    check_whole(
        section(&listing, "timed.<locals>.wrapper", &context),
        marked(&src, "wrapped"),
        "the decorator's wrapper",
        &context,
    );
    let decorated = section(&listing, "decorated", &context);
    check_whole(decorated, marked(&src, "decorated"), "decorated", &context);
    assert!(
        decorated
            .rows
            .keys()
            .next()
            .is_some_and(|&l| src_lines[l as usize - 1] == "@timed"),
        "a decorated function is listed from its decorator{context}"
    );
    check_whole(
        section(&listing, "<lambda>", &context),
        marked(&src, "lambda"),
        "lambda",
        &context,
    );
    check_whole(
        section(&listing, "comprehension", &context),
        marked(&src, "comp"),
        "comprehension",
        &context,
    );
    // A statement over four lines: its samples are on its lines, and only there.
    let multi = section(&listing, "multi_line", &context);
    let start = marked(&src, "multi");
    let on_statement: f64 = (start..start + 4).map(|l| pct(multi, l)).sum();
    assert!(
        on_statement >= 97.0,
        "multi-line statement: {on_statement:.1}%{context}"
    );

    // The heatmap shows the same figures, in Chromium.
    if let Some(seen) =
        heatmap_in_chromium(&dir.join("p.heatmap.html"), "lines.py", loop40, "four_lo")
    {
        check_heatmap(
            &seen,
            four,
            &[loop40, loop40 + 1, loop40 + 2, loop40 + 3],
            "four_loops",
        );
    }

    // `annotate` on the folded stacks gives the same figures.
    let a = annotate(&["p.folded", "^four_loops$"], dir.path());
    let again = parse_listing(&a.stdout);
    let four2 = section(&again, "four_loops", &a.stdout);
    assert_eq!(again.len(), 1, "REGEX selects{}", a.describe());
    for line in loop40..loop40 + 4 {
        assert_eq!(
            four.rows[&line].0,
            four2.rows[&line].0,
            "line {line}{}",
            a.describe()
        );
    }
    assert_eq!(four2.rows[&loop40].3, four.rows[&loop40].3);
}

/// Builds `tests/fixtures/lines.c` from a copy in `dir`, so that the test can edit and
/// remove the source.
fn build_c(dir: &TempDir) -> (PathBuf, PathBuf) {
    let src = dir.join("lines.c");
    std::fs::copy(fixtures_dir().join("lines.c"), &src).unwrap();
    let exe = dir.join("lines");
    let out = Command::new("cc")
        .args(FP)
        .arg("-I")
        .arg(fixtures_dir())
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("cc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (src, exe)
}

#[test]
fn c_lines_inlined_functions_and_changed_or_missing_sources() {
    if !live("c_lines_inlined_functions_and_changed_or_missing_sources") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("lines-c");
    let (src, exe) = build_c(&dir);
    let target = Target::spawn(&exe, &["0"]);
    // Edited after the process started: its lines may no longer be those that run.
    std::thread::sleep(Duration::from_millis(1500));
    let now = std::fs::read(&src).unwrap();
    std::fs::write(&src, now).unwrap();
    let out = run_ok(
        sprofd()
            .args(["attach", &target.pid_arg(), "-d", "5", "-F", FREQ, "-q"])
            .args([
                "-o",
                "c.lines.txt",
                "-o",
                "c.pb.gz",
                "-o",
                "c.folded",
                "--by-line",
            ])
            .current_dir(dir.path()),
    );
    drop(target);
    let text = std::fs::read_to_string(dir.join("c.lines.txt")).unwrap();
    let context = format!("{}\nc.lines.txt:\n{text}", out.describe());
    let listing = parse_listing(&text);
    let four = section(&listing, "four_loops", &context);
    assert!(
        four.not_shown
            .as_deref()
            .is_some_and(|w| w.contains("changed since the process started")),
        "an edited source is reported, not printed{context}"
    );
    assert!(
        four.rows.values().all(|r| r.3.is_empty()),
        "no text{context}"
    );
    check_loops(four, &src, &context);
    check_whole(
        section(&listing, "caller", &context),
        marked(&src, "call"),
        "caller",
        &context,
    );
    // The inlined function's samples are on its own line, its caller's on the call site.
    check_whole(
        section(&listing, "inlined_loop", &context),
        marked(&src, "inlined"),
        "inlined_loop",
        &context,
    );
    let with = section(&listing, "with_inlined", &context);
    assert!(
        with.rows.values().any(|r| r.2 >= 97.0),
        "with_inlined's samples on one line (the call){context}"
    );

    // The profile was written after the edit: `annotate` shows the text, same figures.
    for profile in ["c.pb.gz", "c.folded"] {
        let a = annotate(&[profile, "four_loops"], dir.path());
        let l = parse_listing(&a.stdout);
        let s = section(&l, "four_loops", &a.describe());
        assert!(s.not_shown.is_none(), "{profile}{}", a.describe());
        let loop40 = marked(&src, "loop40");
        assert!(
            s.rows[&loop40].3.contains("L:loop40"),
            "{profile}{}",
            a.describe()
        );
        for line in loop40..loop40 + 4 {
            assert_eq!(s.rows[&line].0, four.rows[&line].0, "{profile} line {line}");
        }
    }
    // Native code in the heatmap, from the saved profile.
    let a = annotate(&["c.pb.gz", "four_loops"], dir.path());
    let with_text = parse_listing(&a.stdout);
    annotate(&["c.pb.gz", "-o", "c.html"], dir.path());
    let loop40 = marked(&src, "loop40");
    if let Some(seen) = heatmap_in_chromium(&dir.join("c.html"), "lines.c", loop40, "four_lo") {
        let s = section(&with_text, "four_loops", &a.stdout);
        check_heatmap(
            &seen,
            s,
            &[loop40, loop40 + 1, loop40 + 2, loop40 + 3],
            "four_loops",
        );
    }

    std::fs::remove_file(&src).unwrap();
    let a = annotate(
        &["c.pb.gz", "four_loops", "-o", "gone.lines.txt"],
        dir.path(),
    );
    let gone = std::fs::read_to_string(dir.join("gone.lines.txt")).unwrap();
    let l = parse_listing(&gone);
    let s = section(&l, "four_loops", &a.describe());
    assert!(
        s.not_shown
            .as_deref()
            .is_some_and(|w| w.ends_with("missing")),
        "a missing source is reported{}\n{gone}",
        a.describe()
    );
    check_loops(s, &fixtures_dir().join("lines.c"), &gone);
}

#[test]
fn annotate_reads_a_go_pprof_with_lines() {
    let have_go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_go {
        assert!(
            std::env::var("SPROFD_REQUIRE_LIVE").as_deref() != Ok("1"),
            "go missing (SPROFD_REQUIRE_LIVE=1)"
        );
        eprintln!("SKIP annotate_reads_a_go_pprof_with_lines: go missing");
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("lines-go");
    let src = dir.join("main.go");
    std::fs::copy(fixtures_dir().join("go/lines.go"), &src).unwrap();
    let go = |args: &[&str]| {
        let out = run_with_timeout(
            Command::new("go")
                .args(args)
                .current_dir(dir.path())
                .env("HOME", dir.path())
                .env("GOCACHE", dir.join("gocache"))
                .env("GOPATH", dir.join("gopath"))
                .env("GO111MODULE", "off"),
            Duration::from_secs(300),
        );
        assert!(out.status.success(), "go {args:?}{}", out.describe());
        out
    };
    go(&["build", "-o", "golines", "main.go"]);
    let run = run_with_timeout(
        Command::new(dir.join("golines"))
            .args(["4", "cpu.prof"])
            .current_dir(dir.path()),
        Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", run.describe());
    go(&[
        "tool", "pprof", "-proto", "-output", "go.pb.gz", "golines", "cpu.prof",
    ]);
    let a = annotate(&["go.pb.gz", "fourLoops"], dir.path());
    let listing = parse_listing(&a.stdout);
    let s = section(&listing, "main.fourLoops", &a.stdout);
    assert!(s.not_shown.is_none(), "{}", a.stdout);
    // Go samples CPU time: on a loaded machine the program, which runs for a wall-clock
    // time, gets fewer (626 in all in one CI run with builds beside it), so the bar is on the
    // total and the shares' tolerance follows from it.
    let total: u64 = s.rows.values().map(|r| r.0).sum();
    assert!(total > 300, "enough samples: {}", a.stdout);
    for (name, want) in [
        ("loop40", 0.4),
        ("loop30", 0.3),
        ("loop20", 0.2),
        ("loop10", 0.1),
    ] {
        let line = marked(&src, name);
        let got = pct(s, line) / 100.0;
        let tol = share_tolerance(want, total, 0.03);
        assert!(
            (got - want).abs() <= tol,
            "{name}: {got:.3} vs {want}±{tol:.3}\n{}",
            a.stdout
        );
        assert!(
            s.rows[&line].3.contains(&format!("L:{name}")),
            "{}",
            a.stdout
        );
    }
}

/// The daemon's page links each process's heatmap for the chosen range, and the link serves
/// the page with the process's own source (read in its root while it runs).
#[test]
fn daemon_page_links_each_process_heatmap() {
    if !live("daemon_page_links_each_process_heatmap") {
        return;
    }
    let Some(py) = python() else {
        assert!(
            std::env::var("SPROFD_REQUIRE_LIVE").as_deref() != Ok("1"),
            "CPython 3.12.1 (pyenv) missing"
        );
        eprintln!("SKIP daemon_page_links_each_process_heatmap: CPython 3.12.1 (pyenv) missing");
        return;
    };
    let _serial = serial();
    let dir = TempDir::new("lines-daemon");
    let src = dir.join("lines.py");
    std::fs::copy(fixtures_dir().join("python/lines.py"), &src).unwrap();
    let target = Target::spawn_in(Some(dir.path()), &py, &["lines.py", "0"]);
    let d = sprofd_tests::daemon::Daemon::start(
        &dir.join("data"),
        &["-F", "99", "--window", "2", "--pid", &target.pid_arg()],
    );
    std::thread::sleep(Duration::from_secs(5));
    let page = d.get("/?from=-1m&to=now").text();
    let href = page
        .split("href=\"")
        .skip(1)
        .filter_map(|h| h.split('"').next())
        .find(|h| h.contains("format=heatmap") && h.contains(&format!("pid={}", target.pid)))
        .unwrap_or_else(|| panic!("no heatmap link for pid {}:\n{page}", target.pid))
        .replace("&amp;", "&");
    let r = d.get(&href);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.contains("text/html"), "{}", r.headers);
    let html = r.text();
    let start = html.find("id=\"data\">").expect("data") + "id=\"data\">".len();
    let end = html[start..].find("</script>").unwrap() + start;
    let data: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
    let file = data["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with("lines.py")))
        .unwrap_or_else(|| panic!("lines.py in the heatmap: {data}"));
    let loop40 = marked(&src, "loop40");
    assert!(
        file["note"].is_null(),
        "source read in the process's root: {}",
        file["note"]
    );
    assert!(
        file["text"][loop40 as usize - 1]
            .as_str()
            .unwrap()
            .contains("L:loop40"),
        "{file}"
    );
    assert!(
        file["hits"][loop40.to_string()][0].as_u64().unwrap() > 0,
        "{file}"
    );

    // The stored windows, as `sprofd report` writes them: the same listing.
    let out = run_ok(
        sprofd()
            .args(["report", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--pid", &target.pid_arg(), "-o", "r.lines.txt", "-q"])
            .current_dir(dir.path()),
    );
    let text = std::fs::read_to_string(dir.join("r.lines.txt")).unwrap();
    let listing = parse_listing(&text);
    let four = section(
        &listing,
        "four_loops",
        &format!("{}\n{text}", out.describe()),
    );
    assert!(four.not_shown.is_none(), "{text}");
    assert!(
        four.rows[&loop40].0 > 0 && four.rows[&loop40].3.contains("L:loop40"),
        "{text}"
    );
}

/// `sprofd annotate` on what it cannot read: one line and a non-zero exit, never a panic.
#[test]
fn annotate_refuses_bad_input_in_one_line() {
    let dir = TempDir::new("lines-annotate-errors");
    std::fs::write(dir.join("plain.folded"), "main;work 3\n").unwrap();
    std::fs::write(dir.join("bad.pb.gz"), [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
    std::fs::write(dir.join("p.speedscope.json"), "{}").unwrap();
    std::fs::write(dir.join("ok.folded"), "main (/x.c:3) 3\n").unwrap();
    for args in [
        &["missing.pb.gz"][..],
        &["plain.folded"],
        &["bad.pb.gz"],
        &["p.speedscope.json"],
        &["ok.folded", "("],
        &["ok.folded", "-o", "x.svg"],
    ] {
        let out = run(sprofd().arg("annotate").args(args).current_dir(dir.path()));
        assert_clean_error(&out);
        assert_eq!(out.stderr_lines().len(), 1, "{args:?}{}", out.describe());
    }
}
