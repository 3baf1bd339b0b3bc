//! `sprofd daemon` against a hostile local user: the attacker is an unprivileged account
//! (`sprofd-rt`, created if missing) running Python through `setpriv`, against the real
//! daemon binary run as root as the daemon tests run it. Each test floods or probes the API
//! and checks that the daemon stays up, that `/healthz` answers within 100 ms (measured), and
//! that a busy fixture keeps its samples.
//!
//! Skips without live perf sampling (like the daemon tests) and without root (the attacker
//! account and `setpriv` need it); `SPROFD_REQUIRE_LIVE=1` turns the skips into failures.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sprofd_tests::daemon::Daemon;
use sprofd_tests::hostile::{self, as_user};
use sprofd_tests::*;

/// The unprivileged attacker.
const ATTACKER: &str = hostile::USER;
/// The system Python: root's PATH may point at a pyenv shim the attacker cannot read.
const PYTHON: &str = "/usr/bin/python3";
/// The health check's budget while under attack.
const HEALTHZ_BUDGET: Duration = Duration::from_millis(100);

/// Root and the attacker account (the tests are `#[live_test]`s); or a skip (a failure
/// under `SPROFD_REQUIRE_LIVE=1`).
fn ready(test: &str) -> bool {
    let missing = if euid() != 0 {
        Some("not root: cannot create or switch to the attacker account".to_string())
    } else if !Path::new(PYTHON).exists() {
        Some(format!("{PYTHON} is missing"))
    } else if hostile::user().is_none() {
        Some(format!("cannot create the user {ATTACKER}"))
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) => {
            skip(test, &reason);
            false
        }
    }
}

/// `python3 -c SCRIPT args…` as the attacker.
fn attacker_python(script: &str, args: &[String]) -> Command {
    let mut cmd = as_user(Path::new(PYTHON));
    cmd.args(["-c", script]).args(args).current_dir("/");
    cmd
}

/// The daemon on a loopback port, with at most `nofile` open files and `env` set.
fn daemon(data: &Path, extra: &[&str], nofile: Option<u64>, env: &[(&str, &str)]) -> Daemon {
    let mut cmd = sprofd();
    cmd.envs(env.iter().copied());
    Daemon::start_on(cmd, "127.0.0.1:0", data, extra, nofile)
}

/// Slowloris: keeps N connections open for SECS seconds, reopening those the server closes.
/// `idle` sends nothing; `slow` sends a request line and then one header line every 2 s,
/// never ending the headers. Prints `ready` once all are opened, then a summary line.
const SLOWLORIS: &str = r#"
import resource, socket, sys, time
port, n, secs, mode = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = n + 64 if hard == resource.RLIM_INFINITY else min(hard, n + 64)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
stats = {"opened": 0, "failed": 0, "closed_by_server": 0}
def conn():
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        s.close(); stats["failed"] += 1; return None
    s.setblocking(False)
    stats["opened"] += 1
    if mode == "slow":
        try: s.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        except OSError: pass
    return s
end = time.time() + secs
socks = [conn() for _ in range(n)]
print("ready", flush=True)
last = time.time()
while time.time() < end:
    time.sleep(0.2)
    trickle = mode == "slow" and time.time() - last >= 2
    if trickle: last = time.time()
    for i, s in enumerate(socks):
        if s is None:
            socks[i] = conn(); continue
        try:
            gone = s.recv(4096) == b""
        except BlockingIOError:
            gone = False
        except OSError:
            gone = True
        if not gone and trickle:
            try: s.send(b"X-Slow: 1\r\n")
            except OSError: gone = True
        if gone:
            stats["closed_by_server"] += 1
            s.close()
            socks[i] = conn()
print("open_at_end=%d opened=%d failed=%d closed_by_server=%d" % (
    sum(1 for s in socks if s is not None), stats["opened"], stats["failed"],
    stats["closed_by_server"]), flush=True)
"#;

