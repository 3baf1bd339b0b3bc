//! End-to-end symbolization of fixture programs compiled at test time with the system C and
//! C++ compilers (no root, no perf). See `tests/fixtures/README.md`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSymbol};
use sprof_core::FileBytes;
use sprof_symbolizer::{
    find_debug_file, ElfModule, Resolved, SymbolFrame, SymbolizeError, Symbolizer, UnknownReason,
};
use sprof_testkit::FileLoader;

// ---------------------------------------------------------------------------------------
// helpers

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sprof-symbolizer-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command, showing the command line, stdout and stderr when it fails.
fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn compile(compiler: &str, source: &str, out: &Path, flags: &[&str]) {
    run(Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(fixture(source)));
}

/// The file's bytes as the daemon gets them: read when small, mapped when large.
fn open_bytes(path: &Path) -> FileBytes {
    FileBytes::open(path, None).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn parse(path: &Path) -> ElfModule {
    ElfModule::parse(&path.display().to_string(), open_bytes(path))
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// 1-based number of the first line of `source` containing `needle`.
fn line_of(source: &str, needle: &str) -> u32 {
    let text = std::fs::read_to_string(fixture(source)).expect("read fixture");
    let idx = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {source}"));
    u32::try_from(idx + 1).expect("line fits u32")
}

/// Address and size of a symbol, from `.symtab` or `.dynsym`.
fn symbol(path: &Path, name: &str) -> (u64, u64) {
    let data = std::fs::read(path).expect("read binary");
    let obj = object::File::parse(&*data).expect("parse with object");
    obj.symbols()
        .chain(obj.dynamic_symbols())
        .find(|s| s.name() == Ok(name))
        .map(|s| (s.address(), s.size()))
        .unwrap_or_else(|| panic!("symbol {name} not in {}", path.display()))
}

fn frames(resolved: Resolved) -> Vec<SymbolFrame> {
    match resolved {
        Resolved::Frames(f) => f,
        other => panic!("expected frames, got {other:?}"),
    }
}

/// Looks up every byte address of `[start, start+size)`, returning (svma, frames).
fn scan(module: &ElfModule, start: u64, size: u64) -> Vec<(u64, Vec<SymbolFrame>)> {
    (start..start + size)
        .map(|svma| {
            let off = module
                .svma_to_file_offset(svma)
                .expect("function in a segment");
            assert_eq!(module.file_offset_to_svma(off), Some(svma));
            (svma, frames(module.lookup(off)))
        })
        .collect()
}

fn names(frames: &[SymbolFrame]) -> Vec<&str> {
    frames.iter().map(|f| f.function.as_str()).collect()
}

const INLINE_SRC: &str = "inline_fixture.c";

/// Checks the inline fixture binary at `path`, symbolized through `module`.
fn check_inline_module(module: &ElfModule, path: &Path) {
    assert!(module.has_dwarf());
    let (start, size) = symbol(path, "outer_work");
    assert!(size > 0);
    let results = scan(module, start, size);

    for (svma, frames) in &results {
        let last = frames.last().expect("non-empty");
        assert_eq!(last.function, "outer_work", "at {svma:#x}: {frames:?}");
        assert!(!last.inlined);
        assert!(frames[..frames.len() - 1].iter().all(|f| f.inlined));
        for f in frames {
            let file = f.file.as_deref().expect("file");
            assert!(file.ends_with(INLINE_SRC), "{file}");
            assert!(file.starts_with('/'), "comp_dir joined: {file}");
            assert!(f
                .decl_file
                .as_deref()
                .expect("decl_file")
                .ends_with(INLINE_SRC));
        }
    }

    let mix_decl = line_of(INLINE_SRC, "unsigned mix_step(");
    let churn_decl = line_of(INLINE_SRC, "unsigned churn(");
    let outer_decl = line_of(INLINE_SRC, "unsigned outer_work(");
    let mix_call = line_of(INLINE_SRC, "acc = mix_step(acc, i)");
    let churn_call = line_of(INLINE_SRC, "unsigned r = churn(n)");

    let (svma, three) = results
        .iter()
        .find(|(_, f)| names(f) == ["mix_step", "churn", "outer_work"])
        .unwrap_or_else(|| panic!("no address inside mix_step: {results:#?}"));
    assert!(three[0].inlined && three[1].inlined && !three[2].inlined);
    assert_eq!(three[0].decl_line, Some(mix_decl), "at {svma:#x}");
    let line = three[0].line.expect("line");
    assert!(
        line > mix_decl && line < churn_decl,
        "mix_step body line {line}"
    );
    assert_eq!(three[1].decl_line, Some(churn_decl));
    assert_eq!(three[1].line, Some(mix_call), "call site of mix_step");
    assert_eq!(three[2].decl_line, Some(outer_decl));
    assert_eq!(three[2].line, Some(churn_call), "call site of churn");
    assert_eq!(three[0].file, three[0].decl_file);

    assert!(
        results
            .iter()
            .any(|(_, f)| names(f) == ["churn", "outer_work"]),
        "some address is in churn itself"
    );
    assert!(results.iter().any(|(_, f)| names(f) == ["outer_work"]));
}

// ---------------------------------------------------------------------------------------
// tests

#[test]
fn inline_frames_dwarf5_dwarf4_and_compressed() {
    let dir = TempDir::new("inline");
    let variants: [&[&str]; 3] = [
        &["-O2", "-g"],
        &["-O2", "-gdwarf-4"],
        &["-O2", "-g", "-gz=zlib"],
    ];
    for (i, flags) in variants.iter().enumerate() {
        let bin = dir.path().join(format!("inline{i}"));
        let mut all = flags.to_vec();
        all.push("-Wl,--build-id");
        compile("cc", INLINE_SRC, &bin, &all);
        let module = parse(&bin);
        assert_eq!(module.build_id().map(<[u8]>::len), Some(20), "{flags:?}");
        check_inline_module(&module, &bin);

        // main resolves too, and the ELF header is mapped but is no function.
        let (main, _) = symbol(&bin, "main");
        let off = module.svma_to_file_offset(main).expect("main mapped");
        assert_eq!(
            frames(module.lookup(off))
                .last()
                .map(|f| f.function.as_str()),
            Some("main")
        );
        assert!(matches!(
            module.lookup(0),
            Resolved::Unknown {
                svma: Some(_),
                reason: UnknownReason::NoSymbol
            }
        ));
        assert_eq!(
            module.lookup(u64::MAX),
            Resolved::Unknown {
                svma: None,
                reason: UnknownReason::OutsideSegments
            }
        );
    }
}

#[test]
fn symtab_only_binary_names_functions_without_lines() {
    let dir = TempDir::new("nodebug");
    let bin = dir.path().join("nodebug");
    compile("cc", INLINE_SRC, &bin, &["-O2"]);
    let module = parse(&bin);
    assert!(!module.has_dwarf());
    let (start, size) = symbol(&bin, "outer_work");
    for (_, frames) in scan(&module, start, size) {
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].function, "outer_work");
        assert_eq!((frames[0].file.as_deref(), frames[0].line), (None, None));
        assert!(!frames[0].inlined);
    }
}

