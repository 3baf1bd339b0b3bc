//! The daemon against a hostile local user's files (red-team review D1 to D4): an
//! unprivileged user runs programs whose DWARF nests 200 000 deep, whose debuglink names a
//! FIFO or a 10 GiB sparse file, and whose perf map is a symlink to a root-only file, while
//! root runs a victim loop. The root daemon must stay up and truthful, keep sampling the
//! victim, read nothing the user could not, and stay within its memory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sprofd_tests::daemon::*;
use sprofd_tests::hostile::{self, as_user};
use sprofd_tests::*;

const SECRET: &str = "SPROFD_ROOT_ONLY_SECRET_hunter2";
/// How long the attackers and the victim run.
const RUN_SECS: f64 = 8.0;

fn sh(cmd: &mut Command) {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed{}", out.describe());
}

/// Copies the spin fixture to `dir/name`, with `.gnu_debuglink` naming `link` (a file that
/// exists at objcopy time, then is replaced by the caller).
fn with_debuglink(spin: &Path, dir: &Path, name: &str, link: &str) {
    let target = dir.join(link);
    std::fs::write(&target, b"placeholder").unwrap();
    sh(Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", target.display()))
        .arg(spin)
        .arg(dir.join(name)));
    std::fs::remove_file(&target).unwrap();
}

/// The attacker's directory, owned by the unprivileged user: the four hostile programs.
fn plant(dir: &Path, spin: &Path, uid: u32, gid: u32) {
    // D1: DWARF nested 200 000 deep around hot_function.
    let (low, size) = nm_symbol_range(spin, "hot_function").expect("hot_function in spin");
    let (info, abbrev) = hostile::deep_dwarf(200_000, low, size - low);
    std::fs::write(dir.join("deep.info"), info).unwrap();
    std::fs::write(dir.join("deep.abbrev"), abbrev).unwrap();
    sh(Command::new("objcopy")
        .arg(format!(
            "--add-section=.debug_info={}",
            dir.join("deep.info").display()
        ))
        .arg(format!(
            "--add-section=.debug_abbrev={}",
            dir.join("deep.abbrev").display()
        ))
        .arg(spin)
        .arg(dir.join("spin-deep")));
    // D2: the debug file is a FIFO nobody writes.
    with_debuglink(spin, dir, "spin-fifo", "spin-fifo.debug");
    let fifo = std::ffi::CString::new(dir.join("spin-fifo.debug").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // D3: the debug file is 10 GiB of nothing.
    with_debuglink(spin, dir, "spin-sparse", "spin-sparse.debug");
    let sparse = std::fs::File::create(dir.join("spin-sparse.debug")).unwrap();
    sparse.set_len(10 << 30).unwrap();
    std::fs::copy(c_fixture("jitloop", &["-O1"]), dir.join("jitloop")).unwrap();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        std::os::unix::fs::chown(entry.path(), Some(uid), Some(gid)).unwrap();
    }
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
}

