//! One ELF file (plus, optionally, its separate debug file) and address lookups in it.
//!
//! This module owns the order in which names are looked for: DWARF frames first (built
//! lazily, on the first lookup), then `.symtab`, then `.dynsym`. File offsets become SVMAs
//! through the module's [`Segments`], the table the unwinder and the Python reader use too.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use object::{Object, ObjectSection};
use sprof_core::{FileBytes, Segments};

use crate::demangle::demangle;
use crate::dwarf::{has_debug_info, DwarfState};
use crate::hex;
use crate::plt::PltTable;
use crate::symtab::{SymbolTable, TableKind};
use crate::{Resolved, SymbolFrame, SymbolizeError, UnknownReason};

/// Name used for frames whose function DWARF does not name and no symbol covers.
const UNKNOWN_FUNCTION: &str = "[unknown]";

/// A parsed ELF file, ready to resolve addresses.
///
/// The module shares its bytes ([`FileBytes`]: a large file is mapped; a file truncated in
/// place while mapped raises SIGBUS, the risk perf and samply take too), is `Send + Sync`,
/// and is meant to be shared behind an `Arc`. DWARF is parsed on the first lookup and kept; lookups that need DWARF are serialized on one lock per module, because
/// addr2line fills its caches through `&self` without synchronization.
pub struct ElfModule {
    name: String,
    segments: Segments,
    build_id: Option<Vec<u8>>,
    debuglink: Option<(String, u32)>,
    symtab: SymbolTable,
    dynsym: SymbolTable,
    /// Synthesized `name@plt` symbols for the PLT stubs.
    plt: PltTable,
    /// The bytes of the file DWARF is read from: the module itself or its debug file.
    dwarf_data: FileBytes,
    has_dwarf: bool,
    /// Bytes of `.debug_*` sections in `dwarf_data`: what a built context costs, roughly
    /// (addr2line's unit, abbreviation and line tables grow with them).
    debug_bytes: usize,
    dwarf: OnceLock<Result<Mutex<DwarfState>, String>>,
    /// addr2line panicked on this file's DWARF once (malformed input it does not check, such
    /// as a file truncated under us): DWARF is not used for it again.
    dwarf_panicked: std::sync::atomic::AtomicBool,
}

/// Bytes of the DWARF sections of `obj`.
fn debug_section_bytes(obj: &object::File<'_>) -> usize {
    use object::{Object, ObjectSection};
    obj.sections()
        .filter(|s| {
            s.name()
                .is_ok_and(|n| n.starts_with(".debug_") || n.starts_with(".zdebug_"))
        })
        .map(|s| s.size() as usize)
        .sum()
}

impl std::fmt::Debug for ElfModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfModule")
            .field("name", &self.name)
            .field("segments", &self.segments.iter().count())
            .field("has_dwarf", &self.has_dwarf)
            .finish_non_exhaustive()
    }
}

fn parse_elf<'a>(name: &str, data: &'a [u8]) -> Result<object::File<'a>, SymbolizeError> {
    let obj = object::File::parse(data).map_err(|e| SymbolizeError::NotElf {
        name: name.to_string(),
        detail: e.to_string(),
    })?;
    if obj.format() != object::BinaryFormat::Elf {
        return Err(SymbolizeError::NotElf {
            name: name.to_string(),
            detail: format!("found {:?}", obj.format()),
        });
    }
    Ok(obj)
}

/// The `.symtab` of the MiniDebugInfo (`.gnu_debugdata`) embedded in a stripped file, if it
/// has one that decompresses and parses; its symbols stand in for the missing `.symtab`.
fn minidebuginfo_symtab(obj: &object::File<'_>) -> Option<SymbolTable> {
    let section = obj.section_by_name(".gnu_debugdata")?;
    let compressed = section.data().ok()?;
    let mini = FileBytes::from(crate::minidebug::decompress(compressed)?);
    let mini_obj = object::File::parse(&mini[..]).ok()?;
    let table = SymbolTable::build(&mini, &mini_obj, TableKind::Static);
    (!table.is_empty()).then_some(table)
}

