//! What the interpreter's ELF file says before we touch the target: where `_PyRuntime`,
//! `Py_Version`, `PyCode_Type` and the eval loop are, and how the file's addresses relate to
//! the mapping's (the load bias).
//!
//! Owns all parsing of untrusted file bytes (via `object`) but the load segments, which the
//! module table parsed ([`Segments`], shared with the unwinder and the symbolizer); returns
//! link-time addresses and leaves the bias arithmetic to [`load_bias`].

use object::{Object, ObjectSection, ObjectSymbol};
use sprof_core::Segments;

use crate::MappedFile;

const EVAL_SYMBOL: &str = "_PyEval_EvalFrameDefault";

/// Link-time facts about one interpreter file.
#[derive(Debug)]
pub struct ElfInfo {
    /// `ET_EXEC`: addresses are absolute, bias 0.
    pub fixed: bool,
    pub runtime: Option<u64>,
    /// How `runtime` was found, for diagnostics.
    pub runtime_source: &'static str,
    /// `PY_VERSION_HEX` read from the `Py_Version` symbol's bytes in the file.
    pub py_version: Option<u32>,
    pub code_type: Option<u64>,
    /// `PyUnicode_Type` and `PyLong_Type`: what an asyncio task's name is.
    pub str_type: Option<u64>,
    pub int_type: Option<u64>,
    /// `[start, end)` of `_PyEval_EvalFrameDefault` and its compiler clones (`.cold`, …).
    pub eval: Vec<(u64, u64)>,
    /// `[start, end)` of the functions a thread waits in for the GIL ([`GIL_TAKE_SYMBOLS`]).
    pub gil_take: Vec<(u64, u64)>,
}

/// Functions a thread runs while it waits for the GIL: `take_gil` where `.symtab` names it,
/// and the exported entry points that call it (a thread found in one of them without the GIL
/// is waiting for it).
const GIL_TAKE_SYMBOLS: &[&str] = &[
    "take_gil",
    "PyEval_RestoreThread",
    "PyEval_AcquireThread",
    "PyEval_AcquireLock",
    "PyGILState_Ensure",
    "_PyThreadState_Attach",
];

/// The facts of the interpreter file `bytes`, whose load segments are `segments`.
pub fn inspect(bytes: &[u8], segments: &Segments) -> Result<ElfInfo, String> {
    let file = object::File::parse(bytes).map_err(|e| format!("not a readable ELF file: {e}"))?;
    if file.format() != object::BinaryFormat::Elf
        || file.architecture() != object::Architecture::X86_64
    {
        return Err("not an x86_64 ELF file".into());
    }
    // e_type is at offset 16 of the ELF header (little-endian on x86_64).
    let e_type = bytes
        .get(16..18)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or("truncated ELF header")?;

    let mut info = ElfInfo {
        fixed: e_type == object::elf::ET_EXEC,
        runtime: None,
        runtime_source: "none",
        py_version: None,
        code_type: None,
        str_type: None,
        int_type: None,
        eval: Vec::new(),
        gil_take: Vec::new(),
    };

    // .symtab first (richer: it has the local `.cold` clones), then .dynsym (stripped builds).
    let mut version_addr = None;
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        let Ok(name) = sym.name() else { continue };
        match name {
            "_PyRuntime" if info.runtime.is_none() => {
                info.runtime = Some(sym.address());
                info.runtime_source = "symbol";
            }
            "Py_Version" => version_addr = version_addr.or(Some(sym.address())),
            "PyCode_Type" => info.code_type = info.code_type.or(Some(sym.address())),
            "PyUnicode_Type" => info.str_type = info.str_type.or(Some(sym.address())),
            "PyLong_Type" => info.int_type = info.int_type.or(Some(sym.address())),
            _ => {}
        }
        let is_eval = name == EVAL_SYMBOL
            || name
                .strip_prefix(EVAL_SYMBOL)
                .is_some_and(|rest| rest.starts_with('.'));
        if GIL_TAKE_SYMBOLS.contains(&name) && sym.size() > 0 && sym.address() != 0 {
            let range = (sym.address(), sym.address() + sym.size());
            if !info.gil_take.contains(&range) {
                info.gil_take.push(range);
            }
        }
        if is_eval && sym.size() > 0 && sym.address() != 0 {
            let range = (sym.address(), sym.address() + sym.size());
            if !info.eval.contains(&range) {
                info.eval.push(range);
            }
        }
    }
    add_split_eval_body(&file, bytes, segments, &mut info);
    info.eval.sort_unstable();
    if info.runtime.is_none() {
        // The section starts with `_PyRuntime` in every supported build (§1.4).
        if let Some(sec) = file.section_by_name(".PyRuntime") {
            info.runtime = Some(sec.address());
            info.runtime_source = ".PyRuntime section";
        }
    }
    info.py_version = version_addr
        .and_then(|a| segments.file_bytes_at(bytes, a, 4))
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    Ok(info)
}

