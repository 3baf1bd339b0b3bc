//! The module table: every distinct file (or vdso) mapped as code by any profiled process,
//! read once and shared by all processes that map it.
//!
//! It lives here, below both the unwinder (which parses unwind sections from the bytes) and
//! the symbolizer (which parses symbols and DWARF from the same bytes), so neither depends on
//! the other. A module's bytes are opened when it is first mapped, while the process is alive:
//! a deleted or replaced binary is reachable only through the live process, and
//! symbolization happens after the target may have exited. Opened, not copied: a loader
//! hands over [`FileBytes`], for any file of some size a mapping of it ([`crate::bytes`]).
//!
//! Memory follows the live set: the owner of the address spaces counts how many processes
//! map each module, and [`ModuleTable::release_unused`] drops the bytes of modules that no
//! process maps and no pending profile refers to. A module seen again later is read again.
//!
//! Code that no file describes, JIT code in anonymous memory, is the table's too: per
//! process, the symbols its perf map gives ([`JitTable`]), read through the same loader.

use std::collections::HashMap;

use crate::bytes::FileBytes;
use crate::jit::{JitFile, JitTable, PerfMapRead};
use crate::segments::Segments;
use crate::{Mapping, MappingKind, ModuleId, Pid};

/// What makes two mappings the same file: device and inode when the kernel gives them, the
/// path otherwise. Never the path alone when an inode is known: a path can be replaced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileIdentity {
    Inode {
        dev_major: u32,
        dev_minor: u32,
        inode: u64,
    },
    Path(String),
    Vdso,
}

impl FileIdentity {
    pub fn of(mapping: &Mapping) -> FileIdentity {
        match mapping.kind {
            MappingKind::Vdso => FileIdentity::Vdso,
            _ if mapping.inode != 0 => FileIdentity::Inode {
                dev_major: mapping.dev_major,
                dev_minor: mapping.dev_minor,
                inode: mapping.inode,
            },
            _ => FileIdentity::Path(mapping.path.clone()),
        }
    }
}

/// Opens the bytes of a mapped file (reading small files, mapping the others). The live
/// implementation goes through `/proc/PID/…`; tests hand over fixture files.
pub trait ModuleLoader {
    fn load(&mut self, pid: Pid, mapping: &Mapping) -> Option<FileBytes>;

    /// Appends at most `max` bytes of one of `pid`'s JIT symbol files (its perf map,
    /// `/tmp/perf-PID.map` as the process sees it, or the jitdump it mapped), from byte
    /// `offset`, to `buf`. Loaders that cannot reach live processes have none.
    fn read_jit_file(
        &mut self,
        _pid: Pid,
        _file: JitFile<'_>,
        _offset: u64,
        _max: usize,
        _buf: &mut Vec<u8>,
    ) -> PerfMapRead {
        PerfMapRead::Missing
    }

    /// The process exited or exec'd: files kept open for it can go.
    fn forget_process(&mut self, _pid: Pid) {}
}

/// One module in the table.
#[derive(Debug, Clone)]
pub struct Module {
    pub path: String,
    pub short_name: String,
    pub identity: FileIdentity,
    /// The whole file, when it could be opened (and has not been released).
    pub bytes: Option<FileBytes>,
    /// Its ELF load segments, parsed when the bytes were (re)loaded; empty if they never
    /// were, or are not ELF. Kept when the bytes are released (the file is the same).
    pub segments: Segments,
    /// Address spaces that currently map this module.
    pub mapped_by: u32,
    /// Incremented every time the bytes are (re)loaded, so caches keyed by module can tell.
    pub generation: u32,
    /// Consecutive [`ModuleTable::release_unused`] calls that found it unmapped.
    unmapped_for: u32,
}

/// All modules seen in a session, indexed by [`ModuleId`]. Ids are never reused.
#[derive(Debug, Default)]
pub struct ModuleTable {
    modules: Vec<Module>,
    ids: HashMap<FileIdentity, ModuleId>,
    /// Per process, the symbols of its JIT code.
    pub jit: JitTable,
    /// Release calls a module stays loaded after its last process unmapped it.
    release_grace: u32,
}

impl ModuleTable {
    /// The module for `mapping`, loading it on first sight (or again, after its bytes were
    /// released). Returns whether the bytes were (re)loaded by this call.
    pub fn get_or_load(
        &mut self,
        pid: Pid,
        mapping: &Mapping,
        loader: &mut dyn ModuleLoader,
    ) -> (ModuleId, bool) {
        let identity = FileIdentity::of(mapping);
        if let Some(&id) = self.ids.get(&identity) {
            let m = &mut self.modules[id.0 as usize];
            if m.bytes.is_some() || m.generation == 0 {
                return (id, false);
            }
            m.bytes = loader.load(pid, mapping);
            m.generation += 1;
            if let Some(bytes) = &m.bytes {
                m.segments = Segments::parse(bytes);
            }
            return (id, m.bytes.is_some());
        }
        let bytes = loader.load(pid, mapping);
        let short_name = match mapping.kind {
            MappingKind::File => mapping.short_name().to_string(),
            _ => mapping.path.clone(),
        };
        let id = ModuleId(self.modules.len() as u32);
        let loaded = bytes.is_some();
        let segments = bytes.as_deref().map(Segments::parse).unwrap_or_default();
        self.modules.push(Module {
            path: mapping.path.clone(),
            short_name,
            identity: identity.clone(),
            generation: u32::from(loaded),
            bytes,
            segments,
            mapped_by: 0,
            unmapped_for: 0,
        });
        self.ids.insert(identity, id);
        (id, loaded)
    }

