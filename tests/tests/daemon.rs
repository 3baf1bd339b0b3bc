//! `sprofd daemon` and `sprofd report` as a service: started on a free loopback port with a
//! temporary data directory, profiling real fixtures host-wide, checked through its HTTP API
//! with the clients users have (go tool pprof, Prometheus, headless Chromium), its signals,
//! its history on disk across restarts, and its privileges.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sprofd_tests::daemon::*;
use sprofd_tests::*;

/// Share of `hot` among the samples that contain `hot` or `cold`.
fn split(f: &Folded, hot: &str, cold: &str) -> (f64, u64) {
    let h = f.count_containing(hot) as f64;
    let c = f.count_containing(cold) as f64;
    (h / (h + c).max(1.0), (h + c) as u64)
}

fn chromium_dom(url: &str) -> String {
    let profile = TempDir::new("chromium-profile");
    let out = run_with_timeout(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=3000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(url),
        Duration::from_secs(90),
    );
    assert!(out.status.success(), "chromium failed{}", out.describe());
    out.stdout
}

/// The whole service on one daemon: history across windows, the page, the API, pprof scrapes
/// read by go tool pprof, /metrics, bad requests, SIGTERM, report, and a restart after kill -9
/// with a torn window file.
#[live_test]
fn daemon_keeps_history_and_serves_it_to_real_clients() {
    let _serial = serial();
    let dir = TempDir::new("daemon-history");
    let data = dir.join("data");
    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let d = Daemon::start(&data, &["-F", "99", "--window", "2"]);
    assert_eq!(d.get("/healthz").text(), "ok\n");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&data), 0o700, "data dir mode");

    // A scrape as Parca and Pyroscope make it, while windows keep being written.
    let scrape = d.get(&format!(
        "/debug/pprof/profile?seconds=3&pid={}",
        target.pid
    ));
    assert_eq!(scrape.status, 200, "{}", scrape.text());
    assert!(scrape.headers.contains("application/octet-stream"));
    let p = flamegraph_out::decode_pprof(&scrape.body).expect("scrape decodes");
    let s = |i: i64| p.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|v| (s(v.r#type), s(v.unit)))
        .collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    assert!(
        (2.5e9..5e9).contains(&(p.duration_nanos as f64)),
        "duration {}",
        p.duration_nanos
    );
    let total: i64 = p.sample.iter().map(|x| x.value[0]).sum();
    assert!(
        total > 150,
        "3 s at 99 Hz of a busy target: {total} samples"
    );
    for sample in &p.sample {
        let labels: Vec<&str> = sample.label.iter().map(|l| s(l.key)).collect();
        for key in ["comm", "pid", "thread_id"] {
            assert!(labels.contains(&key), "label {key} missing: {labels:?}");
        }
        let pid = sample.label.iter().find(|l| s(l.key) == "pid").unwrap().num;
        assert_eq!(pid, i64::from(target.pid), "pid= selects the process");
    }
    let mapping = p
        .mapping
        .iter()
        .find(|m| s(m.filename).ends_with("/cratio"))
        .expect("a mapping for the fixture");
    assert!(s(mapping.filename).starts_with('/'), "mapping has the path");
    assert!(s(mapping.build_id).len() >= 16, "mapping has the build-id");
    let hot = p
        .function
        .iter()
        .find(|f| s(f.name) == "a3_hot")
        .expect("a3_hot in the scrape");
    assert!(
        s(hot.filename).ends_with("cratio.c"),
        "file name {}",
        s(hot.filename)
    );
    let file = dir.join("scrape.pb.gz");
    std::fs::write(&file, &scrape.body).unwrap();
    let out = go_pprof(&["-top", file.to_str().unwrap()]);
    assert!(
        out.status.success() && out.stdout.contains("a3_hot"),
        "go tool pprof -top{}",
        out.describe()
    );
    // go tool pprof straight from the endpoint, as users run it.
    let url = format!("http://{}/debug/pprof/profile?seconds=1", d.addr);
    let out = go_pprof(&["-top", "-nodecount=200", &url]);
    assert!(
        out.status.success() && out.stdout.contains("a3_hot"),
        "go tool pprof URL{}",
        out.describe()
    );

    d.wait_for_windows(3, Duration::from_secs(20));
    let q = format!("/api/v1/profile?from=-5m&pid={}&format=folded", target.pid);
    let (share, n) = split(&folded_of(&d.get(&q)), "a3_hot", "b3_cold");
    assert!(n > 300, "history of a busy target: {n} samples");
    assert!(
        (0.65..0.85).contains(&share),
        "75/25 split from history: {share:.3} of {n}"
    );
    let svg = d.get(&format!("/api/v1/profile?pid={}", target.pid));
    assert_eq!(svg.status, 200);
    assert!(svg.headers.contains("image/svg+xml") && svg.text().contains("a3_hot"));
    let txt = d
        .get(&format!("/api/v1/profile?pid={}&format=txt", target.pid))
        .text();
    assert!(txt.contains("a3_hot"), "{txt}");
    let pprof = d.get(&format!(
        "/api/v1/profile?pid={}&format=pprof&from=-1m",
        target.pid
    ));
    assert!(flamegraph_out::read_pprof(&pprof.body).is_ok());

    let procs = d.get("/api/v1/processes?from=-5m");
    assert_eq!(procs.status, 200);
    let json = procs.text();
    let needle = format!("\"pid\": {},", target.pid);
    let at = json
        .find(&needle)
        .unwrap_or_else(|| panic!("pid missing: {json}"));
    let entry = &json[at..json[at..].find('}').map_or(json.len(), |e| at + e)];
    assert!(
        entry.contains("\"comm\": \"cratio\"") && entry.contains("cratio 0"),
        "{entry}"
    );

    // The page, rendered by a browser, ranks the fixture with a link to its flamegraph.
    let dom = chromium_dom(&format!("http://{}/?from=-5m", d.addr));
    assert!(
        dom.contains("id=\"processes\"") && dom.contains(">cratio<"),
        "{dom}"
    );
    let href = format!("pid={}&amp;format=svg", target.pid);
    assert!(dom.contains(&href), "flamegraph link {href} missing");
    // The flamegraph itself, in the browser: inferno's script runs and the frames are there.
    let svg_dom = chromium_dom(&format!(
        "http://{}/api/v1/profile?from=-5m&pid={}&format=svg",
        d.addr, target.pid
    ));
    assert!(
        svg_dom.contains("a3_hot") && svg_dom.contains("<svg"),
        "svg in chromium"
    );

    let metrics = d.get("/metrics").text();
    for name in [
        "sprofd_samples_total",
        "sprofd_windows_stored",
        "sprofd_unwind_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} not in /metrics:\n{metrics}");
    }

    // Every malformed request: a 4xx and one line saying why.
    for (path, status) in [
        ("/api/v1/profile?from=yesterday", 400),
        ("/api/v1/profile?from=now&to=-1h", 400),
        ("/api/v1/profile?pid=abc", 400),
        ("/api/v1/profile?pid=0", 400),
        ("/api/v1/profile?format=png", 400),
        ("/api/v1/profile?comm=py(", 400),
        ("/api/v1/profile?bogus=1", 400),
        ("/api/v1/profile?pid=1&pid=2", 400),
        ("/debug/pprof/profile?seconds=0", 400),
        ("/debug/pprof/profile?seconds=301", 400),
        ("/debug/pprof/profile?seconds=x", 400),
        ("/../../etc/passwd", 404),
        ("/api/v1/%2e%2e/%2e%2e/etc/passwd", 404),
        ("/nope", 404),
    ] {
        let r = d.get(path);
        let text = r.text();
        assert_eq!(r.status, status, "{path}: {text}");
        assert!(
            text.starts_with("error: ") && text.trim_end().lines().count() == 1,
            "{path}: {text:?}"
        );
    }
    let long = format!("/api/v1/profile?comm={}", "a".repeat(5000));
    assert_eq!(d.get(&long).status, 414);
    let post = http(&d.addr, "POST", "/api/v1/profile");
    assert_eq!(post.status, 405, "{}", post.text());

    // SIGTERM: the window in progress is written, exit 0 within 5 s.
    let before = d.windows().len();
    let (status, took, log) = d.terminate();
    assert!(status.success(), "exit status {status}:\n{log}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let after: Vec<PathBuf> = std::fs::read_dir(data.join("windows"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        after.len() > before,
        "the window in progress was written on SIGTERM"
    );
    for f in &after {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    // report: the stored windows, offline.
    let out_folded = dir.join("report.folded");
    let out_pprof = dir.join("report.pb.gz");
    run_ok(
        sprofd()
            .args(["report", "--data-dir"])
            .arg(&data)
            .args(["--from", "-10m", "--pid", &target.pid_arg(), "-q", "-o"])
            .arg(&out_folded)
            .arg("-o")
            .arg(&out_pprof),
    );
    let (share, n) = split(&Folded::read(&out_folded), "a3_hot", "b3_cold");
    assert!(
        n > 300 && (0.65..0.85).contains(&share),
        "report: {share:.3} of {n}"
    );
    let out = go_pprof(&["-top", out_pprof.to_str().unwrap()]);
    assert!(
        out.stdout.contains("a3_hot"),
        "report's pprof in go tool pprof{}",
        out.describe()
    );

    // A restart after kill -9 keeps the history; a torn window file is skipped and moved aside.
    let d = Daemon::start(&data, &["-F", "99", "--window", "2"]);
    d.wait_for_windows(after.len() + 1, Duration::from_secs(10));
    d.kill9();
    let windows: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("windows"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    let torn = &windows[1];
    let bytes = std::fs::read(torn).unwrap();
    std::fs::write(torn, &bytes[..bytes.len() / 2]).unwrap();
    let d = Daemon::start(&data, &["-F", "99", "--window", "2"]);
    let log = d.log();
    assert!(
        log.contains("moved to") && log.contains("corrupt"),
        "torn file warning:\n{log}"
    );
    assert!(data
        .join("corrupt")
        .join(torn.file_name().unwrap())
        .exists());
    let (share, n) = split(&folded_of(&d.get(&q)), "a3_hot", "b3_cold");
    assert!(
        n > 300 && (0.65..0.85).contains(&share),
        "history after restart: {share:.3} of {n}"
    );
    drop(target);
}

/// Retention by age and by size, from history a previous run left.
#[live_test]
fn daemon_prunes_history_by_age_and_size() {
    let _serial = serial();
    let dir = TempDir::new("daemon-retention");
    let data = dir.join("data");
    let windows = data.join("windows");
    std::fs::create_dir_all(&windows).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Ten 300 KiB windows from ten days ago and four (over 1 MiB) from a minute ago (gzip of noise: valid
    // files whose content does not matter to retention).
    let mut noise = vec![0u8; 300 << 10];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut noise)
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&noise).unwrap();
    let gz = gz.finish().unwrap();
    for i in 0..10u64 {
        let start = now_ms - 10 * 86_400_000 + i * 10_000;
        std::fs::write(
            windows.join(format!("{start}-{}.pb.gz", start + 10_000)),
            &gz,
        )
        .unwrap();
    }
    for i in 0..4u64 {
        let start = now_ms - 60_000 + i * 10_000;
        std::fs::write(
            windows.join(format!("{start}-{}.pb.gz", start + 10_000)),
            &gz,
        )
        .unwrap();
    }
    let d = Daemon::start(
        &data,
        &["--window", "1", "--retention", "1d", "--max-disk", "1MiB"],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let files = d.windows();
        let total: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum();
        let old = files.iter().filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            name.split('-')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                < now_ms - 86_400_000
        });
        if old.count() == 0 && total <= 1 << 20 && files.len() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not run: {} files, {total} bytes\n{}",
            files.len(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = d.get("/metrics").text();
    let deleted = metric(&metrics, "sprofd_retention_deletions_total").unwrap_or(0.0);
    assert!(
        deleted >= 11.0,
        "ten by age and at least one by size: {deleted}\n{metrics}"
    );
}

/// sd_notify on a socket of the test's own, as systemd would read it.
#[live_test]
fn daemon_notifies_ready_watchdog_and_stopping() {
    let _serial = serial();
    let dir = TempDir::new("daemon-notify");
    let sock_path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = sprofd();
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000");
    let d = Daemon::start_with(cmd, &dir.join("data"), &["--window", "2"]);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(seen.contains("READY=1") && seen.contains("WATCHDOG=1")) {
        assert!(Instant::now() < deadline, "no READY and WATCHDOG: {seen:?}");
        let n = sock.recv(&mut buf).expect("notification");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }
    assert!(seen.contains("STATUS="), "{seen}");
    let (status, _, log) = d.terminate();
    assert!(status.success(), "{log}");
    let mut tail = String::new();
    while let Ok(n) = sock.recv(&mut buf) {
        tail.push_str(&String::from_utf8_lossy(&buf[..n]));
        if tail.contains("STOPPING=1") {
            break;
        }
    }
    assert!(tail.contains("STOPPING=1"), "{tail:?}");
}

const CAPS: &str = "+perfmon,+sys_ptrace,+dac_read_search,+checkpoint_restore,+syslog";

/// The unit's capability set as an unprivileged user profiles root's processes with names;
/// without it the daemon refuses in one line naming what is missing.
#[live_test]
fn daemon_runs_with_least_privilege_and_refuses_without_it() {
    if euid() != 0 {
        skip("daemon_runs_with_least_privilege", "needs root for setpriv");
        return;
    }
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap();
    assert!(
        paranoid.trim().parse::<i32>().unwrap() >= 2,
        "the test is meant for perf_event_paranoid >= 2, the default"
    );
    let _serial = serial();
    let dir = TempDir::new("daemon-setpriv");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let bin = sprofd_bin();
    let setpriv = |caps: Option<&str>| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        match caps {
            Some(caps) => cmd
                .arg(format!("--inh-caps={caps}"))
                .arg(format!("--ambient-caps={caps}")),
            None => cmd.arg("--inh-caps=-all"),
        };
        cmd.arg(&bin);
        cmd
    };
    // Without capabilities: one line, exit 1, nothing started.
    let out = run_with_timeout(
        setpriv(None)
            .args(["daemon", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert_clean_error(&out);
    assert!(
        out.stderr.contains("CAP_PERFMON") && out.stderr.contains("CAP_SYS_PTRACE"),
        "{}",
        out.stderr
    );

    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let d = Daemon::start_with(setpriv(Some(CAPS)), &data, &["-F", "99", "--window", "2"]);
    d.wait_for_windows(2, Duration::from_secs(15));
    let q = format!("/api/v1/profile?from=-1m&pid={}&format=folded", target.pid);
    let (share, n) = split(&folded_of(&d.get(&q)), "a3_hot", "b3_cold");
    assert!(
        n > 100 && (0.6..0.9).contains(&share),
        "root's process, named, as nobody: {share:.3} of {n}\n{}",
        d.log()
    );
    let owner = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    assert!(
        owner
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "runs as nobody"
    );
}

/// Hundreds of short-lived processes: sampled, named, and the daemon's memory stays flat.
#[live_test]
fn daemon_survives_process_churn_with_flat_memory() {
    let _serial = serial();
    let dir = TempDir::new("daemon-churn");
    let d = Daemon::start(&dir.join("data"), &["-F", "199", "--window", "2"]);
    let exits = c_fixture("exits", FP);
    // Started by a shell loop, not by this test binary: a child of the test binary runs its
    // code until it execs, and symbolizing a Rust test binary's DWARF is a one-time cost that
    // has nothing to do with churn.
    let churn = |n: usize| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for i in $(seq {n}); do \"$0\" 0.03 >/dev/null || exit 1; done"
            ))
            .arg(&exits)
            .status()
            .unwrap();
        assert!(st.success());
    };
    churn(100);
    std::thread::sleep(Duration::from_secs(3));
    let (anon_before, rss_before) = (d.status_kib("RssAnon"), d.status_kib("VmRSS"));
    churn(300);
    std::thread::sleep(Duration::from_secs(3));
    let (anon_after, rss_after) = (d.status_kib("RssAnon"), d.status_kib("VmRSS"));
    let procs = d.get("/api/v1/processes?from=-5m&comm=%5Eexits%24").text();
    let seen = procs.matches("\"comm\": \"exits\"").count();
    // 30 ms of CPU at 199 Hz is ~6 samples: almost every process is seen.
    assert!(seen >= 350, "{seen} of 400 short-lived processes sampled");
    // Heap (anonymous memory) is what a leak would grow; file pages of mapped binaries and
    // debug info count in RSS too but are page cache the kernel can take back.
    assert!(
        anon_after < anon_before + 8 * 1024,
        "heap grew from {anon_before} to {anon_after} KiB over 300 processes (RSS {rss_before} -> {rss_after})"
    );
    eprintln!(
        "churn: RssAnon {anon_before} -> {anon_after} KiB, VmRSS {rss_before} -> {rss_after} KiB"
    );
    let metrics = d.get("/metrics").text();
    let tracked = metric(&metrics, "sprofd_processes_tracked").unwrap();
    let running = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count() as f64;
    assert!(
        tracked <= running + 20.0,
        "exited processes dropped: {tracked} tracked, {running} running"
    );
}

