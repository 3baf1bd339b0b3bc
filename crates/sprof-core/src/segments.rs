//! A module's ELF load segments (`PT_LOAD` program headers) and every translation between
//! file offsets, link-time addresses (SVMAs) and a mapping's addresses that goes through them.
//!
//! One table, parsed once per module when the [`ModuleTable`](crate::ModuleTable) loads its
//! bytes, serves the unwinder (a mapping's base for framehop), the symbolizer (a frame's file
//! offset to its SVMA) and the Python reader (the interpreter's load bias), so a rule about
//! how linkers lay segments out is written once: see [`Segments::mapping_svma`] for lld's.

use object::{Object, ObjectSegment, SegmentFlags};

/// Page size the mapping rules round to (x86_64).
const PAGE_MASK: u64 = 0xfff;

/// One `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// `p_offset`: where the segment's bytes start in the file.
    pub offset: u64,
    /// `p_filesz`: bytes backed by the file.
    pub filesz: u64,
    /// `p_vaddr`: the link-time address of its first byte.
    pub vaddr: u64,
    /// `p_memsz`: bytes in memory (the rest past `filesz` is zero-filled, `.bss`).
    pub memsz: u64,
    /// `PF_X`.
    pub executable: bool,
}

impl Segment {
    /// `[offset, offset + filesz)`, `None` when it overflows (a malformed header).
    fn file_range(&self) -> Option<std::ops::Range<u64>> {
        Some(self.offset..self.offset.checked_add(self.filesz)?)
    }
}

/// The `PT_LOAD` segments of one ELF file, in program header order. Empty for bytes that
/// are not ELF: every translation then answers `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segments {
    loads: Vec<Segment>,
}

impl Segments {
    /// The load segments of an ELF file (32- or 64-bit); empty if `bytes` are not ELF.
    pub fn parse(bytes: &[u8]) -> Segments {
        match object::File::parse(bytes) {
            Ok(file) => Segments::of(&file),
            Err(_) => Segments::default(),
        }
    }

    /// The load segments of an already parsed file (`object` yields only `PT_LOAD`s).
    pub fn of(file: &object::File<'_>) -> Segments {
        if file.format() != object::BinaryFormat::Elf {
            return Segments::default();
        }
        let loads = file
            .segments()
            .map(|seg| {
                let (offset, filesz) = seg.file_range();
                Segment {
                    offset,
                    filesz,
                    vaddr: seg.address(),
                    memsz: seg.size(),
                    executable: matches!(seg.flags(), SegmentFlags::Elf { p_flags }
                        if p_flags & object::elf::PF_X != 0),
                }
            })
            .collect();
        Segments { loads }
    }

    /// No segments (bytes that are not ELF), as a constant.
    pub const fn empty() -> Segments {
        Segments { loads: Vec::new() }
    }

    /// A table of the given segments (tests, and files described by other means).
    pub fn new(loads: Vec<Segment>) -> Segments {
        Segments { loads }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.loads.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.loads.is_empty()
    }

    /// The SVMA that a mapping starting at file offset `offset` (page-aligned, as every
    /// mapping's is) is loaded at, through the segment it maps. The segment's start is
    /// rounded down to its page, because `p_offset` need not be page-aligned.
    ///
    /// With the rounding, two segments can claim the same page: lld (Rust's default linker,
    /// and clang's with `-fuse-ld=lld`) packs segments back to back in the file, so the
    /// executable segment at, say, `p_offset` 0x13850 starts in the last page of the
    /// read-only segment before it (0..0x13850), and the kernel maps that page twice: at the
    /// end of the read-only mapping and at the start of the executable one (offset 0x13000).
    /// The two segments put that page at different SVMAs (`p_vaddr - p_offset` differs
    /// between them), so the choice matters: the segment whose permissions match the
    /// mapping's wins (`executable`), and among those the later one, whose first page the
    /// mapping starts at, rather than the earlier one's last page.
    pub fn mapping_svma(&self, offset: u64, executable: bool) -> Option<u64> {
        self.loads
            .iter()
            .filter(|s| {
                let page_start = s.offset & !PAGE_MASK;
                page_start <= offset && offset < s.offset.saturating_add(s.filesz.max(1))
            })
            .max_by_key(|s| (s.executable == executable, s.offset))
            .map(|s| s.vaddr.wrapping_add(offset).wrapping_sub(s.offset))
    }

    /// The load bias of a mapping that starts at `start` and maps file offset `offset`
    /// (`executable`: its permissions): what to add to an SVMA to get the address it runs at.
    pub fn load_bias(&self, start: u64, offset: u64, executable: bool) -> Option<u64> {
        Some(start.wrapping_sub(self.mapping_svma(offset, executable)?))
    }

