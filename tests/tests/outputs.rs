//! Output files and stdout: SVG, folded, statprof table, default file name,
//! and stopping by SIGINT/SIGTERM.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use sprofd_tests::*;

/// One `record` of cratio writing all three formats, with the table on
/// stdout (no -q).
struct AllOutputs {
    out: RunOutput,
    dir: TempDir,
}

fn all_outputs() -> &'static AllOutputs {
    static RUN: OnceLock<AllOutputs> = OnceLock::new();
    RUN.get_or_init(|| {
        let exe = c_fixture("cratio", FP);
        let dir = TempDir::new("outputs-all");
        let out = run_ok(
            sprofd()
                .arg("record")
                .args([
                    "-F", FREQ, "-o", "p.svg", "-o", "p.folded", "-o", "p.txt", "--",
                ])
                .arg(&exe)
                .arg("1.5")
                .current_dir(dir.path()),
        );
        AllOutputs { out, dir }
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[live_test]
fn svg_is_well_formed_with_frame_titles() {
    let run = all_outputs();
    let svg = read(&run.dir.join("p.svg"));
    let titles = svg_titles(&svg).unwrap_or_else(|e| panic!("p.svg is not well-formed: {e}"));
    for name in [
        "cratio", "main", "a1", "a2", "a3_hot", "b1", "b2", "b3_cold",
    ] {
        assert!(
            titles_have_frame(&titles, name),
            "no <title> for frame {name} in p.svg; titles: {:?}",
            &titles[..titles.len().min(40)]
        );
    }
}

#[live_test]
fn folded_is_sorted_with_comm_root() {
    let run = all_outputs();
    let text = read(&run.dir.join("p.folded"));
    let folded = Folded::parse(&text).unwrap_or_else(|e| panic!("p.folded: {e}"));
    assert!(folded.total() > 0, "p.folded has no samples");
    let keys: Vec<String> = folded.stacks.iter().map(|(f, _)| f.join(";")).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        keys,
        sorted,
        "p.folded lines are not sorted\n{}",
        excerpt(&text)
    );
    sorted.dedup();
    assert_eq!(keys.len(), sorted.len(), "p.folded has duplicate stacks");
    for (frames, _) in &folded.stacks {
        assert_eq!(
            frames[0],
            "cratio",
            "root frame must be the comm\n{}",
            excerpt(&text)
        );
    }
    let bad = nonstandard_frames(&folded);
    assert!(bad.is_empty(), "frames outside the folded format: {bad:?}");
}

fn decl_name(func: &str) -> String {
    let (line, _) = fixture_fn_lines("cratio.c", func);
    format!("{func} (cratio.c:{line})")
}

fn check_table(table: &Table, context: &str) {
    let n = table.sample_count;
    assert!(n >= 200, "Sample count {n} too low{context}");
    assert!(
        table.total_time > 0.0,
        "Total time must be positive{context}"
    );
    for w in table.rows.windows(2) {
        assert!(
            w[0].self_secs >= w[1].self_secs,
            "rows not sorted by self seconds: {:?} before {:?}{context}",
            w[0],
            w[1]
        );
    }
    for r in &table.rows {
        assert!(
            r.cumulative + 0.011 >= r.self_secs && (0.0..=100.0).contains(&r.percent),
            "inconsistent row {r:?}{context}"
        );
    }
    let a3 = decl_name("a3_hot");
    let b3 = decl_name("b3_cold");
    let top = table
        .rows
        .first()
        .unwrap_or_else(|| panic!("table has no rows{context}"));
    assert_eq!(
        top.name, a3,
        "top row must be a3_hot with its file:decl-line{context}"
    );
    let tol = 100.0 * share_tolerance(0.75, n, 0.03);
    assert!(
        (top.percent - 75.0).abs() <= tol,
        "a3_hot at {}%, expected 75 ± {tol:.1}{context}",
        top.percent
    );
    let b = table
        .row(&b3)
        .unwrap_or_else(|| panic!("no row named {b3:?}{context}"));
    let tol = 100.0 * share_tolerance(0.25, n, 0.03);
    assert!(
        (b.percent - 25.0).abs() <= tol,
        "b3_cold at {}%, expected 25 ± {tol:.1}{context}",
        b.percent
    );
    let ratio = b.self_secs / top.self_secs;
    assert!(
        (ratio - 1.0 / 3.0).abs() < 0.12,
        "self seconds of b3_cold/a3_hot = {ratio:.3}, expected about 1/3{context}"
    );
}

#[live_test]
fn txt_table_format() {
    let run = all_outputs();
    let text = read(&run.dir.join("p.txt"));
    let context = format!("\n\np.txt:\n{}", excerpt(&text));
    let table = Table::parse(&text).unwrap_or_else(|e| panic!("p.txt: {e}{context}"));
    check_table(&table, &context);
    let folded = Folded::read(&run.dir.join("p.folded"));
    assert_eq!(
        table.sample_count,
        folded.total(),
        "Sample count of p.txt differs from the folded total of the same run{context}"
    );
}

#[live_test]
fn stdout_table_top_30() {
    let run = all_outputs();
    let context = run.out.describe();
    let table =
        Table::parse(&run.out.stdout).unwrap_or_else(|e| panic!("table on stdout: {e}{context}"));
    assert!(
        table.rows.len() <= 30,
        "stdout table has {} rows (top 30 at most){context}",
        table.rows.len()
    );
    check_table(&table, &context);
}

#[live_test]
fn quiet_prints_no_table() {
    let exe = c_fixture("exits", FP);
    let dir = TempDir::new("outputs-quiet");
    let out = run_ok(
        sprofd()
            .arg("record")
            .args(["-F", FREQ, "-q", "-o", "q.folded", "--"])
            .arg(&exe)
            .arg("0.3")
            .current_dir(dir.path()),
    );
    assert!(
        !out.stdout.contains(TABLE_HEADER_1.trim()) && !out.stdout.contains("Sample count:"),
        "-q must not print the table{}",
        out.describe()
    );
}

#[live_test]
fn by_line_table_rows() {
    let exe = c_fixture("cratio", FP);
    let dir = TempDir::new("outputs-byline");
    let out = run_ok(
        sprofd()
            .arg("record")
            .args(["-F", FREQ, "-q", "--by-line", "-o", "l.txt", "--"])
            .arg(&exe)
            .arg("1.0")
            .current_dir(dir.path()),
    );
    let text = read(&dir.join("l.txt"));
    let context = format!("{}\nl.txt:\n{}", out.describe(), excerpt(&text));
    let table = Table::parse(&text).unwrap_or_else(|e| panic!("l.txt: {e}{context}"));
    let (start, end) = fixture_fn_lines("cratio.c", "a3_hot");
    let top = table
        .rows
        .first()
        .unwrap_or_else(|| panic!("no rows{context}"));
    let parts: Vec<&str> = top.name.splitn(3, ':').collect();
    assert!(
        parts.len() == 3 && parts[0] == "cratio.c" && parts[2] == "a3_hot",
        "top --by-line row must be `cratio.c:LINE:a3_hot`, got {:?}{context}",
        top.name
    );
    let line: u32 = parts[1]
        .parse()
        .unwrap_or_else(|_| panic!("bad line in {:?}{context}", top.name));
    assert!(
        line > start && line < end,
        "line {line} is outside a3_hot's body ({start}..{end}){context}"
    );
    // Every row of the fixture's own functions (which have line info) is
    // `cratio.c:LINE:function`; frames without line info (e.g. `_start`)
    // are not specified.
    for func in ["a3_hot", "a2", "a1", "main", "b3_cold", "b2", "b1"] {
        let rows: Vec<&TableRow> = table
            .rows
            .iter()
            .filter(|r| {
                r.name == func
                    || r.name.ends_with(&format!(":{func}"))
                    || r.name.starts_with(&format!("{func} "))
            })
            .collect();
        assert!(!rows.is_empty(), "no --by-line row for {func}{context}");
        for r in rows {
            let p: Vec<&str> = r.name.splitn(3, ':').collect();
            assert!(
                p.len() == 3 && p[0] == "cratio.c" && p[1].parse::<u32>().is_ok() && p[2] == func,
                "--by-line row {:?} is not cratio.c:LINE:{func}{context}",
                r.name
            );
        }
    }
}

/// `sprofd-<comm>-<pid>-<YYYYmmdd-HHMMSS>.svg`
fn is_default_name(name: &str, comm: &str, pid: u32) -> bool {
    let Some(rest) = name
        .strip_prefix(&format!("sprofd-{comm}-{pid}-"))
        .and_then(|r| r.strip_suffix(".svg"))
    else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() == 15
        && b[8] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
}

#[live_test]
fn default_output_file_name() {
    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let dir = TempDir::new("outputs-default");
    let out = run_ok(
        sprofd()
            .arg("attach")
            .arg(target.pid_arg())
            .args(["-F", FREQ, "-d", "1"])
            .current_dir(dir.path()),
    );
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "expected exactly one file in the cwd, got {files:?}{}",
        out.describe()
    );
    let name = &files[0];
    assert!(
        is_default_name(name, "cratio", target.pid),
        "file name {name:?} is not sprofd-cratio-{}-YYYYmmdd-HHMMSS.svg{}",
        target.pid,
        out.describe()
    );
    assert!(
        out.stdout.contains(name.as_str()) || out.stderr.contains(name.as_str()),
        "sprofd must print the path of the written file{}",
        out.describe()
    );
    let svg = read(&dir.join(name));
    let titles = svg_titles(&svg).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(titles_have_frame(&titles, "a3_hot"), "no a3_hot in {name}");
}

