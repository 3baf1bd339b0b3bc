//! Locating separately installed debug info: build-id paths and `.gnu_debuglink`.
//!
//! This module owns the search order (the one gdb and the distributions use) and the
//! debuglink CRC check. It only looks at paths under a given root, so the same code finds
//! debug files on the host (`/`) and inside a container (`/proc/PID/root`).

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use sprof_core::untrusted::{self, OpenRules, Symlinks};

use crate::ElfModule;

/// Largest debug file considered: the CRC of a debuglink candidate reads all of it.
pub const MAX_DEBUG_FILE_BYTES: u64 = 4 << 30;

/// Finds separate debug info for `module` under `root`, and opens it.
///
/// Tried in order: `usr/lib/debug/.build-id/ab/cdef….debug` for build-id `abcdef…`; then the
/// debuglink file name in the binary's own directory, in its `.debug/` subdirectory, and in
/// `usr/lib/debug/<binary dir>/`. A debuglink candidate counts only if its CRC32 matches the
/// one recorded in the binary. `binary_path` is the binary's path inside `root`.
///
/// Every candidate is untrusted (a user can name any file in the binary's directory): it is
/// opened beneath `root` without blocking, must be a regular, non-sparse file of at most
/// [`MAX_DEBUG_FILE_BYTES`] owned by one of `owners`, and debuglink candidates are reached
/// through no symlink at all (build-id paths are symlinks by design, resolved inside `root`).
pub fn find_debug_file(
    module: &ElfModule,
    root: &Path,
    binary_path: &str,
    owners: &[u32],
) -> Option<File> {
    let rules = |symlinks| OpenRules {
        owners: owners.to_vec(),
        max_bytes: MAX_DEBUG_FILE_BYTES,
        symlinks,
        forbidden_mode: 0o002,
    };
    if let Some(path) = build_id_path(module.build_id()) {
        if let Ok(file) = untrusted::open_checked(root, &path, &rules(Symlinks::InRoot)) {
            return Some(file);
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
    let candidates = [
        rel_dir.join(link),
        rel_dir.join(".debug").join(link),
        Path::new("usr/lib/debug").join(rel_dir).join(link),
    ];
    let refused = rules(Symlinks::Refused);
    candidates
        .into_iter()
        .filter(|path| path.as_path() != Path::new(rel_binary))
        .filter_map(|path| untrusted::open_checked(root, path.to_str()?, &refused).ok())
        .find_map(|mut file| {
            // Rewound: the caller reads the file from its start.
            (file_crc32(&mut file) == Some(crc) && file.rewind().is_ok()).then_some(file)
        })
}

/// The owners whose debug files are believed for a binary at `binary_path` inside `root`:
/// root, and the binary's own owner (who could have written the binary itself).
pub fn trusted_owners(root: &Path, binary_path: &str) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let mut owners = vec![0];
    let path = root.join(binary_path.trim_start_matches('/'));
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.uid() != 0 {
            owners.push(meta.uid());
        }
    }
    owners
}

fn build_id_path(build_id: Option<&[u8]>) -> Option<String> {
    let (first, rest) = build_id?.split_first()?;
    if rest.is_empty() {
        return None;
    }
    let rest_hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "usr/lib/debug/.build-id/{first:02x}/{rest_hex}.debug"
    ))
}

/// CRC32 of a whole open file, streamed from its start; `None` if it cannot be read.
fn file_crc32(file: &mut File) -> Option<u32> {
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
        let mut file = File::open(&path).unwrap();
        assert_eq!(file_crc32(&mut file), Some(0xCBF4_3926));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn build_id_path_layout() {
        let p = build_id_path(Some(&[0xab, 0xcd, 0xef, 0x01]));
        assert_eq!(
            p.as_deref(),
            Some("usr/lib/debug/.build-id/ab/cdef01.debug")
        );
        assert_eq!(build_id_path(Some(&[0xab])), None);
        assert_eq!(build_id_path(None), None);
    }
}
