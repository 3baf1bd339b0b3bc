//! From addresses to names: resolves each unique frame of a [`RawProfile`] once and builds
//! the [`SymbolizedProfile`] the exporters take.

use std::collections::HashMap;
use std::sync::Arc;

use sprof_core::{
    Frame, FrameKey, FrameKind, ProfileMeta, RawProfile, SampledStack, SymbolizedProfile,
};
use sprof_symbolizer::{find_debug_file, ElfModule, Resolved, Symbolizer};
use sprof_unwind::ModuleTable;

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

/// Interns display frames.
#[derive(Default)]
struct FrameTable {
    frames: Vec<Frame>,
    ids: HashMap<Frame, u32>,
}

impl FrameTable {
    fn intern(&mut self, f: Frame) -> u32 {
        if let Some(&i) = self.ids.get(&f) {
            return i;
        }
        let i = self.frames.len() as u32;
        self.frames.push(f.clone());
        self.ids.insert(f, i);
        i
    }
}

fn load_module(name: &str, bytes: &Arc<[u8]>, path: &str) -> Option<ElfModule> {
    let mut m = ElfModule::parse(name, bytes.clone()).ok()?;
    if !m.has_dwarf() {
        // Separately installed debug info (build-id or debuglink) on the host.
        if let Some(debug) = find_debug_file(&m, std::path::Path::new("/"), path) {
            if let Ok(data) = std::fs::read(debug) {
                let _ = m.attach_debug_file(Arc::from(data));
            }
        }
    }
    Some(m)
}

/// Resolves every frame of `raw`. Each stack starts with a root frame for its process, and a
/// second one for the thread's name when it differs from the process's.
pub fn symbolize(
    raw: &RawProfile,
    modules: &ModuleTable,
    meta: ProfileMeta,
    kernel: Option<&KernelSymbols>,
) -> SymbolizedProfile {
    let mut symbolizer = Symbolizer::new();
    let mut table = FrameTable::default();
    // Expansion of each raw frame into display frames, root-most first.
    let mut expanded: Vec<Option<Vec<u32>>> = vec![None; raw.frames.len()];

    let mut expand = |i: usize, table: &mut FrameTable| -> Vec<u32> {
        match raw.frames[i] {
            FrameKey::Marker(m) => vec![table.intern(Frame::bare(m.name(), FrameKind::Marker))],
            FrameKey::Unmapped(_) => {
                vec![table.intern(Frame::bare("[unknown]", FrameKind::Unresolved))]
            }
            FrameKey::Kernel(addr) => {
                let name = kernel.and_then(|k| k.lookup(addr)).unwrap_or("[kernel]");
                vec![table.intern(Frame::bare(name, FrameKind::Kernel))]
            }
            FrameKey::Module { module, .. } => {
                let offset = raw.frames[i].lookup_offset().map(|(_, o)| o).unwrap_or(0);
                let Some(m) = modules.get(module) else {
                    return vec![table.intern(Frame::bare("[unknown]", FrameKind::Unresolved))];
                };
                let elf = m.bytes.as_ref().and_then(|bytes| {
                    symbolizer.module_with(u64::from(module.0), || {
                        load_module(&m.short_name, bytes, &m.path)
                    })
                });
                let resolved = elf
                    .as_ref()
                    .map(|e| (e.lookup(offset), e.file_offset_to_svma(offset)));
                match resolved {
                    Some((Resolved::Frames(frames), _)) => frames
                        .iter()
                        .rev()
                        .map(|f| table.intern(f.to_core_frame(Some(&m.short_name))))
                        .collect(),
                    Some((Resolved::Unknown { svma, .. }, svma2)) => {
                        let rel = svma.or(svma2).unwrap_or(offset);
                        let mut f = Frame::bare(
                            format!("{}+{rel:#x}", m.short_name),
                            FrameKind::Unresolved,
                        );
                        f.module = Some(m.short_name.clone());
                        vec![table.intern(f)]
                    }
                    None => {
                        let mut f = Frame::bare(
                            format!("{}+{offset:#x}", m.short_name),
                            FrameKind::Unresolved,
                        );
                        f.module = Some(m.short_name.clone());
                        vec![table.intern(f)]
                    }
                }
            }
        }
    };

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
        frames.push(table.intern(Frame::bare(process.clone(), FrameKind::Root)));
        if !thread.name.is_empty() && thread.name != process {
            frames.push(table.intern(Frame::bare(thread.name.clone(), FrameKind::Root)));
        }
        raw.stack_frames(s.stack, &mut ids);
        for id in &ids {
            let i = id.0 as usize;
            if expanded[i].is_none() {
                expanded[i] = Some(expand(i, &mut table));
            }
            frames.extend(expanded[i].iter().flatten());
        }
        stacks.push(SampledStack {
            frames,
            samples: s.counts.samples,
            period: s.counts.period,
        });
    }
    SymbolizedProfile {
        meta,
        frames: table.frames,
        stacks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
