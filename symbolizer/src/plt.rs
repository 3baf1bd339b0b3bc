//! Names for PLT stubs (`labs@plt`), which no symbol table covers.
//!
//! This module owns the x86_64 rule binutils (`elf_x86_64_get_synthetic_symtab`) and perf
//! use: every entry of `.plt`, `.plt.sec` (the stubs under IBT) and `.plt.got` jumps through
//! a GOT slot with `jmp *disp32(%rip)`; the dynamic relocation (`JUMP_SLOT`, or `GLOB_DAT`
//! for `.plt.got`) of that slot names the function. Decoding the jump rather than counting
//! entries in relocation order works for lazy, `-z now` and IBT layouts alike, and an entry
//! that jumps elsewhere (PLT0, the IBT `.plt` that only pushes and jumps to PLT0) is simply
//! left unnamed.

use std::collections::HashMap;

use crate::demangle::demangle;
use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationTarget};

/// The sections that hold PLT stubs.
const PLT_SECTIONS: [&str; 3] = [".plt", ".plt.sec", ".plt.got"];

/// How far into an entry the `jmp *disp32(%rip)` may start: after `endbr64` (4 bytes) and a
/// `bnd` prefix (1 byte).
const JMP_SEARCH: usize = 6;

#[derive(Debug, Clone)]
struct Stub {
    addr: u64,
    end: u64,
    name: String,
}

/// The PLT stubs of one file, sorted by address.
#[derive(Debug, Clone, Default)]
pub(crate) struct PltTable {
    stubs: Vec<Stub>,
}

impl PltTable {
    /// Synthesizes `name@plt` entries; empty for files that are not x86_64 or have no PLT.
    pub(crate) fn build(obj: &object::File<'_>) -> PltTable {
        if obj.architecture() != object::Architecture::X86_64 {
            return PltTable::default();
        }
        let slots = got_slot_names(obj);
        if slots.is_empty() {
            return PltTable::default();
        }
        let mut stubs = Vec::new();
        for section in obj.sections() {
            let Ok(name) = section.name() else { continue };
            if !PLT_SECTIONS.contains(&name) {
                continue;
            }
            let Ok(code) = section.data() else { continue };
            let entry = entry_size(name, code);
            for (i, bytes) in code.chunks(entry).enumerate() {
                let Some(addr) = (i as u64)
                    .checked_mul(entry as u64)
                    .and_then(|o| section.address().checked_add(o))
                else {
                    break;
                };
                let Some(slot) = jump_slot(addr, bytes) else {
                    continue;
                };
                if let Some(func) = slots.get(&slot) {
                    stubs.push(Stub {
                        addr,
                        end: addr.saturating_add(bytes.len() as u64),
                        name: format!("{}@plt", demangle(func)),
                    });
                }
            }
        }
        stubs.sort_by_key(|s| s.addr);
        stubs.dedup_by_key(|s| s.addr);
        PltTable { stubs }
    }

    /// The synthesized name of the stub covering `svma`.
    pub(crate) fn lookup(&self, svma: u64) -> Option<&str> {
        let idx = self.stubs.partition_point(|s| s.addr <= svma);
        let stub = self.stubs.get(idx.checked_sub(1)?)?;
        (svma < stub.end).then_some(stub.name.as_str())
    }

    pub(crate) fn len(&self) -> usize {
        self.stubs.len()
    }
}

/// Bytes per entry: 16 on x86_64, except a `.plt.got` built without IBT, whose entries are
/// `jmp *disp32(%rip); xchg %ax,%ax` (8 bytes). IBT entries all start with `endbr64`.
fn entry_size(section_name: &str, code: &[u8]) -> usize {
    const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
    if section_name == ".plt.got" && !code.starts_with(&ENDBR64) {
        8
    } else {
        16
    }
}

/// The GOT slot an entry at `addr` jumps through, from its `ff 25 disp32` instruction.
fn jump_slot(addr: u64, bytes: &[u8]) -> Option<u64> {
    let last = JMP_SEARCH.min(bytes.len().saturating_sub(6));
    let pos = (0..=last).find(|&p| bytes.get(p..p + 2) == Some(&[0xff, 0x25][..]))?;
    let disp = i32::from_le_bytes(bytes.get(pos + 2..pos + 6)?.try_into().ok()?);
    // The displacement is relative to the end of the 6-byte instruction.
    let next = addr.checked_add(pos as u64 + 6)?;
    Some(next.wrapping_add_signed(i64::from(disp)))
}

/// Dynamic symbol names by the GOT address their relocation fills.
fn got_slot_names(obj: &object::File<'_>) -> HashMap<u64, String> {
    let mut slots = HashMap::new();
    let (Some(relocs), Some(dynsym)) = (obj.dynamic_relocations(), obj.dynamic_symbol_table())
    else {
        return slots;
    };
    for (offset, reloc) in relocs {
        let RelocationTarget::Symbol(idx) = reloc.target() else {
            continue;
        };
        let Ok(sym) = dynsym.symbol_by_index(idx) else {
            continue;
        };
        match sym.name() {
            Ok(name) if !name.is_empty() => {
                slots.insert(offset, name.to_string());
            }
            _ => {}
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_slot_decodes_plain_ibt_and_bnd_entries() {
        // jmp *0x2fe2(%rip) at 0x1030: slot = 0x1036 + 0x2fe2.
        let plain = [
            0xff, 0x25, 0xe2, 0x2f, 0, 0, 0x68, 0, 0, 0, 0, 0xe9, 0, 0, 0, 0,
        ];
        assert_eq!(jump_slot(0x1030, &plain), Some(0x4018));
        // endbr64; bnd jmp *-0x10(%rip)
        let ibt = [
            0xf3, 0x0f, 0x1e, 0xfa, 0xf2, 0xff, 0x25, 0xf0, 0xff, 0xff, 0xff, 0x0f, 0x1f, 0x44, 0,
            0,
        ];
        assert_eq!(jump_slot(0x2000, &ibt), Some(0x200b - 0x10));
        // IBT .plt: endbr64; push; bnd jmp rel32 (no GOT reference).
        let push = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x68, 0, 0, 0, 0, 0xf2, 0xe9, 0, 0, 0, 0, 0x90,
        ];
        assert_eq!(jump_slot(0x2000, &push), None);
        assert_eq!(jump_slot(0x2000, &[0xff, 0x25, 0]), None, "truncated");
        assert_eq!(jump_slot(0x2000, &[]), None);
    }
}
