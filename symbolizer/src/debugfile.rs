//! Locating separately installed debug info: build-id paths and `.gnu_debuglink`.
//!
//! This module owns the search order (the one gdb and the distributions use) and the
//! debuglink CRC check. It only looks at paths under a given root, so the same code finds
//! debug files on the host (`/`) and inside a container (`/proc/PID/root`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::ElfModule;

/// Finds separate debug info for `module` under `root`.
///
/// Tried in order: `usr/lib/debug/.build-id/ab/cdef….debug` for build-id `abcdef…`; then the
/// debuglink file name in the binary's own directory, in its `.debug/` subdirectory, and in
/// `usr/lib/debug/<binary dir>/`. A debuglink candidate counts only if its CRC32 matches the
/// one recorded in the binary. `binary_path` is the binary's path inside `root`.
pub fn find_debug_file(module: &ElfModule, root: &Path, binary_path: &str) -> Option<PathBuf> {
    if let Some(path) = build_id_path(module.build_id(), root) {
        if path.is_file() {
            return Some(path);
        }
    }
    let (link, crc) = module.debuglink()?;
    // why: a debuglink is a bare file name; anything with a separator could escape the
    // directories we mean to search.
    if link.is_empty() || link.contains('/') || link == "." || link == ".." {
        return None;
    }
    let rel_binary = binary_path.trim_start_matches('/');
    let rel_dir = Path::new(rel_binary).parent().unwrap_or(Path::new(""));
    let binary_dir = root.join(rel_dir);
    let binary_full = root.join(rel_binary);
    let candidates = [
        binary_dir.join(link),
        binary_dir.join(".debug").join(link),
        root.join("usr/lib/debug").join(rel_dir).join(link),
    ];
    candidates
        .into_iter()
        .filter(|path| *path != binary_full)
        .find(|path| file_crc32(path) == Some(crc))
}

fn build_id_path(build_id: Option<&[u8]>, root: &Path) -> Option<PathBuf> {
    let (first, rest) = build_id?.split_first()?;
    if rest.is_empty() {
        return None;
    }
    let rest_hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
    Some(
        root.join("usr/lib/debug/.build-id")
            .join(format!("{first:02x}"))
            .join(format!("{rest_hex}.debug")),
    )
}

/// CRC32 of a whole file, streamed; `None` if it cannot be read.
fn file_crc32(path: &Path) -> Option<u32> {
    let mut file = File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    // The CRC-32 (IEEE 802.3, as zlib computes it) that `.gnu_debuglink` records.
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Some(crc.finalize()),
            Ok(n) => crc.update(buf.get(..n)?),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_crc32_is_zlibs_crc32() {
        let path = std::env::temp_dir().join(format!("sprof-crc-{}", std::process::id()));
        std::fs::write(&path, b"123456789").unwrap();
        assert_eq!(file_crc32(&path), Some(0xCBF4_3926));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file_crc32(&path), None);
    }

    #[test]
    fn build_id_path_layout() {
        let p = build_id_path(Some(&[0xab, 0xcd, 0xef, 0x01]), Path::new("/proc/1/root"));
        assert_eq!(
            p,
            Some(PathBuf::from(
                "/proc/1/root/usr/lib/debug/.build-id/ab/cdef01.debug"
            ))
        );
        assert_eq!(build_id_path(Some(&[0xab]), Path::new("/")), None);
        assert_eq!(build_id_path(None, Path::new("/")), None);
    }
}
