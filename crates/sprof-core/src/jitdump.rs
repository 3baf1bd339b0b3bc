//! `jit-PID.dump` (Linux perf's jitdump format, `tools/perf/Documentation/jitdump-specification.txt`):
//! the binary alternative to a perf map, written by CPython 3.13's `-X perf_jit`, V8's
//! `--perf-prof` and others. The writer `mmap`s the file executable so that perf sees it in
//! an MMAP record; sprofd does the same and reads the file's `JIT_CODE_LOAD` records into the
//! process's [`JitSymbols`](crate::JitSymbols).
//!
//! Like the perf map it is untrusted and growing: records are read incrementally, a record
//! whose size is impossible ends the reading of the file (nothing after it can be framed),
//! and an incomplete last record waits for the writer.

use crate::jit::{JitEntry, PerfMapStats, MAX_LINE_BYTES, MAX_SYMBOL_SIZE};

/// `JiTD` as a little-endian u32: a file written by a little-endian process.
const MAGIC: u32 = 0x4A69_5444;
const VERSION: u32 = 1;
const HEADER_MIN: usize = 40;
/// Record header: id, total_size, timestamp.
const RECORD_HEADER: usize = 16;
/// JIT_CODE_LOAD body before the name: pid, tid, vma, code_addr, code_size, code_index.
const CODE_LOAD_FIXED: usize = 4 + 4 + 8 + 8 + 8 + 8;
const JIT_CODE_LOAD: u32 = 0;
const JIT_CODE_CLOSE: u32 = 3;
/// Largest record accepted: one JIT function's code plus its name (debug and unwinding
/// records, skipped, too). One read chunk, so that a record always fits in one read.
pub const MAX_RECORD_BYTES: u32 = crate::jit::READ_CHUNK as u32;

