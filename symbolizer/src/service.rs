//! Symbolization as a long-lived service: turns a [`RawProfile`] of addresses into the
//! [`SymbolizedProfile`] the exporters take.
//!
//! One [`SymbolService`] lives as long as the session (or the daemon): parsed ELF files and
//! their DWARF contexts, kernel symbols and the expansion of every raw frame already seen are
//! kept across snapshots, so the tenth dump of a long attach costs only its new addresses.
//! A module whose bytes the engine released (no live process maps it any more) is forgotten
//! here too. Frames that cannot be named are counted by reason ([`SymbolStats`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sprof_core::{
    FileBytes, Frame, FrameAddr, FrameInterner, FrameKey, FrameKind, InterpFunction, ModuleId,
    ModuleInfo, ModuleTable, Pid, ProfileMeta, RawProfile, SampledStack, SymbolizedProfile,
};

use crate::{find_debug_file, hex, Debuginfod, ElfModule, Resolved, Symbolizer, UnknownReason};

/// Threads that resolve modules side by side in one [`SymbolService::symbolize`] call.
const PARALLEL_MODULES: usize = 4;

/// Kernel symbols from `/proc/kallsyms`, sorted by address.
pub struct KernelSymbols {
    symbols: Vec<(u64, String)>,
}

impl KernelSymbols {
    /// Reads `/proc/kallsyms`; `None` when it shows no addresses (`kptr_restrict`).
    pub fn load() -> Option<KernelSymbols> {
        let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Option<KernelSymbols> {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let kind = it.next()?;
                let name = it.next()?;
                matches!(kind, "t" | "T" | "w" | "W").then(|| (addr, name.to_string()))
            })
            .filter(|(a, _)| *a != 0)
            .collect();
        if symbols.is_empty() {
            return None;
        }
        symbols.sort_by_key(|(a, _)| *a);
        Some(KernelSymbols { symbols })
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|(a, _)| *a <= addr);
        self.symbols.get(i.checked_sub(1)?).map(|(_, n)| n.as_str())
    }
}

/// Why frames went unnamed, counted once per unique frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SymbolStats {
    /// Unique frames resolved to a function.
    pub resolved: u64,
    /// Addresses in no known mapping (JIT code, or a mapping never reported).
    pub unknown_module: u64,
    /// Modules whose file could not be read or parsed.
    pub unreadable_file: u64,
    /// Modules with neither symbols nor debug info.
    pub no_symbols: u64,
    /// Addresses no symbol covers, or outside every loadable segment.
    pub no_symbol: u64,
    /// JIT frames named from their process's perf map.
    pub jit_resolved: u64,
    /// JIT frames no perf map entry covers (no map, or written after the process's last read).
    pub jit_unknown: u64,
}

/// Raw frames whose expansion is cached before the cache starts afresh (~100 bytes each
/// plus their frames): bounds a long-running session's memory.
const MAX_EXPANDED: usize = 1 << 19;

/// The long-lived symbolizer of a session.
pub struct SymbolService {
    symbolizer: Symbolizer,
    kernel: Option<KernelSymbols>,
    /// Root-first display frames of every raw frame seen, per module generation.
    expanded: HashMap<FrameKey, Arc<[Frame]>>,
    /// Module generation each module's cached entries were made from.
    generations: HashMap<ModuleId, u32>,
    /// Where separate debug files are looked for.
    debug_root: std::path::PathBuf,
    /// Servers asked for the debug files of modules with nothing to name functions by.
    debuginfod: Option<Arc<Debuginfod>>,
    /// Downloads started and not yet attached.
    fetches: Vec<PendingFetch>,
    wait_for_debuginfod: bool,
    /// Most bytes of DWARF contexts kept between calls ([`SymbolService::set_dwarf_budget`]).
    dwarf_budget: Option<usize>,
    /// The call (`symbolize`) each module was last used in.
    last_use: HashMap<u64, u64>,
    calls: u64,
    pub stats: SymbolStats,
    /// What bounds refused of modules (one line per module and reason), not yet taken.
    refusals: Vec<String>,
    /// Modules whose refusals were reported, so each is reported once (a cache: cleared
    /// beyond [`MAX_REPORTED`], after which a refusal may be said again).
    reported: std::collections::HashSet<(String, String)>,
}

