//! [`FileBytes`]: the contents of a module or debug file, cheap to clone and shared by the
//! unwinder, the symbolizer and the interpreter hooks.
//!
//! Large files are mapped rather than read: the bytes are then the kernel's page cache,
//! counted once however many processes (or profilers) use them, paged in only where a parser
//! looks and dropped by the kernel under memory pressure. A host maps hundreds of megabytes
//! of executable files; reading them all into the heap would cost that much memory.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Deref;
use std::sync::Arc;

/// Files up to this size are read into memory by [`FileBytes::open`]; larger ones are
/// mapped. A mapping costs a VMA and at least a page, which a small file does not repay.
pub const MAP_THRESHOLD: u64 = 64 << 10;

/// The bytes of a file: either owned (read, decompressed, or built by a test) or a
/// read-only shared mapping of the file. Cloning shares them.
#[derive(Clone)]
pub struct FileBytes(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Arc<[u8]>),
    Mapped(Arc<crate::shrink::Watched>),
}

impl FileBytes {
    /// Maps all of `file`, read-only. An empty file gives empty owned bytes (a zero-length
    /// mapping is an error to the kernel).
    ///
    /// A mapped file that is truncated in place while mapped would make reads past the new
    /// end raise SIGBUS (perf and samply accept that risk); here they read zeros instead
    /// (see [`crate::shrink`]): a profiled process's user can truncate their own files.
    pub fn map(file: &File) -> io::Result<FileBytes> {
        if file.metadata()?.len() == 0 {
            return Ok(FileBytes::from(Vec::new()));
        }
        // SAFETY: `Mmap::map` makes a read-only (PROT_READ) shared mapping of the whole
        // file; nothing in this process writes to it, and the bytes are only handed out as
        // `&[u8]` borrowed from the `Mmap`, which the `Arc` keeps alive (and unmapped only
        // when the last clone drops). What no code here can rule out is another process
        // changing the file underneath: rewritten bytes show through (every parser here
        // treats file contents as untrusted input, so that is garbage in, not memory
        // unsafety), and truncation in place faults on access past the new end, which
        // `shrink` turns into pages of zeros.
        let map = unsafe { memmap2::Mmap::map(file)? };
        let watched = crate::shrink::Watched::new(map)
            .ok_or_else(|| io::Error::other("too many mapped files to watch for truncation"))?;
        Ok(FileBytes(Repr::Mapped(Arc::new(watched))))
    }

    /// Opens `path`'s file: read when it is at most [`MAP_THRESHOLD`] bytes, mapped when it
    /// is larger. `max_len` refuses larger files (`InvalidData`).
    pub fn open(path: impl AsRef<std::path::Path>, max_len: Option<u64>) -> io::Result<FileBytes> {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking, so a FIFO answers at once; what was opened is then checked.
        let not_a_file = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(not_a_file());
        }
        if max_len.is_some_and(|max| meta.len() > max) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
        }
        Self::from_file(&mut file, meta.len())
    }

    /// Like [`FileBytes::open`], for a file already open whose length is `len`.
    pub fn from_file(file: &mut File, len: u64) -> io::Result<FileBytes> {
        if len > MAP_THRESHOLD {
            return Self::map(file);
        }
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf)?;
        Ok(FileBytes::from(buf))
    }

    /// Whether the bytes are a mapping of the file (rather than held in memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped(_))
    }

    /// Bytes held in this process's heap: the length of owned bytes, 0 for a mapping (its
    /// pages are the kernel's page cache).
    pub fn heap_len(&self) -> usize {
        match &self.0 {
            Repr::Owned(b) => b.len(),
            Repr::Mapped(_) => 0,
        }
    }
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(b) => b,
            Repr::Mapped(m) => m,
        }
    }
}

impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for FileBytes {
    fn from(v: Vec<u8>) -> FileBytes {
        FileBytes(Repr::Owned(Arc::from(v)))
    }
}

impl From<Arc<[u8]>> for FileBytes {
    fn from(b: Arc<[u8]>) -> FileBytes {
        FileBytes(Repr::Owned(b))
    }
}

impl From<&[u8]> for FileBytes {
    fn from(b: &[u8]) -> FileBytes {
        FileBytes(Repr::Owned(Arc::from(b)))
    }
}

impl fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "FileBytes({kind}, {} bytes)", self.len())
    }
}

// SAFETY: `deref` returns the contents of an `Arc<[u8]>` heap buffer or of an
// `Arc<memmap2::Mmap>` mapping. Neither moves when a `FileBytes` is moved: the pointer is
// to the Arc's allocation or to the mapped region, not into the `FileBytes` itself, and the
// allocation or mapping lives (unchanged in address and length) as long as any clone.
unsafe impl stable_deref_trait::StableDeref for FileBytes {}
// SAFETY: a clone shares the same Arc, so it derefs to the same address as the original.
unsafe impl stable_deref_trait::CloneStableDeref for FileBytes {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A temporary file of `len` bytes (removed on drop) and its bytes.
    fn temp_file(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::NamedTempFile::with_prefix("sprof-core-filebytes-").unwrap();
        file.write_all(&data).unwrap();
        (file, data)
    }

    #[test]
    fn small_files_are_read_large_ones_mapped() {
        for (len, mapped) in [(0, false), (100, false), (MAP_THRESHOLD as usize + 1, true)] {
            let (file, data) = temp_file(len);
            let path = file.path();
            let bytes = FileBytes::open(path, None).unwrap();
            assert_eq!(bytes.is_mapped(), mapped, "{len}");
            assert_eq!(&bytes[..], &data[..]);
            let clone = bytes.clone();
            assert_eq!(clone.as_ptr(), bytes.as_ptr());
            assert_eq!(bytes.heap_len(), if mapped { 0 } else { len });
            assert!(FileBytes::open(path, Some(len as u64)).is_ok());
            if len > 0 {
                let err = FileBytes::open(path, Some(len as u64 - 1)).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            }
        }
    }

    #[test]
    fn directories_are_refused() {
        let err = FileBytes::open(std::env::temp_dir(), None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn conversions_keep_the_bytes() {
        let a = FileBytes::from(vec![1, 2, 3]);
        let b = FileBytes::from(Arc::<[u8]>::from(&[1u8, 2, 3][..]));
        let c = FileBytes::from(&[1u8, 2, 3][..]);
        assert_eq!(
            (&a[..], &b[..], &c[..]),
            (&[1, 2, 3][..], &[1, 2, 3][..], &[1, 2, 3][..])
        );
        assert_eq!(format!("{a:?}"), "FileBytes(owned, 3 bytes)");
    }
}
