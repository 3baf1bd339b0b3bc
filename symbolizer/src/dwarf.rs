//! DWARF: addr2line context construction and per-address frame resolution.
//!
//! This module owns everything that reads DWARF: loading (and decompressing) the debug
//! sections of a file into readers that share the file's [`FileBytes`], building the addr2line
//! [`Context`] once, expanding an address into inlined frames, and reading
//! `DW_AT_decl_file` / `DW_AT_decl_line` by following `DW_AT_abstract_origin` and
//! `DW_AT_specification`, which addr2line does not expose.

use std::borrow::Cow;

use addr2line::Context;
use gimli::{AttributeValue, EndianReader, Reader as _, RunTimeEndian, UnitOffset};
use object::{Object, ObjectSection};
use sprof_core::FileBytes;

use crate::demangle::demangle;

/// Sections uncompressed in the file are ranges of the file's bytes (for a large file, of its
/// mapping); only decompressed sections are copies.
pub(crate) type Reader = EndianReader<RunTimeEndian, FileBytes>;

/// Inline chains deeper than this keep their innermost frames and the outer function.
pub const MAX_INLINE_DEPTH: usize = 64;
/// Bounds the frame iteration itself, even for corrupt DWARF with absurd nesting.
const MAX_FRAME_ITERATIONS: usize = 4096;
/// Bounds `DW_AT_abstract_origin` / `DW_AT_specification` chains (they can be cyclic in
/// corrupt input).
const MAX_ORIGIN_CHAIN: u32 = 16;
/// Deepest DIE nesting accepted. addr2line walks inline trees recursively, a few hundred
/// bytes of stack per level: a crafted file nested 5000 deep overflows a 2 MiB thread stack
/// and aborts the process, which no `catch_unwind` stops. Compilers nest far less than this
/// (inline chains are capped at tens of levels, lexical blocks add a few).
pub const MAX_DIE_DEPTH: isize = 256;
/// Largest inflated debug section accepted, and the most it may inflate: real sections
/// compress 3 to 10 times; a section claiming a gigabyte from a megabyte is a bomb.
pub const MAX_SECTION_BYTES: u64 = 512 << 20;
/// Most bytes inflated for one file over all its sections: a file of many sections each
/// within the bounds above must not add up past the daemon's memory.
pub const MAX_INFLATED_PER_FILE: u64 = 128 << 20;
const MAX_INFLATION: u64 = 64;

/// The sections addr2line and the declaration lookups read (the set addr2line's own
/// `Context::from_sections` takes); the others are left empty.
const USED_SECTIONS: [gimli::SectionId; 10] = [
    gimli::SectionId::DebugAbbrev,
    gimli::SectionId::DebugAddr,
    gimli::SectionId::DebugAranges,
    gimli::SectionId::DebugInfo,
    gimli::SectionId::DebugLine,
    gimli::SectionId::DebugLineStr,
    gimli::SectionId::DebugRanges,
    gimli::SectionId::DebugRngLists,
    gimli::SectionId::DebugStr,
    gimli::SectionId::DebugStrOffsets,
];

/// One frame as DWARF describes it; names are already demangled.
#[derive(Debug, Clone, Default)]
pub(crate) struct DwarfFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub decl_file: Option<String>,
    pub decl_line: Option<u32>,
}

/// A built addr2line context over one file's DWARF.
pub(crate) struct DwarfState {
    ctx: Context<Reader>,
}

/// True when `obj` has a non-empty `.debug_info` (compressed or not).
pub(crate) fn has_debug_info(obj: &object::File<'_>) -> bool {
    obj.section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0 && s.file_range().is_some())
}

