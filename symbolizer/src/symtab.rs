//! ELF symbol tables (`.symtab`, `.dynsym`) as sorted address ranges.
//!
//! This module owns the "which function symbol covers this address" rule: the function
//! symbol with the greatest address `<=` the SVMA, if the address is inside its size (or, for
//! a zero-size symbol, before the next symbol and the end of its section). Tables are sorted
//! once when the module is parsed; each lookup is a binary search. Names are not copied: each
//! entry keeps the range of its name inside the file's bytes.

use std::borrow::Cow;

use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SectionIndex, SymbolKind};
use sprof_core::FileBytes;

/// How many earlier entries a lookup checks for an enclosing symbol, when the nearest symbol
/// does not cover the address (a sized symbol nested inside a larger one).
const ENCLOSING_SCAN: usize = 4;
/// Most symbols one table may hold: large programs have a few hundred thousand
/// (librustc_driver ~300k); a table beyond this is crafted, and its entries would cost
/// more memory than the file. Such a table is refused whole, the reason reported.
pub const MAX_SYMBOLS: usize = 4_000_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    /// Exclusive end of the range this symbol is accepted for.
    end: u64,
    name_start: usize,
    name_len: u32,
}

/// One symbol table, sorted by address, naming function symbols only.
#[derive(Debug, Clone)]
pub(crate) struct SymbolTable {
    /// The bytes of the file the names point into.
    data: FileBytes,
    entries: Vec<Entry>,
    /// Why the table was refused, when a bound refused it.
    pub(crate) refused: Option<String>,
}

/// Which table of an ELF file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableKind {
    Static,
    Dynamic,
}

struct Candidate {
    addr: u64,
    size: u64,
    global: bool,
    section_end: u64,
    name_start: usize,
    name_len: u32,
}

impl SymbolTable {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    fn len_for_test(&self) -> usize {
        self.entries.len()
    }

    /// Reads the function symbols of one table of `obj`, whose bytes are `data`.
    pub(crate) fn build(data: &FileBytes, obj: &object::File<'_>, kind: TableKind) -> Self {
        Self::build_bounded(data, obj, kind, MAX_SYMBOLS)
    }

