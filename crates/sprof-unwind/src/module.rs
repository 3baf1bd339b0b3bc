//! The module table: every distinct file (or vdso) mapped as code by any profiled process,
//! loaded once and shared by all processes and threads that map it.
//!
//! A module's bytes are read when it is first mapped, while the process is alive: a deleted
//! or replaced binary is reachable only through the live process, and symbolization happens
//! after the target may have exited.

use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::sync::Arc;

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSection};
use sprof_core::{Mapping, MappingKind, ModuleId, Pid};

/// What makes two mappings the same file: device and inode when the kernel gives them, the
/// path otherwise. Never the path alone when an inode is known: a path can be replaced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileIdentity {
    Inode {
        dev_major: u32,
        dev_minor: u32,
        inode: u64,
    },
    Path(String),
    Vdso,
}

impl FileIdentity {
    pub fn of(mapping: &Mapping) -> FileIdentity {
        match mapping.kind {
            MappingKind::Vdso => FileIdentity::Vdso,
            _ if mapping.inode != 0 => FileIdentity::Inode {
                dev_major: mapping.dev_major,
                dev_minor: mapping.dev_minor,
                inode: mapping.inode,
            },
            _ => FileIdentity::Path(mapping.path.clone()),
        }
    }
}

/// Reads the bytes of a mapped file. The live implementation goes through `/proc/PID/…`;
/// tests hand over fixture files.
pub trait ModuleLoader {
    fn load(&mut self, pid: Pid, mapping: &Mapping) -> Option<Arc<[u8]>>;
}

/// A slice of a module's bytes that framehop can hold on to.
#[derive(Clone)]
pub struct SectionBytes {
    data: Arc<[u8]>,
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
    /// PT_LOAD segments: (file offset, file size, vaddr).
    segments: Vec<(u64, u64, u64)>,
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
        let endian = file.endian();
        let mut out = UnwindSections::default();
        for ph in file.elf_program_headers() {
            if ph.p_type(endian) == object::elf::PT_LOAD {
                out.segments
                    .push((ph.p_offset(endian), ph.p_filesz(endian), ph.p_vaddr(endian)));
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

    /// The SVMA a file offset is loaded at, through the PT_LOAD segment that contains it.
    /// The segment's start is rounded down to its page, because a mapping's offset is
    /// page-aligned while `p_offset` need not be.
    pub fn offset_to_svma(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find_map(|&(p_offset, p_filesz, p_vaddr)| {
                let page_start = p_offset & !0xfff;
                (page_start <= offset && offset < p_offset.saturating_add(p_filesz.max(1)))
                    .then(|| p_vaddr.wrapping_add(offset).wrapping_sub(p_offset))
            })
    }

    fn info(&self, data: &Arc<[u8]>) -> SectionInfo {
        SectionInfo {
            sections: self.clone(),
            data: data.clone(),
        }
    }
}

/// framehop's view of a module's sections.
struct SectionInfo {
    sections: UnwindSections,
    data: Arc<[u8]>,
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

/// One module in the table.
#[derive(Clone)]
pub struct Module {
    pub path: String,
    pub short_name: String,
    pub identity: FileIdentity,
    /// The whole file, when it could be read.
    pub bytes: Option<Arc<[u8]>>,
    pub unwind: Option<UnwindSections>,
}

impl Module {
    /// A framehop module for this file mapped at `mapping`, if it has unwind sections.
    pub fn framehop_module(&self, mapping: &Mapping) -> Option<framehop::Module<SectionBytes>> {
        let (bytes, unwind) = (self.bytes.as_ref()?, self.unwind.as_ref()?);
        let svma = unwind.offset_to_svma(mapping.file_offset)?;
        let base_avma = mapping.start.wrapping_sub(svma);
        Some(framehop::Module::new(
            self.path.clone(),
            mapping.start..mapping.end,
            base_avma,
            unwind.info(bytes),
        ))
    }
}

/// All modules seen in a session, indexed by [`ModuleId`].
#[derive(Default)]
pub struct ModuleTable {
    modules: Vec<Module>,
    ids: HashMap<FileIdentity, ModuleId>,
}

impl ModuleTable {
    /// The module for `mapping`, loading it on first sight.
    pub fn get_or_load(
        &mut self,
        pid: Pid,
        mapping: &Mapping,
        loader: &mut dyn ModuleLoader,
    ) -> ModuleId {
        let identity = FileIdentity::of(mapping);
        if let Some(&id) = self.ids.get(&identity) {
            return id;
        }
        let bytes = loader.load(pid, mapping);
        let unwind = bytes.as_deref().and_then(UnwindSections::parse);
        let short_name = match mapping.kind {
            MappingKind::File => mapping.short_name().to_string(),
            _ => mapping.path.clone(),
        };
        let id = ModuleId(self.modules.len() as u32);
        self.modules.push(Module {
            path: mapping.path.clone(),
            short_name,
            identity: identity.clone(),
            bytes,
            unwind,
        });
        self.ids.insert(identity, id);
        id
    }

    pub fn get(&self, id: ModuleId) -> Option<&Module> {
        self.modules.get(id.0 as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = (ModuleId, &Module)> {
        self.modules
            .iter()
            .enumerate()
            .map(|(i, m)| (ModuleId(i as u32), m))
    }
}
