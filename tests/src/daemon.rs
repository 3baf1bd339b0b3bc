//! A `sprofd daemon` started for a test, and a minimal HTTP client for its API: shared by
//! the daemon's e2e tests and the hostile-input ones.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{run_with_timeout, sprofd, Folded, RunOutput};

/// A running daemon; killed on drop.
pub struct Daemon {
    pub child: Child,
    /// `HOST:PORT`, or the socket's path for `--listen unix:PATH`.
    pub addr: String,
    /// 0 on a Unix socket.
    pub port: u16,
    pub stderr: Arc<Mutex<String>>,
    pub data: PathBuf,
}

impl Daemon {
    pub fn start(data: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with(sprofd(), data, extra)
    }

    /// Starts `cmd daemon --listen 127.0.0.1:0 --data-dir DATA extra…` and waits until it
    /// says where it serves.
    pub fn start_with(cmd: Command, data: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_on(cmd, "127.0.0.1:0", data, extra, None)
    }

    /// Like [`Daemon::start_with`] on `listen` (`unix:PATH` too), with at most `nofile` open
    /// files (soft and hard) if given, as systemd's default soft limit would.
    pub fn start_on(
        mut cmd: Command,
        listen: &str,
        data: &Path,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> Daemon {
        use std::os::unix::process::CommandExt;
        cmd.args(["daemon", "--listen", listen, "--data-dir"])
            .arg(data)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe and touches only the child's limits;
            // the closure allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn sprofd daemon");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(at) = line.find("serving http://") {
                    let addr = line[at + 15..].split('/').next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                } else if let Some(at) = line.find("serving http over unix:") {
                    let path = line[at + 18..].split(' ').next().unwrap_or("").to_string();
                    let _ = tx.send(path);
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not start:\n{}", stderr.lock().unwrap());
            }
        };
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        Daemon {
            child,
            addr,
            port,
            stderr,
            data: data.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET path` with another `Host` header than the daemon's address.
    pub fn get_as_host(&self, path: &str, host: &str) -> Response {
        http_with_host(&self.addr, "GET", path, host)
    }

    /// A metric's value from `/metrics`; fails the test when it is missing.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").text();
        metric(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    }

    /// Open file descriptors of the daemon.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// `/healthz` `n` times, 50 ms apart: the slowest answer, each asserted 200 "ok".
    pub fn healthz_worst(&self, n: usize) -> Duration {
        let mut worst = Duration::ZERO;
        for _ in 0..n {
            let t = Instant::now();
            let r = self.get("/healthz");
            let took = t.elapsed();
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "ok\n"),
                "healthz under attack:\n{}",
                self.log()
            );
            worst = worst.max(took);
            std::thread::sleep(Duration::from_millis(50));
        }
        worst
    }

    /// Samples of `pid` in the last `secs` seconds (stored windows and the live one).
    pub fn samples_of(&self, pid: u32, secs: u32) -> u64 {
        let r = self.get(&format!(
            "/api/v1/profile?from=-{secs}s&pid={pid}&format=folded"
        ));
        assert_eq!(r.status, 200, "{}", r.text());
        Folded::parse(&r.text()).expect("folded").total()
    }

    pub fn get(&self, path: &str) -> Response {
        http(&self.addr, "GET", path)
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stored window files.
    pub fn windows(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.data.join("windows"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.to_string_lossy().ends_with(".pb.gz"));
        v.sort();
        v
    }

    pub fn wait_for_windows(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.windows().len() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} windows after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, and the exit status and time it took.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Duration, String) {
        let t0 = Instant::now();
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (st, t0.elapsed(), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A `/proc/PID/status` field in KiB (`VmRSS`, `RssAnon`, ...).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.0 client: enough for our own server, no dependency.
pub fn http(addr: &str, method: &str, path: &str) -> Response {
    http_with_host(addr, method, path, addr)
}

/// [`http`] with the given `Host` header.
pub fn http_with_host(addr: &str, method: &str, path: &str, host: &str) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A metric's value in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

pub fn folded_of(r: &Response) -> Folded {
    assert_eq!(r.status, 200, "{}", r.text());
    Folded::parse(&r.text()).expect("folded")
}

/// `go tool pprof ARGS…` (Go's own pprof reader), at most 120 s.
pub fn go_pprof(args: &[&str]) -> RunOutput {
    run_with_timeout(
        Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .env("HOME", std::env::temp_dir())
            .env("PPROF_TMPDIR", std::env::temp_dir()),
        Duration::from_secs(120),
    )
}