/// Bad settings are one line and exit 2 before anything starts.
#[test]
fn daemon_and_report_refuse_bad_settings_in_one_line() {
    let dir = TempDir::new("daemon-bad");
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "frequncy = 5\n").unwrap();
    for (args, needle) in [
        (vec!["daemon", "--retention", "forever"], "retention"),
        (vec!["daemon", "--max-disk", "1GB"], "max-disk"),
        (vec!["daemon", "--listen", "localhost"], "ADDR:PORT"),
        (vec!["daemon", "-F", "0"], "frequency"),
        (vec!["daemon", "--window", "0"], "window"),
        (vec!["daemon", "--comm", "py("], "--comm"),
        (
            vec!["daemon", "--config", "/nonexistent/sprofd.toml"],
            "cannot read config file",
        ),
        (
            vec!["daemon", "--config", bad_toml.to_str().unwrap()],
            "unknown field",
        ),
        (
            vec![
                "report",
                "--data-dir",
                "/tmp",
                "--from",
                "yesterday",
                "-o",
                "x.svg",
            ],
            "--from",
        ),
        (
            vec!["report", "--data-dir", "/tmp", "-o", "x.png"],
            "unknown output format",
        ),
    ] {
        let out = run(sprofd().args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}{}", out.describe());
        assert_clean_error(&out);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
    let empty = dir.join("empty");
    std::fs::create_dir_all(empty.join("windows")).unwrap();
    let out = run(sprofd()
        .args(["report", "--data-dir"])
        .arg(&empty)
        .arg("-o")
        .arg(dir.join("x.svg")));
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert!(out.stderr.contains("no stored windows"), "{}", out.stderr);
}

