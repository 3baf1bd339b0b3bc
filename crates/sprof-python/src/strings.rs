//! Decoding of CPython `str` object payloads (§6 of cpython-frames.md).
//!
//! Owns the interpretation of `PyASCIIObject.state` and the per-kind character data; the reader
//! fetches the bytes, this module turns them into a Rust `String` without trusting them.

/// Longest string we decode, in code points; longer ones are truncated (py-spy refuses them).
pub const MAX_CHARS: usize = 4096;

/// What the `state` word says about where and how the characters are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrLayout {
    /// Bytes per code point: 1 (ASCII / Latin-1), 2 (UCS-2), 4 (UCS-4).
    pub kind: u8,
    /// Offset of the character data from the object start.
    pub data_offset: u64,
}

/// Parses `state`. Compact ASCII data follows a `PyASCIIObject` (`ascii_size`), compact
/// non-ASCII data a `PyCompactUnicodeObject` (`compact_size`: 72 on 3.11, which still has
/// `wstr`; 56 on 3.12+). Legacy (non-compact) strings are refused: their data is behind another
/// pointer and code objects never hold them.
pub fn layout(state: u32, ascii_size: u64, compact_size: u64) -> Result<StrLayout, &'static str> {
    let kind = ((state >> 2) & 7) as u8;
    let compact = (state >> 5) & 1 == 1;
    let ascii = (state >> 6) & 1 == 1;
    if !compact {
        return Err("legacy (non-compact) string");
    }
    match (kind, ascii) {
        (1, true) => Ok(StrLayout {
            kind,
            data_offset: ascii_size,
        }),
        (1 | 2 | 4, false) => Ok(StrLayout {
            kind,
            data_offset: compact_size,
        }),
        _ => Err("bad string kind"),
    }
}

/// Decodes `data` (`length × kind` bytes, little-endian code units) into `out`.
/// Invalid code points (lone surrogates, which Python allows) become U+FFFD.
pub fn decode(kind: u8, data: &[u8], out: &mut String) {
    out.clear();
    match kind {
        1 => out.extend(data.iter().map(|&b| char::from(b))),
        2 => out.extend(
            data.chunks_exact(2)
                .map(|c| char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]]))))
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)),
        ),
        4 => out.extend(
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPACT: u32 = 1 << 5;
    const ASCII: u32 = 1 << 6;

    fn kind(k: u32) -> u32 {
        k << 2
    }

    #[test]
    fn layouts() {
        let l = layout(COMPACT | ASCII | kind(1), 48, 72).unwrap();
        assert_eq!((l.kind, l.data_offset), (1, 48));
        let l = layout(COMPACT | kind(1), 48, 72).unwrap();
        assert_eq!((l.kind, l.data_offset), (1, 72));
        let l = layout(COMPACT | kind(2), 40, 56).unwrap();
        assert_eq!((l.kind, l.data_offset), (2, 56));
        let l = layout(COMPACT | kind(4) | 3, 40, 56).unwrap(); // interned bits ignored
        assert_eq!((l.kind, l.data_offset), (4, 56));
        assert!(layout(kind(1) | ASCII, 48, 72).is_err());
        assert!(layout(COMPACT | kind(3), 48, 72).is_err());
        assert!(layout(COMPACT | ASCII | kind(2), 48, 72).is_err());
    }

    #[test]
    fn decodes_each_kind() {
        let mut s = String::new();
        decode(1, b"inner", &mut s);
        assert_eq!(s, "inner");
        decode(1, &[0x66, 0xfc, 0xe9], &mut s);
        assert_eq!(s, "füé");
        let ucs2: Vec<u8> = "функция_ü"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        decode(2, &ucs2, &mut s);
        assert_eq!(s, "функция_ü");
        let ucs4: Vec<u8> = "a😀"
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect();
        decode(4, &ucs4, &mut s);
        assert_eq!(s, "a😀");
        // A lone surrogate (legal in Python) and an out-of-range UCS-4 value.
        decode(2, &[0x00, 0xd8], &mut s);
        assert_eq!(s, "\u{fffd}");
        decode(4, &[0xff, 0xff, 0xff, 0x7f], &mut s);
        assert_eq!(s, "\u{fffd}");
        // A trailing partial unit is ignored, not a panic.
        decode(4, &[0x41, 0, 0, 0, 0x42], &mut s);
        assert_eq!(s, "A");
    }
}