impl DwarfState {
    /// Loads the DWARF sections of the ELF file in `data`. `Err` says why the file's DWARF
    /// is not used: missing, refused by a bound (the reason names it), or so broken that
    /// addr2line refuses it.
    pub(crate) fn load(data: &FileBytes) -> Result<DwarfState, String> {
        let obj = object::File::parse(&data[..]).map_err(|e| e.to_string())?;
        if !has_debug_info(&obj) {
            return Err("no .debug_info".into());
        }
        let refused = std::cell::RefCell::new(None);
        let inflated = std::cell::Cell::new(0u64);
        let endian = if obj.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let empty = FileBytes::from(Vec::new());
        let load = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
            // why: location lists, macros, name indexes and type units are never read for
            // symbolization, and in distribution debug files they are compressed: skipping
            // them saves their decompression (glibc's .debug_loclists is ~2 MiB inflated).
            if !USED_SECTIONS.contains(&id) {
                return Ok(Reader::new(empty.clone(), endian));
            }
            let Some(section) = obj.section_by_name(id.name()) else {
                return Ok(Reader::new(empty.clone(), endian));
            };
            // A section that fails to decompress is treated as absent: addr2line then
            // reports what it can from the rest. One beyond the bounds refuses the file.
            let left = MAX_INFLATED_PER_FILE.saturating_sub(inflated.get());
            let bytes = match section_bytes(&section, left) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return Ok(Reader::new(empty.clone(), endian)),
                Err(why) => {
                    refused
                        .borrow_mut()
                        .get_or_insert(format!("{}: {why}", id.name()));
                    return Ok(Reader::new(empty.clone(), endian));
                }
            };
            if let Cow::Owned(v) = &bytes {
                inflated.set(inflated.get() + v.len() as u64);
            }
            Ok(match bytes {
                Cow::Borrowed(slice) => {
                    // why: share the file's bytes instead of copying the section; the slice is
                    // inside `data`, which the bounds check below confirms.
                    let start = (slice.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
                    match start.checked_add(slice.len()) {
                        Some(end) if end <= data.len() => {
                            Reader::new(data.clone(), endian).range(start..end)
                        }
                        _ => Reader::new(FileBytes::from(slice), endian),
                    }
                }
                Cow::Owned(vec) => Reader::new(FileBytes::from(vec), endian),
            })
        };
        let dwarf = gimli::Dwarf::load(load).map_err(|e| e.to_string())?;
        if let Some(why) = refused.into_inner() {
            return Err(why);
        }
        check_depth(&dwarf)?;
        let ctx = Context::from_dwarf(dwarf).map_err(|e| e.to_string())?;
        Ok(DwarfState { ctx })
    }

    /// The frames DWARF gives for `svma`, innermost first. Empty when DWARF knows nothing
    /// about the address (or fails on it).
    pub(crate) fn frames(&self, svma: u64) -> Vec<DwarfFrame> {
        let unit = self.ctx.find_dwarf_and_unit(svma).skip_all_loads();
        let mut iter = match self.ctx.find_frames(svma).skip_all_loads() {
            Ok(iter) => iter,
            Err(_) => return Vec::new(),
        };
        let mut out: Vec<DwarfFrame> = Vec::new();
        for _ in 0..MAX_FRAME_ITERATIONS {
            let frame = match iter.next() {
                Ok(Some(frame)) => frame,
                // why: a DWARF error halfway keeps the frames read so far; the caller fills
                // in the outer name from the symbol table.
                Ok(None) | Err(_) => break,
            };
            let function = frame
                .function
                .as_ref()
                .and_then(|name| name.raw_name().ok())
                .map(|raw| demangle(raw.as_ref()));
            let (file, line) = match &frame.location {
                Some(loc) => (loc.file.map(str::to_string), loc.line),
                None => (None, None),
            };
            let (decl_file, decl_line) = match (unit, frame.dw_die_offset) {
                (Some(unit), Some(offset)) => {
                    decl_of(unit.dwarf, unit.unit, offset, MAX_ORIGIN_CHAIN).unwrap_or_default()
                }
                _ => (None, None),
            };
            let converted = DwarfFrame {
                function,
                file,
                line,
                decl_file,
                decl_line,
            };
            if out.len() < MAX_INLINE_DEPTH {
                out.push(converted);
            } else if let Some(last) = out.last_mut() {
                // why: past the cap, keep overwriting the last slot so the outer (real)
                // function still ends the chain.
                *last = converted;
            }
        }
        out
    }
}

