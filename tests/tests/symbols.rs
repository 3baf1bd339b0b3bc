//! Names for code that symbol tables do not cover directly: PLT stubs, and binaries whose
//! debug info lives elsewhere (a debuginfod server).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sprofd_tests::*;

/// The fixture's flags: `-fno-builtin` keeps `labs` a call through the PLT.
fn plt_flags(base: &[&'static str]) -> Vec<&'static str> {
    let mut flags = base.to_vec();
    flags.push("-fno-builtin");
    flags
}

#[live_test]
fn samples_in_a_plt_stub_name_it() {
    let exe = c_fixture("plt", &plt_flags(NO_FP));
    let p = record_profile("plt", &[], &[exe.to_str().unwrap(), "2"]);
    let stub = p.folded.count_leaf("labs@plt");
    assert!(
        stub > 0,
        "no sample named labs@plt\n{}\n{}",
        p.folded.excerpt(),
        p.context()
    );
    let unnamed = p
        .folded
        .count_where(|f| f.last().is_some_and(|l| l.starts_with("plt+0x")));
    assert_eq!(unnamed, 0, "unnamed frames in plt\n{}", p.folded.excerpt());
}

/// A `debuginfod` serving one directory on a free port, killed on drop.
struct DebuginfodServer {
    child: std::process::Child,
    port: u16,
}

impl DebuginfodServer {
    /// Starts the server on `dir` (its database inside `db_dir`), or `None` when
    /// `debuginfod` is not installed.
    fn start(dir: &Path, db_dir: &Path) -> Option<DebuginfodServer> {
        let port = free_port();
        let child = Command::new("debuginfod")
            .args(["-F", "-t", "0", "-g", "0", "-p", &port.to_string(), "-d"])
            .arg(db_dir.join("debuginfod.sqlite"))
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(DebuginfodServer { child, port })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until the server answers 200 for `build_id` (its first scan is done).
    fn wait_for(&self, build_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let path = format!("/buildid/{build_id}/debuginfo");
        while Instant::now() < deadline {
            if http_status(self.port, &path) == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("debuginfod on port {} never served {path}", self.port);
    }
}

impl Drop for DebuginfodServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on (just released by us).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("local addr").port()
}

/// The status code of `GET path` on loopback `port`, by hand (HTTP/1.0, no client crate).
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The GNU build-id of `exe` as hex, from `readelf -n`.
fn build_id(exe: &Path) -> String {
    let out = run_ok(Command::new("readelf").arg("-n").arg(exe));
    out.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no build-id in {}", exe.display()))
}

/// `sprofd record` of `exe` with the given debuginfod environment.
fn record_with(
    dir: &TempDir,
    tag: &str,
    extra: &[&str],
    exe: &Path,
    env: &[(&str, String)],
) -> (RunOutput, Folded) {
    let folded = dir.join(format!("{tag}.folded"));
    let mut cmd = sprofd();
    cmd.args(["record", "-F", FREQ, "-q", "-o"])
        .arg(&folded)
        .args(extra)
        .arg("--")
        .arg(exe)
        .arg("1")
        .env("NO_PROXY", "127.0.0.1")
        .current_dir(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_ok(&mut cmd);
    let parsed = Folded::read(&folded);
    (out, parsed)
}

#[live_test]
fn debuginfod_names_a_stripped_binary_and_caches_its_debug_file() {
    let dir = TempDir::new("debuginfod");
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let exe = dir.join("cratio");
    std::fs::copy(c_fixture("cratio", NO_FP), &exe).unwrap();
    run_ok(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&exe)
            .arg(served.join("cratio.debug")),
    );
    run_ok(Command::new("strip").arg("--strip-all").arg(&exe));
    let id = build_id(&exe);

    let Some(server) = DebuginfodServer::start(&served, dir.path()) else {
        skip("debuginfod", "the debuginfod server is not installed");
        return;
    };
    server.wait_for(&id);
    let named = |f: &Folded| f.count_containing("a3_hot") > 0 && f.count_containing("b3_cold") > 0;

    let (out, bare) = record_with(&dir, "bare", &[], &exe, &[]);
    assert!(
        !named(&bare),
        "names without debuginfod?\n{}",
        bare.excerpt()
    );
    assert!(
        bare.count_where(|f| f.iter().any(|x| x.starts_with("cratio+0x"))) > 0,
        "{}{}",
        bare.excerpt(),
        out.describe()
    );

    let cache = dir.join("cache");
    let env = [
        ("DEBUGINFOD_URLS", server.url()),
        ("DEBUGINFOD_CACHE_PATH", cache.display().to_string()),
    ];
    let (out, fetched) = record_with(&dir, "fetched", &[], &exe, &env);
    assert!(named(&fetched), "{}{}", fetched.excerpt(), out.describe());
    assert!(!out.stderr.contains("warning"), "{}", out.describe());
    let cached = cache.join(&id).join("debuginfo");
    assert!(cached.is_file(), "no cache file {}", cached.display());

    // With periodic dumps the downloads run in the background; the last profile waits.
    let env = [
        ("DEBUGINFOD_URLS", server.url()),
        (
            "DEBUGINFOD_CACHE_PATH",
            dir.join("cache-dumps").display().to_string(),
        ),
    ];
    let (out, dumped) = record_with(&dir, "dumps", &["--dump-every", "0.3"], &exe, &env);
    assert!(named(&dumped), "{}{}", dumped.excerpt(), out.describe());

    // The cache serves the next run: the real server is gone, and the one in its place
    // (which has nothing) is not asked for the binary. It may be asked for other modules
    // (libc, ld.so) that the first run happened not to sample.
    drop(server);
    let (empty, asked) = sprof_testkit::not_found_server();
    let env = [
        ("DEBUGINFOD_URLS", empty),
        ("DEBUGINFOD_CACHE_PATH", cache.display().to_string()),
    ];
    let (out, again) = record_with(&dir, "cached", &[], &exe, &env);
    assert!(named(&again), "{}{}", again.excerpt(), out.describe());
    let asked = asked.lock().unwrap().clone();
    assert!(
        !asked.iter().any(|line| line.contains(&id)),
        "asked for the cached binary: {asked:?}\n{}",
        out.describe()
    );
    assert!(!out.stderr.contains("warning"), "{}", out.describe());
    let dead = format!("http://127.0.0.1:{}", free_port());

    // A dead server with an empty cache: one warning naming it, the profile as without.
    let env = [
        ("DEBUGINFOD_URLS", format!("{dead} {dead}/other")),
        (
            "DEBUGINFOD_CACHE_PATH",
            dir.join("cache2").display().to_string(),
        ),
    ];
    let (out, unnamed) = record_with(&dir, "dead", &[], &exe, &env);
    assert!(!named(&unnamed), "{}", unnamed.excerpt());
    let warnings: Vec<&str> = out
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("warning: debuginfod server"))
        .collect();
    assert_eq!(warnings.len(), 2, "one per server: {}", out.describe());
    assert!(out.elapsed < Duration::from_secs(15), "{}", out.describe());
}