#[test]
fn cpp_names_are_demangled() {
    let dir = TempDir::new("cpp");
    let bin = dir.path().join("cpp");
    compile("g++", "cpp_fixture.cpp", &bin, &["-O1", "-g"]);
    let module = parse(&bin);
    let (start, size) = symbol(&bin, "_ZN2ns5Klass6methodEi");
    for (_, frames) in scan(&module, start, size) {
        let outer = frames.last().expect("frame");
        assert_eq!(outer.function, "ns::Klass::method(int)");
        assert!(outer
            .file
            .as_deref()
            .expect("file")
            .ends_with("cpp_fixture.cpp"));
        let decl = outer.decl_line.expect("decl_line");
        let declared = line_of("cpp_fixture.cpp", "int method(int x);");
        let defined = line_of("cpp_fixture.cpp", "int Klass::method(int x)");
        assert!(decl == declared || decl == defined, "decl_line {decl}");
    }
}

#[test]
fn stripped_shared_library_uses_dynsym() {
    let dir = TempDir::new("shared");
    let lib = dir.path().join("libfix.so");
    compile("cc", "shared_fixture.c", &lib, &["-O2", "-fPIC", "-shared"]);
    let stripped = dir.path().join("libfix-stripped.so");
    std::fs::copy(&lib, &stripped).expect("copy");
    run(Command::new("strip").arg("--strip-all").arg(&stripped));

    // Unstripped: the static helper is named from .symtab.
    let full = parse(&lib);
    let (helper, _) = symbol(&lib, "hidden_helper");
    let off = full.svma_to_file_offset(helper).expect("mapped");
    assert!(frames(full.lookup(off))[0]
        .function
        .starts_with("hidden_helper"));

    let module = parse(&stripped);
    assert!(!module.has_dwarf());
    let (start, size) = symbol(&stripped, "exported_fn");
    for (_, frames) in scan(&module, start, size) {
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].function, "exported_fn");
        assert_eq!(frames[0].file, None);
        assert_eq!(frames[0].line, None);
        assert_eq!(frames[0].decl_line, None);
    }
    // The helper is not exported: whatever the stripped file says, it is not exported_fn.
    let off = module.svma_to_file_offset(helper).expect("mapped");
    match module.lookup(off) {
        Resolved::Frames(f) => assert_ne!(f[0].function, "exported_fn"),
        Resolved::Unknown { reason, .. } => assert_eq!(reason, UnknownReason::NoSymbol),
    }
}