/// Refusals remembered as reported before the memory starts afresh.
const MAX_REPORTED: usize = 4096;

/// A batch of debuginfod downloads running on its own thread.
struct PendingFetch {
    /// The modules asked for (with the generation their bytes had), in the batch's order.
    modules: Vec<(ModuleId, u32)>,
    handle: std::thread::JoinHandle<Vec<Option<std::path::PathBuf>>>,
}

/// The build-id to ask debuginfod for, when nothing in or beside the file names functions
/// beyond `.dynsym` (no `.symtab`, no DWARF).
fn wants_debuginfod(elf: &ElfModule) -> Option<Vec<u8>> {
    if elf.has_symtab() || elf.has_dwarf() {
        return None;
    }
    elf.build_id().filter(|b| !b.is_empty()).map(<[u8]>::to_vec)
}

fn load_module(module: &sprof_core::Module, bytes: &FileBytes, root: &Path) -> Option<ElfModule> {
    let (name, path) = (&module.short_name, &module.path);
    let mut m = ElfModule::parse_module(name, bytes.clone(), &module.segments).ok()?;
    if !m.has_dwarf() {
        // Separately installed debug info (build-id or debuglink) on the host.
        let owners = crate::debugfile::trusted_owners(root, path);
        if let Some(mut debug) = find_debug_file(&m, root, path, &owners) {
            if let Ok(data) = debug
                .metadata()
                .and_then(|meta| FileBytes::from_file(&mut debug, meta.len()))
            {
                let _ = m.attach_debug_file(data);
            }
        }
    }
    Some(m)
}

/// The frame of an interpreted function.
fn interp_frame(f: Option<&InterpFunction>, line: u32) -> Frame {
    match f {
        Some(f) => Frame {
            function: f.name.clone(),
            file: Some(f.file.clone()),
            line: (line > 0).then_some(line),
            decl_line: (f.first_line > 0).then_some(f.first_line),
            decl_file: Some(f.file.clone()),
            module: None,
            kind: FrameKind::Python,
        },
        None => Frame::bare("[python frame unreadable]", FrameKind::Marker),
    }
}

impl SymbolService {
    /// A service; `kernel` loads `/proc/kallsyms` for kernel frames.
    pub fn new(kernel: bool) -> SymbolService {
        SymbolService {
            symbolizer: Symbolizer::new(),
            kernel: if kernel { KernelSymbols::load() } else { None },
            expanded: HashMap::new(),
            generations: HashMap::new(),
            debug_root: "/".into(),
            debuginfod: Debuginfod::from_env().map(Arc::new),
            fetches: Vec::new(),
            wait_for_debuginfod: true,
            dwarf_budget: None,
            last_use: HashMap::new(),
            calls: 0,
            stats: SymbolStats::default(),
            refusals: Vec::new(),
            reported: Default::default(),
        }
    }

    /// Replaces the debuginfod client (by default the one `DEBUGINFOD_URLS` configures).
    pub fn set_debuginfod(&mut self, client: Option<Debuginfod>) {
        self.debuginfod = client.map(Arc::new);
    }

