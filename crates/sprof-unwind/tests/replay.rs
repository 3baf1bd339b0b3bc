//! Replays samples recorded by a fixture program against the real binaries: the unwinder's
//! DWARF walk tested without root or perf. The fixture records its own registers, stack bytes
//! and maps (`tests/fixtures/selfdump.c`), exactly what a perf sample with
//! `PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER` carries.

use std::path::{Path, PathBuf};
use std::process::Command;

use sprof_core::{FileBytes, FrameKey, Mapping, Marker, ModuleLoader, Pid, Sample, Tid, UserRegs};
use sprof_symbolizer::{ElfModule, Resolved};
use sprof_unwind::{StackWalker, UnwindMode};

struct FileLoader;

impl ModuleLoader for FileLoader {
    fn load(&mut self, _pid: Pid, mapping: &Mapping) -> Option<FileBytes> {
        FileBytes::open(&mapping.path, None).ok()
    }
}

struct Recorded {
    regs: UserRegs,
    stack: Vec<u8>,
    maps: Vec<Mapping>,
}

fn record(dir: &Path, flags: &[&str]) -> Recorded {
    record_with(dir, "cc", "selfdump.c", flags)
}

/// Builds `fixture` (under tests/fixtures) with `compiler` and runs it once.
fn record_with(dir: &Path, compiler: &str, fixture: &str, flags: &[&str]) -> Recorded {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let exe = dir.join("selfdump");
    let st = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("{compiler} runs: {e}"));
    assert!(st.success(), "compiling the fixture failed");
    let prefix = dir.join("sample");
    let st = Command::new(&exe).arg(&prefix).status().unwrap();
    assert!(st.success());
    let regs = std::fs::read_to_string(prefix.with_extension("regs")).unwrap();
    let v: Vec<u64> = regs
        .split_whitespace()
        .map(|x| u64::from_str_radix(x, 16).unwrap())
        .collect();
    let maps = std::fs::read_to_string(prefix.with_extension("maps")).unwrap();
    Recorded {
        regs: UserRegs {
            ip: v[0],
            sp: v[1],
            bp: v[2],
        },
        stack: std::fs::read(prefix.with_extension("stack")).unwrap(),
        maps: sprof_core::parse_maps(maps.as_bytes()).unwrap().mappings,
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sprof-unwind-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn walk(rec: &Recorded, mode: UnwindMode, stack: &[u8]) -> (StackWalker, Vec<FrameKey>) {
    let mut walker = StackWalker::new(mode, false);
    let pid = Pid(1);
    for m in rec.maps.iter().filter(|m| m.executable) {
        walker.add_mapping(pid, m.clone(), &mut FileLoader);
    }
    let sample = Sample {
        kind: sprof_core::SampleKind::Timer,
        pid,
        tid: Tid(1),
        time: 0,
        cpu: 0,
        period: 1,
        ip: rec.regs.ip,
        kernel_chain: &[],
        user_chain: &[],
        user_regs: Some(rec.regs),
        user_stack: stack,
        user_stack_requested: 65528,
        addr: 0,
    };
    let mut out = Vec::new();
    walker.unwind(&sample, &mut out);
    (walker, out)
}

/// Outer function names of each frame, leaf first.
fn names(walker: &StackWalker, frames: &[FrameKey]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match (f, f.lookup_offset()) {
            (_, Some((id, off))) => {
                let m = walker.modules.get(id).unwrap();
                let elf = ElfModule::parse(&m.short_name, m.bytes.clone().unwrap()).unwrap();
                match elf.lookup(off) {
                    Resolved::Frames(fr) => fr.last().unwrap().function.clone(),
                    Resolved::Unknown { .. } => format!("{}+?", m.short_name),
                }
            }
            (FrameKey::Marker(m), _) => m.name().to_string(),
            _ => "[other]".into(),
        })
        .collect()
}

fn position(names: &[String], want: &str) -> usize {
    names
        .iter()
        .position(|n| n == want)
        .unwrap_or_else(|| panic!("{want} missing from {names:?}"))
}