/// Moves `bin`'s DWARF to `debug` and links it there by `.gnu_debuglink` (objcopy records
/// the file name and the CRC of the file it reads).
fn split_debug(bin: &Path, debug: &Path) {
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(bin)
        .arg(debug));
    run(Command::new("strip").arg("--strip-debug").arg(bin));
    run(Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(bin));
}

#[test]
fn debuglink_finds_crc_checked_debug_file() {
    let root = TempDir::new("debuglink");
    let bin_dir = root.path().join("opt/app");
    std::fs::create_dir_all(bin_dir.join(".debug")).expect("mkdir");
    let bin = bin_dir.join("prog");
    compile(
        "cc",
        INLINE_SRC,
        &bin,
        &["-O2", "-g", "-Wl,--build-id=none"],
    );
    let debug = bin_dir.join(".debug/prog.debug");
    split_debug(&bin, &debug);
    // A decoy with the right name but the wrong CRC, in the first place searched.
    std::fs::write(bin_dir.join("prog.debug"), b"not the debug file").expect("decoy");

    let mut module = parse(&bin);
    assert!(!module.has_dwarf());
    assert_eq!(module.build_id(), None);
    assert_eq!(module.debuglink().map(|(name, _)| name), Some("prog.debug"));
    let found = find_debug_file(&module, root.path(), "/opt/app/prog", &owners());
    assert!(is_file(found.as_ref(), &debug), "{found:?}");

    // Before attaching: names from .symtab, no lines.
    let (start, _) = symbol(&bin, "outer_work");
    let off = module.svma_to_file_offset(start).expect("mapped");
    let before = frames(module.lookup(off));
    assert_eq!(before[0].function, "outer_work");
    assert_eq!(before[0].line, None);

    module
        .attach_debug_file(open_bytes(&debug))
        .expect("attach");
    assert!(module.has_dwarf());
    check_inline_module(&module, &bin);

    // `open` does the whole search by itself.
    let opened = ElfModule::open(root.path(), "/opt/app/prog").expect("open");
    assert!(opened.has_dwarf());
    check_inline_module(&opened, &bin);

    // Without the real debug file, only the decoy remains, and it does not match.
    std::fs::remove_file(&debug).expect("rm");
    assert!(find_debug_file(&module, root.path(), "/opt/app/prog", &owners()).is_none());
    assert!(!ElfModule::open(root.path(), "/opt/app/prog")
        .expect("open")
        .has_dwarf());
}

#[test]
fn build_id_finds_debug_file_and_rejects_mismatch() {
    let root = TempDir::new("buildid");
    let bin_dir = root.path().join("usr/bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    let bin = bin_dir.join("prog");
    compile(
        "cc",
        INLINE_SRC,
        &bin,
        &["-O2", "-g", "-Wl,--build-id=sha1"],
    );
    let module = parse(&bin);
    let id = module.build_id().expect("build-id").to_vec();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let id_dir = root.path().join("usr/lib/debug/.build-id").join(&hex[..2]);
    std::fs::create_dir_all(&id_dir).expect("mkdir");
    let debug = id_dir.join(format!("{}.debug", &hex[2..]));
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&bin)
        .arg(&debug));
    run(Command::new("strip").arg("--strip-all").arg(&bin));

    let mut stripped = parse(&bin);
    assert!(!stripped.has_dwarf());
    assert_eq!(stripped.build_id(), Some(&id[..]));
    let found = find_debug_file(&stripped, root.path(), "/usr/bin/prog", &owners());
    assert!(is_file(found.as_ref(), &debug), "{found:?}");
    // Fully stripped: the .symtab comes from the debug file as well.
    let (start, _) = symbol(&debug, "outer_work");
    let off = stripped.svma_to_file_offset(start).expect("mapped");
    assert!(!matches!(stripped.lookup(off), Resolved::Frames(_)));
    stripped
        .attach_debug_file(open_bytes(&debug))
        .expect("attach");
    check_inline_module(&stripped, &debug);

    // A debug file of another build is refused.
    let other = root.path().join("other");
    compile(
        "cc",
        "shared_fixture.c",
        &other,
        &["-O2", "-g", "-shared", "-fPIC", "-Wl,--build-id=sha1"],
    );
    let mut fresh = parse(&bin);
    let err = fresh
        .attach_debug_file(open_bytes(&other))
        .expect_err("mismatch");
    assert!(
        matches!(err, SymbolizeError::BuildIdMismatch { .. }),
        "{err}"
    );
    assert!(!fresh.has_dwarf());
}