/// N concurrent `GET /debug/pprof/profile?seconds=S`; prints `STATUS COUNT` lines.
const TAPS: &str = r#"
import collections, socket, sys, threading
port, n, secs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
codes = collections.Counter(); lock = threading.Lock()
def tap():
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=secs + 20)
        s.sendall(b"GET /debug/pprof/profile?seconds=%d HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % secs)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        code = data.split(b" ", 2)[1].decode() if data else "closed"
    except OSError as e:
        code = "error"
    with lock: codes[code] += 1
threads = [threading.Thread(target=tap) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
for code, count in sorted(codes.items()): print(code, count)
"#;

/// GET PATH with a Host header from the attacker; prints the status line, the headers and
/// the body.
const GET: &str = r#"
import socket, sys
port, path, host = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", port), timeout=20)
s.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
sys.stdout.buffer.write(data)
"#;

/// Runs GET as the attacker: the raw answer.
fn attacker_get(port: u16, path: &str, host: &str) -> Vec<u8> {
    let out = attacker_python(GET, &[port.to_string(), path.into(), host.into()])
        .output()
        .expect("attacker python");
    assert!(
        out.status.success(),
        "attacker GET failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Starts a slowloris as the attacker and waits until its sockets are open.
fn slowloris(
    port: u16,
    n: usize,
    secs: u32,
    mode: &str,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = attacker_python(
        SLOWLORIS,
        &[
            port.to_string(),
            n.to_string(),
            secs.to_string(),
            mode.into(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("slowloris");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "slowloris did not start");
    (child, out)
}

/// 1100 idle and 200 slow connections (more than the 1024 open files the daemon is allowed)
/// opened and reopened by an unprivileged user: the daemon keeps its file descriptors,
/// answers /healthz within 100 ms, keeps sampling and writing windows, closes the slow and
/// idle sockets itself, and stops within 5 s on SIGTERM in the middle of it.
#[live_test]
fn idle_and_slow_connections_cannot_blind_the_daemon() {
    let test = "idle_and_slow_connections_cannot_blind_the_daemon";
    if !ready(test) {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("hostile-fds");
    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let d = daemon(
        &dir.join("data"),
        &["-F", "49", "--window", "2"],
        Some(1024),
        &[],
    );
    let (mut idle, mut idle_out) = slowloris(d.port, 1100, 16, "idle");
    let (mut slow, mut slow_out) = slowloris(d.port, 200, 16, "slow");
    let attack_start = Instant::now();
    let windows_before = d.windows();
    let worst = d.healthz_worst(20);
    eprintln!("{test}: healthz worst {worst:?} under 1300 idle/slow connections");
    assert!(
        worst < HEALTHZ_BUDGET,
        "healthz took {worst:?} under attack"
    );
    let fds = d.open_fds();
    eprintln!("{test}: daemon fds {fds}");
    assert!(fds < 600, "{fds} fds open in the daemon");
    let open = d.metric("sprofd_http_connections");
    let shed = d.metric("sprofd_http_connections_closed_idle_total");
    eprintln!("{test}: connections {open}, closed idle {shed}");
    assert!(open <= 256.0, "{open} connections");
    assert!(shed >= 900.0, "only {shed} idle connections closed");
    // Sampling and windows go on: the fixture keeps its samples.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        d.windows().len() > windows_before.len(),
        "no window written during the attack:\n{}",
        d.log()
    );
    let samples = d.samples_of(target.pid, 4);
    assert!(
        samples > 50,
        "{samples} samples of the fixture in 4 s at 49 Hz"
    );
    // Past the 10 s idle timeout the server has closed sockets that never sent a request,
    // not only to make room.
    while attack_start.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let worst = worst.max(d.healthz_worst(5));
    let (status, took, log) = d.terminate();
    assert!(status.success(), "exit {status} under attack:\n{log}");
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?}:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    // The attackers end by themselves (16 s) and say how often the server closed them.
    for (child, out) in [(&mut idle, &mut idle_out), (&mut slow, &mut slow_out)] {
        let mut summary = String::new();
        let _ = out.read_to_string(&mut summary);
        let _ = child.wait();
        eprintln!("{test}: attacker: {}", summary.trim());
        let closed: u64 = summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix("closed_by_server=")?.parse().ok())
            .unwrap_or(0);
        assert!(closed >= 150, "the server closed only {closed}: {summary}");
    }
    eprintln!("{test}: healthz worst overall {worst:?}; SIGTERM {took:?}");
}

/// 200 concurrent scrapes from an unprivileged user: at most 16 run, the rest get 503 at
/// once; memory stays bounded and /healthz answers within 100 ms.
#[live_test]
fn a_scrape_flood_is_capped() {
    let test = "a_scrape_flood_is_capped";
    if !ready(test) {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("hostile-taps");
    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let d = daemon(&dir.join("data"), &["-F", "49", "--window", "2"], None, &[]);
    // What the daemon holds for the host's own binaries (their symbols, at the first slice and
    // the first query) is in before the baseline: the flood's cost is what comes on top. On a
    // busy host that alone is 100-250 MiB (issue 15), which the baseline taken at 1 s missed.
    d.wait_for_windows(1, Duration::from_secs(10));
    let _ = d.get("/api/v1/profile?from=-1m&format=folded");
    let rss_before = d.status_kib("VmRSS");
    let taps = attacker_python(TAPS, &[d.port.to_string(), "200".into(), "4".into()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("taps");
    std::thread::sleep(Duration::from_secs(1));
    let worst = d.healthz_worst(20);
    let rss_during = d.status_kib("VmRSS");
    let out = taps.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let count = |code: &str| -> u64 {
        summary
            .lines()
            .find_map(|l| l.strip_prefix(code)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let rss_after = d.status_kib("VmRSS");
    eprintln!(
        "{test}: {summary:?}; healthz worst {worst:?}; VmRSS {rss_before} -> {rss_during} -> {rss_after} KiB"
    );
    assert!(worst < HEALTHZ_BUDGET, "healthz took {worst:?}");
    assert!(
        (1..=16).contains(&count("200")),
        "scrapes answered: {summary}"
    );
    assert_eq!(count("200") + count("503"), 200, "{summary}");
    assert!(d.metric("sprofd_http_busy_requests_total") >= 184.0);
    assert!(
        rss_during < rss_before + 100 * 1024,
        "VmRSS {rss_before} -> {rss_during} KiB"
    );
    assert!(d.samples_of(target.pid, 3) > 30);
    let (status, took, log) = d.terminate();
    assert!(status.success() && took < Duration::from_secs(5), "{log}");
}

/// A request naming another host (DNS rebinding) is refused; every answer says nosniff; a
/// secret in a process's argv is not served under the default `--cmdline redacted`, in the
/// process list, folded stacks or pprof.
#[live_test]
fn other_hosts_are_refused_and_argv_secrets_are_not_served() {
    let test = "other_hosts_are_refused_and_argv_secrets_are_not_served";
    if !ready(test) {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("hostile-read");
    // A busy shell loop whose argv carries secrets: sh -c LOOP sh --password=... --token ...
    let victim = Command::new("sh")
        .args([
            "-c",
            "while :; do :; done",
            "sh",
            "--password=hunter2",
            "--token",
            "s3cr3t-t0ken",
            "postgres://app:pgpass@db/x",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Killed however the test ends: a busy loop left behind would skew every later test.
    let victim = KillOnDrop(victim);
    let d = daemon(&dir.join("data"), &["-F", "49", "--window", "2"], None, &[]);
    let answer = attacker_get(d.port, "/api/v1/processes?from=-1m", "evil.example");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.0 421"), "{text}");
    assert!(
        text.contains("\r\n\r\nerror: Host \"evil.example\""),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    let host = format!("127.0.0.1:{}", d.port);
    for (path, h) in [("/healthz", host.as_str()), ("/nope", "localhost")] {
        let answer = attacker_get(d.port, path, h);
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(
            text.contains("x-content-type-options: nosniff"),
            "{path}: {text}"
        );
    }
    // Wait until the victim has samples in the history.
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.samples_of(victim.0.id(), 60) < 20 {
        assert!(
            Instant::now() < deadline,
            "no samples of the victim:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let pid = victim.0.id();
    let processes = attacker_get(
        d.port,
        &format!("/api/v1/processes?from=-1m&pid={pid}"),
        &host,
    );
    let folded = attacker_get(d.port, "/api/v1/profile?from=-1m&format=folded", &host);
    let pprof = attacker_get(d.port, "/api/v1/profile?from=-1m&format=pprof", &host);
    drop(victim);
    let processes = String::from_utf8_lossy(&processes).into_owned();
    assert!(
        processes.contains(
            "sh -c while :; do :; done sh --password=*** --token *** postgres://***@db/x"
        ),
        "the redacted command line: {processes}"
    );
    let split = pprof.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let p = flamegraph_out::decode_pprof(&pprof[split + 4..]).expect("pprof decodes");
    let strings = p.string_table.join("\n");
    assert!(
        strings.contains("--password=***"),
        "pprof has the cmdline label"
    );
    for secret in ["hunter2", "s3cr3t-t0ken", "pgpass"] {
        assert!(!processes.contains(secret), "{secret} in {processes}");
        assert!(
            !String::from_utf8_lossy(&folded).contains(secret),
            "{secret} in folded"
        );
        assert!(!strings.contains(secret), "{secret} in pprof");
    }
    let (status, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}

/// The wall clock set back an hour (an LD_PRELOAD shim on clock_gettime, as in the review):
/// windows keep being cut and written every 2 s, none spanning the step.
#[live_test]
fn windows_are_written_on_schedule_after_the_clock_steps_back() {
    let test = "windows_are_written_on_schedule_after_the_clock_steps_back";
    if !ready(test) {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("hostile-clock");
    let src = dir.join("clockback.c");
    std::fs::write(&src, CLOCKBACK).unwrap();
    let shim = dir.join("clockback.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("gcc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let d = daemon(
        &dir.join("data"),
        &["-F", "49", "--window", "2"],
        None,
        &[
            ("LD_PRELOAD", shim.to_str().unwrap()),
            ("BACK_AFTER", "3"),
            ("BACK_BY", "3600"),
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    let before = d.windows().len();
    std::thread::sleep(Duration::from_secs(7));
    let after = d.windows().len();
    assert!(
        after >= before + 3,
        "{before} windows at the step, {after} 7 s later:\n{}",
        d.log()
    );
    // The API has the fixture's recent samples (the live window is labelled by the new
    // wall time, which "from=-5s" also uses).
    assert!(d.samples_of(target.pid, 5) > 50, "{}", d.log());
    for entry in std::fs::read_dir(d.data.join("windows")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((a, b)) = name.strip_suffix(".pb.gz").and_then(|n| n.split_once('-')) else {
            continue;
        };
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert!(b - a <= 2500, "window {name} spans {} ms", b - a);
    }
    let (status, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}

/// A child killed and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects to a Unix socket as the attacker; prints `connected` and the answer to GET
/// /healthz, or the error.
const UNIX_GET: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("refused", e.errno); sys.exit(0)
s.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
print("connected", data.split(b"\r\n")[0].decode(), data.split(b"\r\n\r\n", 1)[1].decode().strip())
"#;

/// `--listen unix:PATH`: a socket of mode 0660 that the attacker cannot connect to, unless
/// `--socket-group` names a group of theirs; the daemon itself answers over it.
#[live_test]
fn a_unix_socket_lets_in_only_its_group() {
    let test = "a_unix_socket_lets_in_only_its_group";
    if !ready(test) {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("hostile-unix");
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("sprofd.sock");
    let listen = format!("unix:{}", sock.display());
    let attacker_gid = {
        let out = Command::new("id").args(["-g", ATTACKER]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    for group in [None, Some(ATTACKER)] {
        let mut extra = vec!["-F", "19"];
        if let Some(g) = group {
            extra.extend(["--socket-group", g]);
        }
        let d = Daemon::start_on(sprofd(), &listen, &dir.join("data"), &extra, None);
        let meta = std::fs::symlink_metadata(&sock).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o660, "socket mode");
        // The daemon's own user answers over it.
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.0 200") && answer.ends_with("ok\n"),
            "{answer}"
        );
        let out = attacker_python(UNIX_GET, &[sock.display().to_string()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match group {
            None => {
                assert_eq!(meta.gid(), 0);
                assert_eq!(
                    said, "refused 13",
                    "the attacker connected without the group"
                );
            }
            Some(_) => {
                assert_eq!(meta.gid(), attacker_gid);
                assert_eq!(said, "connected HTTP/1.0 200 OK ok", "{}", d.log());
            }
        }
        let (status, _, log) = d.terminate();
        assert!(status.success(), "{log}");
        assert!(!sock.exists(), "the socket is removed at exit");
    }
}

/// The review's D2: the attacker runs a binary whose `.gnu_debuglink` names a FIFO. Since the
/// symbolizer opens debug files without blocking, this no longer stalls the sampling thread
/// (tests/hostile_files.rs checks that the samples go on); should anything stall it again,
/// `/healthz` tells the truth: 503 within 3 s of the sampling loop's
/// last turn while the sample counter is frozen, 200 while it moves; and SIGTERM ends the
/// daemon within 5 s either way (exit 1 if the window in progress could not be written).
#[live_test]
fn healthz_is_honest_and_sigterm_is_bounded_when_sampling_stalls() {
    let test = "healthz_is_honest_and_sigterm_is_bounded_when_sampling_stalls";
    if !ready(test) {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("hostile-stall");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = dir.join("spin.c");
    std::fs::write(&src, SPIN).unwrap();
    let spin = dir.join("spin");
    let built = Command::new("cc")
        .args(["-O1", "-g0", "-o"])
        .arg(&spin)
        .arg(&src)
        .status()
        .unwrap();
    assert!(built.success());
    let debug = dir.join("spin.debug");
    std::fs::write(&debug, "dummy").unwrap();
    let fifo = dir.join("spin-fifo");
    let linked = Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(&spin)
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(linked.success());
    std::fs::remove_file(&debug).unwrap();
    let made = Command::new("mkfifo").arg(&debug).status().unwrap();
    assert!(made.success());
    let d = daemon(&dir.join("data"), &["-F", "49", "--window", "2"], None, &[]);
    assert_eq!(d.get("/healthz").status, 200);
    let attacker = Command::new("setpriv")
        .args([
            &format!("--reuid={ATTACKER}"),
            &format!("--regid={ATTACKER}"),
            "--clear-groups",
            "--",
        ])
        .arg(&fifo)
        .arg("6")
        .spawn()
        .unwrap();
    let attacker = KillOnDrop(attacker);
    // (samples_total, healthz status) every 250 ms for 5 s.
    let mut seen = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let samples = d.metric("sprofd_samples_total");
        let t = Instant::now();
        let status = d.get("/healthz").status;
        assert!(
            t.elapsed() < HEALTHZ_BUDGET,
            "healthz took {:?}",
            t.elapsed()
        );
        seen.push((samples, status));
    }
    // Frozen for 3 s (12 polls) or more: the last of those polls must say 503.
    let mut frozen_for = 0;
    for w in seen.windows(2) {
        frozen_for = if w[1].0 == w[0].0 { frozen_for + 1 } else { 0 };
        if frozen_for >= 12 {
            assert_eq!(w[1].1, 503, "sampling frozen 3 s but healthz ok: {seen:?}");
        }
        if frozen_for == 0 {
            assert_eq!(w[1].1, 200, "samples move but healthz says 503: {seen:?}");
        }
    }
    let stalled = seen.iter().any(|&(_, s)| s == 503);
    eprintln!("{test}: stalled={stalled}: {seen:?}");
    let (status, took, log) = d.terminate();
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?}:\n{log}"
    );
    if stalled {
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(log.contains("did not stop within"), "{log}");
    } else {
        assert!(status.success(), "{log}");
    }
    drop(attacker);
}

const SPIN: &str = r#"
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
__attribute__((noinline)) unsigned long hot_function(unsigned long n){unsigned long x=0;for(unsigned long i=0;i<n;i++){x=x*6364136223846793005UL+i;__asm__ volatile(""::"r"(x));}return x;}
int main(int argc,char**argv){double s=argc>1?atof(argv[1]):5,end=now()+s;unsigned long x=0;while(now()<end)x+=hot_function(1000000);return (int)(x&1);}
"#;

/// The review's shim: CLOCK_REALTIME moves back BACK_BY seconds after BACK_AFTER seconds.
const CLOCKBACK: &str = r#"
#define _GNU_SOURCE
#include <time.h>
#include <dlfcn.h>
#include <stdlib.h>
static int (*real)(clockid_t, struct timespec*); static double t0 = -1;
int clock_gettime(clockid_t c, struct timespec *ts) {
  if (!real) real = dlsym(RTLD_NEXT, "clock_gettime");
  int r = real(c, ts);
  if (c == CLOCK_REALTIME && r == 0) {
    struct timespec m; real(CLOCK_MONOTONIC, &m); double now = m.tv_sec + m.tv_nsec / 1e9;
    if (t0 < 0) t0 = now;
    if (now - t0 > atof(getenv("BACK_AFTER") ? getenv("BACK_AFTER") : "1e9")) ts->tv_sec -= atol(getenv("BACK_BY") ? getenv("BACK_BY") : "0");
  }
  return r;
}
"#;

/// D10 under `hidepid`: on a host whose `/proc` hides other users' processes, an
/// unprivileged user learns nothing through the daemon that `/proc` hides: their own
/// process is listed and profiled, root's is not; root still sees both. The daemon runs in a
/// mount namespace whose `/proc` is mounted `hidepid=invisible`, as the review did.
#[live_test]
fn under_hidepid_a_user_sees_only_their_own_processes() {
    let test = "under_hidepid_a_user_sees_only_their_own_processes";
    if !ready(test) {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("hostile-hidepid");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spin = c_fixture("spin", &["-O1", "-g0"]);
    let (root_job, user_job) = (dir.join("root-secret-job"), dir.join("users-own-job"));
    std::fs::copy(&spin, &root_job).unwrap();
    std::fs::copy(&spin, &user_job).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t proc -o hidepid=invisible proc /proc && exec \"$0\" \"$@\"",
    ])
    .arg(sprofd_bin());
    let d = Daemon::start_on(
        cmd,
        "127.0.0.1:0",
        &dir.join("data"),
        &["-F", "49", "--window", "2"],
        None,
    );
    assert!(d.log().contains("see only their own"), "{}", d.log());
    let mut root = Command::new(&root_job).arg("4").spawn().unwrap();
    let mut user = as_user(&user_job).arg("4").spawn().unwrap();
    let host = format!("127.0.0.1:{}", d.port);
    let seen_by_user =
        |path: &str| String::from_utf8_lossy(&attacker_get(d.port, path, &host)).into_owned();
    // While both run: the per-process memory gauge shows the user only their own.
    std::thread::sleep(Duration::from_millis(2500));
    let gauge = "sprofd_sampled_process_resident_bytes{pid=";
    let metrics = seen_by_user("/metrics");
    assert!(
        metrics.contains(&format!("{gauge}\"{}\",comm=\"users-own-job\"", user.id()))
            && !metrics.contains("root-secret-job"),
        "/metrics as the user:\n{metrics}"
    );
    let metrics = d.get("/metrics").text();
    assert!(
        metrics.contains(&format!(
            "{gauge}\"{}\",comm=\"root-secret-job\"",
            root.id()
        )),
        "/metrics as root:\n{metrics}"
    );
    assert!(root.wait().unwrap().success() && user.wait().unwrap().success());
    std::thread::sleep(Duration::from_secs(1));
    for path in [
        "/api/v1/processes?from=-1m",
        "/api/v1/profile?from=-1m&format=folded",
        "/api/v1/profile?from=-1m&format=txt",
        "/api/v1/timeline?from=-1m&by=comm",
        "/api/v1/timeline?from=-1m",
        "/api/v1/timeline?from=-1m&by=comm&metric=memory",
        "/api/v1/diff?from=-1m&format=folded",
        "/?from=-1m",
    ] {
        let answer = seen_by_user(path);
        assert!(answer.contains(" 200 "), "{path}: {answer}");
        assert!(
            !answer.contains("root-secret-job"),
            "{path} shows root's process:\n{answer}"
        );
        if path != "/?from=-1m" {
            assert!(
                answer.contains("users-own-job"),
                "{path} hides the user's own:\n{answer}"
            );
        }
    }
    let by_root = d.get("/api/v1/processes?from=-1m").text();
    assert!(
        by_root.contains("root-secret-job") && by_root.contains("users-own-job"),
        "{by_root}"
    );
}
