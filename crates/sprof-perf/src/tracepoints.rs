//! The syscall tracepoints `--mode memory` reads to see memory given back: `munmap`,
//! `madvise` and `brk`. Their ids and field offsets come from tracefs (`id` and `format` of
//! each event), read once per process; the raw record of each sample is decoded here into a
//! [`Release`].
//!
//! Where tracefs is not mounted or not readable, or the kernel has no syscall tracepoints,
//! memory mode samples page faults only and says why ([`release_syscalls`]).

use std::sync::OnceLock;

use sprof_core::Release;

/// Where tracefs is found, newest first.
const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// `madvise` advice that drops pages: MADV_DONTNEED, MADV_FREE, MADV_REMOVE,
/// MADV_DONTNEED_LOCKED (include/uapi/asm-generic/mman-common.h).
const DROPPING_ADVICE: [u64; 4] = [4, 8, 9, 24];

/// One syscall tracepoint: its id (the perf `config`) and where its fields sit in a raw record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracepoint {
    pub id: u64,
    /// Offsets of the fields this module reads, in the order [`ReleaseSyscalls`] names them.
    fields: [usize; 3],
}

/// The three tracepoints of memory given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseSyscalls {
    /// `sys_enter_munmap`: addr, len.
    pub munmap: Tracepoint,
    /// `sys_enter_madvise`: start, len_in, behavior.
    pub madvise: Tracepoint,
    /// `sys_exit_brk`: ret (the new break).
    pub brk: Tracepoint,
}

impl ReleaseSyscalls {
    pub fn ids(&self) -> [u64; 3] {
        [self.munmap.id, self.madvise.id, self.brk.id]
    }

    /// Decodes the raw data of a record of tracepoint `id`. `None`: not one of ours, too
    /// short, or advice that keeps the pages.
    pub fn decode(&self, id: u64, raw: &[u8]) -> Option<Release> {
        let field = |tp: &Tracepoint, i: usize| -> Option<u64> {
            let at = tp.fields[i];
            Some(u64::from_ne_bytes(raw.get(at..at + 8)?.try_into().ok()?))
        };
        if id == self.munmap.id {
            let (addr, len) = (field(&self.munmap, 0)?, field(&self.munmap, 1)?);
            Some(Release::Range { addr, len })
        } else if id == self.madvise.id {
            let advice = field(&self.madvise, 2)?;
            if !DROPPING_ADVICE.contains(&advice) {
                return None;
            }
            let (addr, len) = (field(&self.madvise, 0)?, field(&self.madvise, 1)?);
            Some(Release::Range { addr, len })
        } else if id == self.brk.id {
            Some(Release::BrkTo(field(&self.brk, 0)?))
        } else {
            None
        }
    }
}

/// The release tracepoints of this kernel, read once; `Err` says why memory mode can count
/// only page faults.
pub fn release_syscalls() -> Result<&'static ReleaseSyscalls, &'static str> {
    static CACHE: OnceLock<Result<ReleaseSyscalls, String>> = OnceLock::new();
    match CACHE.get_or_init(read_release_syscalls) {
        Ok(r) => Ok(r),
        Err(e) => Err(e.as_str()),
    }
}

fn read_release_syscalls() -> Result<ReleaseSyscalls, String> {
    let root = TRACEFS_ROOTS
        .iter()
        .find(|r| std::path::Path::new(&format!("{r}/events")).is_dir())
        .ok_or("tracefs is not mounted (or not readable) at /sys/kernel/tracing")?;
    let read = |event: &str, names: [&str; 3]| -> Result<Tracepoint, String> {
        let dir = format!("{root}/events/syscalls/{event}");
        let id =
            std::fs::read_to_string(format!("{dir}/id")).map_err(|e| format!("{dir}/id: {e}"))?;
        let format = std::fs::read_to_string(format!("{dir}/format"))
            .map_err(|e| format!("{dir}/format: {e}"))?;
        let id = id
            .trim()
            .parse()
            .map_err(|_| format!("{dir}/id: not a number"))?;
        let mut fields = [0; 3];
        for (slot, name) in fields.iter_mut().zip(names) {
            *slot = field_offset(&format, name)
                .ok_or_else(|| format!("{dir}/format: no 8-byte field {name}"))?;
        }
        Ok(Tracepoint { id, fields })
    };
    Ok(ReleaseSyscalls {
        munmap: read("sys_enter_munmap", ["addr", "len", "len"])?,
        madvise: read("sys_enter_madvise", ["start", "len_in", "behavior"])?,
        brk: read("sys_exit_brk", ["ret", "ret", "ret"])?,
    })
}

/// The offset of 8-byte field `name` in a tracepoint's `format` text, whose lines read
/// `field:unsigned long addr;` then tab-separated `offset:16;`, `size:8;`, `signed:0;`.
fn field_offset(format: &str, name: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        if decl.rsplit(' ').next()? != name {
            return None;
        }
        let offset = parts.next()?.strip_prefix("offset:")?.parse().ok()?;
        (parts.next()? == "size:8").then_some(offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MADVISE: &str = "name: sys_enter_madvise\nID: 700\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:unsigned long start;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:size_t len_in;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:int behavior;\toffset:32;\tsize:8;\tsigned:0;\n";

    #[test]
    fn fields_come_from_the_format_text() {
        assert_eq!(field_offset(MADVISE, "start"), Some(16));
        assert_eq!(field_offset(MADVISE, "len_in"), Some(24));
        assert_eq!(field_offset(MADVISE, "behavior"), Some(32));
        assert_eq!(field_offset(MADVISE, "__syscall_nr"), None, "not 8 bytes");
        assert_eq!(field_offset(MADVISE, "len"), None);
    }

    #[test]
    fn raw_records_decode_to_releases_and_keeping_advice_is_ignored() {
        let tp = |id, fields| Tracepoint { id, fields };
        let r = ReleaseSyscalls {
            munmap: tp(1, [16, 24, 24]),
            madvise: tp(2, [16, 24, 32]),
            brk: tp(3, [16, 16, 16]),
        };
        let mut raw = vec![0u8; 40];
        raw[16..24].copy_from_slice(&0x7f00_0000_0000u64.to_ne_bytes());
        raw[24..32].copy_from_slice(&(1u64 << 20).to_ne_bytes());
        raw[32..40].copy_from_slice(&4u64.to_ne_bytes());
        let range = Release::Range {
            addr: 0x7f00_0000_0000,
            len: 1 << 20,
        };
        assert_eq!(r.decode(1, &raw), Some(range));
        assert_eq!(r.decode(2, &raw), Some(range));
        assert_eq!(r.decode(3, &raw), Some(Release::BrkTo(0x7f00_0000_0000)));
        raw[32..40].copy_from_slice(&14u64.to_ne_bytes()); // MADV_HUGEPAGE keeps pages
        assert_eq!(r.decode(2, &raw), None);
        assert_eq!(r.decode(1, &raw[..20]), None, "short record");
        assert_eq!(r.decode(9, &raw), None, "not ours");
    }
}