#[test]
fn dwarf_walk_of_a_recorded_sample_reaches_main_through_libc() {
    let dir = tempdir("nofp");
    let rec = record(&dir, &["-O2", "-g", "-fomit-frame-pointer"]);
    for mode in [UnwindMode::Dwarf, UnwindMode::Auto] {
        let (walker, frames) = walk(&rec, mode, &rec.stack);
        let n = names(&walker, &frames);
        // Leaf first: every caller in order, through qsort's internals, down to main.
        let order = ["leaf_dump", "level3", "level2", "level1", "cmp", "main"];
        let pos: Vec<usize> = order.iter().map(|w| position(&n, w)).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{n:?}");
        assert!(
            n[pos[4] + 1..pos[5]]
                .iter()
                .any(|f| f.contains("qsort") || f.contains("msort")),
            "{n:?}"
        );
        assert!(!n.contains(&"[truncated]".to_string()), "{n:?}");
        assert!(matches!(
            frames[0],
            FrameKey::Module {
                is_return: false,
                ..
            }
        ));
        assert!(frames[1..].iter().all(|f| !matches!(
            f,
            FrameKey::Module {
                is_return: false,
                ..
            }
        )));
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Rust binaries (rustc links with lld) have their executable segment start inside the file
/// page that ends the read-only segment, so the executable mapping's file offset lies in both
/// segments' pages; taking the read-only one put every CFI lookup a page off, and walks ended
/// one or two frames up, short of the runtime's frames.
#[test]
fn dwarf_walk_of_a_recorded_rust_sample_reaches_start() {
    let dir = tempdir("rust");
    let rec = record_with(&dir, "rustc", "selfdump.rs", &["-O", "-g"]);
    for mode in [UnwindMode::Dwarf, UnwindMode::Auto] {
        let (walker, frames) = walk(&rec, mode, &rec.stack);
        let n = names(&walker, &frames);
        let order = [
            "selfdump::leaf_dump",
            "selfdump::level2",
            "selfdump::level1",
            "selfdump::main",
            "std::rt::lang_start_internal",
            "main",
            // (__libc_start_call_main before it is a local symbol, absent from a stripped libc)
            "__libc_start_main",
            "_start",
        ];
        let pos: Vec<usize> = order.iter().map(|w| position(&n, w)).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{mode:?}: {n:?}");
        assert_eq!(
            n.last().map(String::as_str),
            Some("_start"),
            "{mode:?}: {n:?}"
        );
        assert!(!n.contains(&"[truncated]".to_string()), "{mode:?}: {n:?}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_short_stack_copy_ends_truncated_with_the_callers_it_reached() {
    let dir = tempdir("short");
    let rec = record(&dir, &["-O2", "-g", "-fomit-frame-pointer"]);
    let (walker, frames) = walk(
        &rec,
        UnwindMode::Dwarf,
        &rec.stack[..rec.stack.len().min(512)],
    );
    let n = names(&walker, &frames);
    assert_eq!(
        frames.last(),
        Some(&FrameKey::Marker(Marker::Truncated)),
        "{n:?}"
    );
    assert_eq!(n[0], "leaf_dump");
    assert!(!n.contains(&"main".to_string()));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn garbage_registers_and_stack_never_panic_or_loop() {
    let dir = tempdir("garbage");
    let mut rec = record(&dir, &["-O2", "-g"]);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..200 {
        let mut stack = vec![0u8; 4096];
        for b in stack.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Sometimes point into real code so the walk gets going before the garbage.
        let code = rec.maps.iter().find(|m| m.executable).unwrap();
        rec.regs = UserRegs {
            ip: if round % 2 == 0 {
                code.start + (x % 4096)
            } else {
                x
            },
            sp: x >> 20,
            bp: x >> 8,
        };
        let (_, frames) = walk(&rec, UnwindMode::Auto, &stack);
        assert!(frames.len() <= sprof_unwind::MAX_FRAMES + 2);
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn frame_pointer_mode_maps_the_kernel_callchain() {
    let dir = tempdir("fp");
    let rec = record(&dir, &["-O2", "-g", "-fno-omit-frame-pointer"]);
    let mut walker = StackWalker::new(UnwindMode::FramePointer, false);
    for m in rec.maps.iter().filter(|m| m.executable) {
        walker.add_mapping(Pid(1), m.clone(), &mut FileLoader);
    }
    let chain = [rec.regs.ip, 0x10];
    let sample = Sample {
        kind: sprof_core::SampleKind::Timer,
        pid: Pid(1),
        tid: Tid(1),
        time: 0,
        cpu: 0,
        period: 1,
        ip: rec.regs.ip,
        kernel_chain: &[],
        user_chain: &chain,
        user_regs: None,
        user_stack: &[],
        user_stack_requested: 0,
        addr: 0,
    };
    let mut out = Vec::new();
    walker.unwind(&sample, &mut out);
    assert_eq!(names(&walker, &out[..1]), vec!["leaf_dump".to_string()]);
    assert!(matches!(
        out[1],
        FrameKey::Unmapped(sprof_core::FrameAddr::Ret(0x10))
    ));
    std::fs::remove_dir_all(dir).ok();
}
