//! The service's parsed modules, keyed by the module table's [`ModuleId`]: each parsed once
//! per generation of its bytes (with its installed debug file), forgotten when the table
//! releases or reloads the bytes, and their DWARF contexts held within a budget, least
//! recently used dropped first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sprof_core::{FileBytes, Module, ModuleId, ModuleTable};

use crate::{ElfModule, Symbolizer};

pub(super) struct ModuleCache {
    parsed: Symbolizer<ModuleId>,
    /// Module generation each module's cached entries were made from.
    generations: HashMap<ModuleId, u32>,
    /// Where separate debug files are looked for.
    debug_root: PathBuf,
    /// Most bytes of DWARF contexts kept between calls.
    dwarf_budget: Option<usize>,
    /// The call each module was last used in, and the calls so far.
    last_use: HashMap<ModuleId, u64>,
    calls: u64,
}

/// Parses module `m`'s `bytes` with the segments the table parsed, and attaches its debug
/// file installed under `root`; `None` when the bytes are not ELF.
fn parse(m: &Module, bytes: &FileBytes, root: &Path) -> Option<ElfModule> {
    let mut elf = ElfModule::parse_module(&m.short_name, bytes.clone(), &m.segments).ok()?;
    elf.attach_installed_debug_file(root, &m.path);
    Some(elf)
}

impl ModuleCache {
    pub(super) fn new() -> ModuleCache {
        ModuleCache {
            parsed: Symbolizer::new(),
            generations: HashMap::new(),
            debug_root: "/".into(),
            dwarf_budget: None,
            last_use: HashMap::new(),
            calls: 0,
        }
    }

    /// Parses module `m` as [`ModuleCache::get`] would, without caching it.
    pub(super) fn parse(&self, m: &Module, bytes: &FileBytes) -> Option<ElfModule> {
        parse(m, bytes, &self.debug_root)
    }

    /// The parsed module `id` (parsed now if it was not yet), `None` when its file is not
    /// readable or not ELF; records the generation its cached entries come from.
    pub(super) fn get(&mut self, id: ModuleId, modules: &ModuleTable) -> Option<Arc<ElfModule>> {
        let m = modules.get(id)?;
        self.generations.insert(id, m.generation);
        let bytes = m.bytes.as_ref()?;
        let root = &self.debug_root;
        self.parsed.module_with(id, || parse(m, bytes, root))
    }

    /// Caches `elf` (or the failure to parse) as module `id` of `generation`, unless it is
    /// cached already.
    pub(super) fn insert(&mut self, id: ModuleId, generation: u32, elf: Option<ElfModule>) {
        self.generations.insert(id, generation);
        self.parsed.module_with(id, || elf);
    }

    /// Caches `elf` as module `id` in place of what was cached (a debug file attached).
    pub(super) fn replace(&mut self, id: ModuleId, elf: ElfModule) {
        self.parsed.forget(id);
        self.parsed.module_with(id, || Some(elf));
    }

    /// Whether `id` was parsed (or failed to parse) and is still cached.
    pub(super) fn contains(&self, id: ModuleId) -> bool {
        self.parsed.contains(id)
    }

    /// Module `id` if it is cached and parsed; never parses.
    pub(super) fn cached(&mut self, id: ModuleId) -> Option<Arc<ElfModule>> {
        if self.parsed.contains(id) {
            self.parsed.module_with(id, || None)
        } else {
            None
        }
    }

    /// Forgets the modules the table no longer holds bytes for, or has reloaded since they
    /// were parsed, and returns them.
    pub(super) fn sync(&mut self, modules: &ModuleTable) -> Vec<ModuleId> {
        let stale: Vec<ModuleId> = self
            .generations
            .iter()
            .filter(|(id, gen)| {
                modules
                    .get(**id)
                    .is_none_or(|m| m.bytes.is_none() || m.generation != **gen)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            self.generations.remove(id);
            self.last_use.remove(id);
            self.parsed.forget(*id);
        }
        stale
    }

    /// Starts a call that uses modules `used`: they count as the most recently used.
    pub(super) fn start_call(&mut self, used: impl IntoIterator<Item = ModuleId>) {
        self.calls += 1;
        for id in used {
            self.last_use.insert(id, self.calls);
        }
    }

    pub(super) fn set_dwarf_budget(&mut self, bytes: Option<usize>) {
        self.dwarf_budget = bytes;
    }

    /// Bytes of debug sections behind the DWARF contexts held now, and how many modules.
    pub(super) fn dwarf_held(&self) -> (usize, usize) {
        self.parsed
            .modules()
            .map(|(_, m)| m.dwarf_footprint())
            .filter(|&b| b > 0)
            .fold((0, 0), |(b, n), x| (b + x, n + 1))
    }

    /// Drops least recently used DWARF contexts beyond the budget; never those of the
    /// modules the current call used.
    pub(super) fn enforce_dwarf_budget(&mut self) {
        let Some(budget) = self.dwarf_budget else {
            return;
        };
        let mut held: Vec<(u64, ModuleId, usize)> = self
            .parsed
            .modules()
            .map(|(id, m)| {
                let used = self.last_use.get(&id).copied().unwrap_or(0);
                (used, id, m.dwarf_footprint())
            })
            .filter(|&(_, _, bytes)| bytes > 0)
            .collect();
        let mut total: usize = held.iter().map(|h| h.2).sum();
        held.sort_unstable();
        for (used, id, bytes) in held {
            if total <= budget || used >= self.calls {
                break;
            }
            // Parsed again (symbols, and the context on its next lookup) when next needed.
            self.parsed.forget(id);
            total -= bytes;
        }
    }
}
