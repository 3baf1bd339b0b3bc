//! Resolving a profile's new module frames side by side, one module per thread at a time:
//! a profile's time goes mostly into building each module's DWARF context and into its
//! lookups, all independent across modules.

use std::collections::HashMap;
use std::sync::Arc;

use sprof_core::{FrameKey, ModuleId, ModuleTable, RawProfile};

use super::SymbolService;
use crate::{ElfModule, Resolved};

/// Threads that resolve modules side by side in one [`SymbolService::symbolize`] call.
const PARALLEL_MODULES: usize = 4;

/// One module's frames to resolve, and the module.
type Job = (ModuleId, Arc<ElfModule>, Vec<FrameKey>);

impl SymbolService {
    /// Resolves the module frames of `raw`'s samples that are not cached yet, one module per
    /// thread at a time on up to [`PARALLEL_MODULES`] threads, and caches their display
    /// frames. A profile's time goes mostly into building each module's DWARF context
    /// (inflating compressed debug sections, parsing unit ranges and functions) and into its
    /// lookups, all independent across modules: the executable and libc's debug file then
    /// load side by side. Does nothing unless two or more modules have frames to resolve.
    pub(super) fn resolve_modules_in_parallel(&mut self, raw: &RawProfile, modules: &ModuleTable) {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(PARALLEL_MODULES);
        if threads < 2 {
            return;
        }
        let work = self.frames_to_resolve(raw);
        if work.len() < 2 {
            return;
        }
        let mut jobs: Vec<Job> = Vec::new();
        for (module, keys) in work {
            // Unreadable modules are left to the sequential path, which counts them.
            if let Some(elf) = self.modules.get(module, modules) {
                jobs.push((module, elf, keys));
            }
        }
        if jobs.len() < 2 {
            return;
        }
        // Largest first, handed out one module at a time.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.2.len()));
        let results = resolve(&jobs, threads);
        let elves: HashMap<ModuleId, Arc<ElfModule>> =
            jobs.into_iter().map(|(id, elf, _)| (id, elf)).collect();
        for (module, key, resolved) in results {
            let (Some(m), Some(elf)) = (modules.get(module), elves.get(&module)) else {
                continue;
            };
            let offset = key.lookup_offset().map_or(0, |(_, o)| o);
            let frames = self.display_frames(m, Some(elf), offset, Some(resolved));
            self.expanded.insert(key, frames.into());
        }
    }

    /// The module frames `raw`'s samples use (a snapshot's table may hold frames of earlier
    /// windows) and no cached expansion covers, by module.
    fn frames_to_resolve(&self, raw: &RawProfile) -> HashMap<ModuleId, Vec<FrameKey>> {
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
        work
    }
}

/// Looks up every job's frames on up to `threads` threads, each taking the next job when
/// done with one.
fn resolve(jobs: &[Job], threads: usize) -> Vec<(ModuleId, FrameKey, Resolved)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
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
            .flatten()
            .collect()
    })
}
