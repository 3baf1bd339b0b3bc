//! What unwinding needs of a module: its unwind sections (`.eh_frame`, `.eh_frame_hdr`,
//! `.debug_frame`, ...) and load segments, parsed once from the bytes the shared
//! [`sprof_core::ModuleTable`] holds, and the framehop module built from them per mapping.

use std::ops::{Deref, Range};

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSection};
use sprof_core::{FileBytes, Mapping};

/// A slice of a module's bytes that framehop can hold on to (sharing, not copying, them).
#[derive(Clone)]
pub struct SectionBytes {
    data: FileBytes,
    range: Range<usize>,
}

impl Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[self.range.clone()]
    }
}

/// What unwinding needs of an ELF file, computed once per module.
#[derive(Debug, Clone, Default)]
pub struct UnwindSections {
    /// (name, SVMA range, file range) of the sections framehop asks for.
    sections: Vec<(&'static str, Range<u64>, Range<usize>)>,
    /// PT_LOAD segments, in program header order.
    segments: Vec<Segment>,
    /// Whether the file has any call frame information at all.
    pub has_cfi: bool,
}

/// One PT_LOAD segment.
#[derive(Debug, Clone, Copy)]
struct Segment {
    p_offset: u64,
    p_filesz: u64,
    p_vaddr: u64,
    executable: bool,
}

const SECTIONS: [&str; 5] = [
    ".eh_frame",
    ".eh_frame_hdr",
    ".debug_frame",
    ".text",
    ".got",
];

impl UnwindSections {
    pub fn parse(data: &[u8]) -> Option<UnwindSections> {
        let file = ElfFile64::<object::Endianness>::parse(data).ok()?;
        let endian = file.endian();
        let mut out = UnwindSections::default();
        for ph in file.elf_program_headers() {
            if ph.p_type(endian) == object::elf::PT_LOAD {
                out.segments.push(Segment {
                    p_offset: ph.p_offset(endian),
                    p_filesz: ph.p_filesz(endian),
                    p_vaddr: ph.p_vaddr(endian),
                    executable: ph.p_flags(endian) & object::elf::PF_X != 0,
                });
            }
        }
        for name in SECTIONS {
            let Some(section) = file.section_by_name(name) else {
                continue;
            };
            let svma = section.address()..section.address().saturating_add(section.size());
            // Compressed or NOBITS sections have no usable file range; framehop reads them raw.
            let file_range = match section.compressed_file_range() {
                Ok(r) if r.format == object::CompressionFormat::None => {
                    let start = r.offset as usize;
                    let end = start.saturating_add(r.uncompressed_size as usize);
                    (end <= data.len()).then_some(start..end)
                }
                _ => None,
            };
            let Some(file_range) = file_range else {
                continue;
            };
            if matches!(name, ".eh_frame" | ".debug_frame") && !file_range.is_empty() {
                out.has_cfi = true;
            }
            out.sections.push((name, svma, file_range));
        }
        Some(out)
    }

    /// The SVMA that a mapping starting at file offset `offset` (page-aligned, as every
    /// mapping's is) is loaded at, through the PT_LOAD segment it maps. The segment's start
    /// is rounded down to its page, because `p_offset` need not be page-aligned.
    ///
    /// With the rounding, two segments can claim the same page: lld (Rust's default linker)
    /// packs segments back to back in the file, so the executable segment at, say,
    /// `p_offset` 0x13850 starts in the last page of the read-only segment before it
    /// (0..0x13850), and the kernel maps that page twice: at the end of the read-only
    /// mapping and at the start of the executable one (offset 0x13000). The two segments put
    /// that page at different SVMAs (`p_vaddr - p_offset` differs between them), so the
    /// choice matters: the segment whose permissions match the mapping's wins
    /// (`executable`), and among those the later one, whose first page the mapping starts
    /// at, rather than the earlier one's last page.
    pub fn offset_to_svma(&self, offset: u64, executable: bool) -> Option<u64> {
        self.segments
            .iter()
            .filter(|s| {
                let page_start = s.p_offset & !0xfff;
                page_start <= offset && offset < s.p_offset.saturating_add(s.p_filesz.max(1))
            })
            .max_by_key(|s| (s.executable == executable, s.p_offset))
            .map(|s| s.p_vaddr.wrapping_add(offset).wrapping_sub(s.p_offset))
    }

