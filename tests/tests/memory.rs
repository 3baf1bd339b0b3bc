//! `--mode memory`: new resident memory by stack, on fixtures whose growth is known by
//! construction (`memgrow.c` and `workload.py memory`: grow_big and grow_small write 300 and
//! 100 MiB in interleaved rounds; `memgrow.c leak`: leak_keep keeps 100 MiB, leak_free writes
//! 100 MiB and frees it block by block).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use sprofd_tests::hostile;
use sprofd_tests::*;

const MIB: f64 = (1u64 << 20) as f64;

/// Bytes under stacks containing a frame `name` (folded counts are bytes in memory mode).
fn bytes_under(p: &Profile, name: &str) -> u64 {
    p.folded
        .count_where(|f| f.iter().any(|x| frame_is(x, name) || py_frame_is(x, name)))
}

/// A Python frame of the folded output: `name (file.py:line)`.
fn py_frame_is(frame: &str, name: &str) -> bool {
    frame
        .strip_prefix(name)
        .is_some_and(|rest| rest.starts_with(" ("))
}

/// grow_big against grow_small: 75/25 within 5 points, and 300 to 480 MiB in all.
fn assert_growth_split(p: &Profile) {
    let (big, small) = (bytes_under(p, "grow_big"), bytes_under(p, "grow_small"));
    let share = big as f64 / (big + small).max(1) as f64;
    assert!(
        (share - 0.75).abs() <= 0.05,
        "grow_big {:.1} MiB, grow_small {:.1} MiB: share {share:.3}, want 0.75 ± 0.05{}",
        big as f64 / MIB,
        small as f64 / MIB,
        p.context()
    );
    let total = (big + small) as f64 / MIB;
    assert!(
        (300.0..=480.0).contains(&total),
        "{total:.1} MiB attributed to the growers, want 300 to 480{}",
        p.context()
    );
}

#[test]
fn record_attributes_native_growth_to_its_stacks_through_memset() {
    if !live_kernel("record_attributes_native_growth_to_its_stacks_through_memset") {
        return;
    }
    let _serial = serial();
    // No frame pointers anywhere: the walk from libc's memset to grow_big is DWARF's.
    let exe = c_fixture("memgrow", NO_FP);
    let p = record_profile(
        "memory-record-c",
        &[
            "--mode",
            "memory",
            "-o",
            "out.txt",
            "-o",
            "out.pb.gz",
            "-o",
            "out.svg",
        ],
        &[exe.display().to_string(), "0".into(), "grow".into()],
    );
    assert_growth_split(&p);
    // The faults happen inside libc's memset, under write_kept, under the grower.
    let through_memset = p.folded.count_where(|f| {
        has_in_order(f, &["grow_big", "write_kept"]) && f.iter().any(|x| x.contains("memset"))
    });
    assert!(
        through_memset as f64 >= 0.9 * bytes_under(&p, "grow_big") as f64,
        "grow_big's growth should be seen inside memset{}",
        p.context()
    );
    let table = std::fs::read_to_string(p.file("out.txt")).unwrap();
    assert!(
        table.contains("MiB") && table.contains("Total growth:") && table.contains("memory: "),
        "{table}"
    );
    let svg = std::fs::read_to_string(p.file("out.svg")).unwrap();
    assert!(svg.contains(" bytes, "), "the flame graph counts bytes");
    check_pprof_with_go(&p.file("out.pb.gz"), &p);
}

/// `go tool pprof` reads the profile as bytes of `space` and puts grow_big first.
fn check_pprof_with_go(path: &Path, p: &Profile) {
    let out = run_with_timeout(
        std::process::Command::new("go")
            .args([
                "tool",
                "pprof",
                "-top",
                "-sample_index=space",
                "-nodecount=200",
            ])
            .arg(path)
            .env("HOME", std::env::temp_dir())
            .env("PPROF_TMPDIR", std::env::temp_dir()),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success() && out.stdout.contains("Type: space") && out.stdout.contains("MB"),
        "go tool pprof -top (tests/deps.sh installs golang-go):{}{}",
        out.describe(),
        p.context()
    );
    assert!(out.stdout.contains("grow_big"), "{}", out.describe());
}

#[test]
fn attach_to_a_python_script_sees_which_function_grew() {
    if !live_kernel("attach_to_a_python_script_sees_which_function_grew") {
        return;
    }
    let _serial = serial();
    let script = fixtures_dir().join("python/workload.py");
    // Growing starts 1.5 s after "ready": sprofd attaches in well under that.
    let mut target = Target::spawn(
        Path::new("python3"),
        &[script.display().to_string(), "memory".into(), "1.5".into()],
    );
    let p = attach_profile(
        "memory-attach-py",
        target.pid,
        &["--mode", "memory", "-d", "30"],
    );
    assert!(
        target.wait_exit(Duration::from_secs(5)),
        "the script ends on its own"
    );
    assert_growth_split(&p);
}

