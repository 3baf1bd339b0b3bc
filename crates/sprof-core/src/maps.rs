//! `/proc/PID/maps` parsing.
//!
//! A process we attach to already has its mappings; each line becomes a [`Mapping`] that is fed
//! to the pipeline as a synthetic mmap event. The parser takes any `BufRead`, so it is tested on
//! inline text. Malformed lines are skipped and counted rather than failing the whole file: the
//! kernel's format is stable, but a truncated read of a process that is exiting is not.

use std::io::BufRead;

/// What a mapping holds, as far as symbolization cares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MappingKind {
    /// Backed by a file on disk (possibly deleted since it was mapped).
    File,
    /// The kernel's virtual dynamic shared object.
    Vdso,
    /// Anonymous memory: heap, stacks, or code generated at run time (JIT).
    Anonymous,
    /// Another pseudo-mapping such as `[heap]`, `[stack]`, `[vvar]` or `[vsyscall]`.
    Special(String),
}

/// One address range of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Offset in the backing file of `start`.
    pub file_offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// The path as the kernel printed it, without the ` (deleted)` suffix.
    pub path: String,
    pub kind: MappingKind,
    pub executable: bool,
    /// The backing file was unlinked or replaced after it was mapped.
    pub deleted: bool,
}

impl Mapping {
    /// Whether `addr` falls inside this mapping.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The file offset that `addr` (inside this mapping) corresponds to.
    pub fn file_offset_of(&self, addr: u64) -> u64 {
        addr - self.start + self.file_offset
    }

    /// Whether this is executable anonymous memory: code generated at run time (JIT), which
    /// only the runtime's perf map can name. perf names such mappings `//anon`, `/proc/PID/maps`
    /// leaves them nameless.
    pub fn is_anonymous_code(&self) -> bool {
        self.executable
            && match &self.kind {
                MappingKind::Anonymous => true,
                MappingKind::Special(p) => p == "//anon",
                _ => false,
            }
    }

    /// A short name for display: the file name of the path, or the pseudo-name.
    pub fn short_name(&self) -> &str {
        match self.kind {
            MappingKind::File => self.path.rsplit('/').next().unwrap_or(&self.path),
            _ => &self.path,
        }
    }
}

/// Reading the maps text failed.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("reading maps: {0}")]
    Io(#[from] std::io::Error),
}

/// The mappings found in a maps file, and how many lines could not be parsed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParsedMaps {
    pub mappings: Vec<Mapping>,
    pub malformed_lines: usize,
}

/// Parses the text of `/proc/PID/maps`.
pub fn parse_maps<R: BufRead>(reader: R) -> Result<ParsedMaps, MapsError> {
    let mut parsed = ParsedMaps::default();
    for line in reader.split(b'\n') {
        let line = line?;
        let line = String::from_utf8_lossy(&line);
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Some(m) => parsed.mappings.push(m),
            None => parsed.malformed_lines += 1,
        }
    }
    Ok(parsed)
}

/// Parses one line: `start-end perms offset major:minor inode   path`.
pub fn parse_line(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        let (f, r) = rest.split_at(end);
        rest = r;
        Some(f).filter(|f| !f.is_empty())
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let path = rest.trim_start_matches(' ');

    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end < start || perms.len() != 4 {
        return None;
    }
    let file_offset = u64::from_str_radix(offset, 16).ok()?;
    let (major, minor) = dev.split_once(':')?;
    let dev_major = u32::from_str_radix(major, 16).ok()?;
    let dev_minor = u32::from_str_radix(minor, 16).ok()?;
    let inode = inode.parse().ok()?;

    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    let kind = classify(path, inode);
    Some(Mapping {
        start,
        end,
        file_offset,
        dev_major,
        dev_minor,
        inode,
        path: path.to_string(),
        kind,
        executable: perms.as_bytes()[2] == b'x',
        deleted,
    })
}

/// Decides what a mapping's path names. Shared with the perf record parser so that a live
/// MMAP2 record and a maps line describe the same mapping the same way.
pub fn classify(path: &str, inode: u64) -> MappingKind {
    if path == "[vdso]" {
        MappingKind::Vdso
    } else if path.is_empty()
        || path.starts_with("[anon")
        || path.starts_with("/memfd:") && inode == 0
    {
        MappingKind::Anonymous
    } else if path.starts_with('[') || path.starts_with("//anon") {
        MappingKind::Special(path.to_string())
    } else {
        MappingKind::File
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c8a00000-55d0c8a01000 r--p 00000000 fe:01 1311240                    /usr/bin/cratio
55d0c8a01000-55d0c8a02000 r-xp 00001000 fe:01 1311240                    /usr/bin/cratio
7f1e2a400000-7f1e2a428000 r--p 00000000 fe:01 2359642                    /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2a428000-7f1e2a59d000 r-xp 00028000 fe:01 2359642                    /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2a700000-7f1e2a701000 r-xp 00001000 00:1f 4242                       /tmp/libplug.so (deleted)
7f1e2a800000-7f1e2a900000 rwxp 00000000 00:00 0 
7ffd5a5f0000-7ffd5a611000 rw-p 00000000 00:00 0                          [stack]
7ffd5a7d4000-7ffd5a7d6000 r-xp 00000000 00:00 0                          [vdso]
this is not a maps line
7f00-7e00 r-xp 00000000 00:00 0 /bad/range
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_files_pseudo_and_deleted_mappings() {
        let parsed = parse_maps(MAPS.as_bytes()).unwrap();
        assert_eq!(parsed.malformed_lines, 2);
        assert_eq!(parsed.mappings.len(), 9);

        let text = &parsed.mappings[1];
        assert_eq!(text.start, 0x55d0c8a01000);
        assert_eq!(text.file_offset, 0x1000);
        assert!(text.executable);
        assert_eq!(text.kind, MappingKind::File);
        assert_eq!(
            (text.dev_major, text.dev_minor, text.inode),
            (0xfe, 1, 1311240)
        );
        assert_eq!(text.short_name(), "cratio");
        assert_eq!(text.file_offset_of(0x55d0c8a01234), 0x1234);

        let deleted = &parsed.mappings[4];
        assert!(deleted.deleted);
        assert_eq!(deleted.path, "/tmp/libplug.so");

        assert_eq!(parsed.mappings[5].kind, MappingKind::Anonymous);
        assert!(parsed.mappings[5].executable);
        assert_eq!(
            parsed.mappings[6].kind,
            MappingKind::Special("[stack]".into())
        );
        assert_eq!(parsed.mappings[7].kind, MappingKind::Vdso);
        assert!(!parsed.mappings[0].executable);
    }

    #[test]
    fn paths_with_spaces_survive() {
        let m = parse_line("1000-2000 r-xp 00000000 08:01 7 /opt/my app/lib x.so").unwrap();
        assert_eq!(m.path, "/opt/my app/lib x.so");
    }

    #[test]
    fn truncated_line_is_rejected_not_panicking() {
        for cut in 0..40 {
            let line = "55d0c8a01000-55d0c8a02000 r-xp 00001000 fe:01 1311240 /usr/bin/x";
            let _ = parse_line(&line[..cut]);
        }
        assert!(parse_line("55d0c8a01000-55d0c8a02000 r-xp").is_none());
    }
}
