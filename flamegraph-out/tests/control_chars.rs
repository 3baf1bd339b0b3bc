//! Control characters from the profiled processes (comm, thread names, command lines, file
//! names) or from requests (a reflected title) come out as spaces in every format: raw, they
//! reach the terminal of whoever prints pprof labels or JSON values (`ESC ]2;...BEL`).

mod common;

use flamegraph_out::{decode_pprof, printable, OutputFormat};
use sprof_core::{Frame, FrameKind, ProcessLabels};

const NASTY: &str = "\u{1b}]2;PWN\u{7}\u{1b}[2J\u{9b}x";

#[test]
fn no_exporter_lets_a_control_character_through() {
    let mut p = common::mixed();
    p.frames[0] = Frame::bare(format!("evil{NASTY}"), FrameKind::Root);
    p.frames[1] = Frame::bare(format!("thr{NASTY}"), FrameKind::Root);
    p.frames[2].file = Some(format!("/src/{NASTY}.c"));
    p.meta.target = format!("/</title><script>{NASTY}/: host");
    p.meta.resources.processes = vec![sprof_core::ProcessResources {
        pid: 9,
        comm: format!("evil{NASTY}"),
        points: vec![sprof_core::ResourcePoint {
            rss_anon: 1 << 20,
            ..Default::default()
        }],
    }];
    for stack in &p.stacks {
        if let Some(t) = stack.thread {
            p.processes.insert(
                t.pid,
                ProcessLabels {
                    uid: None,
                    cmdline: format!("evil --x {NASTY}"),
                    cgroup: format!("/c{NASTY}"),
                },
            );
        }
    }
    for format in [
        OutputFormat::Pprof,
        OutputFormat::Speedscope,
        OutputFormat::Folded,
        OutputFormat::Table,
        OutputFormat::Svg,
        OutputFormat::Lines,
        OutputFormat::Heatmap,
        OutputFormat::Timeline,
    ] {
        let mut out = Vec::new();
        format.exporter().export(&p, &mut out).unwrap();
        let text = if format == OutputFormat::Pprof {
            let proto = decode_pprof(&out).unwrap();
            assert!(
                proto.string_table.iter().any(|s| s.contains("evil")),
                "{:?}",
                proto.string_table
            );
            proto.string_table.join("\n")
        } else {
            String::from_utf8(out).unwrap()
        };
        let text = text.replace(['\n', '\t', '\r'], "");
        for c in ['\u{1b}', '\u{7}', '\u{9b}'] {
            assert!(!text.contains(c), "{format:?} keeps {c:?}");
        }
        // JSON's own escapes would hide the raw character from the check above.
        assert!(!text.contains("\\u001b"), "{format:?} escapes ESC in JSON");
    }
    assert_eq!(printable("a\u{1b}b"), "a b");
    assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
}