impl ElfModule {
    /// Parses an ELF file. `name` is used in error messages and [`ElfModule::name`].
    pub fn parse(name: &str, data: impl Into<FileBytes>) -> Result<ElfModule, SymbolizeError> {
        ElfModule::parse_with(name, data.into(), None)
    }

    /// Parses a module of a [`sprof_core::ModuleTable`], whose load segments the table
    /// parsed already.
    pub fn parse_module(
        name: &str,
        data: FileBytes,
        segments: &Segments,
    ) -> Result<ElfModule, SymbolizeError> {
        ElfModule::parse_with(name, data, Some(segments.clone()))
    }

    fn parse_with(
        name: &str,
        data: FileBytes,
        segments: Option<Segments>,
    ) -> Result<ElfModule, SymbolizeError> {
        let obj = parse_elf(name, &data)?;
        let segments = segments.unwrap_or_else(|| Segments::of(&obj));
        let malformed = |e: object::Error| SymbolizeError::Malformed {
            name: name.to_string(),
            detail: e.to_string(),
        };
        let build_id = obj.build_id().map_err(malformed)?.map(<[u8]>::to_vec);
        let debuglink = obj
            .gnu_debuglink()
            .map_err(malformed)?
            .map(|(file, crc)| (String::from_utf8_lossy(file).into_owned(), crc));
        let mut symtab = SymbolTable::build(&data, &obj, TableKind::Static);
        if symtab.is_empty() {
            if let Some(mini) = minidebuginfo_symtab(&obj) {
                symtab = mini;
            }
        }
        let dynsym = SymbolTable::build(&data, &obj, TableKind::Dynamic);
        let plt = PltTable::build(&obj);
        let has_dwarf = has_debug_info(&obj);
        let debug_bytes = debug_section_bytes(&obj);
        drop(obj);
        Ok(ElfModule {
            name: name.to_string(),
            segments,
            build_id,
            debuglink,
            symtab,
            dynsym,
            plt,
            dwarf_data: data,
            has_dwarf,
            debug_bytes,
            dwarf: OnceLock::new(),
            dwarf_panicked: Default::default(),
        })
    }

    /// Reads `binary_path` inside `root` (`/` on the host, `/proc/PID/root` for a process in
    /// a container), and, when the binary carries no DWARF, attaches the separate debug file
    /// [`find_debug_file`](crate::find_debug_file) finds for it. A debug file that does not
    /// fit is ignored: symbol tables still name functions.
    pub fn open(root: &Path, binary_path: &str) -> Result<ElfModule, SymbolizeError> {
        let path = root.join(binary_path.trim_start_matches('/'));
        let data = FileBytes::open(&path, None).map_err(|source| SymbolizeError::Io {
            path: path.clone(),
            source,
        })?;
        let mut module = ElfModule::parse(binary_path, data)?;
        module.attach_installed_debug_file(root, binary_path);
        Ok(module)
    }

    /// When the module carries no DWARF, attaches the separately installed debug file
    /// [`find_debug_file`](crate::find_debug_file) finds for it (by build-id or debuglink)
    /// under `root`, for the module's file at `binary_path`. A debug file that does not fit
    /// is ignored: symbol tables still name functions.
    pub fn attach_installed_debug_file(&mut self, root: &Path, binary_path: &str) {
        if self.has_dwarf() {
            return;
        }
        let owners = crate::debugfile::trusted_owners(root, binary_path);
        if let Some(mut debug) = crate::find_debug_file(self, root, binary_path, &owners) {
            let len = debug.metadata().map(|m| m.len());
            if let Ok(debug) = len.and_then(|len| FileBytes::from_file(&mut debug, len)) {
                let _ = self.attach_debug_file(debug);
            }
        }
    }