/// An exported `_PyEval_EvalFrameDefault` this small is only a wrapper: the compiler moved
/// the loop's body into a clone (Debian's 3.14 and 3.15: 1184 bytes, calling an 84 KB
/// `static` clone that the stripped binary does not name).
const SPLIT_WRAPPER_MAX: u64 = 8 << 10;
/// The smallest body taken for the eval loop: every CPython eval loop is tens of KiB.
const EVAL_BODY_MIN: u64 = 16 << 10;

/// Finds the eval loop's body when the named symbol is only a wrapper around code the
/// compiler moved elsewhere without a name (no `.symtab`), so that native frames running it
/// are still recognised as eval activations: the function (by its `.eh_frame` FDE) of at
/// least [`EVAL_BODY_MIN`] that the wrapper's `rel32` calls and jumps enter most often, at
/// least twice (Debian's 3.14 jumps three times into the middle of its 84 KB body). Scanning
/// the wrapper's bytes for `e8`/`e9` opcodes can misread operands as opcodes; two misread
/// targets in the same large function are not a practical risk.
fn add_split_eval_body(
    file: &object::File<'_>,
    bytes: &[u8],
    segments: &Segments,
    info: &mut ElfInfo,
) {
    let [(start, end)] = info.eval[..] else {
        return;
    };
    if end - start > SPLIT_WRAPPER_MAX {
        return;
    }
    let Some(code) = segments.file_bytes_at(bytes, start, end - start) else {
        return;
    };
    let targets: Vec<u64> = (0..code.len().saturating_sub(4))
        .filter(|&i| matches!(code[i], 0xe8 | 0xe9))
        .filter_map(|i| {
            let rel = i32::from_le_bytes(code[i + 1..i + 5].try_into().ok()?);
            (start + i as u64 + 5).checked_add_signed(i64::from(rel))
        })
        .filter(|t| !(start..end).contains(t))
        .collect();
    let body = fde_ranges(file)
        .into_iter()
        .filter(|&(s, e)| e.saturating_sub(s) >= EVAL_BODY_MIN)
        .map(|(s, e)| {
            (
                targets.iter().filter(|t| (s..e).contains(t)).count(),
                (s, e),
            )
        })
        .filter(|&(hits, _)| hits >= 2)
        .max_by_key(|&(hits, _)| hits);
    if let Some((_, range)) = body {
        info.eval.push(range);
    }
}

/// `[start, end)` of every function `.eh_frame` describes (bounded: at most 1M entries).
fn fde_ranges(file: &object::File<'_>) -> Vec<(u64, u64)> {
    use gimli::UnwindSection;
    let Some(sec) = file.section_by_name(".eh_frame") else {
        return Vec::new();
    };
    let Ok(data) = sec.data() else {
        return Vec::new();
    };
    let eh = gimli::EhFrame::new(data, gimli::LittleEndian);
    let mut bases = gimli::BaseAddresses::default().set_eh_frame(sec.address());
    if let Some(text) = file.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    let mut out = Vec::new();
    let mut entries = eh.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        if out.len() >= 1 << 20 {
            break;
        }
        if let gimli::CieOrFde::Fde(partial) = entry {
            if let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) {
                out.push((fde.initial_address(), fde.end_address()));
            }
        }
    }
    out
}

/// Load bias of the interpreter file mapped as `file` (any of its mappings): what to add to
/// its link-time addresses. 0 for a fixed-address (`ET_EXEC`) file; otherwise through the
/// segment the mapping maps ([`Segments::load_bias`], which knows lld's packed segments).
pub fn load_bias(info: &ElfInfo, file: &MappedFile<'_>) -> Option<u64> {
    if info.fixed {
        return Some(0);
    }
    file.segments
        .load_bias(file.start, file.file_offset, file.executable)
}

