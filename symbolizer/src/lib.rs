//! ELF/DWARF symbolization for sprofd: code addresses to function names, source lines and
//! inlined frames.
//!
//! # What the caller provides
//!
//! The bytes of an ELF file (read into memory, never mmapped) and addresses as **file
//! offsets** into it: `addr - mapping.start + mapping.file_offset`, with return addresses
//! already decremented by one ([`sprof_core::FrameAddr::lookup_address`]). Optionally a
//! separate debug file, which [`find_debug_file`] locates by build-id or `.gnu_debuglink`
//! under a root directory (`/`, or `/proc/PID/root` for a containerized process).
//!
//! # What the crate does
//!
//! [`ElfModule::lookup`] maps the offset to an SVMA through the PT_LOAD headers, then asks
//! DWARF for the chain of inlined frames at that address (innermost first), falling back to
//! `.symtab` and then `.dynsym` when DWARF has nothing. Names are demangled (Rust legacy and
//! v0, C++). One address failing is a value ([`Resolved::Unknown`] with a reason), never an
//! error for the batch; a module that cannot be parsed at all is a [`SymbolizeError`].
//!
//! # Speed
//!
//! Symbol tables are sorted once at parse time; a lookup is a binary search. DWARF is
//! indexed on the first lookup that needs it and kept for the module's lifetime. Use
//! [`Symbolizer`] so that each module is read and parsed once, and [`SymbolService`] to turn
//! whole profiles into named ones with caches that last as long as the session.

mod debugfile;
mod debuginfod;
mod demangle;
mod dwarf;
mod error;
mod kernel;
mod minidebug;
mod module;
mod plt;
mod service;
mod symtab;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use sprof_core::FileBytes;

pub use debugfile::find_debug_file;
pub use debuginfod::Debuginfod;
pub use demangle::demangle;
pub use dwarf::MAX_INLINE_DEPTH;
pub use error::SymbolizeError;
pub use kernel::KernelSymbols;
pub use module::ElfModule;
pub use service::{SymbolService, SymbolStats};

/// The result of resolving one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Innermost first: inlined callees first, the outer (real) function last. Never empty.
    Frames(Vec<SymbolFrame>),
    /// Nothing names this address.
    Unknown {
        /// The SVMA the offset maps to, when it is inside a segment.
        svma: Option<u64>,
        reason: UnknownReason,
    },
}

/// Why an address could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnknownReason {
    /// The file offset lies in no PT_LOAD segment of the file.
    OutsideSegments,
    /// Symbols exist, but no function symbol or DWARF function covers the address.
    NoSymbol,
    /// The file has neither symbol tables nor DWARF (stripped, and no debug file found).
    NoSymbolTables,
}

impl std::fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnknownReason::OutsideSegments => "file offset is outside every loadable segment",
            UnknownReason::NoSymbol => "no function symbol covers the address",
            UnknownReason::NoSymbolTables => "the file has no symbols and no debug info",
        })
    }
}

/// One function frame of a resolved address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SymbolFrame {
    /// Demangled name; the raw symbol name when it does not demangle.
    pub function: String,
    /// Source file as DWARF gives it (joined with the compilation directory).
    pub file: Option<String>,
    /// For the innermost frame, the line of the address; for outer frames, the line of the
    /// call site of the inlined callee.
    pub line: Option<u32>,
    /// Where the function is declared (`DW_AT_decl_file`, following abstract origins and
    /// specifications).
    pub decl_file: Option<String>,
    /// `DW_AT_decl_line` of the function, following the same chain.
    pub decl_line: Option<u32>,
    /// True for every frame but the last (the real function the others are inlined into).
    pub inlined: bool,
}

impl SymbolFrame {
    /// Converts to the frame type exporters consume, tagged with the module's short name.
    pub fn to_core_frame(&self, module: Option<&str>) -> sprof_core::Frame {
        sprof_core::Frame {
            function: self.function.clone(),
            file: self.file.clone(),
            line: self.line,
            decl_line: self.decl_line,
            decl_file: self.decl_file.clone(),
            module: module.map(str::to_string),
            kind: if self.inlined {
                sprof_core::FrameKind::Inlined
            } else {
                sprof_core::FrameKind::Native
            },
        }
    }
}

/// Lower-case hex of a build-id.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cache of parsed modules, keyed by whatever identifies a file for the caller (a hash of
/// build-id, or of device and inode; [`SymbolService`] uses the module table's
/// [`ModuleId`](sprof_core::ModuleId)s). Failures are cached too, so a missing or broken file
/// is tried once.
#[derive(Debug)]
pub struct Symbolizer<K = u64> {
    modules: HashMap<K, Option<Arc<ElfModule>>>,
}

impl<K> Default for Symbolizer<K> {
    fn default() -> Self {
        Symbolizer {
            modules: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Symbolizer<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The module for `key`, parsing the `(name, bytes)` that `load` returns the first time
    /// the key is seen. `None` if `load` or parsing failed (then or earlier).
    pub fn module(
        &mut self,
        key: K,
        load: impl FnOnce() -> Option<(String, FileBytes)>,
    ) -> Option<Arc<ElfModule>> {
        self.module_with(key, || {
            let (name, data) = load()?;
            ElfModule::parse(&name, data).ok()
        })
    }

    /// Like [`Symbolizer::module`], for callers that build the module themselves (for
    /// example with [`ElfModule::open`], which also attaches a debug file).
    pub fn module_with(
        &mut self,
        key: K,
        load: impl FnOnce() -> Option<ElfModule>,
    ) -> Option<Arc<ElfModule>> {
        self.modules
            .entry(key)
            .or_insert_with(|| load().map(Arc::new))
            .clone()
    }

    /// The parsed modules, by key.
    pub fn modules(&self) -> impl Iterator<Item = (K, &Arc<ElfModule>)> {
        self.modules
            .iter()
            .filter_map(|(k, m)| m.as_ref().map(|m| (*k, m)))
    }

    /// Whether `key` was seen (parsed, or failed).
    pub fn contains(&self, key: K) -> bool {
        self.modules.contains_key(&key)
    }

    /// Forgets what is cached for `key` (its file was released or reloaded).
    pub fn forget(&mut self, key: K) {
        self.modules.remove(&key);
    }

    /// Number of keys seen, failed ones included.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn module_is_send_and_sync() {
        assert_send_sync::<ElfModule>();
        assert_send_sync::<Symbolizer>();
    }

    #[test]
    fn symbolizer_caches_failures() {
        let mut s = Symbolizer::new();
        let mut calls = 0;
        assert!(s
            .module(7, || {
                calls += 1;
                Some(("junk".to_string(), FileBytes::from(&b"not an elf"[..])))
            })
            .is_none());
        assert!(s.module(7, || unreachable!("cached")).is_none());
        assert_eq!(calls, 1);
        assert_eq!(s.len(), 1);
    }
}