    /// [`SymbolTable::build`], refusing a table of more than `max_symbols` symbols.
    fn build_bounded(
        data: &FileBytes,
        obj: &object::File<'_>,
        kind: TableKind,
        max_symbols: usize,
    ) -> Self {
        // why: STT_NOTYPE symbols count only when they sit in executable code (hand-written
        // assembly often leaves the type out); `SectionKind` would call a NOBITS `.text` of a
        // debug-only file "uninitialized data", so look at SHF_EXECINSTR instead.
        let mut exec_sections: Vec<Option<(u64, u64)>> = Vec::new();
        for section in obj.sections() {
            let idx = section.index().0;
            if exec_sections.len() <= idx {
                exec_sections.resize(idx + 1, None);
            }
            let exec = matches!(section.flags(), SectionFlags::Elf { sh_flags }
                if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0);
            if exec {
                let end = section.address().saturating_add(section.size());
                exec_sections[idx] = Some((section.address(), end));
            }
        }
        let section_range = |idx: Option<SectionIndex>| -> Option<(u64, u64)> {
            exec_sections.get(idx?.0).copied().flatten()
        };

        let base = data.as_ptr() as usize;
        let mut candidates = Vec::new();
        let symbols = match kind {
            TableKind::Static => obj.symbols(),
            TableKind::Dynamic => obj.dynamic_symbols(),
        };
        // Counted before anything is kept: iterating costs no memory, keeping does.
        let count = match kind {
            TableKind::Static => obj.symbols().count(),
            TableKind::Dynamic => obj.dynamic_symbols().count(),
        };
        if count > max_symbols {
            let table = match kind {
                TableKind::Static => ".symtab",
                TableKind::Dynamic => ".dynsym",
            };
            return SymbolTable {
                data: data.clone(),
                entries: Vec::new(),
                refused: Some(format!(
                    "{table} has {count} symbols, more than the limit of {max_symbols}"
                )),
            };
        }
        for sym in symbols {
            if sym.is_undefined() || sym.address() == 0 {
                continue;
            }
            let range = section_range(sym.section_index());
            let accepted = match sym.kind() {
                SymbolKind::Text => true,
                SymbolKind::Unknown => range.is_some(),
                _ => false,
            };
            if !accepted {
                continue;
            }
            let Ok(name) = sym.name_bytes() else { continue };
            if name.is_empty() {
                continue;
            }
            // why: keep an offset instead of a String; the name bytes are inside `data`
            // (object reads the string table in place), checked here before storing.
            let start = (name.as_ptr() as usize).wrapping_sub(base);
            let Ok(len) = u32::try_from(name.len()) else {
                continue;
            };
            if start
                .checked_add(name.len())
                .is_none_or(|end| end > data.len())
            {
                continue;
            }
            candidates.push(Candidate {
                addr: sym.address(),
                size: sym.size(),
                global: sym.is_global(),
                section_end: range.map_or(u64::MAX, |(_, end)| end),
                name_start: start,
                name_len: len,
            });
        }

        // Sized symbols first, then global ones: of several aliases at one address, keep the
        // most informative.
        candidates.sort_by_key(|c| (c.addr, c.size == 0, !c.global));
        candidates.dedup_by_key(|c| c.addr);

        let mut entries = Vec::with_capacity(candidates.len());
        for (i, c) in candidates.iter().enumerate() {
            let end = if c.size > 0 {
                c.addr.saturating_add(c.size)
            } else {
                let next = candidates.get(i + 1).map_or(u64::MAX, |n| n.addr);
                next.min(c.section_end)
            };
            entries.push(Entry {
                addr: c.addr,
                end,
                name_start: c.name_start,
                name_len: c.name_len,
            });
        }
        SymbolTable {
            data: data.clone(),
            entries,
            refused: None,
        }
    }

    /// The raw (mangled) name and start address of the function symbol covering `svma`.
    pub(crate) fn lookup(&self, svma: u64) -> Option<(Cow<'_, str>, u64)> {
        let idx = self.entries.partition_point(|e| e.addr <= svma);
        let nearest = idx.checked_sub(1)?;
        let lowest = nearest.saturating_sub(ENCLOSING_SCAN);
        let entry = self.entries[lowest..=nearest]
            .iter()
            .rev()
            .find(|e| svma < e.end)?;
        let end = entry.name_start.checked_add(entry.name_len as usize)?;
        let bytes = self.data.get(entry.name_start..end)?;
        let name = String::from_utf8_lossy(bytes);
        Some((name, entry.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The red-team review's symbol bomb, scaled down: a table over the bound is refused
    /// whole, with the reason, before anything is kept; within it, it is read.
    #[test]
    fn a_table_over_the_bound_is_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("sprof-symtab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src: String = (0..300)
            .map(|i| format!("int f{i}(int x) {{ return x * {i}; }}\n"))
            .chain(["int main(void) { return f1(2); }\n".to_string()])
            .collect();
        std::fs::write(dir.join("many.c"), src).unwrap();
        let bin = dir.join("many");
        let st = std::process::Command::new("cc")
            .args(["-O0", "-o"])
            .arg(&bin)
            .arg(dir.join("many.c"))
            .status()
            .unwrap();
        assert!(st.success());
        let data = FileBytes::from(std::fs::read(&bin).unwrap());
        let obj = object::File::parse(&data[..]).unwrap();
        let refused = SymbolTable::build_bounded(&data, &obj, TableKind::Static, 100);
        assert!(refused.is_empty());
        let why = refused.refused.unwrap();
        assert!(
            why.contains(".symtab has") && why.contains("limit of 100"),
            "{why}"
        );
        let kept = SymbolTable::build_bounded(&data, &obj, TableKind::Static, 10_000);
        assert!(kept.refused.is_none() && kept.len_for_test() > 300);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