/// Prometheus (Debian's server) scrapes /metrics and can query what it scraped: the
/// daemon's own counters, and the resident memory of a sampled fixture holding 64 MiB.
#[live_test]
fn prometheus_scrapes_the_daemon_metrics() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        skip(
            "prometheus_scrapes_the_daemon_metrics",
            "prometheus not installed",
        );
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("daemon-prometheus");
    let d = Daemon::start(&dir.join("data"), &["--window", "2"]);
    // 64 MiB written in 0.5 s, then held (and busy) until the test kills it.
    let out = dir.join("maxrss");
    let target = Target::spawn(
        &c_fixture("rssgrow", FP),
        &["64", "0.5", "300", out.to_str().unwrap()],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sprofd\n    static_configs:\n      - targets: ['{}']\n",
            d.addr
        ),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let prom_addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let ok = loop {
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
        if TcpStream::connect(&prom_addr).is_err() {
            continue;
        }
        last = http(
            &prom_addr,
            "GET",
            "/api/v1/query?query=sprofd_samples_total",
        )
        .text();
        let up = http(&prom_addr, "GET", "/api/v1/query?query=up").text();
        if last.contains("\"job\":\"sprofd\"") && up.contains("\"1\"]") {
            break true;
        }
    };
    // The fixture's resident memory, as Prometheus stored it.
    let query = format!(
        "/api/v1/query?query=sprofd_sampled_process_resident_bytes%7Bkind%3D%22anon%22%2Cpid%3D%22{}%22%7D",
        target.pid
    );
    let mut anon = None;
    let mut rss = String::new();
    while ok && anon.is_none() && Instant::now() < deadline {
        rss = http(&prom_addr, "GET", &query).text();
        // {"metric":{...,"comm":"rssgrow",...},"value":[1796000000.123,"67108864"]}
        anon = rss
            .split("\"value\":[")
            .nth(1)
            .and_then(|v| v.split('"').nth(1))
            .and_then(|v| v.parse::<f64>().ok());
        if anon.is_none() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // Where the daemon's own CPU went, by phase: the engine's events and the drain are
    // busy from the first slice on; symbolization once a slice has been cut.
    let mut phases = String::new();
    while ok && Instant::now() < deadline {
        phases = http(
            &prom_addr,
            "GET",
            "/api/v1/query?query=sprofd_phase_cpu_seconds_total",
        )
        .text();
        if ["events", "drain", "symbolize"]
            .iter()
            .all(|p| phases.contains(&format!("\"phase\":\"{p}\"")))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let targets = http(&prom_addr, "GET", "/api/v1/targets").text();
    let _ = prom.kill();
    let _ = prom.wait();
    drop(target);
    assert!(ok, "prometheus did not scrape sprofd: {last}\n{targets}");
    assert!(targets.contains("\"health\":\"up\""), "{targets}");
    let anon =
        anon.unwrap_or_else(|| panic!("no memory gauge of the fixture in prometheus: {rss}"));
    assert!(rss.contains("\"comm\":\"rssgrow\""), "{rss}");
    for phase in ["events", "drain", "symbolize"] {
        assert!(
            phases.contains(&format!("\"phase\":\"{phase}\"")),
            "no CPU counted for {phase}: {phases}"
        );
    }
    eprintln!(
        "prometheus: the fixture's anon memory {:.1} MiB",
        anon / 1048576.0
    );
    assert!(
        (anon / 1048576.0 - 64.0).abs() < 6.4,
        "prometheus has {:.1} MiB of anon memory for a 64 MiB fixture",
        anon / 1048576.0
    );
}

/// Samples carry the cgroup of their process (what container or unit it runs in), in the
/// scrape's labels and in the process list.
#[live_test]
fn daemon_labels_samples_with_their_cgroup() {
    // A cgroup v2 hierarchy we may create groups in (hybrid hosts mount it at unified/).
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists());
    let Some(root) = root.filter(|_| euid() == 0) else {
        skip(
            "daemon_labels_samples_with_their_cgroup",
            "no cgroup v2 to create groups in",
        );
        return;
    };
    let _serial = serial();
    let name = format!("sprofd-test-{}", std::process::id());
    let group = root.join(&name);
    std::fs::create_dir_all(&group).unwrap();
    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    std::fs::write(group.join("cgroup.procs"), target.pid.to_string()).unwrap();
    let dir = TempDir::new("daemon-cgroup");
    let d = Daemon::start(&dir.join("data"), &["-F", "99", "--window", "2"]);
    let scrape = d.get(&format!(
        "/debug/pprof/profile?seconds=2&pid={}",
        target.pid
    ));
    let p = flamegraph_out::decode_pprof(&scrape.body).expect("pprof");
    let s = |i: i64| p.string_table[i as usize].as_str();
    let want = format!("/{name}");
    let labelled = p
        .sample
        .iter()
        .filter(|x| {
            x.label
                .iter()
                .any(|l| s(l.key) == "cgroup" && s(l.str) == want)
        })
        .count();
    assert!(
        labelled > 0 && labelled == p.sample.len(),
        "{labelled} of {} samples labelled cgroup={want}",
        p.sample.len()
    );
    d.wait_for_windows(2, Duration::from_secs(10));
    let procs = d.get("/api/v1/processes?from=-1m").text();
    assert!(
        procs.contains(&format!("\"cgroup\": \"{want}\"")),
        "{procs}"
    );
    drop(target);
    drop(d);
    // The group is empty once the target is gone.
    let _ = std::fs::remove_dir(&group);
}