    pub fn get(&self, id: ModuleId) -> Option<&Module> {
        self.modules.get(id.0 as usize)
    }

    /// Counts one more (`true`) or one fewer (`false`) address space mapping `id`.
    pub fn note_mapped(&mut self, id: ModuleId, mapped: bool) {
        if let Some(m) = self.modules.get_mut(id.0 as usize) {
            m.mapped_by = if mapped {
                m.unmapped_for = 0;
                m.mapped_by.saturating_add(1)
            } else {
                m.mapped_by.saturating_sub(1)
            };
        }
    }

    /// Drops the bytes of every module that no address space maps and `keep` does not ask
    /// for (a profile not yet symbolized refers to it), once it has been unmapped for more
    /// than the grace ([`ModuleTable::set_release_grace`]) of calls. Returns the released ids.
    pub fn release_unused(&mut self, keep: impl Fn(ModuleId) -> bool) -> Vec<ModuleId> {
        let mut released = Vec::new();
        for (i, m) in self.modules.iter_mut().enumerate() {
            let id = ModuleId(i as u32);
            if m.mapped_by == 0 && m.bytes.is_some() && !keep(id) {
                m.unmapped_for = m.unmapped_for.saturating_add(1);
                if m.unmapped_for > self.release_grace {
                    m.bytes = None;
                    released.push(id);
                }
            }
        }
        released
    }

    /// Keeps an unmapped module loaded through `calls` more calls of
    /// [`ModuleTable::release_unused`]: a program started again and again (a cron job, a
    /// build's compilers) is parsed and symbolized once, not at every start.
    pub fn set_release_grace(&mut self, calls: u32) {
        self.release_grace = calls;
    }

    /// Bytes held for all modules, mapped or in memory.
    pub fn resident_bytes(&self) -> usize {
        self.modules
            .iter()
            .filter_map(|m| m.bytes.as_ref().map(|b| b.len()))
            .sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ModuleId, &Module)> {
        self.modules
            .iter()
            .enumerate()
            .map(|(i, m)| (ModuleId(i as u32), m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::parse_line;

    struct Counting(u32);
    impl ModuleLoader for Counting {
        fn load(&mut self, _pid: Pid, _m: &Mapping) -> Option<FileBytes> {
            self.0 += 1;
            Some(FileBytes::from(&b"\x7fELF"[..]))
        }
    }

    #[test]
    fn modules_are_read_once_released_when_unmapped_and_read_again() {
        let m = parse_line("00400000-00401000 r-xp 00000000 fe:01 42 /usr/bin/x").unwrap();
        let mut table = ModuleTable::default();
        let mut loader = Counting(0);
        let (id, loaded) = table.get_or_load(Pid(1), &m, &mut loader);
        assert!(loaded);
        table.note_mapped(id, true);
        assert_eq!(table.get_or_load(Pid(2), &m, &mut loader), (id, false));
        assert_eq!(loader.0, 1);
        assert!(table.release_unused(|_| false).is_empty(), "still mapped");
        table.note_mapped(id, false);
        assert!(table.release_unused(|i| i == id).is_empty(), "still wanted");
        assert_eq!(table.release_unused(|_| false), vec![id]);
        assert_eq!(table.resident_bytes(), 0);
        assert_eq!(table.get_or_load(Pid(3), &m, &mut loader), (id, true));
        assert_eq!((loader.0, table.get(id).unwrap().generation), (2, 2));
    }

    #[test]
    fn a_grace_keeps_an_unmapped_module_for_that_many_releases() {
        let m = parse_line("00400000-00401000 r-xp 00000000 fe:01 43 /usr/bin/cron-job").unwrap();
        let mut table = ModuleTable::default();
        table.set_release_grace(2);
        let mut loader = Counting(0);
        let (id, _) = table.get_or_load(Pid(1), &m, &mut loader);
        table.note_mapped(id, true);
        table.note_mapped(id, false);
        assert!(table.release_unused(|_| false).is_empty());
        // Mapped again within the grace: the bytes were never dropped, and the count restarts.
        table.note_mapped(id, true);
        table.note_mapped(id, false);
        assert!(table.release_unused(|_| false).is_empty());
        assert!(table.release_unused(|_| false).is_empty());
        assert_eq!(table.release_unused(|_| false), vec![id]);
        assert_eq!(loader.0, 1);
    }
}
