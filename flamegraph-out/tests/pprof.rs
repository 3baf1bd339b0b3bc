//! The pprof exporter: what it writes, decoded with the crate's own `profile.proto` messages
//! and checked against profile.proto's rules; the round trip through `read_pprof`; corrupt
//! input; and, when Go is installed, what `go tool pprof` makes of the file.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;

use common::{FullDisk, ENOSPC};
use flamegraph_out::pprof_proto::{self as proto, Profile};
use flamegraph_out::{
    decode_pprof, folded_lines, profile_from_proto, read_pprof, ExportError, Exporter,
    OutputFormat, Pprof, PprofReadError, PprofValueType, MAX_STACK_FRAMES,
};
use prost::Message;
use sprof_core::{Frame, FrameKind, ProfileMeta, SampledStack, SymbolizedProfile};

const FIXED: Pprof = Pprof {
    value_type: None,
    time_nanos: Some(1_700_000_000_000_000_000),
};

fn export(exporter: &Pprof, profile: &SymbolizedProfile) -> Vec<u8> {
    let mut out = Vec::new();
    exporter
        .export(profile, &mut out)
        .expect("export to memory");
    out
}

fn written(profile: &SymbolizedProfile) -> Profile {
    let bytes = export(&FIXED, profile);
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "pprof files are gzipped");
    decode_pprof(&bytes).expect("our own output decodes")
}

/// String `i` of the table, checking it is in range.
fn s(p: &Profile, i: i64) -> &str {
    let i = usize::try_from(i).expect("string positions are not negative");
    p.string_table
        .get(i)
        .unwrap_or_else(|| panic!("string {i} out of range"))
}

/// Checks every rule of profile.proto a reader relies on; returns locations and functions by id.
fn check_valid(
    p: &Profile,
) -> (
    HashMap<u64, &proto::Location>,
    HashMap<u64, &proto::Function>,
) {
    assert_eq!(p.string_table.first().map(String::as_str), Some(""));
    let strings: HashSet<&str> = p.string_table.iter().map(String::as_str).collect();
    assert_eq!(strings.len(), p.string_table.len(), "strings are interned");

    let mut mappings = HashSet::new();
    for m in &p.mapping {
        assert!(m.id != 0 && mappings.insert(m.id), "mapping id {}", m.id);
        assert!(!s(p, m.filename).is_empty());
        assert!(m.has_functions && m.has_filenames && m.has_line_numbers);
    }
    let mut functions = HashMap::new();
    for f in &p.function {
        assert!(
            f.id != 0 && functions.insert(f.id, f).is_none(),
            "function id {}",
            f.id
        );
        assert!(!s(p, f.name).is_empty(), "function {} has a name", f.id);
        assert_eq!(f.system_name, f.name);
        s(p, f.filename);
        assert!(f.start_line >= 0);
    }
    let mut locations = HashMap::new();
    for l in &p.location {
        assert!(
            l.id != 0 && locations.insert(l.id, l).is_none(),
            "location id {}",
            l.id
        );
        assert!(l.mapping_id == 0 || mappings.contains(&l.mapping_id));
        assert!(!l.line.is_empty(), "location {} has lines", l.id);
        for line in &l.line {
            assert!(functions.contains_key(&line.function_id));
            assert!(line.line >= 0);
        }
    }
    for vt in p.sample_type.iter().chain(&p.period_type) {
        s(p, vt.r#type);
        s(p, vt.unit);
    }
    for sample in &p.sample {
        assert_eq!(sample.value.len(), p.sample_type.len());
        for id in &sample.location_id {
            assert!(locations.contains_key(id), "location {id} exists");
        }
        let mut keys = HashSet::new();
        for label in &sample.label {
            assert!(keys.insert(label.key), "no multi-valued labels");
            assert!(!s(p, label.key).starts_with("pprof::"));
            s(p, label.str);
        }
    }
    for &c in &p.comment {
        s(p, c);
    }
    (locations, functions)
}

fn label<'a>(p: &Profile, sample: &'a proto::Sample, key: &str) -> Option<&'a proto::Label> {
    sample.label.iter().find(|l| s(p, l.key) == key)
}