    fn info(&self, data: &FileBytes) -> SectionInfo {
        SectionInfo {
            sections: self.clone(),
            data: data.clone(),
        }
    }
}

/// framehop's view of a module's sections.
struct SectionInfo {
    sections: UnwindSections,
    data: FileBytes,
}

impl SectionInfo {
    fn find(&self, name: &[u8]) -> Option<&(&'static str, Range<u64>, Range<usize>)> {
        self.sections
            .sections
            .iter()
            .find(|(n, _, _)| n.as_bytes() == name)
    }
}

impl framehop::ModuleSectionInfo<SectionBytes> for SectionInfo {
    fn base_svma(&self) -> u64 {
        0
    }
    fn section_svma_range(&mut self, name: &[u8]) -> Option<Range<u64>> {
        self.find(name).map(|(_, svma, _)| svma.clone())
    }
    fn section_data(&mut self, name: &[u8]) -> Option<SectionBytes> {
        self.find(name).map(|(_, _, range)| SectionBytes {
            data: self.data.clone(),
            range: range.clone(),
        })
    }
}

/// A framehop module for a file whose bytes are `bytes`, mapped at `mapping`, if it has
/// unwind sections.
pub fn framehop_module(
    path: &str,
    bytes: &FileBytes,
    unwind: &UnwindSections,
    mapping: &Mapping,
) -> Option<framehop::Module<SectionBytes>> {
    let svma = unwind.offset_to_svma(mapping.file_offset, mapping.executable)?;
    let base_avma = mapping.start.wrapping_sub(svma);
    Some(framehop::Module::new(
        path.to_string(),
        mapping.start..mapping.end,
        base_avma,
        unwind.info(bytes),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(p_offset: u64, p_filesz: u64, p_vaddr: u64, executable: bool) -> Segment {
        Segment {
            p_offset,
            p_filesz,
            p_vaddr,
            executable,
        }
    }

    #[test]
    fn a_mapping_starting_in_a_page_two_segments_share_gets_the_segment_it_maps() {
        // rustc/lld's layout (readelf -lW of a `rustc -O` binary): R at 0..0x13850, R E from
        // 0x13850 at vaddr 0x14850, RW from 0x519a0 at 0x539a0. /proc/PID/maps shows the
        // executable mapping at offset 0x13000, i.e. SVMA 0x14000, not 0x13000.
        let u = UnwindSections {
            segments: vec![
                seg(0, 0x13850, 0, false),
                seg(0x13850, 0x3e150, 0x14850, true),
                seg(0x519a0, 0x28b8, 0x539a0, false),
            ],
            ..UnwindSections::default()
        };
        assert_eq!(u.offset_to_svma(0x13000, true), Some(0x14000));
        assert_eq!(u.offset_to_svma(0, false), Some(0));
        assert_eq!(u.offset_to_svma(0x51000, false), Some(0x53000));
        // A mapping split inside the executable segment.
        assert_eq!(u.offset_to_svma(0x20000, true), Some(0x21000));
        assert_eq!(u.offset_to_svma(0x60000, true), None);
        // GNU ld's layout: page-aligned segments, nothing shared.
        let gnu = UnwindSections {
            segments: vec![seg(0, 0x6f0, 0, false), seg(0x1000, 0x1a5, 0x1000, true)],
            ..UnwindSections::default()
        };
        assert_eq!(gnu.offset_to_svma(0x1000, true), Some(0x1000));
    }
}