/// An incremental reader of a jitdump's records.
#[derive(Debug, Default, Clone)]
pub struct JitDumpParser {
    header_read: bool,
    /// The file cannot be read further (bad header, impossible record, closed).
    done: bool,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

impl JitDumpParser {
    /// Whether nothing more will be read from this file.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Parses the complete records of `buf` (the bytes after those already consumed) and
    /// returns how many bytes were consumed.
    pub fn feed(
        &mut self,
        buf: &[u8],
        stats: &mut PerfMapStats,
        mut entry: impl FnMut(JitEntry),
    ) -> usize {
        let mut pos = 0;
        if !self.header_read {
            let (Some(magic), Some(version), Some(size)) =
                (u32_at(buf, 0), u32_at(buf, 4), u32_at(buf, 8))
            else {
                return 0;
            };
            if magic != MAGIC || version != VERSION || (size as usize) < HEADER_MIN {
                // Wrong magic also covers a big-endian writer, which x86_64 never has.
                self.done = true;
                stats.malformed += 1;
                return buf.len();
            }
            if buf.len() < size as usize {
                return 0;
            }
            self.header_read = true;
            pos = size as usize;
        }
        while !self.done {
            let rest = &buf[pos..];
            let (Some(id), Some(size)) = (u32_at(rest, 0), u32_at(rest, 4)) else {
                break;
            };
            if (size as usize) < RECORD_HEADER || size > MAX_RECORD_BYTES {
                self.done = true;
                stats.malformed += 1;
                return buf.len();
            }
            let Some(record) = rest.get(..size as usize) else {
                break;
            };
            pos += size as usize;
            match id {
                JIT_CODE_LOAD => match code_load(&record[RECORD_HEADER..]) {
                    Some(e) => {
                        stats.entries += 1;
                        entry(e);
                    }
                    None => stats.malformed += 1,
                },
                JIT_CODE_CLOSE => self.done = true,
                // Moves, debug and unwinding info, and ids from later versions.
                _ => {}
            }
        }
        pos
    }
}

/// A JIT_CODE_LOAD body: the code's address, size and NUL-terminated name.
fn code_load(body: &[u8]) -> Option<JitEntry> {
    let code_addr = u64_at(body, 16)?;
    let code_size = u64_at(body, 24)?;
    let name = body.get(CODE_LOAD_FIXED..)?;
    let name = &name[..name.iter().position(|&b| b == 0)?];
    if code_size == 0 || code_size > MAX_SYMBOL_SIZE || name.is_empty() {
        return None;
    }
    let name = &name[..name.len().min(MAX_LINE_BYTES)];
    Some(JitEntry {
        start: code_addr,
        end: code_addr.checked_add(code_size)?,
        name: String::from_utf8_lossy(name).into(),
    })
}

/// Whether `path` names a jitdump (`…/jit-<digits>.dump`), which the writer maps only so
/// that profilers find it.
pub fn is_jitdump_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_prefix("jit-")
        .and_then(|n| n.strip_suffix(".dump"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn header() -> Vec<u8> {
        let mut h = Vec::new();
        for v in [MAGIC, VERSION, 40, 62, 0, 1234] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(&0u64.to_le_bytes()); // timestamp
        h.extend_from_slice(&0u64.to_le_bytes()); // flags
        h
    }

    pub(crate) fn code_load_record(addr: u64, size: u64, name: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&1234u32.to_le_bytes());
        body.extend_from_slice(&1234u32.to_le_bytes());
        body.extend_from_slice(&addr.to_le_bytes()); // vma
        body.extend_from_slice(&addr.to_le_bytes()); // code_addr
        body.extend_from_slice(&size.to_le_bytes());
        body.extend_from_slice(&7u64.to_le_bytes()); // code_index
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend(std::iter::repeat_n(0x90u8, size as usize)); // the code
        let mut r = Vec::new();
        r.extend_from_slice(&JIT_CODE_LOAD.to_le_bytes());
        r.extend_from_slice(&((RECORD_HEADER + body.len()) as u32).to_le_bytes());
        r.extend_from_slice(&0u64.to_le_bytes());
        r.extend(body);
        r
    }

    fn parse(bytes: &[u8]) -> (Vec<JitEntry>, PerfMapStats, usize, JitDumpParser) {
        let mut p = JitDumpParser::default();
        let mut stats = PerfMapStats::default();
        let mut out = Vec::new();
        let used = p.feed(bytes, &mut stats, |e| out.push(e));
        (out, stats, used, p)
    }

    /// Mutated jitdumps (a target writes them) never panic the reader, fed whole or in
    /// pieces as a growing file is.
    #[test]
    fn mutated_jitdumps_are_read_without_panics() {
        use sprofd_tests::fuzz;
        let mut seed = header();
        seed.extend(code_load_record(0x1000, 16, "jit_fn"));
        seed.extend(code_load_record(0x2000, 8, "other"));
        fuzz::run(
            "jitdump",
            &[seed],
            fuzz::iterations(3000),
            std::time::Duration::from_millis(200),
            |input| {
                let mut stats = PerfMapStats::default();
                let mut parser = JitDumpParser::default();
                let mut at = 0;
                for cut in [input.len() / 3, input.len()] {
                    at += parser.feed(&input[at..cut.max(at)], &mut stats, |_| {});
                }
            },
        );
    }

    #[test]
    fn code_loads_are_read_and_other_records_skipped() {
        let mut f = header();
        f.extend(code_load_record(0x7f00_0000_1000, 11, "py::f:/app/x.py"));
        // An unwinding-info record (id 4) of 24 bytes.
        f.extend_from_slice(&4u32.to_le_bytes());
        f.extend_from_slice(&24u32.to_le_bytes());
        f.extend_from_slice(&[0u8; 16]);
        f.extend(code_load_record(0x7f00_0000_2000, 0x20, "py::g:/app/x.py"));
        let (e, stats, used, _) = parse(&f);
        assert_eq!(used, f.len());
        assert_eq!(stats.entries, 2);
        assert_eq!(e[0].name.as_ref(), "py::f:/app/x.py");
        assert_eq!((e[1].start, e[1].end), (0x7f00_0000_2000, 0x7f00_0000_2020));
    }

    #[test]
    fn truncated_records_wait_and_bad_files_stop() {
        let mut f = header();
        f.extend(code_load_record(0x1000, 16, "a"));
        // Every cut either parses whole records or waits: never a panic, never half a record.
        for cut in 0..f.len() {
            let (e, stats, used, p) = parse(&f[..cut]);
            assert!(
                e.is_empty() && stats.malformed == 0 && !p.is_done(),
                "{cut}"
            );
            assert!(used == 0 || used == 40, "{cut}: {used}");
        }
        let mut bad = f.clone();
        bad[0] = b'X';
        let (e, stats, _, p) = parse(&bad);
        assert!(e.is_empty() && p.is_done() && stats.malformed == 1);
        // A record claiming 4 GiB ends the file.
        let mut huge = header();
        huge.extend_from_slice(&0u32.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0u8; 64]);
        let (_, stats, used, p) = parse(&huge);
        assert!(p.is_done() && stats.malformed == 1 && used == huge.len());
        // A record too short for its own header.
        let mut short = header();
        short.extend_from_slice(&0u32.to_le_bytes());
        short.extend_from_slice(&8u32.to_le_bytes());
        assert!(parse(&short).3.is_done());
        // A code load without NUL in its name, or of size zero, is skipped.
        let mut r = code_load_record(0x1000, 0, "zero");
        let mut f = header();
        f.append(&mut r);
        let mut nonul = code_load_record(0x2000, 4, "x");
        let len = nonul.len();
        nonul.truncate(len - 5); // drop the NUL and the code
        nonul[4..8].copy_from_slice(&((len - 5) as u32).to_le_bytes());
        f.extend(nonul);
        f.extend(code_load_record(0x3000, 4, "ok"));
        let (e, stats, _, _) = parse(&f);
        assert_eq!((e.len(), stats.malformed), (1, 2));
    }

    #[test]
    fn jitdump_paths() {
        assert!(is_jitdump_path("/tmp/jit-1234.dump"));
        assert!(is_jitdump_path("jit-1.dump"));
        assert!(!is_jitdump_path("/tmp/jit-.dump"));
        assert!(!is_jitdump_path("/tmp/jit-12a.dump"));
        assert!(!is_jitdump_path("/tmp/perf-12.map"));
    }
}