    /// Attaches separately installed debug info (a `.debug` file found by build-id or
    /// debuglink): DWARF, and its `.symtab` when it has one, are read from there from now on.
    ///
    /// Fails when the bytes are not ELF, or when both files carry a build-id and they differ.
    pub fn attach_debug_file(&mut self, data: impl Into<FileBytes>) -> Result<(), SymbolizeError> {
        let data: FileBytes = data.into();
        let debug_name = format!("{} (debug file)", self.name);
        let obj = parse_elf(&debug_name, &data)?;
        let debug_build_id = obj.build_id().ok().flatten();
        if let (Some(expected), Some(found)) = (self.build_id.as_deref(), debug_build_id) {
            if expected != found {
                return Err(SymbolizeError::BuildIdMismatch {
                    name: self.name.clone(),
                    expected: hex(expected),
                    found: hex(found),
                });
            }
        }
        let symtab = SymbolTable::build(&data, &obj, TableKind::Static);
        let has_dwarf = has_debug_info(&obj);
        let debug_bytes = debug_section_bytes(&obj);
        drop(obj);
        if !symtab.is_empty() {
            self.symtab = symtab;
        }
        if has_dwarf {
            self.dwarf_data = data;
            self.has_dwarf = true;
            self.debug_bytes = debug_bytes;
            self.dwarf = OnceLock::new();
            self.dwarf_panicked = Default::default();
        }
        Ok(())
    }

    /// What the module's DWARF context holds in memory, roughly: the size of its debug
    /// sections once a lookup has built the context, else 0.
    pub fn dwarf_footprint(&self) -> usize {
        match self.dwarf.get() {
            Some(Ok(_)) => self.debug_bytes,
            _ => 0,
        }
    }

    /// The name given to [`ElfModule::parse`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The GNU build-id note (`NT_GNU_BUILD_ID`), if present.
    pub fn build_id(&self) -> Option<&[u8]> {
        self.build_id.as_deref()
    }

    /// The `.gnu_debuglink` file name and CRC32, if present.
    pub fn debuglink(&self) -> Option<(&str, u32)> {
        self.debuglink.as_ref().map(|(f, crc)| (f.as_str(), *crc))
    }

    /// True when a `.symtab` (the file's, MiniDebugInfo's or a debug file's) names functions.
    pub fn has_symtab(&self) -> bool {
        !self.symtab.is_empty()
    }

    /// True when DWARF (`.debug_info`) is available, in the file or an attached debug file.
    pub fn has_dwarf(&self) -> bool {
        self.has_dwarf
    }

    /// Translates a file offset to a stated virtual memory address
    /// ([`Segments::file_offset_to_svma`]).
    pub fn file_offset_to_svma(&self, offset: u64) -> Option<u64> {
        self.segments.file_offset_to_svma(offset)
    }

    /// The inverse of [`ElfModule::file_offset_to_svma`]: where in the file the bytes for an
    /// SVMA are (for example to turn a symbol address into a lookup address).
    pub fn svma_to_file_offset(&self, svma: u64) -> Option<u64> {
        self.segments.svma_to_file_offset(svma)
    }

    /// The file's load segments.
    pub fn segments(&self) -> &Segments {
        &self.segments
    }

    fn dwarf(&self) -> Option<&Mutex<DwarfState>> {
        if !self.has_dwarf {
            return None;
        }
        self.dwarf
            .get_or_init(|| DwarfState::load(&self.dwarf_data).map(Mutex::new))
            .as_ref()
            .ok()
    }

