//! MiniDebugInfo: the `.gnu_debugdata` section Fedora (and others) leave in stripped
//! binaries, an xz-compressed ELF file holding a `.symtab` of the functions `.dynsym` lacks.
//!
//! This module owns the decompression and its bounds: the section is untrusted input, so the
//! output is capped and any decoding error just means "no MiniDebugInfo".

use std::io::Write;

/// The largest decompressed MiniDebugInfo accepted. Real ones are a few MiB at most (only
/// symbols, no DWARF); the cap keeps a crafted section from exhausting memory.
const MAX_DECOMPRESSED: usize = 64 << 20;

/// A `Write` into a vector that refuses to grow past a cap.
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len().saturating_add(buf.len()) > MAX_DECOMPRESSED {
            return Err(std::io::Error::other("MiniDebugInfo larger than the cap"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decompresses the contents of a `.gnu_debugdata` section into the bytes of the embedded
/// ELF file; `None` when they are not a valid xz stream or exceed the cap.
pub(crate) fn decompress(section: &[u8]) -> Option<Vec<u8>> {
    let mut input = section;
    let mut out = Capped(Vec::new());
    lzma_rs::xz_decompress(&mut input, &mut out).ok()?;
    Some(out.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncated_streams_are_none() {
        assert_eq!(decompress(b""), None);
        assert_eq!(decompress(b"not xz at all"), None);
        // The xz magic followed by nothing.
        assert_eq!(decompress(&[0xfd, b'7', b'z', b'X', b'Z', 0]), None);
    }
}