/// Parses `python3.X`, `python3.Xt`, `libpython3.X.so…`, `libpython3.Xt.so…` file names into
/// `(minor, free_threaded)`; `None` for other names (including a bare `python3`).
pub fn version_from_name(file_name: &str) -> Option<(u8, bool)> {
    let rest = file_name
        .strip_prefix("libpython3.")
        .or_else(|| file_name.strip_prefix("python3."))?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let minor = rest.get(..digits)?.parse().ok()?;
    let tail = &rest[digits..];
    // ABI flags: t (free-threaded), d (debug), m (pymalloc, before 3.8), u (wide, 2.x-era).
    let flags = tail.bytes().take_while(|b| b"tdmu".contains(b)).count();
    let free_threaded = tail[..flags].contains('t');
    let tail = &tail[flags..];
    if file_name.starts_with("lib") {
        if !tail.starts_with(".so") {
            return None;
        }
    } else if !tail.is_empty() {
        return None;
    }
    Some((minor, free_threaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(version_from_name("python3.11"), Some((11, false)));
        assert_eq!(version_from_name("libpython3.12.so.1.0"), Some((12, false)));
        assert_eq!(version_from_name("libpython3.13t.so.1.0"), Some((13, true)));
        assert_eq!(version_from_name("python3.13t"), Some((13, true)));
        assert_eq!(version_from_name("libpython3.7m.so.1.0"), Some((7, false)));
        assert_eq!(version_from_name("python3.13td"), Some((13, true)));
        assert_eq!(version_from_name("python3"), None);
        assert_eq!(version_from_name("python3.11-config"), None);
        assert_eq!(version_from_name("libpython3.so"), None);
        assert_eq!(version_from_name("libpython3.11.a"), None);
    }

    /// Interpreter files on this machine (pyenv and Debian). Absent ones are skipped, so the
    /// test documents what it checked.
    fn real_files() -> Vec<(String, u8)> {
        let root = std::env::var("PYENV_ROOT").unwrap_or_else(|_| "/root/.pyenv".into());
        let mut v = Vec::new();
        for (ver, minor) in [("3.11.7", 11), ("3.12.1", 12), ("3.13.0", 13)] {
            v.push((
                format!("{root}/versions/{ver}/lib/libpython3.{minor}.so.1.0"),
                minor,
            ));
        }
        v.push(("/usr/bin/python3.11".into(), 11));
        // Debian unstable's, in the test root (tests/deps.sh builds it).
        v.push(("/srv/sid/usr/bin/python3.14".into(), 14));
        v.push(("/srv/sid/usr/bin/python3.15".into(), 15));
        for (ver, minor) in [("3.8.18", 8), ("3.9.18", 9), ("3.10.13", 10)] {
            v.push((
                format!("{root}/versions/{ver}/lib/libpython3.{minor}.so.1.0"),
                minor,
            ));
        }
        v
    }

    #[test]
    fn real_interpreters() {
        let mut checked = 0;
        for (path, minor) in real_files() {
            let Ok(bytes) = std::fs::read(&path) else {
                assert!(
                    std::env::var_os("SPROFD_REQUIRE_LIVE").is_none(),
                    "{path} is missing (tests/deps.sh installs it)"
                );
                eprintln!("skipped (absent): {path}");
                continue;
            };
            let segments = Segments::parse(&bytes);
            let info = inspect(&bytes, &segments).unwrap();
            let runtime = info.runtime.expect("_PyRuntime");
            let name = path.rsplit('/').next().unwrap();
            assert_eq!(version_from_name(name), Some((minor, false)), "{path}");
            if minor < 11 {
                // No Py_Version before 3.11: the file name is all there is.
                assert_eq!(info.py_version, None, "{path}");
                assert!(!info.eval.is_empty() && info.code_type.is_some(), "{path}");
                checked += 1;
                continue;
            }
            let hex = info.py_version.expect("Py_Version");
            assert_eq!(
                (hex >> 24, (hex >> 16) & 0xff),
                (3, u32::from(minor)),
                "{path}"
            );
            assert!(!info.eval.is_empty(), "{path}: eval symbol");
            if minor >= 14 && path.contains("/usr/bin") {
                // Debian's: a small exported wrapper and the unnamed split-off body.
                assert_eq!(info.eval.len(), 2, "{path}: {:x?}", info.eval);
                assert!(info.eval.iter().any(|(s, e)| e - s >= EVAL_BODY_MIN));
            }
            assert!(info.code_type.is_some(), "{path}: PyCode_Type");
            // The symbol and the section agree where both exist.
            let file = object::File::parse(&*bytes).unwrap();
            let sec = file.section_by_name(".PyRuntime").unwrap();
            assert_eq!(sec.address(), runtime, "{path}");
            if minor >= 13 {
                // The initialised `_Py_DebugOffsets` are in the file too: parse them.
                let raw = segments
                    .file_bytes_at(&bytes, runtime, crate::layout::DEBUG_OFFSETS_LEN as u64)
                    .unwrap();
                crate::layout::Layout::from_debug_offsets(raw, minor).unwrap();
            }
            let mapped = |start: u64, file_offset: u64, executable: bool| MappedFile {
                path: &path,
                start,
                end: start + 0x1000,
                file_offset,
                executable,
                bytes: &bytes,
                segments: &segments,
            };
            if path.contains("/usr/bin") {
                // Debian: non-PIE, stripped, symbols only in .dynsym.
                assert!(info.fixed);
                assert_eq!(load_bias(&info, &mapped(0x40_0000, 0, false)), Some(0));
            } else {
                assert!(!info.fixed);
                // A mapping of the first segment at 0x7f00_0000_0000 gives that bias…
                let first = segments.iter().min_by_key(|l| l.offset).unwrap();
                assert_eq!(
                    load_bias(&info, &mapped(0x7f00_0000_0000, 0, first.executable)),
                    Some(0x7f00_0000_0000 - (first.vaddr & !0xfff))
                );
                // …and so does the executable segment mapped where the loader puts it.
                let x = segments.iter().find(|l| l.executable).unwrap();
                let start = 0x7f00_0000_0000 + (x.vaddr & !0xfff);
                assert_eq!(
                    load_bias(&info, &mapped(start, x.offset & !0xfff, true)),
                    Some(0x7f00_0000_0000)
                );
            }
            checked += 1;
        }
        eprintln!("checked {checked} interpreter files");
    }

    /// lld packs load segments, so the executable mapping (the one the reader sees) starts
    /// in a page the read-only segment claims too: the bias must come from the executable
    /// segment, or every address the reader computes is a page off. The library is loaded
    /// into this process, and the bias the reader computes from its mapping must put
    /// `lld_probe` where the loader did.
    #[test]
    fn load_bias_of_an_lld_linked_library_is_the_loaders() {
        let lib = sprofd_tests::c_shared_lld_fixture("lldlib", &["-O2", "-g"]);
        let addr = sprofd_tests::dlopen_symbol(&lib, "lld_probe");
        let bytes = std::fs::read(&lib).unwrap();
        let segments = Segments::parse(&bytes);
        // lld's layout: the executable segment's first page is the read-only one's last, and
        // the two put it at different addresses.
        let page = segments.iter().find(|s| s.executable).unwrap().offset & !0xfff;
        assert_ne!(
            segments.mapping_svma(page, false),
            segments.mapping_svma(page, true),
            "not lld's packed layout: {segments:x?}"
        );
        let maps = std::fs::read("/proc/self/maps").unwrap();
        let maps = sprof_core::parse_maps(&maps[..]).unwrap().mappings;
        let path = lib.display().to_string();
        let m = maps
            .iter()
            .filter(|m| m.path == path && m.executable)
            .min_by_key(|m| m.file_offset)
            .expect("the library's executable mapping");
        let file = MappedFile {
            path: &m.path,
            start: m.start,
            end: m.end,
            file_offset: m.file_offset,
            executable: true,
            bytes: &bytes,
            segments: &segments,
        };
        let info = inspect(&bytes, &segments).unwrap();
        let bias = load_bias(&info, &file).unwrap();
        let object = object::File::parse(&*bytes).unwrap();
        let svma = object
            .symbols()
            .find(|s| s.name() == Ok("lld_probe"))
            .unwrap()
            .address();
        assert_eq!(
            svma.wrapping_add(bias),
            addr,
            "bias {bias:#x}, {segments:x?}"
        );
    }
}
