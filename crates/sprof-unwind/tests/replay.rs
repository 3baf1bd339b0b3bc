//! Replays samples recorded by a fixture program against the real binaries: the unwinder's
//! DWARF walk tested without root or perf. The fixture records its own registers, stack bytes
//! and maps (sprof-testkit's `fixtures/selfdump.c`), exactly what a perf sample with
//! `PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER` carries.

use sprof_core::{FrameKey, Marker, Pid, Sample, UserRegs};
use sprof_symbolizer::{ElfModule, Resolved};
use sprof_testkit::{record, FileLoader, Recorded};
use sprof_unwind::{StackWalker, UnwindMode};

/// The C fixture, built with `flags`, recorded once.
fn record_c(flags: &[&str]) -> Recorded {
    record("cc", "selfdump.c", flags)
}

fn walk(rec: &Recorded, mode: UnwindMode, stack: &[u8]) -> (StackWalker, Vec<FrameKey>) {
    let mut walker = StackWalker::new(mode, false);
    let pid = Pid(1);
    for m in rec.maps.iter().filter(|m| m.executable) {
        walker.add_mapping(pid, m.clone(), &mut FileLoader);
    }
    let sample = rec.sample(pid.0, 1, 0, stack);
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
    let rec = record_c(&["-O2", "-g", "-fomit-frame-pointer"]);
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
}

/// Rust binaries (rustc links with lld) have their executable segment start inside the file
/// page that ends the read-only segment, so the executable mapping's file offset lies in both
/// segments' pages; taking the read-only one put every CFI lookup a page off, and walks ended
/// one or two frames up, short of the runtime's frames.
#[test]
fn dwarf_walk_of_a_recorded_rust_sample_reaches_start() {
    let rec = record("rustc", "selfdump.rs", &["-O", "-g"]);
    for mode in [UnwindMode::Dwarf, UnwindMode::Auto] {
        let (walker, frames) = walk(&rec, mode, &rec.stack);
        // The layout this test is about: the executable mapping's first page belongs to both
        // segments, which put it at different addresses.
        let exe = rec.maps.iter().find(|m| m.executable).unwrap();
        let (id, _) = frames[0].lookup_offset().unwrap();
        let segments = &walker.modules.get(id).unwrap().segments;
        assert_ne!(
            segments.mapping_svma(exe.file_offset, false),
            segments.mapping_svma(exe.file_offset, true),
            "not lld's packed layout: {segments:x?}"
        );
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
}

#[test]
fn a_short_stack_copy_ends_truncated_with_the_callers_it_reached() {
    let rec = record_c(&["-O2", "-g", "-fomit-frame-pointer"]);
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
}

#[test]
fn garbage_registers_and_stack_never_panic_or_loop() {
    let mut rec = record_c(&["-O2", "-g"]);
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
}

#[test]
fn frame_pointer_mode_maps_the_kernel_callchain() {
    let rec = record_c(&["-O2", "-g", "-fno-omit-frame-pointer"]);
    let mut walker = StackWalker::new(UnwindMode::FramePointer, false);
    for m in rec.maps.iter().filter(|m| m.executable) {
        walker.add_mapping(Pid(1), m.clone(), &mut FileLoader);
    }
    let chain = [rec.regs.ip, 0x10];
    // The kernel's callchain only, as frame-pointer mode samples it.
    let sample = Sample {
        user_chain: &chain,
        user_regs: None,
        user_stack_requested: 0,
        ..rec.sample(1, 1, 0, &[])
    };
    let mut out = Vec::new();
    walker.unwind(&sample, &mut out);
    assert_eq!(names(&walker, &out[..1]), vec!["leaf_dump".to_string()]);
    assert!(matches!(
        out[1],
        FrameKey::Unmapped(sprof_core::FrameAddr::Ret(0x10))
    ));
}
