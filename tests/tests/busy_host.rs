//! The daemon on a busy host: rustc compiling (its 150 MB `librustc_driver` parsed for the
//! first time, DWARF unwind tables and symbols) beside a steady loop. Draining runs on a
//! thread of its own, so nothing the engine does (parsing, symbolizing, writing) makes the
//! kernel drop samples.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sprofd_tests::daemon::*;
use sprofd_tests::*;

/// A Rust source whose optimized compile keeps rustc busy for a few seconds.
fn busy_source(functions: usize) -> String {
    let mut s = String::new();
    for i in 0..functions {
        s.push_str(&format!(
            "#[inline(never)] pub fn f{i}(x: u64) -> u64 {{ let v: Vec<u64> = (0..x).map(|k| k * {i} + 1).collect(); v.iter().fold(0, |a, b| a.wrapping_mul(31).wrapping_add(*b)) }}\n"
        ));
    }
    s.push_str("fn main() { let mut t = 0; ");
    for i in 0..functions {
        s.push_str(&format!("t += f{i}(std::env::args().count() as u64); "));
    }
    s.push_str("println!(\"{t}\"); }\n");
    s
}

#[live_test]
fn no_sample_is_lost_while_a_compiler_is_first_parsed() {
    let _serial = serial();
    let dir = TempDir::new("busy-host");
    let src = dir.join("busy.rs");
    std::fs::write(&src, busy_source(400)).unwrap();
    let victim = dir.join("steady-spin");
    std::fs::copy(c_fixture("spin", &["-O1", "-g0"]), &victim).unwrap();

    let d = Daemon::start(&dir.join("data"), &["-F", "99", "--window", "2"]);
    let t0 = Instant::now();
    let mut steady = Command::new(&victim).arg("10").spawn().unwrap();
    let rustc = Command::new("rustc")
        .args(["-C", "opt-level=2", "-C", "debuginfo=0", "-o"])
        .arg(dir.join("busy"))
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rustc_pid = rustc.id();
    let mut rustc = rustc;
    let mut cpu = (0.0, 0.0);
    while t0.elapsed() < Duration::from_secs(10) {
        if let Some(c) = proc_cpu_seconds(steady.id()) {
            cpu.0 = c;
        }
        if let Some(c) = proc_cpu_seconds(rustc_pid) {
            cpu.1 = c;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(steady.wait().unwrap().success());
    assert!(rustc.wait().unwrap().success(), "rustc failed");
    // Windows of 2 s: the last one is written within the next one.
    std::thread::sleep(Duration::from_secs(3));
    let metrics = d.get("/metrics").text();
    let lost = metric(&metrics, "sprofd_lost_samples_total").unwrap();
    let dropped = metric(&metrics, "sprofd_dropped_samples_total").unwrap();
    let folded = folded_of(&d.get("/api/v1/profile?from=-1m&format=folded"));
    let count = |comm: &str| folded.count_where(|f| f.first().is_some_and(|c| c == comm));
    let steady_n = count("steady-spin");
    let rustc_n = count("rustc");
    eprintln!(
        "busy host: lost {lost}, dropped {dropped}; steady-spin {steady_n} samples for {:.1} s CPU, rustc {rustc_n} for {:.1} s",
        cpu.0, cpu.1
    );
    assert_eq!(lost, 0.0, "{metrics}");
    assert_eq!(dropped, 0.0, "{metrics}");
    assert!(
        steady_n as f64 >= 0.7 * cpu.0 * 99.0,
        "steady-spin: {steady_n} samples for {:.1} s of CPU",
        cpu.0
    );
    assert!(
        rustc_n as f64 >= 0.7 * cpu.1 * 99.0,
        "rustc: {rustc_n} samples for {:.1} s of CPU",
        cpu.1
    );
    // rustc's frames are named from librustc_driver, which the daemon parsed while sampling.
    assert!(
        folded.count_where(|f| f.first().is_some_and(|c| c == "rustc")
            && f.iter()
                .any(|x| x.starts_with("rustc_") || x.contains("rustc_")))
            > rustc_n / 2,
        "{}",
        folded.excerpt()
    );
}
