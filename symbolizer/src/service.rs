//! Symbolization as a long-lived service: turns a [`RawProfile`] of addresses into the
//! [`SymbolizedProfile`] the exporters take.
//!
//! One [`SymbolService`] lives as long as the session (or the daemon): parsed ELF files and
//! their DWARF contexts ([`modules`]), kernel symbols and the expansion of every raw frame
//! already seen are kept across snapshots, so the tenth dump of a long attach costs only its
//! new addresses. A module whose bytes the engine released (no live process maps it any more)
//! is forgotten here too. Frames that cannot be named are counted by reason
//! ([`SymbolStats`]). Debug files come from the disk, or from debuginfod ([`fetch`]);
//! profiles with frames in several modules resolve them side by side ([`parallel`]).

mod fetch;
mod modules;
mod parallel;

use std::collections::HashMap;
use std::sync::Arc;

use sprof_core::{
    Frame, FrameAddr, FrameInterner, FrameKey, FrameKind, InterpFunction, ModuleId, ModuleInfo,
    ModuleTable, Pid, ProfileMeta, RawProfile, SampledStack, SymbolizedProfile, ThreadInfo,
};

use crate::{hex, Debuginfod, ElfModule, KernelSymbols, Resolved, UnknownReason};
use fetch::Fetches;
use modules::ModuleCache;

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
    /// Parsed modules, by the module table's ids.
    modules: ModuleCache,
    kernel: Option<KernelSymbols>,
    /// Root-first display frames of every raw frame seen, per module generation.
    expanded: HashMap<FrameKey, Arc<[Frame]>>,
    /// debuginfod downloads.
    fetches: Fetches,
    pub stats: SymbolStats,
    /// What bounds refused of modules (one line per module and reason), not yet taken.
    refusals: Vec<String>,
    /// CPU time the threads resolving modules side by side have used ([`parallel`]).
    worker_cpu: std::time::Duration,
    /// Modules whose refusals were reported, so each is reported once (a cache: cleared
    /// beyond [`MAX_REPORTED`], after which a refusal may be said again).
    reported: std::collections::HashSet<(String, String)>,
}

/// Refusals remembered as reported before the memory starts afresh.
const MAX_REPORTED: usize = 4096;

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

/// The root frames a stack of `thread` starts with: its process, and its own name when it
/// differs from the process's.
fn push_roots(thread: &ThreadInfo, table: &mut FrameInterner, frames: &mut Vec<u32>) {
    let process = if thread.process_name.is_empty() {
        format!("[{}]", thread.pid)
    } else {
        thread.process_name.clone()
    };
    let named = !thread.name.is_empty() && thread.name != process;
    frames.push(table.intern(&Frame::bare(process, FrameKind::Root)));
    if named {
        frames.push(table.intern(&Frame::bare(thread.name.clone(), FrameKind::Root)));
    }
}

impl SymbolService {
    /// A service; `kernel` loads `/proc/kallsyms` for kernel frames.
    pub fn new(kernel: bool) -> SymbolService {
        SymbolService {
            modules: ModuleCache::new(),
            kernel: if kernel { KernelSymbols::load() } else { None },
            expanded: HashMap::new(),
            fetches: Fetches::from_env(),
            stats: SymbolStats::default(),
            refusals: Vec::new(),
            worker_cpu: std::time::Duration::ZERO,
            reported: Default::default(),
        }
    }

    /// CPU time used so far by the threads that resolve modules side by side: work done for
    /// the caller off its own thread, which its thread's CPU clock does not see.
    pub fn worker_cpu(&self) -> std::time::Duration {
        self.worker_cpu
    }

    /// Replaces the debuginfod client (by default the one `DEBUGINFOD_URLS` configures).
    pub fn set_debuginfod(&mut self, client: Option<Debuginfod>) {
        self.fetches.client = client.map(Arc::new);
    }

    /// Warnings since the last call (a debuginfod server that failed: once per server).
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut warnings = std::mem::take(&mut self.refusals);
        if let Some(c) = &self.fetches.client {
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
        self.modules.set_dwarf_budget(bytes);
    }

    /// Bytes of debug sections behind the DWARF contexts held now, and how many modules.
    pub fn dwarf_held(&self) -> (usize, usize) {
        self.modules.dwarf_held()
    }

    /// Whether [`SymbolService::symbolize`] waits for debuginfod downloads (bounded: a few
    /// seconds per module, a few at a time). The default; a caller that symbolizes while
    /// sampling (a live view, periodic dumps) turns it off so the drive loop never stalls:
    /// downloads then run in the background and their names appear in a later call.
    pub fn set_wait_for_debuginfod(&mut self, wait: bool) {
        self.fetches.wait = wait;
    }

    /// Whether kernel symbols were readable (false under `kptr_restrict`).
    pub fn has_kernel_symbols(&self) -> bool {
        self.kernel.is_some()
    }

    /// Drops what is cached for modules the table no longer holds bytes for, or has
    /// reloaded since.
    fn sync_modules(&mut self, modules: &ModuleTable) {
        let stale = self.modules.sync(modules);
        if stale.is_empty() {
            return;
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
        let elf = self.modules.get(module, modules);
        let resolved = elf.as_ref().map(|elf| elf.lookup(offset));
        self.display_frames(m, elf.as_deref(), offset, resolved)
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

    /// Resolves every frame of `raw`. Each stack starts with a root frame for its process,
    /// and a second one for the thread's name when it differs from the process's.
    pub fn symbolize(
        &mut self,
        raw: &RawProfile,
        modules: &ModuleTable,
        meta: ProfileMeta,
    ) -> SymbolizedProfile {
        self.sync_modules(modules);
        self.modules.start_call(raw.referenced_modules());
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
            push_roots(thread, &mut table, &mut frames);
            raw.stack_frames(s.stack, &mut ids);
            for id in &ids {
                let i = id.0 as usize;
                if ids_of[i].is_none() {
                    let display = self.display_of(raw.frames[i], raw, modules);
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
        self.modules.enforce_dwarf_budget();
        if self.expanded.len() > MAX_EXPANDED {
            // A cache, not a record: what is still sampled is expanded again.
            self.expanded.clear();
        }
        profile
    }

    /// The display frames of raw frame `key`, root-most first: cached, or expanded now.
    fn display_of(
        &mut self,
        key: FrameKey,
        raw: &RawProfile,
        modules: &ModuleTable,
    ) -> Arc<[Frame]> {
        if let Some(d) = self.expanded.get(&key) {
            return d.clone();
        }
        let d: Arc<[Frame]> = self.expand(key, raw, modules).into();
        // Interpreted frames index this profile's function table; a JIT frame's name can
        // still appear as its perf map grows.
        if !matches!(key, FrameKey::Interp { .. } | FrameKey::Jit { .. }) {
            self.expanded.insert(key, d.clone());
        }
        d
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
            let elf = self.modules.cached(id);
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
}