#[test]
fn garbage_and_truncated_input_never_panics() {
    for bytes in [
        &b""[..],
        b"garbage bytes, not an ELF file at all",
        b"\x7fELF",
        b"\x7fELF\x02\x01\x01",
    ] {
        let err = ElfModule::parse("junk", Arc::from(bytes)).expect_err("not ELF");
        assert!(!err.to_string().is_empty());
    }
    let noise: Vec<u8> = xorshift(1).take(4096).collect();
    assert!(ElfModule::parse("noise", Arc::from(noise)).is_err());

    let dir = TempDir::new("garbage");
    let bin = dir.path().join("prog");
    compile("cc", INLINE_SRC, &bin, &["-O2", "-g"]);
    let data = std::fs::read(&bin).expect("read");
    let (start, size) = symbol(&bin, "outer_work");
    let full = parse(&bin);
    let probe: Vec<u64> = (start..start + size)
        .step_by(3)
        .filter_map(|svma| full.svma_to_file_offset(svma))
        .chain([0, 1, u64::MAX, u64::MAX / 2])
        .collect();

    // Truncated copies: headers past the end are errors; lookups on whatever parses are
    // values.
    let mut errors = 0;
    for len in (0..data.len()).step_by(data.len() / 40 + 1) {
        match ElfModule::parse("truncated", Arc::from(&data[..len])) {
            Ok(m) => {
                let _ = m.lookup_all(&probe);
            }
            Err(_) => errors += 1,
        }
    }
    assert!(errors > 0);

    // Corrupt DWARF sections in place: every lookup still returns a value.
    let obj = object::File::parse(&*data).expect("parse");
    for name in [
        ".debug_info",
        ".debug_abbrev",
        ".debug_line",
        ".debug_str",
        ".debug_rnglists",
    ] {
        let Some((off, len)) = obj.section_by_name(name).and_then(|s| s.file_range()) else {
            continue;
        };
        for seed in 1..4 {
            let mut bad = data.clone();
            let range = off as usize..(off + len) as usize;
            for (b, r) in bad[range].iter_mut().zip(xorshift(seed)) {
                // Flip some bytes only, so parsing gets far before failing.
                if r % 7 == 0 {
                    *b = r;
                }
            }
            if let Ok(m) = ElfModule::parse("corrupt", Arc::from(bad)) {
                for r in m.lookup_all(&probe) {
                    if let Resolved::Frames(f) = r {
                        assert!(!f.is_empty());
                        assert!(f.len() <= sprof_symbolizer::MAX_INLINE_DEPTH);
                    }
                }
            }
        }
    }
}

#[test]
fn symbolizer_parses_each_module_once() {
    let dir = TempDir::new("cache");
    let bin = dir.path().join("prog");
    compile("cc", INLINE_SRC, &bin, &["-O2"]);
    let mut s = Symbolizer::new();
    let mut loads = 0;
    for _ in 0..3 {
        let m = s
            .module(1, || {
                loads += 1;
                Some(("prog".to_string(), open_bytes(&bin)))
            })
            .expect("module");
        assert_eq!(m.name(), "prog");
    }
    assert_eq!(loads, 1);
    let m = s.module(1, || None).expect("cached");
    let shared = Arc::clone(&m);
    let (start, _) = symbol(&bin, "outer_work");
    let off = m.svma_to_file_offset(start).expect("mapped");
    // Modules are shared across threads.
    let handle = std::thread::spawn(move || frames(shared.lookup(off))[0].function.clone());
    assert_eq!(handle.join().expect("thread"), "outer_work");
    let core = frames(m.lookup(off))[0].to_core_frame(Some("prog"));
    assert_eq!(core.kind, sprof_core::FrameKind::Native);
    assert_eq!(core.module.as_deref(), Some("prog"));
}

fn xorshift(seed: u64) -> impl Iterator<Item = u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some((x >> 24) as u8)
    })
}

/// `name@plt` stubs and their addresses as binutils names them (`objdump -d`).
fn objdump_plt_stubs(path: &Path) -> Vec<(u64, String)> {
    let out = Command::new("objdump")
        .arg("-d")
        .arg(path)
        .output()
        .expect("run objdump");
    assert!(out.status.success(), "objdump -d {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (addr, rest) = l.split_once(" <")?;
            let name = rest.strip_suffix(">:")?;
            name.ends_with("@plt")
                .then(|| Some((u64::from_str_radix(addr, 16).ok()?, name.to_string())))?
        })
        .collect()
}

#[test]
fn plt_stubs_are_named_like_binutils_names_them() {
    let dir = TempDir::new("plt");
    let layouts: [(&str, &[&str]); 3] = [
        ("lazy", &[]),
        ("now", &["-Wl,-z,now"]),
        ("ibt", &["-fcf-protection=full", "-Wl,-z,ibtplt"]),
    ];
    for (tag, extra) in layouts {
        let exe = dir.path().join(format!("plt-{tag}"));
        let mut flags = vec!["-O2", "-fno-builtin"];
        flags.extend_from_slice(extra);
        compile("cc", "plt_fixture.c", &exe, &flags);
        let stripped = dir.path().join(format!("plt-{tag}-stripped"));
        run(Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&stripped)
            .arg(&exe));
        let stubs = objdump_plt_stubs(&exe);
        assert!(
            stubs.iter().any(|(_, n)| n == "labs@plt"),
            "{tag}: objdump shows {stubs:?}"
        );
        for path in [&exe, &stripped] {
            let module = parse(path);
            assert_eq!(module.plt_stubs(), stubs.len(), "{tag}: {stubs:?}");
            for (addr, name) in &stubs {
                for svma in [*addr, addr + 5] {
                    let off = module.svma_to_file_offset(svma).expect("stub in a segment");
                    let got = names(&frames(module.lookup(off))).join(",");
                    assert_eq!(&got, name, "{tag} {} at {svma:#x}", path.display());
                }
            }
        }
    }
}