/// The bytes of one section, inflated under [`MAX_SECTION_BYTES`] and [`MAX_INFLATION`].
/// `Ok(None)`: unreadable or undecodable, treated as absent; `Err`: beyond a bound.
fn section_bytes<'data>(
    section: &object::Section<'data, '_>,
    left: u64,
) -> Result<Option<Cow<'data, [u8]>>, String> {
    let Ok(c) = section.compressed_data() else {
        return Ok(None);
    };
    if c.format == object::CompressionFormat::None {
        return Ok(Some(Cow::Borrowed(c.data)));
    }
    Ok(inflate(c.format, c.data, c.uncompressed_size, left)?.map(Cow::Owned))
}

/// Inflates `data`, which claims to hold `claimed` bytes, under [`MAX_SECTION_BYTES`],
/// [`MAX_INFLATION`] and the `left` of the file's budget; never more than `claimed` bytes
/// are produced, whatever the stream holds.
fn inflate(
    format: object::CompressionFormat,
    data: &[u8],
    claimed: u64,
    left: u64,
) -> Result<Option<Vec<u8>>, String> {
    use object::CompressionFormat;
    use std::io::Read;
    let limit = MAX_SECTION_BYTES
        .min((data.len() as u64).saturating_mul(MAX_INFLATION))
        .min(left);
    if claimed > limit {
        return Err(format!(
            "compressed section claims {claimed} bytes from {}, beyond the limit of {limit}",
            data.len()
        ));
    }
    // Within the limit, so it fits in usize.
    let size = claimed as usize;
    let mut out = Vec::new();
    if out.try_reserve_exact(size).is_err() {
        return Ok(None);
    }
    let decoded = match format {
        CompressionFormat::Zlib => flate2::read::ZlibDecoder::new(data)
            .take(claimed)
            .read_to_end(&mut out)
            .is_ok(),
        CompressionFormat::Zstandard => match ruzstd::decoding::StreamingDecoder::new(data) {
            Ok(decoder) => decoder.take(claimed).read_to_end(&mut out).is_ok(),
            Err(_) => false,
        },
        _ => false,
    };
    Ok((decoded && out.len() == size).then_some(out))
}