/// SIGHUP re-reads the config file: retention applies at once, other changes are named as
/// waiting for a restart, a broken file keeps the settings.
#[live_test]
fn daemon_reloads_its_config_on_sighup() {
    let _serial = serial();
    let dir = TempDir::new("daemon-sighup");
    let config = dir.join("sprofd.toml");
    std::fs::write(&config, "retention = \"7d\"\nwindow = 2\n").unwrap();
    let d = Daemon::start(&dir.join("data"), &["--config", config.to_str().unwrap()]);
    let hup = |d: &Daemon| {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    };
    let wait_log = |d: &Daemon, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    std::fs::write(
        &config,
        "retention = \"12h\"\nmax_disk = \"64MiB\"\nwindow = 5\n",
    )
    .unwrap();
    hup(&d);
    wait_log(&d, "SIGHUP: reloaded");
    let log = d.log();
    assert!(
        log.contains("retention 12h") && log.contains("max disk 64 MiB"),
        "{log}"
    );
    assert!(
        log.contains("window changed and take effect at the next restart"),
        "{log}"
    );
    std::fs::write(&config, "retention = \"forever\"\n").unwrap();
    hup(&d);
    wait_log(&d, "keeping the current settings");
    assert_eq!(
        d.get("/healthz").status,
        200,
        "still serving after a bad reload"
    );
    let (status, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}