/// Fedora's MiniDebugInfo recipe (`find-debuginfo`, gdb's "MiniDebugInfo" node): the
/// function symbols `.dynsym` lacks go into a symbol-only ELF file, xz-compressed into the
/// stripped binary's `.gnu_debugdata`.
const MINIDEBUGINFO_RECIPE: &str = r#"set -e
b="$1"
nm -D "$b" --format=posix --defined-only | awk '{ print $1 }' | sort > dynsyms
nm "$b" --format=posix --defined-only | awk '{ if ($2 == "T" || $2 == "t" || $2 == "D") print $1 }' | sort > funcsyms
comm -13 dynsyms funcsyms > keep_symbols
objcopy --only-keep-debug "$b" debug
objcopy -S --remove-section .gdb_index --remove-section .comment --keep-symbols=keep_symbols debug mini_debuginfo
strip --strip-all -R .comment "$b"
cp "$b" "$b.nodata"
xz -f mini_debuginfo
objcopy --add-section .gnu_debugdata=mini_debuginfo.xz "$b"
"#;

#[test]
fn minidebuginfo_names_functions_of_a_stripped_binary() {
    let dir = TempDir::new("minidebug");
    let bin = dir.path().join("mini");
    compile("cc", INLINE_SRC, &bin, &["-O2", "-g"]);
    let (start, size) = symbol(&bin, "outer_work");
    run(Command::new("sh")
        .args(["-c", MINIDEBUGINFO_RECIPE, "sh"])
        .arg(&bin)
        .current_dir(dir.path()));

    let bare = parse(&dir.path().join("mini.nodata"));
    let off = bare.svma_to_file_offset(start).expect("in a segment");
    assert!(
        matches!(bare.lookup(off), Resolved::Unknown { .. }),
        "stripped without .gnu_debugdata: {:?}",
        bare.lookup(off)
    );

    let module = parse(&bin);
    assert!(!module.has_dwarf());
    for (_, frames) in scan(&module, start, size) {
        assert_eq!(names(&frames), ["outer_work"]);
        assert_eq!((frames[0].file.as_deref(), frames[0].line), (None, None));
    }
}

#[test]
fn corrupt_gnu_debugdata_is_ignored() {
    let dir = TempDir::new("minidebug-bad");
    let bin = dir.path().join("bad");
    compile("cc", INLINE_SRC, &bin, &["-O2"]);
    run(Command::new("strip").arg("--strip-all").arg(&bin));
    let junk = dir.path().join("junk.xz");
    let mut bytes = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
    bytes.extend(xorshift(7).take(4096));
    std::fs::write(&junk, bytes).unwrap();
    let mut arg = std::ffi::OsString::from(".gnu_debugdata=");
    arg.push(&junk);
    run(Command::new("objcopy")
        .arg("--add-section")
        .arg(arg)
        .arg(&bin));
    let module = parse(&bin);
    let entry = module.svma_to_file_offset(symbol_entry(&bin)).unwrap();
    assert!(matches!(
        module.lookup(entry),
        Resolved::Unknown { .. } | Resolved::Frames(_)
    ));
}

/// The ELF entry point of `path`.
fn symbol_entry(path: &Path) -> u64 {
    let data = std::fs::read(path).expect("read binary");
    object::File::parse(&*data).expect("parse").entry()
}