/// Refuses DWARF whose DIEs nest deeper than [`MAX_DIE_DEPTH`] in any unit: read with
/// gimli's flat cursor (no recursion), skipping attributes, before addr2line sees it.
fn check_depth(dwarf: &gimli::Dwarf<Reader>) -> Result<(), String> {
    let mut headers = dwarf.units();
    while let Ok(Some(header)) = headers.next() {
        let Ok(abbrevs) = header.abbreviations(&dwarf.debug_abbrev) else {
            continue;
        };
        let Ok(mut entries) = header.entries_raw(&abbrevs, None) else {
            continue;
        };
        let mut deepest = 0;
        while !entries.is_empty() {
            let Ok(abbrev) = entries.read_abbreviation() else {
                break;
            };
            deepest = deepest.max(entries.next_depth());
            if deepest > MAX_DIE_DEPTH {
                return Err(format!(
                    "DIEs nested more than {MAX_DIE_DEPTH} deep (unit at {:#x})",
                    header.offset().0
                ));
            }
            if let Some(abbrev) = abbrev {
                if entries.skip_attributes(abbrev.attributes()).is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Reads the declaration file and line of the DIE at `offset`, following abstract origins
/// and specifications (possibly into other units).
fn decl_of(
    dwarf: &gimli::Dwarf<Reader>,
    unit: &gimli::Unit<Reader>,
    offset: UnitOffset<usize>,
    depth: u32,
) -> Option<(Option<String>, Option<u32>)> {
    if depth == 0 {
        return None;
    }
    let entry = unit.entry(offset).ok()?;
    if let Some(line) = entry
        .attr_value(gimli::DW_AT_decl_line)
        .and_then(|v| v.udata_value())
    {
        let file = entry
            .attr_value(gimli::DW_AT_decl_file)
            .and_then(|v| match v {
                AttributeValue::FileIndex(i) => Some(i),
                other => other.udata_value(),
            })
            .and_then(|index| render_file(dwarf, unit, index));
        return Some((file, u32::try_from(line).ok()));
    }
    let next = entry
        .attr_value(gimli::DW_AT_abstract_origin)
        .or_else(|| entry.attr_value(gimli::DW_AT_specification))?;
    match next {
        AttributeValue::UnitRef(next) => decl_of(dwarf, unit, next, depth - 1),
        AttributeValue::DebugInfoRef(target) => {
            // why: cross-unit references (LTO) are rare; a linear scan of unit headers is
            // cheap next to parsing the target unit, and avoids keeping an index.
            let mut headers = dwarf.units();
            while let Ok(Some(header)) = headers.next() {
                if let Some(next) = target.to_unit_offset(&header) {
                    let other = dwarf.unit(header).ok()?;
                    return decl_of(dwarf, &other, next, depth - 1);
                }
            }
            None
        }
        _ => None,
    }
}

/// The full path of file `index` of `unit`'s line program, joined the way addr2line joins
/// the paths it reports (so `decl_file` and `file` compare equal for the same file).
fn render_file(
    dwarf: &gimli::Dwarf<Reader>,
    unit: &gimli::Unit<Reader>,
    index: u64,
) -> Option<String> {
    let header = unit.line_program.as_ref()?.header();
    let file = header.file(index)?;
    let unit_ref = unit.unit_ref(dwarf);
    let mut path = match &unit.comp_dir {
        Some(dir) => dir.to_string_lossy().ok()?.into_owned(),
        None => String::new(),
    };
    // Directory index 0 is the compilation directory itself.
    if file.directory_index() != 0 {
        if let Some(dir) = file.directory(header) {
            let dir = unit_ref.attr_string(dir).ok()?;
            path_push(&mut path, &dir.to_string_lossy().ok()?);
        }
    }
    let name = unit_ref.attr_string(file.path_name()).ok()?;
    path_push(&mut path, &name.to_string_lossy().ok()?);
    Some(path)
}

fn path_push(path: &mut String, part: &str) {
    if part.starts_with('/') {
        *path = part.to_string();
    } else {
        if !path.is_empty() && !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::CompressionFormat;

    /// The red-team review's zstd bomb: a small stream that inflates to a gigabyte, under a
    /// header that claims 64 bytes. object's own path reads the stream to its end (2.67 GB);
    /// here no more than the claim is produced, and the section is then refused as not
    /// matching its header.
    #[test]
    fn a_zstd_stream_longer_than_its_claim_is_cut_at_the_claim() {
        let zeros = std::io::repeat(0).take(64 << 20);
        use std::io::Read;
        let bomb =
            ruzstd::encoding::compress_to_vec(zeros, ruzstd::encoding::CompressionLevel::Fastest);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        assert_eq!(
            inflate(CompressionFormat::Zstandard, &bomb, 64, u64::MAX),
            Ok(Some(vec![0; 64]))
        );
        // A claim beyond the inflation bound is refused before anything is decoded.
        let why = inflate(CompressionFormat::Zstandard, &bomb, 64 << 20, u64::MAX).unwrap_err();
        assert!(why.contains("beyond the limit"), "{why}");
        // A stream shorter than its claim is no section.
        let small = ruzstd::encoding::compress_to_vec(
            &[1u8; 100][..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(
            inflate(CompressionFormat::Zstandard, &small, 200, u64::MAX),
            Ok(None)
        );
        assert_eq!(
            inflate(CompressionFormat::Zstandard, &small, 100, u64::MAX),
            Ok(Some(vec![1; 100]))
        );
        // What the file's earlier sections used counts: the same stream with too little left.
        let why = inflate(CompressionFormat::Zstandard, &small, 100, 99).unwrap_err();
        assert!(why.contains("beyond the limit of 99"), "{why}");
    }
}
