//! `sprofd top`, end to end: the live view runs in a detached tmux session (a real terminal
//! of 160x50), the screen is read with `tmux capture-pane`, keys are sent with
//! `tmux send-keys`. Each test has a tmux server of its own (`-L`), killed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sprofd_tests::*;

/// Whether tmux runs here. If not, panics when `SPROFD_REQUIRE_LIVE=1`, else prints
/// `SKIP <test>: ...` and returns false.
fn tmux_available(test: &str) -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(test, "tmux is not installed (Debian package `tmux`)");
    }
    ok
}

/// `sprofd top ARGS` running in a tmux session of its own.
struct TopSession {
    socket: String,
    dir: TempDir,
    cmdline: String,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl TopSession {
    fn start(test: &str, args: &[&str]) -> TopSession {
        let dir = TempDir::new(test);
        let socket = format!("sprofd-{test}-{}", std::process::id());
        let mut cmdline = shell_quote(&sprofd_bin().display().to_string());
        for a in ["top"].iter().chain(args) {
            cmdline.push(' ');
            cmdline.push_str(&shell_quote(a));
        }
        // The exit code lands in a file; the pane stays open so the screen can still be read.
        let script = format!(
            "{cmdline} 2>{err}; echo $? >{rc}; sleep 600",
            err = shell_quote(&dir.join("stderr").display().to_string()),
            rc = shell_quote(&dir.join("rc").display().to_string()),
        );
        let s = TopSession {
            socket,
            dir,
            cmdline,
        };
        s.tmux(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
            "-s",
            "top",
            &script,
        ]);
        s
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux: {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", "top", keys]);
    }

    /// The screen once `pred` holds on it; panics with the screen after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: not seen within {timeout:?}{}",
                    self.describe(&screen)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// sprofd's exit code, once it has exited.
    fn wait_exit(&self, timeout: Duration) -> i32 {
        let path = self.dir.join("rc");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(rc) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return rc;
            }
            if Instant::now() >= deadline {
                panic!(
                    "sprofd did not exit within {timeout:?}{}",
                    self.describe(&self.screen())
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn describe(&self, screen: &str) -> String {
        format!(
            "\n\nCOMMAND: {}\n\nSCREEN:\n{screen}\n\nSTDERR:\n{}\n",
            self.cmdline,
            self.stderr()
        )
    }
}

impl Drop for TopSession {
    fn drop(&mut self) {
        // Our own server only (-L): other tmux sessions on the machine are left alone.
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The share columns of the first row naming `function` (`a3_hot (cratio.c:5)`), in screen
/// order: self and total over the window, self and total since the start.
fn row_shares(screen: &str, function: &str) -> Option<Vec<f64>> {
    let line = screen.lines().find(|l| l.contains(function))?;
    let shares: Vec<f64> = line
        .split_whitespace()
        .map_while(|w| w.strip_suffix('%').and_then(|n| n.parse().ok()))
        .collect();
    Some(shares)
}

/// `N samples` in the header.
fn header_samples(screen: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.contains(" samples · "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "samples")?;
    words.get(i.checked_sub(1)?)?.parse().ok()
}

#[live_test]
fn top_attach_shows_the_hot_function_sorts_and_quits_leaving_the_target() {
    let test = "top_attach";
    if !tmux_available(test) {
        return;
    }
    let mut target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let top = TopSession::start(test, &[&target.pid_arg(), "-F", FREQ]);
    std::thread::sleep(Duration::from_millis(2500));
    let screen = top.wait_for("a3_hot row and 500 samples", Duration::from_secs(15), |s| {
        s.contains("a3_hot (cratio.c:") && header_samples(s).is_some_and(|n| n >= 500)
    });
    let ctx = top.describe(&screen);
    let shares = row_shares(&screen, "a3_hot (cratio.c:").unwrap();
    assert_eq!(shares.len(), 4, "four share columns{ctx}");
    let self_window = shares[0];
    assert!(
        (self_window - 75.0).abs() <= 12.0,
        "a3_hot self share {self_window} %, expected about 75 %{ctx}"
    );
    assert!(shares[1] >= shares[0], "total >= self{ctx}");
    let b = row_shares(&screen, "b3_cold (cratio.c:").unwrap();
    assert!((b[0] - 25.0).abs() <= 12.0, "b3_cold self share{ctx}");
    assert!(screen.contains("sort: self 5s"), "sort indicator{ctx}");
    assert!(
        screen.contains("/tmp") || screen.contains("cratio"),
        "target{ctx}"
    );
    assert!(screen.contains("threads: 1 sampled"), "threads{ctx}");
    assert!(screen.contains(" lost"), "lost samples{ctx}");

    top.keys("s");
    let screen = top.wait_for("sort by total", Duration::from_secs(5), |s| {
        s.contains("sort: total 5s")
    });
    // Sorted by total, the first row is a function on every stack (main or its callers).
    let first = screen
        .lines()
        .skip_while(|l| !l.contains("FUNCTION"))
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let shares = row_shares(&first, "").unwrap_or_default();
    assert!(
        shares.first().is_some_and(|&t| t >= 99.0),
        "first row by total: {first:?}{}",
        top.describe(&screen)
    );

    top.keys("q");
    let rc = top.wait_exit(Duration::from_secs(10));
    let stderr = top.stderr();
    assert_eq!(rc, 0, "exit code{}", top.describe(&top.screen()));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("samples in"),
        "summary line on exit: {stderr}"
    );
    assert!(
        target.is_running(),
        "the target must survive sprofd top{}",
        top.describe(&top.screen())
    );
    // The terminal was restored: the shell's own output is back on the main screen.
    let screen = top.screen();
    assert!(
        !screen.contains("FUNCTION"),
        "alternate screen left{}",
        top.describe(&screen)
    );
}

#[live_test]
fn top_command_that_exits_leaves_its_last_view_until_q() {
    let test = "top_exits";
    if !tmux_available(test) {
        return;
    }
    let cratio = c_fixture("cratio", FP).display().to_string();
    let top = TopSession::start(test, &["-F", FREQ, "--", &cratio, "1.5"]);
    let screen = top.wait_for("the exit note", Duration::from_secs(15), |s| {
        s.contains("exited; q leaves") && s.contains("a3_hot (cratio.c:")
    });
    let shares = row_shares(&screen, "a3_hot (cratio.c:").unwrap();
    assert!(
        (shares[2] - 75.0).abs() <= 12.0,
        "a3_hot self share since start {shares:?}{}",
        top.describe(&screen)
    );
    top.keys("q");
    assert_eq!(top.wait_exit(Duration::from_secs(10)), 0);
    let stderr = top.stderr();
    assert!(stderr.contains("exited; "), "summary: {stderr}");
    assert!(stderr.contains("ended with exit status 0"), "{stderr}");
}

fn python3() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("python3"))
        .find(|p| p.is_file())
}

#[live_test]
fn top_command_shows_python_functions() {
    let test = "top_python";
    if !tmux_available(test) {
        return;
    }
    let Some(python) = python3() else {
        skip(test, "python3 not found");
        return;
    };
    let script = fixtures_dir().join("python/workload.py");
    let top = TopSession::start(
        test,
        &[
            "-F",
            FREQ,
            "--",
            &python.display().to_string(),
            &script.display().to_string(),
            "split",
            "10",
        ],
    );
    top.wait_for("first refresh", Duration::from_secs(15), |s| {
        header_samples(s).is_some_and(|n| n >= 300)
    });
    // By total, hot_a (75 % of work) is near the top whatever the leaf functions are.
    top.keys("s");
    let screen = top.wait_for("hot_a row", Duration::from_secs(10), |s| {
        s.contains("sort: total 5s") && s.contains("hot_a (workload.py:")
    });
    let shares = row_shares(&screen, "hot_a (workload.py:").unwrap();
    assert!(
        shares.iter().any(|&s| s >= 40.0),
        "hot_a total share {shares:?}{}",
        top.describe(&screen)
    );
    assert!(screen.contains("view: python"), "{}", top.describe(&screen));
    top.keys("p");
    top.wait_for("mixed view", Duration::from_secs(5), |s| {
        s.contains("view: mixed")
    });
    top.keys("p");
    let screen = top.wait_for("native view", Duration::from_secs(5), |s| {
        s.contains("view: native")
    });
    assert!(
        !screen.contains("hot_a (workload.py:"),
        "Python frames in the native view{}",
        top.describe(&screen)
    );
    // Ctrl-C stops sampling and interrupts the command, as with record.
    top.keys("C-c");
    let rc = top.wait_exit(Duration::from_secs(10));
    assert_eq!(
        rc,
        130,
        "the command killed by SIGINT{}",
        top.describe(&top.screen())
    );
}

#[test]
fn top_without_a_terminal_says_so_and_exits_2() {
    // Needs no perf: the check comes before anything is started.
    let out = run(sprofd().arg("top").arg(std::process::id().to_string()));
    assert_eq!(out.status.code(), Some(2), "{}", out.describe());
    assert_eq!(
        out.stderr_lines(),
        ["sprofd top needs a terminal (stdout is not a TTY); use sprofd attach -o ... instead"],
        "{}",
        out.describe()
    );
    assert_no_panic(&out);

    // Nor is a command started.
    let dir = TempDir::new("top-notty");
    let marker = dir.join("started");
    let out = run(sprofd().args(["top", "--", "touch"]).arg(&marker));
    assert_eq!(out.status.code(), Some(2), "{}", out.describe());
    assert!(!marker.exists(), "the command ran{}", out.describe());
}

/// `top -o`: once the view is closed, the whole session's profile goes to the outputs, as
/// attach writes them (here folded stacks and the annotated source).
#[live_test]
fn top_writes_its_outputs_when_the_view_is_closed() {
    let test = "top_outputs";
    if !tmux_available(test) {
        return;
    }
    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let out = TempDir::new("top-outputs");
    let folded = out.join("top.folded").display().to_string();
    let lines = out.join("top.lines.txt").display().to_string();
    let top = TopSession::start(
        test,
        &[&target.pid_arg(), "-F", FREQ, "-o", &folded, "-o", &lines],
    );
    top.wait_for("500 samples", Duration::from_secs(15), |s| {
        header_samples(s).is_some_and(|n| n >= 500)
    });
    top.keys("q");
    let rc = top.wait_exit(Duration::from_secs(15));
    assert_eq!(rc, 0, "exit code: {}", top.stderr());
    let f = Folded::read(Path::new(&folded));
    let hot = f.count_containing("a3_hot");
    let total = f.count_where(|_| true);
    assert!(total >= 500, "{total} samples in {folded}");
    let share = hot as f64 / total as f64;
    assert!((share - 0.75).abs() <= 0.1, "a3_hot {share:.3} of {total}");
    let text = std::fs::read_to_string(&lines).unwrap();
    assert!(text.contains("a3_hot"), "{text}");
}

#[live_test(kernel)]
fn top_memory_mode_shows_the_top_growers() {
    let test = "top_memory";
    if !tmux_available(test) {
        return;
    }
    let memgrow = c_fixture("memgrow", NO_FP).display().to_string();
    let top = TopSession::start(test, &["--mode", "memory", "--", &memgrow, "0", "grow"]);
    let screen = top.wait_for("the exit note", Duration::from_secs(15), |s| {
        s.contains("exited; q leaves") && s.contains("grow_small (memgrow.c:")
    });
    let ctx = top.describe(&screen);
    assert!(screen.contains("MiB grown "), "bytes in the header{ctx}");
    // Total since the start: shares of the bytes grown.
    let total_all = |f: &str| -> f64 {
        let shares = row_shares(&screen, f).unwrap_or_default();
        // Self columns are blank for a function never at the leaf: the last is total-all.
        *shares
            .last()
            .unwrap_or_else(|| panic!("{f} row: {shares:?}{ctx}"))
    };
    let (big, small) = (
        total_all("grow_big (memgrow.c:"),
        total_all("grow_small (memgrow.c:"),
    );
    assert!(
        (big - 75.0).abs() <= 5.0 && (small - 25.0).abs() <= 5.0,
        "grow_big {big} %, grow_small {small} %{ctx}"
    );
    top.keys("q");
    assert_eq!(top.wait_exit(Duration::from_secs(10)), 0);
}