#[test]
fn modules_resolved_side_by_side_match_each_module_looked_up_alone() {
    use sprof_core::{
        FrameKey, FrameKind, Mapping, MappingKind, ModuleTable, Pid, ProfileBuilder, ProfileMeta,
        Tid,
    };
    let dir = TempDir::new("parallel");
    let variants: [&[&str]; 3] = [
        &["-O2", "-g"],
        &["-O2", "-gdwarf-4"],
        &["-O2", "-g", "-gz=zlib"],
    ];
    let mut bins = Vec::new();
    for (i, flags) in variants.iter().enumerate() {
        let bin = dir.path().join(format!("par{i}"));
        compile("cc", INLINE_SRC, &bin, flags);
        bins.push(bin);
    }
    // A fourth module whose file is gone: counted as unreadable, named by offset.
    bins.push(dir.path().join("missing"));
    let mut table = ModuleTable::default();
    let ids: Vec<_> = bins
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let mapping = Mapping {
                start: 0x10_0000 * (i as u64 + 1),
                end: 0x10_0000 * (i as u64 + 2),
                file_offset: 0,
                dev_major: 0,
                dev_minor: 1,
                inode: i as u64 + 1,
                path: path.display().to_string(),
                kind: MappingKind::File,
                executable: true,
                deleted: false,
            };
            table.get_or_load(Pid(7), &mapping, &mut FileLoader).0
        })
        .collect();
    let alone: Vec<ElfModule> = bins[..3].iter().map(|b| parse(b)).collect();
    let (start, size) = symbol(&bins[0], "outer_work");
    let offsets: Vec<u64> = (start..start + size)
        .step_by(3)
        .map(|svma| alone[0].svma_to_file_offset(svma).expect("mapped"))
        .collect();
    // Stacks that go through every module: a leaf in one, return addresses in the others.
    let mut b = ProfileBuilder::new();
    let mut expected = Vec::new();
    for (n, &off) in offsets.iter().enumerate() {
        let keys: Vec<FrameKey> = (0..4)
            .map(|j| FrameKey::Module {
                module: ids[(n + j) % 4],
                offset: off + 1,
                is_return: j > 0,
            })
            .collect();
        b.add_sample(Pid(7), Tid(7), &keys, 1);
        // Root-first display frames, each module's lookup reversed (outer function first).
        let mut names = Vec::new();
        for j in (0..keys.len()).rev() {
            let m = (n + j) % 4;
            let lookup = if j > 0 { off } else { off + 1 };
            if m == 3 {
                names.push(format!("missing+{lookup:#x}"));
            } else {
                names.extend(
                    frames(alone[m].lookup(lookup))
                        .iter()
                        .rev()
                        .map(|f| format!("{}@{:?}:{:?}", f.function, f.file, f.line)),
                );
            }
        }
        expected.push(names);
    }
    let raw = b.snapshot();
    let mut service = sprof_symbolizer::SymbolService::new(false);
    service.set_debuginfod(None);
    let p = service.symbolize(&raw, &table, ProfileMeta::default());
    let mut got: Vec<Vec<String>> = p
        .stacks
        .iter()
        .map(|s| {
            s.frames
                .iter()
                .map(|&f| &p.frames[f as usize])
                .filter(|f| f.kind != FrameKind::Root)
                .map(|f| match f.kind {
                    FrameKind::Unresolved => f.function.clone(),
                    _ => format!("{}@{:?}:{:?}", f.function, f.file, f.line),
                })
                .collect()
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    let unique = raw.frames.len() as u64;
    assert_eq!(
        service.stats.resolved + service.stats.unreadable_file,
        unique
    );
    assert_eq!(
        service.stats.unreadable_file * 4,
        unique,
        "one module in four is unreadable"
    );
}

/// With a DWARF budget, contexts of modules not used in a call are dropped, and a module
/// needed again is parsed again with the same names.
#[test]
fn a_dwarf_budget_drops_idle_contexts_and_names_stay_the_same() {
    use sprof_core::{
        FrameKey, Mapping, MappingKind, ModuleTable, Pid, ProfileBuilder, ProfileMeta, Tid,
    };
    let dir = TempDir::new("budget");
    let mut table = ModuleTable::default();
    let mut ids = Vec::new();
    for i in 0..2u64 {
        let bin = dir.path().join(format!("budget{i}"));
        compile("cc", INLINE_SRC, &bin, &["-O2", "-g"]);
        let mapping = Mapping {
            start: 0x10_0000 * (i + 1),
            end: 0x10_0000 * (i + 2),
            file_offset: 0,
            dev_major: 0,
            dev_minor: 1,
            inode: i + 100,
            path: bin.display().to_string(),
            kind: MappingKind::File,
            executable: true,
            deleted: false,
        };
        ids.push((table.get_or_load(Pid(7), &mapping, &mut FileLoader).0, bin));
    }
    let elf = parse(&ids[0].1);
    let (start, _) = symbol(&ids[0].1, "outer_work");
    let off = elf.svma_to_file_offset(start + 4).expect("mapped");
    let profile_of = |id| {
        let mut b = ProfileBuilder::new();
        let key = FrameKey::Module {
            module: id,
            offset: off,
            is_return: false,
        };
        b.add_sample(Pid(7), Tid(7), &[key], 1);
        b.snapshot()
    };
    let names = |p: &sprof_core::SymbolizedProfile| -> Vec<String> {
        p.frames
            .iter()
            .map(|f| format!("{}:{:?}", f.function, f.line))
            .collect()
    };
    let mut service = sprof_symbolizer::SymbolService::new(false);
    service.set_debuginfod(None);
    service.set_dwarf_budget(Some(0));
    let first = service.symbolize(&profile_of(ids[0].0), &table, ProfileMeta::default());
    assert!(
        names(&first)
            .iter()
            .any(|n| n.starts_with("outer_work:Some")),
        "{:?}",
        names(&first)
    );
    let (bytes, held) = service.dwarf_held();
    assert!(
        held == 1 && bytes > 0,
        "the module used in the call keeps its context"
    );
    // Module 1 used alone: module 0's context goes (budget 0), module 1's stays for now.
    let other = service.symbolize(&profile_of(ids[1].0), &table, ProfileMeta::default());
    assert!(names(&other).iter().any(|n| n.starts_with("outer_work")));
    assert_eq!(
        service.dwarf_held().1,
        1,
        "the idle module's context was dropped"
    );
    // Module 0 again at a new address: parsed again, same kind of names.
    let mut b = ProfileBuilder::new();
    b.add_sample(
        Pid(7),
        Tid(7),
        &[FrameKey::Module {
            module: ids[0].0,
            offset: off + 1,
            is_return: false,
        }],
        1,
    );
    let again = service.symbolize(&b.snapshot(), &table, ProfileMeta::default());
    assert_eq!(names(&again), names(&first));
}

/// The uids whose debug files the tests' lookups believe: the tests' own.
fn owners() -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective uid.
    vec![0, std::fs::metadata("/proc/self").map_or(0, |m| m.uid())]
}

