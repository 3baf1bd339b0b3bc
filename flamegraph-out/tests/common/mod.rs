//! Hand-built profiles shared by the integration tests.
#![allow(dead_code)]

use std::io::{self, Write};

use sprof_core::{Frame, FrameKind, ProfileMeta, SessionStats, SymbolizedProfile};

/// 10 ms of CPU time per sample, so the totals are easy to check by eye.
pub const PERIOD_NS: u64 = 10_000_000;

fn native(function: &str, file: &str, line: u32, decl_line: u32, module: &str) -> Frame {
    Frame {
        function: function.into(),
        file: Some(file.into()),
        line: Some(line),
        decl_line: Some(decl_line),
        decl_file: None,
        module: Some(module.into()),
        kind: FrameKind::Native,
    }
}

/// A profile with most of what exporters meet: a process and a thread root, recursion (also
/// through two lines of one function), an inlined frame, kernel frames, markers, unresolved
/// frames, a name containing `;`, two frames whose labels merge, and lost, truncated and
/// throttled counts.
pub fn mixed() -> SymbolizedProfile {
    let mut memcpy = native(
        "memcpy",
        "/usr/include/bits/string_fortified.h",
        29,
        26,
        "cratio",
    );
    memcpy.kind = FrameKind::Inlined;
    memcpy.decl_file = Some("/usr/include/string.h".into());
    let kernel = |name: &str| {
        let mut f = Frame::bare(name, FrameKind::Kernel);
        f.module = Some("[kernel.kallsyms]".into());
        f
    };
    let mut unresolved = Frame::bare("libz.so.1+0x3f20", FrameKind::Unresolved);
    unresolved.module = Some("libz.so.1".into());
    let mut write = Frame::bare("write", FrameKind::Native);
    write.module = Some("libc.so.6".into());

    let frames = vec![
        Frame::bare("cratio", FrameKind::Root),                    // 0
        Frame::bare("worker-1", FrameKind::Root),                  // 1
        native("main", "/src/cratio/main.c", 20, 10, "cratio"),    // 2
        native("compress", "/src/cratio/lz.c", 88, 80, "cratio"),  // 3
        native("recurse", "/src/cratio/lz.c", 120, 110, "cratio"), // 4
        native("recurse", "/src/cratio/lz.c", 125, 110, "cratio"), // 5
        memcpy,                                                    // 6
        native(
            "<[u8; 8] as core::fmt::Debug>::fmt",
            "/rustc/core/fmt/mod.rs",
            5,
            3,
            "cratio",
        ), // 7
        kernel("do_syscall_64"),                                   // 8
        kernel("ksys_write"),                                      // 9
        Frame::bare("[truncated]", FrameKind::Marker),             // 10
        unresolved,                                                // 11
        Frame::bare("[unknown]", FrameKind::Unresolved),           // 12
        write,                                                     // 13
        native("main", "/src/cratio/main.c", 22, 10, "cratio"),    // 14
    ];
    let stack =
        |frames: &[u32], samples: u64| sprof_testkit::stack(frames, samples, samples * PERIOD_NS);
    let stacks = vec![
        stack(&[0, 2, 3, 4, 5, 4, 6], 40),
        stack(&[0, 2, 3, 7], 25),
        stack(&[0, 1, 2, 13, 8, 9], 15),
        stack(&[0, 10, 11], 5),
        stack(&[0, 2, 12], 3),
        stack(&[0, 14, 3, 4], 10),
        // Same labels as the second stack (main differs only in its line): merged in folded.
        stack(&[0, 14, 3, 7], 2),
    ];
    SymbolizedProfile {
        meta: ProfileMeta {
            target: "sprofd: ./cratio (pid 4242)".into(),
            pid: Some(4242),
            duration_secs: 1.02,
            frequency: 99,
            event: "cpu-clock".into(),
            stats: SessionStats {
                samples: 100,
                lost: 3,
                throttled: 1,
                truncated: 5,
                jit: 0,
                over_limit: 0,
            },
            notes: Vec::new(),
            measure: Default::default(),
            resources: Default::default(),
        },
        frames,
        stacks,
        modules: Vec::new(),
        processes: Default::default(),
        timeline: Vec::new(),
    }
}

/// No samples at all, but some lost records.
pub fn empty() -> SymbolizedProfile {
    SymbolizedProfile {
        meta: ProfileMeta {
            target: "sprofd: ./idle (pid 7)".into(),
            pid: Some(7),
            duration_secs: 0.5,
            frequency: 99,
            event: "cpu-clock".into(),
            stats: SessionStats {
                lost: 2,
                ..Default::default()
            },
            notes: Vec::new(),
            measure: Default::default(),
            resources: Default::default(),
        },
        ..Default::default()
    }
}

/// A writer that accepts `capacity` bytes, then fails like a full disk.
pub struct FullDisk {
    pub capacity: usize,
    pub written: Vec<u8>,
}

impl FullDisk {
    pub fn new(capacity: usize) -> Self {
        FullDisk {
            capacity,
            written: Vec::new(),
        }
    }
}

/// `ENOSPC` on Linux.
pub const ENOSPC: i32 = 28;

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.capacity - self.written.len();
        if room == 0 {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let n = room.min(buf.len());
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
