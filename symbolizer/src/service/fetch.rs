//! debuginfod for the service: before a profile's first names are needed, the modules it
//! refers to are parsed and the debug files of those with nothing but `.dynsym` to name
//! functions by are fetched in one batch on a thread of its own; finished downloads are
//! attached at this or a later call (the module parsed again, its cached frames dropped).

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use sprof_core::{FileBytes, FrameKey, ModuleId, ModuleTable, RawProfile};

use super::SymbolService;
use crate::{Debuginfod, ElfModule};

/// The client, the batches in flight, and whether a call waits for them.
pub(super) struct Fetches {
    /// Servers asked for the debug files of modules with nothing to name functions by.
    pub(super) client: Option<Arc<Debuginfod>>,
    /// Downloads started and not yet attached.
    pending: Vec<PendingFetch>,
    pub(super) wait: bool,
}

/// A batch of debuginfod downloads running on its own thread.
struct PendingFetch {
    /// The modules asked for (with the generation their bytes had), in the batch's order.
    modules: Vec<(ModuleId, u32)>,
    handle: JoinHandle<Vec<Option<PathBuf>>>,
}

impl Fetches {
    /// The client `DEBUGINFOD_URLS` configures, if any; calls wait for downloads.
    pub(super) fn from_env() -> Fetches {
        Fetches {
            client: Debuginfod::from_env().map(Arc::new),
            pending: Vec::new(),
            wait: true,
        }
    }

    /// Starts one batch for `wanted` (module, generation, build-id).
    fn start(&mut self, client: Arc<Debuginfod>, wanted: Vec<(ModuleId, u32, Vec<u8>)>) {
        let build_ids: Vec<Vec<u8>> = wanted.iter().map(|w| w.2.clone()).collect();
        let fetch = std::thread::Builder::new()
            .name("sprofd-debuginfod".into())
            .spawn(move || client.fetch_all(&build_ids));
        // No thread, no download: the modules keep the names they have.
        if let Ok(handle) = fetch {
            self.pending.push(PendingFetch {
                modules: wanted.iter().map(|w| (w.0, w.1)).collect(),
                handle,
            });
        }
    }

    /// The files of the batches that finished (all of them, waited for, when calls wait):
    /// (module, the generation asked for, the downloaded file).
    fn finished(&mut self) -> Vec<(ModuleId, u32, PathBuf)> {
        let mut files = Vec::new();
        for fetch in std::mem::take(&mut self.pending) {
            if !self.wait && !fetch.handle.is_finished() {
                self.pending.push(fetch);
                continue;
            }
            let Ok(paths) = fetch.handle.join() else {
                continue;
            };
            for ((id, generation), path) in fetch.modules.into_iter().zip(paths) {
                if let Some(path) = path {
                    files.push((id, generation, path));
                }
            }
        }
        files
    }
}

/// The build-id to ask debuginfod for, when nothing in or beside the file names functions
/// beyond `.dynsym` (no `.symtab`, no DWARF).
fn wants_debuginfod(elf: &ElfModule) -> Option<Vec<u8>> {
    if elf.has_symtab() || elf.has_dwarf() {
        return None;
    }
    elf.build_id().filter(|b| !b.is_empty()).map(<[u8]>::to_vec)
}

impl SymbolService {
    /// Parses the modules `raw` refers to that are not parsed yet, and starts one batch of
    /// debuginfod downloads for those left with neither `.symtab` nor DWARF after the
    /// on-disk lookups (so that a slow server costs one bounded wait per profile rather
    /// than one per module), waiting for it unless told not to.
    pub(super) fn load_new_modules(&mut self, raw: &RawProfile, modules: &ModuleTable) {
        let Some(client) = self.fetches.client.clone() else {
            return;
        };
        let mut ids: Vec<ModuleId> = raw
            .frames
            .iter()
            .filter_map(|k| match k {
                FrameKey::Module { module, .. } => Some(*module),
                _ => None,
            })
            .filter(|id| !self.modules.contains(*id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut wanted = Vec::new();
        for id in ids {
            let Some(m) = modules.get(id) else { continue };
            let Some(bytes) = &m.bytes else { continue };
            let elf = self.modules.parse(m, bytes);
            if let Some(build_id) = elf.as_ref().and_then(wants_debuginfod) {
                wanted.push((id, m.generation, build_id));
            }
            self.modules.insert(id, m.generation, elf);
        }
        if wanted.is_empty() {
            return;
        }
        self.fetches.start(client, wanted);
        if self.fetches.wait {
            self.collect_fetches(modules);
        }
    }

    /// Attaches the debug files of finished downloads (waiting for all of them when the
    /// service waits for debuginfod), re-parsing those modules and dropping their cached
    /// expansions so their frames are named again.
    pub(super) fn collect_fetches(&mut self, modules: &ModuleTable) {
        for (id, generation, path) in self.fetches.finished() {
            let Some(m) = modules.get(id).filter(|m| m.generation == generation) else {
                continue;
            };
            let Some(bytes) = &m.bytes else { continue };
            let Some(mut elf) = self.modules.parse(m, bytes) else {
                continue;
            };
            let Ok(data) = FileBytes::open(&path, None) else {
                continue;
            };
            // A file that is not ELF or whose build-id does not match is refused (the
            // module keeps .dynsym) and removed from the cache, where every client would
            // refuse it again.
            if elf.attach_debug_file(data).is_err() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            self.modules.replace(id, elf);
            self.expanded
                .retain(|k, _| !matches!(k, FrameKey::Module { module, .. } if *module == id));
        }
    }
}
