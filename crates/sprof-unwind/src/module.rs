//! What unwinding needs of a module: its unwind sections (`.eh_frame`, `.eh_frame_hdr`,
//! `.debug_frame`, ...), parsed once from the bytes the shared [`sprof_core::ModuleTable`]
//! holds, and the framehop module built from them and the table's load segments per mapping.

use std::ops::{Deref, Range};

use object::read::elf::ElfFile64;
use object::{Object, ObjectSection};
use sprof_core::{FileBytes, Mapping, Segments};

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
    /// Whether the file has any call frame information at all.
    pub has_cfi: bool,
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
        let mut out = UnwindSections::default();
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

/// A framehop module for a file whose bytes are `bytes` and load segments `segments`,
/// mapped at `mapping`, if it has unwind sections.
pub fn framehop_module(
    path: &str,
    bytes: &FileBytes,
    unwind: &UnwindSections,
    segments: &Segments,
    mapping: &Mapping,
) -> Option<framehop::Module<SectionBytes>> {
    // lld's packed segments make the choice of segment matter: see `Segments::mapping_svma`.
    let svma = segments.mapping_svma(mapping.file_offset, mapping.executable)?;
    let base_avma = mapping.start.wrapping_sub(svma);
    Some(framehop::Module::new(
        path.to_string(),
        mapping.start..mapping.end,
        base_avma,
        unwind.info(bytes),
    ))
}