#[live_test]
fn a_hostile_users_files_neither_stop_nor_bloat_nor_leak_through_the_daemon() {
    let _serial = serial();
    let Some((uid, gid)) = hostile::user() else {
        panic!("cannot create the unprivileged user {}", hostile::USER);
    };
    let dir = TempDir::new("hostile-files");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spin = c_fixture("spin", &["-O1", "-g0"]);
    let evil = dir.join("evil");
    std::fs::create_dir(&evil).unwrap();
    plant(&evil, &spin, uid, gid);
    // D4: a root-only file in perf-map form, in a directory only root may enter.
    let vault = dir.join("vault");
    std::fs::create_dir(&vault).unwrap();
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = vault.join("secret.map");
    std::fs::write(&secret, format!("7f0000000000 100000 {SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    let d = Daemon::start(&dir.join("data"), &["-F", "99", "--window", "2"]);
    let secs = RUN_SECS.to_string();
    let mut attackers: Vec<std::process::Child> = ["spin-deep", "spin-fifo", "spin-sparse"]
        .iter()
        .map(|name| as_user(&evil.join(name)).arg(&secs).spawn().unwrap())
        .collect();
    attackers.push(
        as_user(&evil.join("jitloop"))
            .arg(&secs)
            .arg(format!("link:{}", secret.display()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let victim_bin = dir.join("victim-spin");
    std::fs::copy(&spin, &victim_bin).unwrap();
    let mut victim = Command::new(&victim_bin).arg(&secs).spawn().unwrap();

    // /healthz answers, quickly, all along; the CPU time each process had is noted, to
    // compare its samples with (the host may be busy with other work).
    let mut slowest = Duration::ZERO;
    let mut cpu = std::collections::HashMap::new();
    let end = Instant::now() + Duration::from_secs_f64(RUN_SECS);
    while Instant::now() < end {
        for (name, pid) in attackers
            .iter()
            .map(|a| a.id())
            .zip(["spin-deep", "spin-fifo", "spin-sparse", "jitloop"])
            .map(|(pid, name)| (name, pid))
            .chain([("victim-spin", victim.id())])
        {
            if let Some(secs) = proc_cpu_seconds(pid) {
                cpu.insert(name, secs);
            }
        }
        let t = Instant::now();
        let r = d.get("/healthz");
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 200, "{}\n{}", r.text(), d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    for mut a in attackers {
        assert!(a.wait().unwrap().success());
    }
    assert!(victim.wait().unwrap().success());
    assert!(
        slowest < Duration::from_millis(100),
        "/healthz took {slowest:?}"
    );
    // The processes' last second is in the slice the daemon cuts next (once a second).
    std::thread::sleep(Duration::from_millis(1500));

    let folded = folded_of(&d.get("/api/v1/profile?from=-1m&format=folded"));
    let log = d.log();
    let count = |comm: &str| folded.count_where(|f| f.first().is_some_and(|c| c == comm));
    // The victim, and each attacker, kept its samples: at least 70% of its CPU time at 99 Hz
    // (the CPU time is read up to 200 ms before the end, so it is slightly short). Before,
    // the FIFO stopped all sampling for good and the sparse file for seconds.
    let mut victim_samples = 0;
    for comm in ["victim-spin", "spin-deep", "spin-fifo", "spin-sparse"] {
        let expected = cpu.get(comm).copied().unwrap_or(0.0) * 99.0;
        let got = count(comm);
        assert!(
            expected >= 50.0 && got as f64 >= 0.7 * expected,
            "{comm}: {got} samples for {expected:.0} expected\n{}",
            folded.excerpt()
        );
        if comm == "victim-spin" {
            victim_samples = got;
        }
    }
    // The deep binary is named from its symbol table; the refusal is said.
    assert!(
        folded.count_containing("hot_function") >= 100,
        "{}",
        folded.excerpt()
    );
    assert!(log.contains("nested more than 256 deep"), "{log}");
    // Nothing of the root-only file reached any output; the link was refused and said.
    for format in ["folded", "txt", "speedscope"] {
        let r = d.get(&format!("/api/v1/profile?from=-1m&format={format}"));
        assert!(
            !r.text().contains(SECRET),
            "{format} leaks the root-only file"
        );
    }
    assert!(log.contains("a symlink, not followed"), "{log}");
    // Memory: the unit's MemoryMax is 256M; the review saw 2.4 GB with a decompression bomb.
    let hwm = d.status_kib("VmHWM");
    assert!(hwm < 200 << 10, "VmHWM {hwm} KiB");
    let (status, took, _) = d.terminate();
    assert!(
        status.success() && took < Duration::from_secs(5),
        "{status:?} in {took:?}"
    );
    eprintln!(
        "hostile files: victim {victim_samples} samples, /healthz at most {slowest:?}, VmHWM {} MiB",
        hwm >> 10
    );
}

/// D11: an unprivileged user maps and unmaps in a loop (millions of mmap records) while
/// root runs a victim loop. Side records have a ring buffer of their own, so the victim
/// keeps its samples; the flood's losses are counted apart, not as lost samples.
#[live_test]
fn an_mmap_flood_costs_the_host_no_samples() {
    let _serial = serial();
    let Some((uid, gid)) = hostile::user() else {
        panic!("cannot create the unprivileged user {}", hostile::USER);
    };
    let dir = TempDir::new("hostile-mmapflood");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let flood = dir.join("mmapflood");
    std::fs::copy(c_fixture("mmapflood", &["-O1"]), &flood).unwrap();
    std::os::unix::fs::chown(&flood, Some(uid), Some(gid)).unwrap();
    let victim_bin = dir.join("victim-spin");
    std::fs::copy(c_fixture("spin", &["-O1", "-g0"]), &victim_bin).unwrap();

    let d = Daemon::start(&dir.join("data"), &["-F", "99", "--window", "2"]);
    let mut attacker = as_user(&flood).arg("8").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut victim = Command::new(&victim_bin).arg("6").spawn().unwrap();
    let mut cpu = 0.0;
    while victim.try_wait().unwrap().is_none() {
        if let Some(c) = proc_cpu_seconds(victim.id()) {
            cpu = c;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(attacker.wait().unwrap().success());
    // The victim's last second is in the slice the daemon cuts next (once a second), and on a
    // loaded host the daemon may still be working through queued samples: query until the
    // count stops growing (two answers a second apart agree), for at most 15 s.
    let victim_samples = || {
        let folded = folded_of(&d.get("/api/v1/profile?from=-1m&format=folded"));
        let got = folded.count_where(|f| f.first().is_some_and(|c| c == "victim-spin"));
        (folded, got)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    std::thread::sleep(Duration::from_millis(1500));
    let (mut folded, mut got) = victim_samples();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        let (f, g) = victim_samples();
        let stable = g == got;
        (folded, got) = (f, g);
        if stable {
            break;
        }
    }
    let lost = d.metric("sprofd_lost_samples_total");
    let lost_side = d.metric("sprofd_lost_side_records_total");
    // The victim's code under another name (its exec's comm lost in the flood, not yet read
    // again): said, not counted.
    let misnamed = folded.count_where(|f| {
        f.first().is_some_and(|c| c != "victim-spin")
            && f.iter().any(|x| x.contains("hot_function"))
    });
    let dropped = d.metric("sprofd_dropped_samples_total");
    let mut by_comm: std::collections::BTreeMap<&str, u64> = Default::default();
    for (f, n) in &folded.stacks {
        *by_comm
            .entry(f.first().map(String::as_str).unwrap_or(""))
            .or_default() += n;
    }
    eprintln!(
        "mmap flood: victim {got} samples for {cpu:.1} s of CPU ({misnamed} more under another name); lost samples {lost}, dropped {dropped}, lost side records {lost_side}; by process {by_comm:?}"
    );
    // Before the side-band ring the flood cost the host 65% of its samples. Now most runs
    // keep them all, but some keep only about two thirds, none counted as lost or dropped and
    // none under another name (seen: 326, 327, 332, 407, 467 and 507-533 of ~500 expected);
    // not explained yet (issue 16's note). The bound catches the old loss, not that one.
    assert!(
        got as f64 >= 0.55 * cpu * 99.0,
        "victim: {got} samples for {cpu:.1} s of CPU (lost {lost}, side {lost_side})"
    );
    // The victim's frames are named: its mappings arrived, or were read again.
    assert!(
        folded.count_containing("hot_function") as f64 >= 0.9 * got as f64,
        "{}",
        folded.excerpt()
    );
}

/// The file offset where `.text` of `elf` ends (`readelf -SW`).
fn text_end(elf: &Path) -> u64 {
    let out = run(Command::new("readelf").arg("-SW").arg(elf));
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(" .text "))
        .unwrap_or_else(|| panic!("no .text{}", out.describe()));
    let fields: Vec<&str> = line.split(']').nth(1).unwrap().split_whitespace().collect();
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    hex(fields[3]) + hex(fields[4])
}

/// A user truncates a shared library of theirs while their program runs it and the root
/// daemon has it mapped: reads past the new end raised SIGBUS and ended the daemon. They now
/// read zeros; the daemon stays up and healthy and the victim keeps its samples.
#[live_test]
fn a_library_truncated_under_the_daemon_does_not_end_it() {
    let _serial = serial();
    let Some((uid, gid)) = hostile::user() else {
        panic!("cannot create the unprivileged user {}", hostile::USER);
    };
    let dir = TempDir::new("hostile-shrink");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let lib = dir.join("libshrink.so");
    sh(Command::new("cc")
        .args(["-O1", "-g", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(fixtures_dir().join("shrinklib.c")));
    let main = dir.join("main.c");
    std::fs::write(
        &main,
        // _exit: the library's destructors live in the pages cut off.
        "#include <stdlib.h>\n#include <time.h>\n#include <unistd.h>\n\
         unsigned long lib_hot(unsigned long), lib_later(unsigned long);\n\
         int main(int c, char **v) { time_t t0 = time(0); unsigned long x = 0;\n\
         while (time(0) < t0 + 3) x += lib_hot(100000);\n\
         while (time(0) < t0 + atoi(v[1])) x += lib_later(100000); _exit(x == 1); }\n",
    )
    .unwrap();
    let prog = dir.join("shrinking");
    sh(Command::new("cc")
        .arg("-o")
        .arg(&prog)
        .arg(&main)
        .arg(format!("-L{}", dir.path().display()))
        .arg("-lshrink")
        .arg(format!("-Wl,-rpath,{}", dir.path().display()))
        // Bound at start: a lazy lookup at _exit would read the library's cut pages.
        .arg("-Wl,-z,now"));
    for f in [&lib, &prog] {
        std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
    }
    let victim_bin = dir.join("victim-spin");
    std::fs::copy(c_fixture("spin", &["-O1", "-g0"]), &victim_bin).unwrap();

    let mut d = Daemon::start(&dir.join("data"), &["-F", "99", "--window", "2"]);
    let mut attacker = as_user(&prog).arg("5").spawn().unwrap();
    let mut victim = Command::new(&victim_bin).arg("5").spawn().unwrap();
    // Sampled (its library mapped and parsed by the daemon), then cut right after its code:
    // it keeps running, and unwinding it reads the .eh_frame that is gone.
    std::thread::sleep(Duration::from_millis(1500));
    let size = text_end(&lib).div_ceil(4096) * 4096;
    let truncate = run(as_user(Path::new("truncate"))
        .args(["-s", &size.to_string()])
        .arg(&lib));
    assert!(truncate.status.success(), "{}", truncate.describe());
    assert!(
        attacker.wait().unwrap().success(),
        "the program outlives its truncation"
    );
    assert!(victim.wait().unwrap().success());
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "daemon ended:\n{}",
        d.log()
    );
    assert_eq!(d.get("/healthz").status, 200, "{}", d.log());
    let folded = folded_of(&d.get("/api/v1/profile?from=-1m&format=folded"));
    let got = folded.count_where(|f| f.first().is_some_and(|c| c == "victim-spin"));
    assert!(got >= 100, "victim: {got}\n{}", folded.excerpt());
    let (status, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}