#[test]
fn header_types_and_metadata() {
    let p = written(&common::mixed());
    check_valid(&p);
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|vt| (s(&p, vt.r#type), s(&p, vt.unit)))
        .collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    let period_type = p.period_type.expect("period_type");
    assert_eq!(
        (s(&p, period_type.r#type), s(&p, period_type.unit)),
        ("cpu", "nanoseconds")
    );
    assert_eq!(p.period, 10_101_010, "1e9 / 99 Hz, rounded");
    assert_eq!(p.duration_nanos, 1_020_000_000);
    assert_eq!(p.time_nanos, FIXED.time_nanos.unwrap());
    let comments: Vec<&str> = p.comment.iter().map(|&c| s(&p, c)).collect();
    assert_eq!(comments, ["sprofd: ./cratio (pid 4242)"]);

    // Without a fixed time, time_nanos is now.
    let p = decode_pprof(&export(&Pprof::default(), &common::mixed())).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(
        (now - 60_000_000_000..=now).contains(&p.time_nanos),
        "{}",
        p.time_nanos
    );
}

#[test]
fn the_second_value_type_is_configurable() {
    for (value_type, name) in [
        (PprofValueType::Cpu, "cpu"),
        (PprofValueType::Wall, "wall"),
        (PprofValueType::OffCpu, "off_cpu"),
        (PprofValueType::Space, "space"),
    ] {
        let exporter = Pprof {
            value_type: Some(value_type),
            ..FIXED
        };
        let p = decode_pprof(&export(&exporter, &common::mixed())).unwrap();
        check_valid(&p);
        assert_eq!(s(&p, p.sample_type[1].r#type), name);
        assert_eq!(s(&p, p.sample_type[1].unit), value_type.unit());
        assert_eq!(p.period_type, Some(p.sample_type[1]));
    }
}

#[test]
fn the_value_type_follows_what_the_profile_measures() {
    for (measure, name) in [
        (sprof_core::Measure::Cpu, "cpu"),
        (sprof_core::Measure::Wall, "wall"),
        (sprof_core::Measure::OffCpu, "off_cpu"),
        (sprof_core::Measure::Memory, "space"),
    ] {
        let mut profile = common::mixed();
        profile.meta.measure = measure;
        let bytes = export(&FIXED, &profile);
        let p = decode_pprof(&bytes).unwrap();
        assert_eq!(s(&p, p.sample_type[1].r#type), name);
        // Read back, the profile measures what it was written with.
        let back = flamegraph_out::read_pprof(&bytes).unwrap();
        assert_eq!(back.meta.measure, measure);
    }
}

#[test]
fn values_labels_and_leaf_first_locations() {
    let profile = common::mixed();
    let p = written(&profile);
    let (locations, functions) = check_valid(&p);
    assert_eq!(p.sample.len(), profile.stacks.len());

    // The names of a sample's locations, leaf first, each location's lines innermost first.
    let names = |sample: &proto::Sample| -> Vec<Vec<String>> {
        sample
            .location_id
            .iter()
            .map(|id| {
                locations[id]
                    .line
                    .iter()
                    .map(|l| {
                        let f = functions[&l.function_id];
                        format!("{}:{}", s(&p, f.name), l.line)
                    })
                    .collect()
            })
            .collect()
    };

    for (sample, stack) in p.sample.iter().zip(&profile.stacks) {
        assert_eq!(
            sample.value,
            [stack.samples as i64, stack.period as i64],
            "values are [samples, period]"
        );
        let comm = label(&p, sample, "comm").expect("comm label");
        assert_eq!(s(&p, comm.str), "cratio");
        let pid = label(&p, sample, "pid").expect("pid label");
        assert_eq!((pid.str, pid.num), (0, 4242));
    }
    // Only the third stack has a thread root.
    let threads: Vec<Option<&str>> = p
        .sample
        .iter()
        .map(|sample| label(&p, sample, "thread_name").map(|l| s(&p, l.str)))
        .collect();
    assert_eq!(
        threads,
        [None, None, Some("worker-1"), None, None, None, None]
    );

    // Stack 0 is cratio;main;compress;recurse;recurse;recurse;memcpy (inlined): five
    // locations, leaf first, memcpy folded into the recurse it was inlined into.
    assert_eq!(
        names(&p.sample[0]),
        [
            vec!["memcpy:29", "recurse:120"],
            vec!["recurse:125"],
            vec!["recurse:120"],
            vec!["compress:88"],
            vec!["main:20"],
        ]
    );
    // Root frames are labels, never locations.
    for sample in &p.sample {
        for names in names(sample) {
            for name in names {
                assert!(!name.starts_with("cratio:") && !name.starts_with("worker-1:"));
            }
        }
    }
    assert_eq!(
        names(&p.sample[2]),
        [
            vec!["ksys_write:0"],
            vec!["do_syscall_64:0"],
            vec!["write:0"],
            vec!["main:20"]
        ]
    );
    assert_eq!(
        names(&p.sample[3]),
        [vec!["libz.so.1+0x3f20:0"], vec!["[truncated]:0"]]
    );

    // The same function on two lines is one function and two locations.
    let recurse: Vec<&&proto::Function> = functions
        .values()
        .filter(|f| s(&p, f.name) == "recurse")
        .collect();
    assert_eq!(recurse.len(), 1);
    assert_eq!(s(&p, recurse[0].filename), "/src/cratio/lz.c");
    assert_eq!(recurse[0].start_line, 110);
    let memcpy = functions
        .values()
        .find(|f| s(&p, f.name) == "memcpy")
        .unwrap();
    assert_eq!(
        s(&p, memcpy.filename),
        "/usr/include/bits/string_fortified.h",
        "the frame's file: the one its line numbers are in"
    );
    assert_eq!(memcpy.start_line, 26);
}

#[test]
fn one_mapping_per_module_in_order_of_first_use() {
    let p = written(&common::mixed());
    let (locations, functions) = check_valid(&p);
    let mappings: Vec<&str> = p.mapping.iter().map(|m| s(&p, m.filename)).collect();
    assert_eq!(
        mappings,
        ["cratio", "libc.so.6", "[kernel.kallsyms]", "libz.so.1"],
        "the main binary first"
    );
    let mapping_of = |name: &str| -> u64 {
        let loc = locations
            .values()
            .find(|l| {
                let f = functions[&l.line.last().unwrap().function_id];
                s(&p, f.name) == name
            })
            .unwrap_or_else(|| panic!("a location for {name}"));
        loc.mapping_id
    };
    assert_eq!(mapping_of("main"), 1);
    assert_eq!(mapping_of("recurse"), 1);
    assert_eq!(mapping_of("write"), 2);
    assert_eq!(mapping_of("do_syscall_64"), 3);
    assert_eq!(mapping_of("libz.so.1+0x3f20"), 4);
    assert_eq!(mapping_of("[truncated]"), 0, "markers have no module");
    assert_eq!(mapping_of("[unknown]"), 0);
}

#[test]
fn output_is_deterministic() {
    let profile = common::mixed();
    let first = export(&FIXED, &profile);
    for _ in 0..3 {
        assert_eq!(export(&FIXED, &profile), first);
    }
}

#[test]
fn output_format_and_exporter() {
    let path = std::path::Path::new("/tmp/out/cpu.pb.gz");
    let format = OutputFormat::from_path(path).unwrap();
    assert_eq!(format, OutputFormat::Pprof);
    let mut out = Vec::new();
    format
        .exporter()
        .export(&common::mixed(), &mut out)
        .unwrap();
    check_valid(&decode_pprof(&out).unwrap());
}

#[test]
fn round_trip_keeps_folded_lines_and_metadata() {
    for profile in [common::mixed(), common::empty()] {
        let read = read_pprof(&export(&FIXED, &profile)).expect("read back");
        assert_eq!(
            folded_lines(&read).unwrap(),
            folded_lines(&profile).unwrap()
        );
        assert_eq!(read.total_samples(), profile.total_samples());
        assert_eq!(read.total_period(), profile.total_period());
        assert_eq!(read.meta.target, profile.meta.target);
        // The pid is a sample label: a profile without samples has nowhere to keep it.
        if !profile.stacks.is_empty() {
            assert_eq!(read.meta.pid, profile.meta.pid);
        }
        assert_eq!(read.meta.frequency, profile.meta.frequency);
        assert!((read.meta.duration_secs - profile.meta.duration_secs).abs() < 1e-9);
    }
    // Raw (not gzipped) bytes read as well.
    let p = Pprof::to_proto(&FIXED, &common::mixed()).unwrap();
    let read = read_pprof(&p.encode_to_vec()).unwrap();
    assert_eq!(
        folded_lines(&read).unwrap(),
        folded_lines(&common::mixed()).unwrap()
    );
}

/// Frames as the symbolizer makes them: natives and inlined frames with a module and no
/// declaration file, kernel frames without a module, Python frames with file and declaration
/// file, markers and unresolved frames.
fn symbolizer_like() -> SymbolizedProfile {
    let native = |name: &str, line: u32, kind: FrameKind| Frame {
        function: name.into(),
        file: Some("/src/app.c".into()),
        line: Some(line),
        decl_line: Some(line - 1),
        decl_file: None,
        module: Some("app".into()),
        kind,
    };
    let python = |name: &str, line: u32| Frame {
        function: name.into(),
        file: Some("/srv/handler.py".into()),
        line: Some(line),
        decl_line: Some(1),
        decl_file: Some("/srv/handler.py".into()),
        module: None,
        kind: FrameKind::Python,
    };
    let mut unresolved = Frame::bare("libz.so.1+0x10", FrameKind::Unresolved);
    unresolved.module = Some("libz.so.1".into());
    let mut jit = Frame::bare("JS:*render /app/ui.js:3:7", FrameKind::Jit);
    jit.module = Some("[jit]".into());
    let mut jit_unknown = Frame::bare("[jit] 0x7f0012345678", FrameKind::Unresolved);
    jit_unknown.module = Some("[jit]".into());
    let frames = vec![
        Frame::bare("app", FrameKind::Root),                         // 0
        Frame::bare("main-thread", FrameKind::Root),                 // 1
        native("main", 10, FrameKind::Native),                       // 2
        native("inner", 20, FrameKind::Inlined),                     // 3
        native("innermost", 30, FrameKind::Inlined),                 // 4
        Frame::bare("do_syscall_64", FrameKind::Kernel),             // 5
        python("<module>", 3),                                       // 6
        python("handler", 7),                                        // 7
        Frame::bare("[python frame unreadable]", FrameKind::Marker), // 8
        unresolved,                                                  // 9
        Frame::bare("[unknown]", FrameKind::Unresolved),             // 10
        native("main", 11, FrameKind::Native),                       // 11
        jit,                                                         // 12
        jit_unknown,                                                 // 13
    ];
    let stack = |frames: &[u32], samples: u64| SampledStack {
        frames: frames.to_vec(),
        samples,
        period: samples * 1_000_000,
        thread: None,
    };
    SymbolizedProfile {
        meta: ProfileMeta {
            target: "app (pid 9)".into(),
            pid: Some(9),
            duration_secs: 2.5,
            frequency: 1000,
            notes: vec!["python frames: 2".into()],
            ..Default::default()
        },
        frames,
        stacks: vec![
            stack(&[0, 1, 2, 3, 4, 5], 7),
            stack(&[0, 1, 2, 3], 1),
            stack(&[0, 2, 6, 7, 8], 4),
            stack(&[0, 9], 2),
            stack(&[0, 11, 10], 3),
            stack(&[0, 2, 12, 13], 2),
            stack(&[0], 1),
        ],
        modules: Vec::new(),
        processes: Default::default(),
        timeline: Vec::new(),
    }
}

fn stacks_by_content(p: &SymbolizedProfile) -> Vec<(Vec<Frame>, u64, u64)> {
    let mut v: Vec<_> = p
        .stacks
        .iter()
        .map(|s| {
            let frames = s.frames.iter().map(|&f| p.frames[f as usize].clone());
            (frames.collect(), s.samples, s.period)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_of_symbolizer_frames_is_exact() {
    let profile = symbolizer_like();
    let read = read_pprof(&export(&FIXED, &profile)).unwrap();
    assert_eq!(stacks_by_content(&read), stacks_by_content(&profile));
    assert_eq!(read.meta.notes, profile.meta.notes);
    assert_eq!(read.meta.target, profile.meta.target);
    assert_eq!(read.meta.pid, Some(9));
    assert_eq!(read.meta.frequency, 1000);

    // Two inlined frames fold into main's location: innermost first, main last.
    let p = written(&profile);
    let (locations, functions) = check_valid(&p);
    let leaf = locations[&p.sample[0].location_id[1]];
    let lines: Vec<&str> = leaf
        .line
        .iter()
        .map(|l| s(&p, functions[&l.function_id].name))
        .collect();
    assert_eq!(lines, ["innermost", "inner", "main"]);
    assert_eq!(p.sample[0].location_id.len(), 2);
    // Python frames have no mapping.
    let python = p
        .location
        .iter()
        .find(|l| s(&p, functions[&l.line[0].function_id].name) == "handler")
        .unwrap();
    assert_eq!(python.mapping_id, 0);
    // A stack of nothing but a root is a sample with labels and no locations.
    let only_root = p.sample.last().unwrap();
    assert!(only_root.location_id.is_empty());
    assert_eq!(s(&p, label(&p, only_root, "comm").unwrap().str), "app");
}

#[test]
fn nominal_period_when_no_periods_were_kept() {
    let mut profile = common::mixed();
    for stack in &mut profile.stacks {
        stack.period = 0;
    }
    let p = written(&profile);
    for (sample, stack) in p.sample.iter().zip(&profile.stacks) {
        assert_eq!(
            sample.value,
            [stack.samples as i64, stack.samples as i64 * 10_101_010]
        );
    }
    // And with no frequency either, the period is 0 and values are [samples, 0].
    profile.meta.frequency = 0;
    let p = written(&profile);
    assert_eq!(p.period, 0);
    assert_eq!(p.sample[0].value, [40, 0]);
    // Stacks with neither samples nor period are left out.
    profile.stacks[0].samples = 0;
    assert_eq!(written(&profile).sample.len(), profile.stacks.len() - 1);
}

#[test]
fn bad_frame_index_is_an_error() {
    let mut profile = common::mixed();
    profile.stacks[1].frames.push(99);
    assert!(matches!(
        FIXED.export(&profile, &mut Vec::new()),
        Err(ExportError::BadFrameIndex {
            stack: 1,
            frame: 99,
            ..
        })
    ));
}

#[test]
fn full_disk_is_an_error() {
    let profile = common::mixed();
    let size = export(&FIXED, &profile).len();
    for capacity in [0, 1, size / 2, size - 1] {
        match FIXED.export(&profile, &mut FullDisk::new(capacity)) {
            Err(ExportError::Io(e)) => assert_eq!(e.raw_os_error(), Some(ENOSPC)),
            other => panic!("at {capacity}/{size}: expected an I/O error, got {other:?}"),
        }
    }
    FIXED
        .export(&profile, &mut FullDisk::new(size))
        .expect("exactly enough room");
}

#[test]
fn corrupt_or_truncated_input_is_an_error_not_a_panic() {
    let bytes = export(&FIXED, &symbolizer_like());
    // Every truncation of the gzip stream fails (its trailer holds a CRC and the length).
    for len in 0..bytes.len() {
        assert!(
            read_pprof(&bytes[..len]).is_err(),
            "truncated to {len} of {} bytes",
            bytes.len()
        );
    }
    // Truncated or damaged raw protobuf: an error or some profile, never a panic.
    let raw = Pprof::to_proto(&FIXED, &symbolizer_like())
        .unwrap()
        .encode_to_vec();
    for len in 0..raw.len() {
        let _ = read_pprof(&raw[..len]);
    }
    for i in 0..raw.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut damaged = raw.clone();
            damaged[i] ^= flip;
            let _ = read_pprof(&damaged);
        }
    }
    // Damaged gzip payloads fail their CRC.
    let mut damaged = bytes.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x55;
    assert!(read_pprof(&damaged).is_err());

    assert!(matches!(read_pprof(b""), Err(PprofReadError::Invalid(_))));
    assert!(matches!(
        read_pprof(b"not a profile at all"),
        Err(PprofReadError::Decode(_) | PprofReadError::Invalid(_))
    ));
    assert!(matches!(
        read_pprof(&[0x1f, 0x8b, 0x08, 0x00]),
        Err(PprofReadError::Gzip(_))
    ));
}

/// Damages a profile.
type Breaks = fn(&mut Profile);

#[test]
fn inconsistent_profiles_are_errors() {
    let good = Pprof::to_proto(&FIXED, &symbolizer_like()).unwrap();
    profile_from_proto(&good).expect("the original reads");
    let broken: Vec<(&str, Breaks)> = vec![
        ("no empty string", |p| p.string_table[0] = "x".into()),
        ("no string table", |p| p.string_table.clear()),
        ("no sample types", |p| p.sample_type.clear()),
        ("value count", |p| {
            p.sample[0].value.pop();
        }),
        ("negative value", |p| p.sample[0].value[0] = -1),
        ("unknown location", |p| p.sample[0].location_id[0] = 999),
        ("unknown function", |p| {
            p.location[0].line[0].function_id = 999
        }),
        ("unknown mapping", |p| p.location[0].mapping_id = 999),
        ("zero location id", |p| p.location[0].id = 0),
        ("repeated function id", |p| {
            let f = p.function[0];
            p.function.push(f);
        }),
        ("string out of range", |p| p.function[0].name = 10_000),
        ("negative string", |p| p.function[0].filename = -1),
        ("label string", |p| p.sample[0].label[0].str = 10_000),
        ("comment", |p| p.comment.push(10_000)),
    ];
    for (what, breaks) in broken {
        let mut p = good.clone();
        breaks(&mut p);
        assert!(
            matches!(profile_from_proto(&p), Err(PprofReadError::Invalid(_))),
            "{what}: {:?}",
            profile_from_proto(&p).map(|_| ())
        );
        // And through the bytes, gzipped or not.
        assert!(read_pprof(&p.encode_to_vec()).is_err(), "{what}");
    }
}

#[test]
fn a_small_file_with_enormous_stacks_is_refused() {
    let mut p = Pprof::to_proto(&FIXED, &symbolizer_like()).unwrap();
    let id = p.sample[0].location_id[0];
    p.sample[0].location_id = vec![id; MAX_STACK_FRAMES + 1];
    let bytes = p.encode_to_vec();
    assert!(bytes.len() < 200_000);
    assert!(matches!(
        read_pprof(&bytes),
        Err(PprofReadError::Invalid(e)) if e.contains("more than")
    ));
}

#[test]
fn a_foreign_profile_reads() {
    // One value type, a location without lines (an unsymbolized address), no labels.
    let p = Profile {
        sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
        sample: vec![proto::Sample {
            location_id: vec![2, 1],
            value: vec![5],
            label: vec![],
        }],
        mapping: vec![proto::Mapping {
            id: 1,
            memory_start: 0x1000,
            file_offset: 0x200,
            filename: 3,
            ..Default::default()
        }],
        location: vec![
            proto::Location {
                id: 1,
                mapping_id: 1,
                line: vec![proto::Line {
                    function_id: 1,
                    line: 4,
                    column: 0,
                }],
                ..Default::default()
            },
            proto::Location {
                id: 2,
                mapping_id: 1,
                address: 0x1010,
                ..Default::default()
            },
        ],
        function: vec![proto::Function {
            id: 1,
            name: 4,
            system_name: 4,
            filename: 0,
            start_line: 0,
        }],
        string_table: ["", "samples", "count", "prog", "main.main"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let read = profile_from_proto(&p).unwrap();
    assert_eq!(folded_lines(&read).unwrap(), ["main.main;prog+0x210 5"]);
    assert_eq!(read.total_period(), 0);
}

/// `go tool pprof` on the written file, when Go is installed.
#[test]
fn go_tool_pprof_reads_it() {
    let required = std::env::var_os("SPROFD_REQUIRE_LIVE").is_some_and(|v| v == "1");
    let go_found = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !go_found {
        assert!(!required, "SPROFD_REQUIRE_LIVE=1 but go is not installed");
        println!("skipped: go not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sprofd-pprof-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cpu.pb.gz");
    std::fs::write(&path, export(&FIXED, &common::mixed())).unwrap();
    let run = |args: &[&str]| -> String {
        let out = Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(&path)
            .env("PPROF_TMPDIR", &dir)
            .env("HOME", &dir)
            .output()
            .expect("run go tool pprof");
        assert!(
            out.status.success(),
            "go tool pprof {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = run(&["-top", "-sample_index=samples"]);
    assert!(
        top.contains("100 total") || top.contains("of 100 total"),
        "{top}"
    );
    // The first row after the header is the hottest function: memcpy, 40 samples, self.
    let first = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("no rows in\n{top}"));
    assert!(first.contains("memcpy"), "{top}");
    assert!(first.trim_start().starts_with("40 "), "{top}");
    let top_cpu = run(&["-top"]);
    assert!(top_cpu.contains("memcpy"), "{top_cpu}");
    let raw = run(&["-raw"]);
    assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
    assert!(raw.contains("comm:[cratio]"), "{raw}");
    assert!(raw.contains("thread_name:[worker-1]"), "{raw}");
    let _ = std::fs::remove_dir_all(&dir);
}