    /// The SVMA of the byte at file offset `offset` (a frame's address already translated to
    /// the file), through the segment whose file range holds it: exact ranges, no page
    /// rounding, so segments packed by lld do not overlap; an executable segment wins if
    /// several do.
    pub fn file_offset_to_svma(&self, offset: u64) -> Option<u64> {
        let mut found: Option<&Segment> = None;
        for seg in &self.loads {
            if seg.file_range().is_some_and(|r| r.contains(&offset)) {
                if seg.executable {
                    found = Some(seg);
                    break;
                }
                found.get_or_insert(seg);
            }
        }
        let seg = found?;
        (offset - seg.offset).checked_add(seg.vaddr)
    }

    /// The inverse of [`Segments::file_offset_to_svma`]: where in the file the bytes for an
    /// SVMA are (for example to turn a symbol address into a lookup address).
    pub fn svma_to_file_offset(&self, svma: u64) -> Option<u64> {
        let seg = self
            .loads
            .iter()
            .find(|seg| seg.vaddr <= svma && svma - seg.vaddr < seg.filesz)?;
        (svma - seg.vaddr).checked_add(seg.offset)
    }

    /// The `len` file bytes of `bytes` (the whole file) at SVMA `vaddr`, when all of them are
    /// backed by one segment's file range (not `.bss`).
    pub fn file_bytes_at<'a>(&self, bytes: &'a [u8], vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let end = vaddr.checked_add(len)?;
        let seg = self.loads.iter().find(|l| {
            vaddr >= l.vaddr && l.vaddr.checked_add(l.filesz).is_some_and(|e| end <= e)
        })?;
        let off = usize::try_from(seg.offset.checked_add(vaddr - seg.vaddr)?).ok()?;
        bytes.get(off..off.checked_add(usize::try_from(len).ok()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(offset: u64, filesz: u64, vaddr: u64, executable: bool) -> Segment {
        Segment {
            offset,
            filesz,
            vaddr,
            memsz: filesz,
            executable,
        }
    }

    #[test]
    fn a_mapping_starting_in_a_page_two_segments_share_gets_the_segment_it_maps() {
        // rustc/lld's layout (readelf -lW of a `rustc -O` binary): R at 0..0x13850, R E from
        // 0x13850 at vaddr 0x14850, RW from 0x519a0 at 0x539a0. /proc/PID/maps shows the
        // executable mapping at offset 0x13000, i.e. SVMA 0x14000, not 0x13000.
        let lld = Segments::new(vec![
            seg(0, 0x13850, 0, false),
            seg(0x13850, 0x3e150, 0x14850, true),
            seg(0x519a0, 0x28b8, 0x539a0, false),
        ]);
        assert_eq!(lld.mapping_svma(0x13000, true), Some(0x14000));
        assert_eq!(
            lld.load_bias(0x7f00_0001_4000, 0x13000, true),
            Some(0x7f00_0000_0000)
        );
        assert_eq!(lld.mapping_svma(0, false), Some(0));
        assert_eq!(lld.mapping_svma(0x51000, false), Some(0x53000));
        // A mapping split inside the executable segment.
        assert_eq!(lld.mapping_svma(0x20000, true), Some(0x21000));
        assert_eq!(lld.mapping_svma(0x60000, true), None);
        // A frame's exact file offset needs no tie-break: the ranges do not overlap.
        assert_eq!(lld.file_offset_to_svma(0x13850), Some(0x14850));
        assert_eq!(lld.file_offset_to_svma(0x1384f), Some(0x1384f));
        assert_eq!(lld.svma_to_file_offset(0x14850), Some(0x13850));
        assert_eq!(lld.svma_to_file_offset(0x14000), None);
        // GNU ld's layout: page-aligned segments, nothing shared.
        let gnu = Segments::new(vec![
            seg(0, 0x6f0, 0, false),
            seg(0x1000, 0x1a5, 0x1000, true),
        ]);
        assert_eq!(gnu.mapping_svma(0x1000, true), Some(0x1000));
        assert_eq!(gnu.file_offset_to_svma(0x1010), Some(0x1010));
    }

    #[test]
    fn file_bytes_are_those_of_one_segment_and_malformed_headers_answer_none() {
        let bytes: Vec<u8> = (0..=255).collect();
        let t = Segments::new(vec![seg(0x10, 0x20, 0x1000, false)]);
        assert_eq!(t.file_bytes_at(&bytes, 0x1004, 2), Some(&bytes[0x14..0x16]));
        assert_eq!(t.file_bytes_at(&bytes, 0x101f, 2), None, "past filesz");
        let hostile = Segments::new(vec![seg(u64::MAX, u64::MAX, u64::MAX - 1, true)]);
        assert_eq!(hostile.file_bytes_at(&bytes, u64::MAX - 1, 1), None);
        assert_eq!(hostile.file_offset_to_svma(u64::MAX - 1), None);
        assert_eq!(Segments::parse(b"not elf"), Segments::default());
    }
}