#[test]
fn record_of_a_python_script_sees_which_function_grew() {
    if !live_kernel("record_of_a_python_script_sees_which_function_grew") {
        return;
    }
    let _serial = serial();
    let script = fixtures_dir().join("python/workload.py");
    let p = record_profile(
        "memory-record-py",
        &["--mode", "memory"],
        &[
            "python3".to_string(),
            script.display().to_string(),
            "memory".into(),
            "0".into(),
        ],
    );
    assert_growth_split(&p);
}

#[test]
fn memory_kept_to_the_end_is_told_from_memory_freed() {
    if !live_kernel("memory_kept_to_the_end_is_told_from_memory_freed") {
        return;
    }
    let _serial = serial();
    let exe = c_fixture("memgrow", NO_FP);
    let p = record_profile(
        "memory-leak-c",
        &["--mode", "memory"],
        &[exe.display().to_string(), "0".into(), "leak".into()],
    );
    let under = |grower: &str, root: &str| {
        p.folded
            .count_where(|f| f.iter().any(|x| x == root) && f.iter().any(|x| frame_is(x, grower)))
    };
    let share = |grower: &str, root: &str| {
        under(grower, root) as f64 / bytes_under(&p, grower).max(1) as f64
    };
    assert!(
        share("leak_keep", "[kept]") >= 0.9,
        "leak_keep kept {:.2}{}",
        share("leak_keep", "[kept]"),
        p.context()
    );
    assert!(
        share("leak_free", "[freed]") >= 0.9,
        "leak_free freed {:.2}{}",
        share("leak_free", "[freed]"),
        p.context()
    );
    let total = (bytes_under(&p, "leak_keep") + bytes_under(&p, "leak_free")) as f64 / MIB;
    assert!(
        (150.0..=240.0).contains(&total),
        "{total:.1} MiB written in all, want about 200{}",
        p.context()
    );
}

#[test]
fn without_the_tracepoints_memory_mode_counts_faults_and_says_why() {
    if !live_kernel("without_the_tracepoints_memory_mode_counts_faults_and_says_why") {
        return;
    }
    let _serial = serial();
    let Some((uid, gid)) = hostile::user() else {
        panic!("cannot create the unprivileged user {}", hostile::USER);
    };
    let dir = TempDir::new("memory-unpriv");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    let exe = dir.join("memgrow");
    std::fs::copy(c_fixture("memgrow", NO_FP), &exe).unwrap();
    let out = run_ok(
        hostile::as_user(&sprofd_bin())
            .args(["record", "--mode", "memory", "-q", "-o"])
            .arg(dir.join("out.folded"))
            .arg("--")
            .arg(&exe)
            .args(["0", "grow"]),
    );
    let notes: Vec<&str> = out
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("memory given back (munmap, madvise, brk) is not tracked"))
        .collect();
    assert_eq!(notes.len(), 1, "one note saying why:{}", out.describe());
    let folded = Folded::read(&dir.join("out.folded"));
    let p = Profile { out, folded, dir };
    assert!(
        p.folded.count_containing("[kept]") == 0,
        "no split without the tracepoints{}",
        p.context()
    );
    assert_growth_split(&p);
}

#[test]
fn diff_of_two_memory_profiles_says_how_growth_changed() {
    if !live_kernel("diff_of_two_memory_profiles_says_how_growth_changed") {
        return;
    }
    let _serial = serial();
    let exe = c_fixture("memgrow", NO_FP);
    let dir = TempDir::new("memory-diff");
    for what in ["grow", "leak"] {
        run_ok(
            sprofd()
                .args(["record", "-q", "--mode", "memory", "-o"])
                .arg(dir.join(format!("{what}.pb.gz")))
                .arg("--")
                .arg(&exe)
                .args(["0", what]),
        );
    }
    let out = run_ok(
        sprofd()
            .arg("diff")
            .arg(dir.join("grow.pb.gz"))
            .arg(dir.join("leak.pb.gz"))
            .arg("-o")
            .arg(dir.join("d.txt"))
            .arg("-o")
            .arg(dir.join("d.svg")),
    );
    let table = std::fs::read_to_string(dir.join("d.txt")).unwrap();
    assert!(
        table.contains("MiB · After: ") && table.contains("Largest changes in growth"),
        "{table}{}",
        out.describe()
    );
    // grow_big's 300 MiB went away: the largest change, about -300 MiB.
    let growth = table.split("Largest changes in growth").nth(1).unwrap();
    let row = growth
        .lines()
        .find(|l| l.ends_with(" grow_big"))
        .unwrap_or_else(|| panic!("no grow_big row:\n{table}"));
    let delta: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        (-330.0..=-270.0).contains(&delta),
        "grow_big {delta} MiB:\n{table}"
    );
    let svg = std::fs::read_to_string(dir.join("d.svg")).unwrap();
    assert!(
        svg.contains(" bytes"),
        "the differential flame graph counts bytes"
    );
}