    /// What a bound refused of this module, so far: a symbol table too large, DWARF nested
    /// too deep or inflating too far (known once a lookup has tried to load it). The rest
    /// of the module still names what it can.
    pub fn refusals(&self) -> Vec<&str> {
        let dwarf = match self.dwarf.get() {
            Some(Err(why)) if self.has_dwarf => Some(why.as_str()),
            Some(Ok(_))
                if self
                    .dwarf_panicked
                    .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                Some("its DWARF is malformed where addr2line does not check (it panicked)")
            }
            _ => None,
        };
        [
            self.symtab.refused.as_deref(),
            self.dynsym.refused.as_deref(),
            dwarf,
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The raw name of the function symbol covering `svma`: `.symtab` first, then `.dynsym`.
    fn symbol_name(&self, svma: u64) -> Option<String> {
        self.symtab
            .lookup(svma)
            .or_else(|| self.dynsym.lookup(svma))
            .map(|(name, _)| name.into_owned())
    }

    /// Number of PLT stubs named `function@plt`.
    pub fn plt_stubs(&self) -> usize {
        self.plt.len()
    }

    /// Resolves one address given as a file offset (for return addresses, already minus
    /// one). Never panics; failure is [`Resolved::Unknown`] with a reason.
    pub fn lookup(&self, file_offset: u64) -> Resolved {
        let Some(svma) = self.file_offset_to_svma(file_offset) else {
            return Resolved::Unknown {
                svma: None,
                reason: UnknownReason::OutsideSegments,
            };
        };
        use std::sync::atomic::Ordering;
        let dwarf_frames = match self.dwarf() {
            Some(_) if self.dwarf_panicked.load(Ordering::Relaxed) => Vec::new(),
            // why: addr2line unwraps some of what it reads (a null entry where a function
            // should be panics in `Function::parse`); a panic costs this module its DWARF,
            // not the caller its thread. A poisoned lock only means such a panic; the module
            // is not read through it again.
            Some(lock) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                lock.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .frames(svma)
            }))
            .unwrap_or_else(|_| {
                self.dwarf_panicked.store(true, Ordering::Relaxed);
                Vec::new()
            }),
            None => Vec::new(),
        };
        // why: no table covers a PLT stub, so its synthesized (already demangled) name is
        // tried first; it is only found inside the PLT sections.
        let symbol = || {
            self.plt
                .lookup(svma)
                .map(str::to_string)
                .or_else(|| self.symbol_name(svma).map(|raw| demangle(&raw)))
        };

        if dwarf_frames.is_empty() {
            return match symbol() {
                Some(function) => Resolved::Frames(vec![SymbolFrame {
                    function,
                    file: None,
                    line: None,
                    decl_file: None,
                    decl_line: None,
                    inlined: false,
                }]),
                None => Resolved::Unknown {
                    svma: Some(svma),
                    reason: self.no_symbol_reason(),
                },
            };
        }

        let count = dwarf_frames.len();
        let mut frames = Vec::with_capacity(count);
        for (i, f) in dwarf_frames.into_iter().enumerate() {
            let outer = i + 1 == count;
            let function = match f.function {
                Some(name) => name,
                // why: DWARF located the address but named no function (a unit with line
                // tables only, or a nameless DIE): the symbol table names the real function.
                None if outer => match symbol() {
                    Some(name) => name,
                    None if count == 1 => {
                        return Resolved::Unknown {
                            svma: Some(svma),
                            reason: UnknownReason::NoSymbol,
                        }
                    }
                    None => UNKNOWN_FUNCTION.to_string(),
                },
                None => UNKNOWN_FUNCTION.to_string(),
            };
            frames.push(SymbolFrame {
                function,
                file: f.file,
                line: f.line,
                decl_file: f.decl_file,
                decl_line: f.decl_line,
                inlined: !outer,
            });
        }
        Resolved::Frames(frames)
    }

    /// Resolves many addresses; one result per input, in order.
    pub fn lookup_all(&self, file_offsets: &[u64]) -> Vec<Resolved> {
        file_offsets.iter().map(|&off| self.lookup(off)).collect()
    }

    fn no_symbol_reason(&self) -> UnknownReason {
        if self.symtab.is_empty()
            && self.dynsym.is_empty()
            && self.plt.len() == 0
            && !self.has_dwarf
        {
            UnknownReason::NoSymbolTables
        } else {
            UnknownReason::NoSymbol
        }
    }
}
