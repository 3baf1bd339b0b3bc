//! Finding the interpreter among a process's mapped files ([`detect`]): which file, which
//! version, whether it is supported, and opening the reader on it (the load bias, the layout,
//! the addresses of the eval loop and type objects).

use super::threads::nspid_of;
use super::*;
use crate::elf::{self, ElfInfo};
use crate::layout::DEBUG_OFFSETS_LEN;
use crate::Detection;

fn basename(path: &str) -> &str {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}

fn is_libpython(name: &str) -> bool {
    name.starts_with("libpython3.") && elf::version_from_name(name).is_some()
}

fn is_python_exe(name: &str) -> bool {
    name == "python3" || (name.starts_with("python3.") && elf::version_from_name(name).is_some())
}

/// Finds and validates the interpreter among `files`; see [`Detection`].
pub fn detect(pid: u32, files: &[MappedFile<'_>]) -> Detection {
    // The lowest-offset mapping of the first file that matches: the load bias is computed from it.
    let pick = |pred: fn(&str) -> bool| {
        let first = files.iter().find(|f| pred(basename(f.path)))?;
        files
            .iter()
            .filter(|f| f.path == first.path)
            .min_by_key(|f| f.file_offset)
    };
    let Some(file) = pick(is_libpython).or_else(|| pick(is_python_exe)) else {
        return Detection::NotPython;
    };
    let name = basename(file.path);
    let name_version = elf::version_from_name(name);
    if let Some((minor, true)) = name_version {
        return Detection::Unsupported(format!(
            "python 3.{minor}t (free-threaded): unsupported, native frames only"
        ));
    }
    let info = match elf::inspect(file.bytes, file.segments) {
        Ok(info) => info,
        Err(e) => return Detection::Unsupported(format!("{name}: {e}")),
    };
    let version = match (info.py_version, name_version) {
        (Some(hex), from_name) => {
            let v = ((hex >> 24) as u8, (hex >> 16) as u8, (hex >> 8) as u8);
            if let Some((minor, _)) = from_name.filter(|&(m, _)| m != v.1) {
                return Detection::Unsupported(format!(
                    "{name}: Py_Version says {}.{} but the file is 3.{minor}",
                    v.0, v.1
                ));
            }
            v
        }
        (None, Some((minor, _))) => (3, minor, 0),
        (None, None) => {
            return Detection::Unsupported(format!("{name}: python version unknown"));
        }
    };
    let (major, minor, _) = version;
    if major != 3 || !(8..=15).contains(&minor) {
        let why = if major == 3 && minor < 8 {
            "unsupported layout"
        } else {
            "not yet supported"
        };
        return Detection::Unsupported(format!(
            "python {major}.{minor}: {why}, native frames only"
        ));
    }
    match PythonProcess::open(pid, file, &info, version) {
        Ok(Some(p)) => Detection::Python(p),
        Ok(None) => Detection::NotReady,
        Err(why) => Detection::Unsupported(format!("python {major}.{minor}: {why}")),
    }
}

impl PythonProcess {
    /// `Ok(None)`: not initialised yet.
    fn open(
        pid: u32,
        file: &MappedFile<'_>,
        info: &ElfInfo,
        version: (u8, u8, u8),
    ) -> Result<Option<PythonProcess>, String> {
        let runtime_link = info.runtime.ok_or("_PyRuntime not found")?;
        let bias =
            elf::load_bias(info, file).ok_or("mapping does not match the file's segments")?;
        let runtime = runtime_link.wrapping_add(bias);
        let mut mem = Mem::new(pid);
        let layout = match version.1 {
            8 | 9 => Layout::v38(version.1),
            10 => Layout::v310(),
            11 => Layout::v311(),
            12 => Layout::v312(),
            _ => {
                let mut raw = vec![0u8; DEBUG_OFFSETS_LEN];
                mem.read("_Py_DebugOffsets", runtime, &mut raw)
                    .map_err(|e| format!("cannot read target memory: {e}"))?;
                Layout::from_debug_offsets(&raw, version.1)?
            }
        };
        let head = mem
            .read_u64("interpreters.head", runtime + layout.interpreters_head)
            .map_err(|e| format!("cannot read target memory: {e}"))?;
        if head == 0 {
            return Ok(None);
        }
        let abs = |(s, e): (u64, u64)| s.wrapping_add(bias)..e.wrapping_add(bias);
        let eval: Vec<Range<u64>> = info.eval.iter().copied().map(abs).collect();
        let gil_take: Vec<Range<u64>> = info.gil_take.iter().copied().map(abs).collect();
        let ranges: Vec<Range<u64>> = file
            .segments
            .iter()
            .filter(|l| l.executable)
            .map(|l| abs((l.vaddr, l.vaddr.saturating_add(l.memsz))))
            .collect();
        let eval_span = match (
            eval.iter().map(|r| r.start).min(),
            eval.iter().map(|r| r.end).max(),
        ) {
            (Some(s), Some(e)) => s..e,
            _ => 0..0,
        };
        let namespaced = nspid_of(&format!("/proc/{pid}/status")).is_some_and(|v| v.len() > 1);
        Ok(Some(PythonProcess {
            pid,
            version,
            tstate_buf: vec![0; layout.tstate_len()],
            frame_buf: vec![0; layout.frame_len()],
            block: vec![0; SPECULATE + layout.frame_len()],
            block_base: 0,
            block_lo: 0,
            block_hi: 0,
            layout,
            mem,
            runtime,
            code_type: info.code_type.map(|t| t.wrapping_add(bias)),
            str_type: info.str_type.map(|t| t.wrapping_add(bias)),
            int_type: info.int_type.map(|t| t.wrapping_add(bias)),
            eval,
            gil_take,
            gil_struct: None,
            ranges,
            eval_span,
            namespaced,
            ns_tids: HashMap::new(),
            threads: HashMap::new(),
            current_tstate: 0,
            no_tstate: HashMap::new(),
            codes: HashMap::new(),
            stats: ReadStats::default(),
            raw: Vec::new(),
            code_addrs: Vec::new(),
            windows: Vec::new(),
            visited: HashSet::new(),
            last_anchor: None,
            text: String::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprof_core::Segments;

    /// The segments of the files these tests pass as garbage (no ELF, none).
    static NO_SEGMENTS: Segments = Segments::empty();

    fn file<'a>(path: &'a str, bytes: &'a [u8]) -> MappedFile<'a> {
        file_with(path, bytes, &NO_SEGMENTS)
    }

    fn file_with<'a>(path: &'a str, bytes: &'a [u8], segments: &'a Segments) -> MappedFile<'a> {
        MappedFile {
            path,
            start: 0x40_0000,
            end: 0x50_0000,
            file_offset: 0,
            executable: false,
            bytes,
            segments,
        }
    }

    fn reason(d: Detection) -> String {
        match d {
            Detection::Unsupported(why) => why,
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    /// A pid that cannot exist (above pid_max's ceiling), so nothing is ever read.
    const NO_PID: u32 = 0x7fff_fff0;

    #[test]
    fn not_python() {
        assert!(matches!(detect(NO_PID, &[]), Detection::NotPython));
        let files = [
            file("/usr/lib/libpython3.so", b""),
            file("/usr/bin/python3-config", b""),
            file("/usr/lib/libc.so.6", b""),
        ];
        assert!(matches!(detect(NO_PID, &files), Detection::NotPython));
    }

    #[test]
    fn unsupported_reasons() {
        let why = reason(detect(NO_PID, &[file("/x/libpython3.13t.so.1.0", b"")]));
        assert!(why.contains("free-threaded"), "{why}");
        let why = reason(detect(
            NO_PID,
            &[file("/x/python3.11 (deleted)", b"garbage")],
        ));
        assert!(why.starts_with("python3.11: not a readable ELF"), "{why}");
        for (ver, minor) in [("3.7.16", 7), ("3.6.15", 6)] {
            let path = format!("/root/.pyenv/versions/{ver}/lib/libpython3.{minor}m.so.1.0");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let segments = Segments::parse(&bytes);
            let why = reason(detect(NO_PID, &[file_with(&path, &bytes, &segments)]));
            assert_eq!(
                why,
                format!("python 3.{minor}: unsupported layout, native frames only")
            );
        }
    }

    #[test]
    fn libpython_wins_over_the_executable() {
        let path = "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0";
        let Ok(bytes) = std::fs::read(path) else {
            return;
        };
        // The executable's bytes are garbage: picking it would fail differently.
        let segments = Segments::parse(&bytes);
        let files = [
            file("/root/.pyenv/versions/3.12.1/bin/python3.12", b"x"),
            file_with(path, &bytes, &segments),
        ];
        let why = reason(detect(NO_PID, &files));
        assert!(
            why.starts_with("python 3.12: cannot read target memory"),
            "{why}"
        );
    }
}
