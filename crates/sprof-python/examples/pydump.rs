//! `pydump PID`: prints every thread's Python stack, read from outside like sprofd does — the
//! crate's API end to end, and a quick way to compare with `py-spy dump` or gdb. Needs root.

use std::collections::HashMap;

use sprof_core::Segments;
use sprof_python::{detect, CodeTable, Detection, MappedFile};

fn main() {
    let Some(pid) = std::env::args().nth(1).and_then(|a| a.parse::<u32>().ok()) else {
        eprintln!("usage: pydump PID");
        std::process::exit(2);
    };
    let maps = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("pydump: /proc/{pid}/maps: {e}");
            std::process::exit(1);
        }
    };
    // (path, start, end, offset) of executable file mappings, and each file's bytes once.
    let mut maps_x = Vec::new();
    let mut bytes: HashMap<String, (Vec<u8>, Segments)> = HashMap::new();
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[1].contains('x') || !f[5].starts_with('/') {
            continue;
        }
        let path = f[5..].join(" ");
        let Some((s, e)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(off)) = (
            u64::from_str_radix(s, 16),
            u64::from_str_radix(e, 16),
            u64::from_str_radix(f[2], 16),
        ) else {
            continue;
        };
        if !bytes.contains_key(&path) {
            if let Ok(b) = std::fs::read(format!("/proc/{pid}/map_files/{start:x}-{end:x}")) {
                let segments = Segments::parse(&b);
                bytes.insert(path.clone(), (b, segments));
            }
        }
        maps_x.push((path, start, end, off));
    }
    let files: Vec<MappedFile<'_>> = maps_x
        .iter()
        .filter_map(|(path, start, end, off)| {
            let (bytes, segments) = bytes.get(path)?;
            Some(MappedFile {
                path,
                start: *start,
                end: *end,
                file_offset: *off,
                executable: true,
                bytes,
                segments,
            })
        })
        .collect();
    let mut py = match detect(pid, &files) {
        Detection::Python(p) => p,
        other => {
            eprintln!("pydump: {other:?}");
            std::process::exit(1);
        }
    };
    println!("python {:?}", py.version());
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    let mut codes = CodeTable::default();
    let mut frames = Vec::new();
    for tid in tids {
        match py.read_thread(tid, &mut codes, &mut frames) {
            Ok(false) => println!("thread {tid}: no Python thread state"),
            Err(e) => println!("thread {tid}: {e}"),
            Ok(true) => {
                let groups = frames.iter().filter(|f| f.entry).count();
                println!(
                    "thread {tid}: {} frames, {groups} eval groups",
                    frames.len()
                );
                for f in &frames {
                    let c = codes.get(f.code);
                    let mark = if f.entry { " [entry]" } else { "" };
                    println!("    {} ({}:{}){mark}", c.qualname, c.filename, f.line);
                }
            }
        }
    }
    println!("{:?}", py.stats());
}
