//! Reading the files a live process maps.
//!
//! `/proc/PID/map_files/START-END` opens exactly the file that is mapped, even if it was
//! deleted or replaced on disk since; `/proc/PID/root/PATH` resolves the path inside the
//! target's mount namespace (containers); the plain path is the last resort and is used
//! only when its device and inode match the mapping.
//!
//! Files are opened, not read: anything larger than [`sprof_core::bytes::MAP_THRESHOLD`] is
//! mapped read-only ([`FileBytes`]), so a host's worth of libraries costs page cache that the
//! kernel shares and reclaims, not this process's heap.

use sprof_core::{FileBytes, JitFile, Mapping, MappingKind, ModuleLoader, PerfMapRead, Pid};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

/// Files larger than this are not opened: a module degrades to `module+0xOFFSET` instead of
/// exhausting address space.
const MAX_MODULE_BYTES: u64 = 2 << 30;

/// Most JIT symbol files kept open at once.
const MAX_OPEN_JIT_FILES: usize = 256;

pub struct LiveLoader {
    vdso: Option<FileBytes>,
    pub failures: Vec<String>,
    /// Perf maps and jitdumps by (pid, mapping start; 0 for the perf map), kept open so what
    /// a process writes until its exit can still be read then.
    jit_files: HashMap<(Pid, u64), sprof_perf::procfs::JitFileHandle>,
}

impl LiveLoader {
    pub fn new() -> LiveLoader {
        LiveLoader {
            vdso: sprof_perf::sys::own_vdso().map(FileBytes::from),
            failures: Vec::new(),
            jit_files: HashMap::new(),
        }
    }
}

fn dev_parts(dev: u64) -> (u32, u32) {
    // glibc's gnu_dev_major / gnu_dev_minor encoding.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// The file at `path`, if it is a regular file of acceptable size and (with `check_identity`)
/// the very file `mapping` maps. Identity is checked on the opened file, so a path replaced
/// between the check and the open is not taken for the mapped file.
fn open_checked(path: &str, mapping: &Mapping, check_identity: bool) -> Option<FileBytes> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO swapped in at the path (a container's, or the plain path of a
    // process that exited) answers at once, and is then refused as no regular file. What
    // was opened is what is checked: a check of the path before would race the swap.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_MODULE_BYTES {
        return None;
    }
    if check_identity && mapping.inode != 0 {
        let (major, minor) = dev_parts(meta.dev());
        if meta.ino() != mapping.inode || (major, minor) != (mapping.dev_major, mapping.dev_minor) {
            return None;
        }
    }
    FileBytes::from_file(&mut file, meta.len()).ok()
}

impl ModuleLoader for LiveLoader {
    fn load(&mut self, pid: Pid, mapping: &Mapping) -> Option<FileBytes> {
        match mapping.kind {
            MappingKind::Vdso => return self.vdso.clone(),
            MappingKind::File => {}
            _ => return None,
        }
        let by_map_files = format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            mapping.start, mapping.end
        );
        if let Some(b) = open_checked(&by_map_files, mapping, false) {
            return Some(b);
        }
        let in_root = format!("/proc/{pid}/root{}", mapping.path);
        if let Some(b) = open_checked(&in_root, mapping, true) {
            return Some(b);
        }
        if let Some(b) = open_checked(&mapping.path, mapping, true) {
            return Some(b);
        }
        self.failures.push(mapping.path.clone());
        None
    }

    fn read_jit_file(
        &mut self,
        pid: Pid,
        file: JitFile<'_>,
        offset: u64,
        max: usize,
        buf: &mut Vec<u8>,
    ) -> PerfMapRead {
        let key = match file {
            JitFile::PerfMap => (pid, 0),
            JitFile::JitDump(m) => (pid, m.start),
        };
        if !self.jit_files.contains_key(&key) {
            match sprof_perf::procfs::open_jit_file(pid, file) {
                Ok(Some(h)) => {
                    if self.jit_files.len() >= MAX_OPEN_JIT_FILES {
                        // Most likely those of processes long gone.
                        self.jit_files.clear();
                    }
                    self.jit_files.insert(key, h);
                }
                Ok(None) => return PerfMapRead::Missing,
                Err(reason) => return PerfMapRead::Rejected(reason),
            }
        }
        match self.jit_files.get(&key) {
            Some(h) => sprof_perf::procfs::read_jit_file(h, offset, max, buf),
            None => PerfMapRead::Missing,
        }
    }

    fn forget_process(&mut self, pid: Pid) {
        self.jit_files.retain(|(p, _), _| *p != pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_split_like_glibc() {
        // makedev(0xfe, 1) and makedev(259, 65536).
        assert_eq!(dev_parts(0xfe01), (0xfe, 1));
        let makedev = |major: u64, minor: u64| {
            ((major & 0xfff) << 8)
                | ((major & !0xfff) << 32)
                | (minor & 0xff)
                | ((minor & !0xff) << 12)
        };
        let dev = makedev(259, 65536);
        assert_eq!(dev_parts(dev), (259, 65536));
    }

    #[test]
    fn loads_own_executable_through_map_files_or_path() {
        let me = Pid(std::process::id());
        let maps = sprof_perf::procfs::exec_mappings(me).unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let m = maps
            .iter()
            .find(|m| std::path::Path::new(&m.path) == exe)
            .unwrap();
        let mut loader = LiveLoader::new();
        let bytes = loader.load(me, m).expect("own executable readable");
        assert_eq!(&bytes[..4], b"\x7fELF");
        // A test binary is megabytes: mapped, not read.
        assert!(bytes.is_mapped(), "{bytes:?}");
    }
}
