//! Mapped files that shrink under us.
//!
//! A file this process has mapped and another process truncates makes every read past the
//! new end raise SIGBUS, which ends the process. The files sprofd maps are a profiled
//! process's: any user can truncate a shared library of theirs while the daemon has it
//! mapped, and so end a host-wide daemon at will. This module makes such a read return
//! zeros instead: every mapping [`FileBytes`](crate::FileBytes) makes is registered, and a
//! SIGBUS handler replaces the faulting page of a registered mapping with an anonymous page
//! of zeros, then lets the read go on. Every parser reads file contents as untrusted input,
//! so zeros are garbage in, not unsafety. A SIGBUS anywhere else goes to the handler that
//! was there before (or the default action: the process ends, as it would have).
//!
//! It also lets a long-running process give back the pages of those mappings it touched
//! ([`release_resident`]): the daemon reads the debug info of every busy binary on the host,
//! and without it those pages stay in its RSS until the module is dropped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Mappings watched at once; beyond, files are not mapped (see [`Watched::new`]).
const SLOTS: usize = 16384;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
};
static SLOTS_IN_USE: [Slot; SLOTS] = [EMPTY; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static REPLACED: AtomicU64 = AtomicU64::new(0);
static UNWATCHED: AtomicU64 = AtomicU64::new(0);
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// Held while a watched mapping is unmapped and while [`release_resident`] advises them, so
/// that every range it finds registered is still mapped.
static UNMAP: Mutex<()> = Mutex::new(());

/// Pages of shrunk files replaced by zeros so far.
pub fn pages_replaced() -> u64 {
    REPLACED.load(Ordering::Relaxed)
}

/// Files not mapped because every slot was taken.
pub fn unwatched() -> u64 {
    UNWATCHED.load(Ordering::Relaxed)
}

/// A read-only mapping of a whole file, watched for SIGBUS while it lives.
pub(crate) struct Watched {
    /// Always `Some` while the value lives; taken in `drop` to unmap under [`UNMAP`].
    map: Option<memmap2::Mmap>,
    slot: usize,
}

impl Watched {
    /// Watches `map`; `None` when every slot is taken: an unwatched mapping of a file its
    /// user can truncate would let them end the process, so the caller does without it.
    pub(crate) fn new(map: memmap2::Mmap) -> Option<Watched> {
        install();
        let (start, end) = (map.as_ptr() as usize, map.as_ptr() as usize + map.len());
        let slot = SLOTS_IN_USE.iter().position(|s| {
            s.start
                .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        match slot {
            Some(i) => {
                SLOTS_IN_USE[i].end.store(end, Ordering::Release);
                Some(Watched {
                    map: Some(map),
                    slot: i,
                })
            }
            None => {
                UNWATCHED.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl std::ops::Deref for Watched {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _unmapping = UNMAP.lock().unwrap_or_else(|e| e.into_inner());
        SLOTS_IN_USE[self.slot].end.store(0, Ordering::Release);
        SLOTS_IN_USE[self.slot].start.store(0, Ordering::Release);
        // Unmaps the file (and any page of zeros put in it).
        drop(self.map.take());
    }
}

/// Drops this process's page-table entries for every watched mapping, so that the pages it
/// read of mapped files stop counting in its RSS; they stay in the kernel's page cache and the
/// next read faults them back in (a minor fault, or a read of the file). Returns the bytes of
/// the ranges advised.
pub fn release_resident() -> usize {
    let _no_unmap = UNMAP.lock().unwrap_or_else(|e| e.into_inner());
    let mut advised = 0;
    for slot in &SLOTS_IN_USE {
        let (start, end) = (
            slot.start.load(Ordering::Acquire),
            slot.end.load(Ordering::Acquire),
        );
        if start == 0 || end <= start {
            continue; // free, or being registered
        }
        // SAFETY: under UNMAP no Watched is dropped, so [start, end) is the live read-only
        // mapping of a file that a Watched owns. MADV_DONTNEED on a file mapping that is
        // never written only drops page-table entries: the next access reads the same file
        // contents again (pages replaced by zeros after a truncation are dropped too, and a
        // new read past the end faults into the SIGBUS handler again), so references into the
        // mapping stay valid.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) }
            == 0
        {
            advised += end - start;
        }
    }
    advised
}

fn install() {
    PREVIOUS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: sigaction is a plain C struct for which zeroes are valid; sigaction(2)
        // reads `action` and writes the previous action into `previous`, both valid.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, &action, &mut previous);
            previous
        }
    });
}

/// The SIGBUS handler: async-signal-safe (atomics and raw system calls only).
extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: errno is this thread's; the interrupted code must find it as it left it.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel hands a valid siginfo_t to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let watched = SLOTS_IN_USE.iter().any(|s| {
        let start = s.start.load(Ordering::Acquire);
        start != 0 && start <= addr && addr < s.end.load(Ordering::Acquire)
    });
    if watched {
        let page = addr & !(PAGE.load(Ordering::Relaxed) - 1);
        // SAFETY: the page lies inside a mapping this process made and still holds (its
        // slot is cleared before it is unmapped); MAP_FIXED replaces that one page with
        // private zeros, which the mapping's munmap removes with the rest.
        let replaced = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                PAGE.load(Ordering::Relaxed),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if replaced != libc::MAP_FAILED {
            REPLACED.fetch_add(1, Ordering::Relaxed);
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = errno };
            return;
        }
    }
    // Not ours: what was there before handles it (the default action if we are caught
    // between installing and recording it).
    let Some(previous) = PREVIOUS.get() else {
        // SAFETY: restoring the default action; see below.
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
        }
        return;
    };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: restoring the default action; returning re-runs the faulting access,
        // which then ends the process as it would have without us.
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
        }
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this type.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO takes the signal number only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(signal);
    }
}

#[cfg(test)]
mod tests {
    use crate::FileBytes;
    use std::io::Write;

    /// A mapped file truncated by someone else reads as zeros past its new end, instead of
    /// ending the process with SIGBUS.
    /// This process's resident KiB of the mapping that starts at `bytes` (`/proc/self/smaps`).
    fn rss_kib(bytes: &[u8]) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{:x}-", bytes.as_ptr() as usize);
        let entry = smaps
            .split_once(&start)
            .map(|(_, rest)| rest)
            .expect("the mapping in smaps");
        let rss = entry.lines().find(|l| l.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn released_pages_leave_the_rss_and_read_the_same() {
        let file = tempfile::NamedTempFile::with_prefix("sprof-core-release-").unwrap();
        let path = file.path();
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(path, &data).unwrap();
        let bytes = FileBytes::open(path, None).unwrap();
        assert!(bytes.is_mapped());
        assert_eq!(&bytes[..], &data[..]);
        assert_eq!(rss_kib(&bytes), data.len() as u64 / 1024);
        assert!(super::release_resident() >= data.len());
        assert_eq!(rss_kib(&bytes), 0);
        assert_eq!(&bytes[..], &data[..]);
    }

    #[test]
    fn a_truncated_mapped_file_reads_zeros() {
        let file = tempfile::NamedTempFile::with_prefix("sprof-core-shrink-").unwrap();
        let path = file.path();
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        drop(f);
        let bytes = FileBytes::open(path, None).unwrap();
        assert!(bytes.is_mapped());
        assert_eq!(bytes[(1 << 20) - 1], 7);
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let before = super::pages_replaced();
        let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(
            sum,
            7 * 4096,
            "the first page is still the file's, the rest zeros"
        );
        assert!(super::pages_replaced() > before);
        drop(bytes);
    }
}