/// Whether `found` is the file at `path` (same device and inode).
fn is_file(found: Option<&std::fs::File>, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Some(found), Ok(want)) = (found, std::fs::metadata(path)) else {
        return false;
    };
    let got = found.metadata().expect("fstat");
    (got.dev(), got.ino()) == (want.dev(), want.ino())
}

/// A user controls the binary's directory: a FIFO, a symlink to the real debug file
/// elsewhere, a sparse file and a file of another owner are each passed over at once, and
/// the lookup neither blocks nor reads through them (the red-team review's D2, D3, D4).
#[test]
fn hostile_debuglink_candidates_are_refused_without_blocking() {
    use std::os::unix::fs::PermissionsExt;
    let root = TempDir::new("hostile-debuglink");
    let bin_dir = root.path().join("home/user");
    std::fs::create_dir_all(bin_dir.join(".debug")).expect("mkdir");
    let bin = bin_dir.join("prog");
    compile(
        "cc",
        INLINE_SRC,
        &bin,
        &["-O2", "-g", "-Wl,--build-id=none"],
    );
    // The real debug file, outside the binary's directories.
    let elsewhere = root.path().join("secret");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let debug = elsewhere.join("prog.debug");
    split_debug(&bin, &debug);
    let module = parse(&bin);
    // First candidate: a FIFO (opening it for reading would block for ever).
    let fifo =
        std::ffi::CString::new(bin_dir.join("prog.debug").to_str().expect("utf-8")).expect("path");
    // SAFETY: mkfifo reads the NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // Second: a symlink to the right file (CRC matches) in a directory sprofd must not
    // be sent to.
    std::os::unix::fs::symlink(&debug, bin_dir.join(".debug/prog.debug")).expect("symlink");
    let started = std::time::Instant::now();
    let found = find_debug_file(&module, root.path(), "/home/user/prog", &owners());
    assert!(found.is_none(), "{found:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // The same file copied in place is found: the refusals were about the way there.
    std::fs::remove_file(bin_dir.join(".debug/prog.debug")).expect("rm");
    std::fs::copy(&debug, bin_dir.join(".debug/prog.debug")).expect("cp");
    let found = find_debug_file(&module, root.path(), "/home/user/prog", &owners());
    assert!(is_file(found.as_ref(), &bin_dir.join(".debug/prog.debug")));
    // Owned by someone the rules do not believe: refused.
    assert!(find_debug_file(&module, root.path(), "/home/user/prog", &[12345]).is_none());
    // World-writable: refused.
    std::fs::set_permissions(
        bin_dir.join(".debug/prog.debug"),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod");
    assert!(find_debug_file(&module, root.path(), "/home/user/prog", &owners()).is_none());
    // A 10 GiB sparse file with the name: refused before its CRC is computed.
    std::fs::remove_file(bin_dir.join(".debug/prog.debug")).expect("rm");
    let sparse = std::fs::File::create(bin_dir.join(".debug/prog.debug")).expect("create");
    sparse.set_len(10 << 30).expect("truncate");
    let started = std::time::Instant::now();
    assert!(find_debug_file(&module, root.path(), "/home/user/prog", &owners()).is_none());
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

/// D1: DWARF nested 200 000 deep is refused before addr2line recurses into it (which
/// aborted the whole process: a stack overflow is not a panic). Looked up on a thread with
/// a small stack, the address is named from the symbol table and the refusal is reported.
#[test]
fn deeply_nested_dwarf_is_refused_with_a_reason() {
    let dir = TempDir::new("deep-dwarf");
    let src = dir.path().join("spin.c");
    std::fs::write(
        &src,
        "__attribute__((noinline)) unsigned long hot(unsigned long n){unsigned long x=0;\
         for(unsigned long i=0;i<n;i++){x=x*6364136223846793005UL+i;}return x;}\
         int main(void){return (int)hot(10);}\n",
    )
    .expect("write");
    let bin = dir.path().join("spin");
    run(Command::new("cc")
        .args(["-O1", "-g0", "-o"])
        .arg(&bin)
        .arg(&src));
    let (low, size) = symbol(&bin, "hot");
    let (info, abbrev) = sprofd_tests::hostile::deep_dwarf(200_000, low, size);
    std::fs::write(dir.path().join("info"), info).expect("write");
    std::fs::write(dir.path().join("abbrev"), abbrev).expect("write");
    let deep = dir.path().join("spin-deep");
    run(Command::new("objcopy")
        .arg(format!(
            "--add-section=.debug_info={}",
            dir.path().join("info").display()
        ))
        .arg(format!(
            "--add-section=.debug_abbrev={}",
            dir.path().join("abbrev").display()
        ))
        .arg(&bin)
        .arg(&deep));
    let module = parse(&deep);
    assert!(module.has_dwarf());
    let off = module.svma_to_file_offset(low + 4).expect("mapped");
    let resolved = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || (module.lookup(off), module.refusals().join("; ")))
        .expect("spawn")
        .join()
        .expect("no overflow");
    assert_eq!(frames(resolved.0)[0].function, "hot");
    assert!(
        resolved.1.contains("nested more than 256 deep"),
        "{}",
        resolved.1
    );
}

/// D5: a zlib-compressed `.debug_str` whose header claims a gigabyte (from a few KiB) is
/// refused before anything is allocated for it; the rest of the file still names functions.
#[test]
fn a_compressed_section_claiming_too_much_is_refused() {
    let dir = TempDir::new("zbomb");
    let bin = dir.path().join("prog");
    compile("cc", INLINE_SRC, &bin, &["-O2", "-g", "-gz=zlib"]);
    let mut bytes = std::fs::read(&bin).expect("read");
    let (start, _) = {
        let obj = object::File::parse(&*bytes).expect("parse");
        let section = obj.section_by_name(".debug_str").expect(".debug_str");
        section.compressed_file_range().expect("range");
        section.file_range().expect("in file")
    };
    // Elf64_Chdr: ch_type (4), ch_reserved (4), ch_size (8), ch_addralign (8).
    let at = start as usize + 8;
    bytes[at..at + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
    let bomb = dir.path().join("prog-bomb");
    std::fs::write(&bomb, &bytes).expect("write");
    let module = parse(&bomb);
    let (svma, _) = symbol(&bomb, "outer_work");
    let off = module.svma_to_file_offset(svma).expect("mapped");
    assert_eq!(
        frames(module.lookup(off)).last().expect("frame").function,
        "outer_work"
    );
    let why = module.refusals().join("; ");
    assert!(
        why.contains(".debug_str: compressed section claims 1073741824 bytes"),
        "{why}"
    );
}

/// A library linked with lld (packed load segments: the executable segment starts inside the
/// read-only one's last file page), loaded into this process: the service names the address
/// the loader gave `lld_probe`, from its live mapping, through the module table's segments.
#[test]
fn an_lld_linked_library_is_symbolized_from_its_live_mapping() {
    use sprof_core::{FrameKey, FrameKind, ModuleTable, Pid, ProfileBuilder, ProfileMeta, Tid};
    let lib = sprofd_tests::c_shared_lld_fixture("lldlib", &["-O2", "-g"]);
    let addr = sprofd_tests::dlopen_symbol(&lib, "lld_probe");
    let maps = std::fs::read("/proc/self/maps").unwrap();
    let maps = sprof_core::parse_maps(&maps[..]).unwrap().mappings;
    let path = lib.display().to_string();
    let m = maps
        .iter()
        .find(|m| m.path == path && m.executable && m.start <= addr && addr < m.end)
        .expect("lld_probe's mapping");
    let mut table = ModuleTable::default();
    let (id, _) = table.get_or_load(Pid(1), m, &mut FileLoader);
    let segments = &table.get(id).unwrap().segments;
    let page = m.file_offset;
    assert_ne!(
        segments.mapping_svma(page, false),
        segments.mapping_svma(page, true),
        "not lld's packed layout: {segments:x?}"
    );
    let mut b = ProfileBuilder::new();
    for (ip, is_return) in [(addr, false), (addr + 4, true)] {
        let key = FrameKey::Module {
            module: id,
            offset: m.file_offset_of(ip),
            is_return,
        };
        b.add_sample(Pid(1), Tid(1), &[key], 1);
    }
    let mut service = sprof_symbolizer::SymbolService::new(false);
    service.set_debuginfod(None);
    let p = service.symbolize(&b.snapshot(), &table, ProfileMeta::default());
    let names: Vec<&str> = p
        .frames
        .iter()
        .filter(|f| f.kind != FrameKind::Root)
        .map(|f| f.function.as_str())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| *n == "lld_probe"),
        "{:?}",
        p.frames
    );
    assert_eq!(service.stats.resolved, 2);
}