    /// Warnings since the last call (a debuginfod server that failed: once per server).
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut warnings = std::mem::take(&mut self.refusals);
        if let Some(c) = &self.debuginfod {
            warnings.extend(c.take_warnings());
        }
        warnings
    }

    /// Bounds the memory of DWARF contexts kept between calls (a long-running session on a
    /// host with big binaries built with full debug info): after each call, the contexts of
    /// the modules used longest ago are dropped until the rest fit. Frames already expanded
    /// stay cached, so only addresses seen for the first time pay for a context built
    /// again. The modules used in the call itself are never dropped.
    pub fn set_dwarf_budget(&mut self, bytes: Option<usize>) {
        self.dwarf_budget = bytes;
    }

    /// Bytes of debug sections behind the DWARF contexts held now, and how many modules.
    pub fn dwarf_held(&self) -> (usize, usize) {
        self.symbolizer
            .modules()
            .map(|(_, m)| m.dwarf_footprint())
            .filter(|&b| b > 0)
            .fold((0, 0), |(b, n), x| (b + x, n + 1))
    }

    /// Drops least recently used DWARF contexts beyond the budget.
    fn enforce_dwarf_budget(&mut self) {
        let Some(budget) = self.dwarf_budget else {
            return;
        };
        let mut held: Vec<(u64, u64, usize)> = self
            .symbolizer
            .modules()
            .map(|(k, m)| {
                (
                    self.last_use.get(&k).copied().unwrap_or(0),
                    k,
                    m.dwarf_footprint(),
                )
            })
            .filter(|&(_, _, bytes)| bytes > 0)
            .collect();
        let mut total: usize = held.iter().map(|h| h.2).sum();
        held.sort_unstable();
        for (used, key, bytes) in held {
            if total <= budget || used >= self.calls {
                break;
            }
            // Parsed again (symbols, and the context on its next lookup) when next needed.
            self.symbolizer.forget(key);
            total -= bytes;
        }
    }

    /// Whether [`SymbolService::symbolize`] waits for debuginfod downloads (bounded: a few
    /// seconds per module, a few at a time). The default; a caller that symbolizes while
    /// sampling (a live view, periodic dumps) turns it off so the drive loop never stalls:
    /// downloads then run in the background and their names appear in a later call.
    pub fn set_wait_for_debuginfod(&mut self, wait: bool) {
        self.wait_for_debuginfod = wait;
    }

    /// Parses the modules `raw` refers to that are not parsed yet, and starts one batch of
    /// debuginfod downloads for those left with neither `.symtab` nor DWARF after the
    /// on-disk lookups (so that a slow server costs one bounded wait per profile rather
    /// than one per module), waiting for it unless told not to.
    fn load_new_modules(&mut self, raw: &RawProfile, modules: &ModuleTable) {
        let Some(client) = self.debuginfod.clone() else {
            return;
        };
        let mut ids: Vec<ModuleId> = raw
            .frames
            .iter()
            .filter_map(|k| match k {
                FrameKey::Module { module, .. } => Some(*module),
                _ => None,
            })
            .filter(|id| !self.symbolizer.contains(u64::from(id.0)))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut wanted = Vec::new();
        for id in ids {
            let Some(m) = modules.get(id) else { continue };
            let Some(bytes) = &m.bytes else { continue };
            let elf = load_module(m, bytes, &self.debug_root);
            if let Some(build_id) = elf.as_ref().and_then(wants_debuginfod) {
                wanted.push((id, m.generation, build_id));
            }
            self.generations.insert(id, m.generation);
            self.symbolizer.module_with(u64::from(id.0), || elf);
        }
        if wanted.is_empty() {
            return;
        }
        let build_ids: Vec<Vec<u8>> = wanted.iter().map(|w| w.2.clone()).collect();
        let fetch = std::thread::Builder::new()
            .name("sprofd-debuginfod".into())
            .spawn(move || client.fetch_all(&build_ids));
        // No thread, no download: the modules keep the names they have.
        if let Ok(handle) = fetch {
            self.fetches.push(PendingFetch {
                modules: wanted.iter().map(|w| (w.0, w.1)).collect(),
                handle,
            });
        }
        if self.wait_for_debuginfod {
            self.collect_fetches(modules);
        }
    }

    /// Attaches the debug files of finished downloads (waiting for all of them when the
    /// service waits for debuginfod), re-parsing those modules and dropping their cached
    /// expansions so their frames are named again.
    fn collect_fetches(&mut self, modules: &ModuleTable) {
        let pending = std::mem::take(&mut self.fetches);
        for fetch in pending {
            if !self.wait_for_debuginfod && !fetch.handle.is_finished() {
                self.fetches.push(fetch);
                continue;
            }
            let Ok(files) = fetch.handle.join() else {
                continue;
            };
            for ((id, generation), file) in fetch.modules.into_iter().zip(files) {
                let Some(path) = file else { continue };
                let Some(m) = modules.get(id).filter(|m| m.generation == generation) else {
                    continue;
                };
                let Some(bytes) = &m.bytes else { continue };
                let Some(mut elf) = load_module(m, bytes, &self.debug_root) else {
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
                let key = u64::from(id.0);
                self.symbolizer.forget(key);
                self.symbolizer.module_with(key, || Some(elf));
                self.expanded
                    .retain(|k, _| !matches!(k, FrameKey::Module { module, .. } if *module == id));
            }
        }
    }

    /// Whether kernel symbols were readable (false under `kptr_restrict`).
    pub fn has_kernel_symbols(&self) -> bool {
        self.kernel.is_some()
    }

    /// Drops what is cached for modules the table no longer holds bytes for, or has
    /// reloaded since.
    fn sync_modules(&mut self, modules: &ModuleTable) {
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
        if stale.is_empty() {
            return;
        }
        for id in &stale {
            self.generations.remove(id);
            self.last_use.remove(&u64::from(id.0));
            self.symbolizer.forget(u64::from(id.0));
        }
        self.expanded.retain(|k, _| match k {
            FrameKey::Module { module, .. } => !stale.contains(module),
            _ => true,
        });
    }

    /// Expands one raw frame into display frames, root-most first.
    fn expand(&mut self, key: FrameKey, raw: &RawProfile, modules: &ModuleTable) -> Vec<Frame> {
        match key {
            FrameKey::Marker(m) => vec![Frame::bare(m.name(), FrameKind::Marker)],
            FrameKey::Unmapped(_) => {
                self.stats.unknown_module += 1;
                vec![Frame::bare("[unknown]", FrameKind::Unresolved)]
            }
            FrameKey::Kernel(addr) => {
                let name = self
                    .kernel
                    .as_ref()
                    .and_then(|k| k.lookup(addr))
                    .unwrap_or("[kernel]");
                vec![Frame::bare(name, FrameKind::Kernel)]
            }
            FrameKey::Interp { func, line } => {
                vec![interp_frame(raw.interp_functions.get(func as usize), line)]
            }
            FrameKey::Jit { pid, addr } => vec![self.jit_frame(modules, pid, addr)],
            FrameKey::Module { module, .. } => self.expand_module(key, module, modules),
        }
    }

    /// A JIT frame, named by its process's perf map; `[jit] 0x…` where no entry covers it.
    fn jit_frame(&mut self, modules: &ModuleTable, pid: Pid, addr: FrameAddr) -> Frame {
        match modules.jit.lookup(pid, addr.lookup_address()) {
            Some(name) => {
                self.stats.jit_resolved += 1;
                let mut f = Frame::bare(name, FrameKind::Jit);
                f.module = Some("[jit]".into());
                f
            }
            None => {
                self.stats.jit_unknown += 1;
                let mut f = Frame::bare(
                    format!("[jit] {:#x}", addr.address()),
                    FrameKind::Unresolved,
                );
                f.module = Some("[jit]".into());
                f
            }
        }
    }

    fn expand_module(
        &mut self,
        key: FrameKey,
        module: ModuleId,
        modules: &ModuleTable,
    ) -> Vec<Frame> {
        let offset = key.lookup_offset().map(|(_, o)| o).unwrap_or(0);
        let Some(m) = modules.get(module) else {
            self.stats.unknown_module += 1;
            return vec![Frame::bare("[unknown]", FrameKind::Unresolved)];
        };
        let elf = self.module_elf(module, modules);
        let resolved = elf.as_ref().map(|elf| elf.lookup(offset));
        self.display_frames(m, elf.as_deref(), offset, resolved)
    }

    /// The parsed module `module` (parsed now if it was not yet), `None` when its file is
    /// not readable or not ELF; records the generation its cached entries come from.
    fn module_elf(&mut self, module: ModuleId, modules: &ModuleTable) -> Option<Arc<ElfModule>> {
        let m = modules.get(module)?;
        self.generations.insert(module, m.generation);
        let root = self.debug_root.clone();
        m.bytes.as_ref().and_then(|bytes| {
            self.symbolizer
                .module_with(u64::from(module.0), || load_module(m, bytes, &root))
        })
    }

    /// Display frames, root-most first, of one module address and what the module said of
    /// it (`resolved` is `None` exactly when `elf` is), counted in the stats.
    fn display_frames(
        &mut self,
        m: &sprof_core::Module,
        elf: Option<&ElfModule>,
        offset: u64,
        resolved: Option<Resolved>,
    ) -> Vec<Frame> {
        let unresolved = |rel: u64| {
            let mut f = Frame::bare(format!("{}+{rel:#x}", m.short_name), FrameKind::Unresolved);
            f.module = Some(m.short_name.clone());
            vec![f]
        };
        let (Some(elf), Some(resolved)) = (elf, resolved) else {
            self.stats.unreadable_file += 1;
            return unresolved(offset);
        };
        match resolved {
            Resolved::Frames(frames) => {
                self.stats.resolved += 1;
                frames
                    .iter()
                    .rev()
                    .map(|f| f.to_core_frame(Some(&m.short_name)))
                    .collect()
            }
            Resolved::Unknown { svma, reason } => {
                match reason {
                    UnknownReason::NoSymbolTables => self.stats.no_symbols += 1,
                    UnknownReason::NoSymbol | UnknownReason::OutsideSegments => {
                        self.stats.no_symbol += 1
                    }
                }
                unresolved(svma.or(elf.file_offset_to_svma(offset)).unwrap_or(offset))
            }
        }
    }

    /// Resolves the module frames of `raw`'s samples that are not cached yet, one module per
    /// thread at a time on up to [`PARALLEL_MODULES`] threads, and caches their display
    /// frames. A profile's time goes mostly into building each module's DWARF context
    /// (inflating compressed debug sections, parsing unit ranges and functions) and into its
    /// lookups, all independent across modules: the executable and libc's debug file then
    /// load side by side. Does nothing unless two or more modules have frames to resolve.
    fn resolve_modules_in_parallel(&mut self, raw: &RawProfile, modules: &ModuleTable) {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(PARALLEL_MODULES);
        if threads < 2 {
            return;
        }
        // The frames the samples use (a snapshot's table may hold frames of earlier windows).
        let mut used_stack = vec![false; raw.stacks.len()];
        let mut used_frame = vec![false; raw.frames.len()];
        for s in &raw.samples {
            let mut node = Some(s.stack);
            while let Some(sprof_core::StackId(i)) = node {
                if std::mem::replace(&mut used_stack[i as usize], true) {
                    break;
                }
                let (parent, frame) = raw.stacks[i as usize];
                used_frame[frame.0 as usize] = true;
                node = parent;
            }
        }
        let mut work: HashMap<ModuleId, Vec<FrameKey>> = HashMap::new();
        for (key, _) in raw.frames.iter().zip(&used_frame).filter(|(_, u)| **u) {
            if let FrameKey::Module { module, .. } = *key {
                if !self.expanded.contains_key(key) {
                    work.entry(module).or_default().push(*key);
                }
            }
        }
        if work.len() < 2 {
            return;
        }
        let mut jobs: Vec<(ModuleId, Arc<ElfModule>, Vec<FrameKey>)> = Vec::new();
        for (module, keys) in work {
            // Unreadable modules are left to the sequential path, which counts them.
            if let Some(elf) = self.module_elf(module, modules) {
                jobs.push((module, elf, keys));
            }
        }
        if jobs.len() < 2 {
            return;
        }
        // Largest first, handed out one module at a time.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.2.len()));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Vec<(ModuleId, FrameKey, Resolved)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.min(jobs.len()))
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some((module, elf, keys)) = jobs.get(i) else {
                                break;
                            };
                            for key in keys {
                                let offset = key.lookup_offset().map_or(0, |(_, o)| o);
                                out.push((*module, *key, elf.lookup(offset)));
                            }
                        }
                        out
                    })
                })
                .collect();
            workers
                .into_iter()
                // why: a panicking lookup loses only its worker's results; the sequential
                // path resolves those frames again.
                .filter_map(|w| w.join().ok())
                .collect()
        });
        let elves: HashMap<ModuleId, Arc<ElfModule>> =
            jobs.into_iter().map(|(id, elf, _)| (id, elf)).collect();
        for (module, key, resolved) in results.into_iter().flatten() {
            let (Some(m), Some(elf)) = (modules.get(module), elves.get(&module)) else {
                continue;
            };
            let offset = key.lookup_offset().map_or(0, |(_, o)| o);
            let frames = self.display_frames(m, Some(elf), offset, Some(resolved));
            self.expanded.insert(key, frames.into());
        }
    }

    /// Resolves every frame of `raw`. Each stack starts with a root frame for its process,
    /// and a second one for the thread's name when it differs from the process's.
    pub fn symbolize(
        &mut self,
        raw: &RawProfile,
        modules: &ModuleTable,
        meta: ProfileMeta,
    ) -> SymbolizedProfile {
        self.sync_modules(modules);
        self.calls += 1;
        for id in raw.referenced_modules() {
            self.last_use.insert(u64::from(id.0), self.calls);
        }
        self.collect_fetches(modules);
        self.load_new_modules(raw, modules);
        self.resolve_modules_in_parallel(raw, modules);
        let mut table = FrameInterner::new();
        // Display-frame ids of each raw frame of this profile, filled on first use.
        let mut ids_of: Vec<Option<Vec<u32>>> = vec![None; raw.frames.len()];
        let mut stacks = Vec::with_capacity(raw.samples.len());
        let mut ids = Vec::new();
        for s in &raw.samples {
            let thread = &raw.threads[s.thread];
            let mut frames = Vec::with_capacity(16);
            let process = if thread.process_name.is_empty() {
                format!("[{}]", thread.pid)
            } else {
                thread.process_name.clone()
            };
            frames.push(table.intern(&Frame::bare(process.clone(), FrameKind::Root)));
            if !thread.name.is_empty() && thread.name != process {
                frames.push(table.intern(&Frame::bare(thread.name.clone(), FrameKind::Root)));
            }
            raw.stack_frames(s.stack, &mut ids);
            for id in &ids {
                let i = id.0 as usize;
                if ids_of[i].is_none() {
                    let key = raw.frames[i];
                    let display = match self.expanded.get(&key) {
                        Some(d) => d.clone(),
                        None => {
                            let d: Arc<[Frame]> = self.expand(key, raw, modules).into();
                            // Interpreted frames index this profile's function table; a
                            // JIT frame's name can still appear as its perf map grows.
                            if !matches!(key, FrameKey::Interp { .. } | FrameKey::Jit { .. }) {
                                self.expanded.insert(key, d.clone());
                            }
                            d
                        }
                    };
                    ids_of[i] = Some(display.iter().map(|f| table.intern(f)).collect());
                }
                frames.extend(ids_of[i].iter().flatten());
            }
            stacks.push(SampledStack {
                frames,
                samples: s.counts.samples,
                period: s.counts.period,
                thread: Some(sprof_core::ThreadRef {
                    pid: thread.pid.0,
                    tid: thread.tid.0,
                }),
            });
        }
        let mut meta = meta;
        if raw.timeline_dropped > 0 {
            meta.notes.push(format!(
                "{} samples past the timeline's cap are counted but not in time order",
                raw.timeline_dropped
            ));
        }
        let profile = SymbolizedProfile {
            meta,
            frames: table.into_frames(),
            stacks,
            modules: self.module_infos(raw, modules),
            processes: Default::default(),
            // Stacks are made one for one from `raw.samples`: the indices carry over.
            timeline: raw.timeline.clone(),
        };
        self.enforce_dwarf_budget();
        if self.expanded.len() > MAX_EXPANDED {
            // A cache, not a record: what is still sampled is expanded again.
            self.expanded.clear();
        }
        profile
    }

    /// Path and build-id of every module the profile's stacks refer to, by short name.
    fn module_infos(&mut self, raw: &RawProfile, modules: &ModuleTable) -> Vec<ModuleInfo> {
        let mut ids: Vec<ModuleId> = raw.referenced_modules().into_iter().collect();
        ids.sort_unstable();
        let mut out: Vec<ModuleInfo> = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(m) = modules.get(id) else { continue };
            if out.iter().any(|o| o.name == m.short_name) {
                continue;
            }
            let key = u64::from(id.0);
            let elf = if self.symbolizer.contains(key) {
                self.symbolizer.module_with(key, || None)
            } else {
                None
            };
            let build_id = elf.as_ref().and_then(|elf| elf.build_id().map(hex));
            for why in elf.iter().flat_map(|elf| elf.refusals()) {
                if self.reported.len() >= MAX_REPORTED {
                    self.reported.clear();
                }
                if self.reported.insert((m.path.clone(), why.to_string())) {
                    self.refusals
                        .push(format!("{}: not all of it is used: {why}", m.path));
                }
            }
            out.push(ModuleInfo {
                name: m.short_name.clone(),
                path: m.path.clone(),
                build_id,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jit_frames_are_named_from_the_process_map_and_named_later_once_it_grows() {
        use sprof_core::{PerfMapRead, Pid, ProfileBuilder, Tid};
        let mut modules = ModuleTable::default();
        let text = std::cell::RefCell::new(b"1000 100 JS:*render app.js:3:7\n".to_vec());
        let mut read =
            |_: Pid, _: sprof_core::JitFile<'_>, off: u64, _: usize, buf: &mut Vec<u8>| {
                buf.extend_from_slice(&text.borrow()[off as usize..]);
                PerfMapRead::Read {
                    file_len: text.borrow().len() as u64,
                }
            };
        let t0 = std::time::Instant::now();
        modules.jit.refresh(Pid(5), t0, &mut read);
        let mut b = ProfileBuilder::new();
        let jit = |a| FrameKey::Jit {
            pid: Pid(5),
            addr: FrameAddr::Ip(a),
        };
        b.add_sample(Pid(5), Tid(5), &[jit(0x1010)], 1);
        b.add_sample(Pid(5), Tid(5), &[jit(0x2010)], 1);
        let raw = b.snapshot();
        let mut service = SymbolService::new(false);
        let names = |p: &SymbolizedProfile| {
            let mut n: Vec<(String, FrameKind)> = p
                .frames
                .iter()
                .filter(|f| f.kind != FrameKind::Root)
                .map(|f| (f.function.clone(), f.kind))
                .collect();
            n.sort();
            n
        };
        let p = service.symbolize(&raw, &modules, ProfileMeta::default());
        assert_eq!(
            names(&p),
            vec![
                ("JS:*render app.js:3:7".to_string(), FrameKind::Jit),
                ("[jit] 0x2010".to_string(), FrameKind::Unresolved),
            ]
        );
        assert_eq!(
            (service.stats.jit_resolved, service.stats.jit_unknown),
            (1, 1)
        );
        text.borrow_mut()
            .extend_from_slice(b"2000 100 py::late:x.py\n");
        modules
            .jit
            .refresh(Pid(5), t0 + sprof_core::jit::REFRESH_INTERVAL, &mut read);
        let p = service.symbolize(&raw, &modules, ProfileMeta::default());
        assert!(names(&p).contains(&("py::late:x.py".to_string(), FrameKind::Jit)));
    }

    #[test]
    fn kallsyms_lookup_and_restricted_file() {
        let text = "ffffffff81000000 T _stext\nffffffff81001000 t do_one\nffffffff81002000 D data\nffffffff81003000 T next [mod]\n";
        let k = KernelSymbols::parse(text).unwrap();
        assert_eq!(k.lookup(0xffffffff81001010), Some("do_one"));
        assert_eq!(
            k.lookup(0xffffffff81002010),
            Some("do_one"),
            "data symbols are skipped"
        );
        assert_eq!(k.lookup(0x10), None);
        assert!(KernelSymbols::parse("0000000000000000 T _stext\n").is_none());
    }

    #[test]
    fn kallsyms_module_symbols_resolve_by_name() {
        // Loadable modules' symbols follow the core kernel's in /proc/kallsyms, with the
        // module name in brackets as a fourth column; the name alone is the frame.
        let text = "ffffffff81000000 T _stext\n\
                    ffffffffc0a01000 t nft_do_chain\t[nf_tables]\n\
                    ffffffffc0a01400 T nft_register_chain_type\t[nf_tables]\n\
                    ffffffffc0a02000 d nft_chain_types\t[nf_tables]\n\
                    ffffffffc0b00000 t e1000_clean\t[e1000e]\n";
        let k = KernelSymbols::parse(text).unwrap();
        assert_eq!(k.lookup(0xffffffffc0a01010), Some("nft_do_chain"));
        assert_eq!(
            k.lookup(0xffffffffc0a01400),
            Some("nft_register_chain_type")
        );
        assert_eq!(
            k.lookup(0xffffffffc0a02010),
            Some("nft_register_chain_type")
        );
        assert_eq!(k.lookup(0xffffffffc0b00004), Some("e1000_clean"));
    }
}