fn stop_by_signal(test: &str, sig: i32) {
    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let dir = TempDir::new(test);
    let running = Running::spawn(
        sprofd()
            .arg("attach")
            .arg(target.pid_arg())
            .args([
                "-F", FREQ, "-q", "-o", "s.folded", "-o", "s.svg", "-o", "s.txt",
            ])
            .current_dir(dir.path()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    running.signal(sig);
    let out = running.wait(Duration::from_secs(20));
    assert!(
        out.status.success(),
        "sprofd must stop cleanly (exit 0) on signal {sig}{}",
        out.describe()
    );
    assert_no_panic(&out);
    let folded = Folded::read(&dir.join("s.folded"));
    assert!(
        folded.count_containing("a3_hot") >= 50,
        "too few samples in s.folded{}\n{}",
        out.describe(),
        folded.excerpt()
    );
    let svg = read(&dir.join("s.svg"));
    svg_titles(&svg).unwrap_or_else(|e| panic!("s.svg: {e}"));
    let txt = read(&dir.join("s.txt"));
    let table = Table::parse(&txt).unwrap_or_else(|e| panic!("s.txt: {e}\n{txt}"));
    assert_eq!(
        table.sample_count,
        folded.total(),
        "s.txt and s.folded disagree"
    );
}

#[live_test]
fn sigint_stops_and_writes_outputs() {
    stop_by_signal("sigint_stops_and_writes_outputs", libc::SIGINT);
}

#[live_test]
fn sigterm_stops_and_writes_outputs() {
    stop_by_signal("sigterm_stops_and_writes_outputs", libc::SIGTERM);
}

/// Ctrl-C in a terminal sends SIGINT to the whole foreground process group:
/// sprofd and the recorded command.
#[live_test]
fn record_ctrl_c_process_group_writes_outputs() {
    use std::os::unix::process::CommandExt;
    let exe = c_fixture("cratio", FP);
    let dir = TempDir::new("outputs-ctrlc");
    let running = Running::spawn(
        sprofd()
            .arg("record")
            .args(["-F", FREQ, "-q", "-o", "c.folded", "-o", "c.svg", "--"])
            .arg(&exe)
            .arg("20")
            .current_dir(dir.path())
            .process_group(0),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let pgid = running.pid();
    // SAFETY: killpg(2) has no memory-safety preconditions.
    let r = unsafe { libc::killpg(pgid, libc::SIGINT) };
    assert_eq!(r, 0, "killpg failed");
    let out = running.wait(Duration::from_secs(20));
    assert_no_panic(&out);
    assert!(
        out.elapsed < Duration::from_secs(15),
        "sprofd did not stop on Ctrl-C{}",
        out.describe()
    );
    let folded = Folded::read(&dir.join("c.folded"));
    assert!(
        folded.count_containing("a3_hot") >= 50,
        "too few samples in c.folded{}\n{}",
        out.describe(),
        folded.excerpt()
    );
    let svg = read(&dir.join("c.svg"));
    svg_titles(&svg).unwrap_or_else(|e| panic!("c.svg: {e}"));
}
