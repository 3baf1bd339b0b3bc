//! Stack completeness on a real program nobody here wrote, built without frame pointers:
//! Debian's `xz`. sprofd's default unwinding must reach the program's entry in at least as
//! many samples as `perf record --call-graph dwarf` does on the same workload.

use std::path::Path;
use std::process::Command;

use sprofd_tests::{live_test, run_ok, sprofd, Folded, TempDir, FREQ};

/// A stack is complete when it reaches libc's entry, which calls `main`: `xz` is stripped,
/// so its own `main` and `_start` have no names, but `__libc_start_main` is exported.
fn is_entry(frame: &str) -> bool {
    frame.starts_with("__libc_start_main")
        || frame.starts_with("__libc_start_call_main")
        || frame == "main"
}

/// Semi-compressible input so xz spends its time in its match finder and encoder.
fn make_input(path: &Path) {
    let mut data = Vec::with_capacity(4 << 20);
    let mut x: u32 = 12345;
    while data.len() < 4 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let word = (x >> 16) % 512;
        data.extend_from_slice(format!("record {word} value {} ", x % 1000).as_bytes());
    }
    std::fs::write(path, data).unwrap();
}

/// Share of perf's samples whose stack reaches the entry, from `perf script`.
fn perf_completeness(dir: &TempDir, input: &Path) -> Option<f64> {
    let data = dir.join("perf.data");
    let st = Command::new("perf")
        .args(["record", "-q", "--call-graph", "dwarf", "-F", FREQ, "-o"])
        .arg(&data)
        .args(["--", "xz", "-9", "-T1", "-k", "-f"])
        .arg(input)
        .status()
        .ok()?;
    assert!(st.success(), "perf record failed");
    let out = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(&data)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut samples, mut complete) = (0u64, 0u64);
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        samples += 1;
        let hit = block
            .lines()
            .any(|l| l.split_whitespace().nth(1).is_some_and(is_entry));
        complete += u64::from(hit);
    }
    (samples > 0).then(|| complete as f64 / samples as f64)
}

#[live_test]
fn xz_stacks_are_at_least_as_complete_as_perf_dwarf() {
    let have = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let require = std::env::var("SPROFD_REQUIRE_LIVE").as_deref() == Ok("1");
    for tool in ["xz", "perf"] {
        if !have(tool) {
            assert!(
                !require,
                "{tool} is required with SPROFD_REQUIRE_LIVE=1 (bash tests/deps.sh installs it)"
            );
            eprintln!("SKIP xz completeness: {tool} not installed");
            return;
        }
    }
    let dir = TempDir::new("xz");
    let input = dir.join("input.txt");
    make_input(&input);

    let folded = dir.join("xz.folded");
    run_ok(
        sprofd()
            .args(["record", "-q", "-F", FREQ, "-o"])
            .arg(&folded)
            .args(["--", "xz", "-9", "-T1", "-k", "-f"])
            .arg(&input),
    );
    let f = Folded::read(&folded);
    let total = f.total();
    assert!(
        total > 200,
        "too few samples of xz: {total}\n{}",
        f.excerpt()
    );
    let complete = f.count_where(|frames| frames.iter().any(|fr| is_entry(fr)));
    let ours = complete as f64 / total as f64;

    let perf = perf_completeness(&dir, &input).expect("perf produced samples");
    eprintln!(
        "xz completeness: sprofd {ours:.3} ({complete}/{total}), perf --call-graph dwarf {perf:.3}"
    );
    assert!(
        ours >= perf - 0.01,
        "sprofd reaches the entry in {ours:.3} of samples, perf dwarf in {perf:.3}\n{}",
        f.excerpt()
    );
    assert!(
        ours > 0.9,
        "sprofd completeness on xz only {ours:.3}\n{}",
        f.excerpt()
    );
}
