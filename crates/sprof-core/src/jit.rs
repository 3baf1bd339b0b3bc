//! Symbols of JIT-compiled code, from the perf maps (`/tmp/perf-PID.map`) that runtimes write.
//!
//! A JIT (V8 with `--perf-basic-prof`, CPython 3.12 with `-X perf`) puts code in anonymous
//! executable memory, which no file describes; it appends one `START SIZE name` line per code
//! object to its perf map instead. The unwinder keeps such addresses as
//! [`FrameKey::Jit`](crate::FrameKey::Jit) (absolute address and pid), and symbolization asks
//! this table, which holds one [`JitSymbols`] per process: read while the process is alive
//! (the map is reached through the process's own mount namespace, so it cannot be read once
//! the process is gone) and kept after it exits until its frames are symbolized.
//!
//! The file is untrusted text written by the target: lines are bounded in length and number,
//! malformed lines are skipped and counted, and nothing here can panic on its content. It
//! grows while the process runs, so it is read incrementally from where the last read ended,
//! again when a sampled JIT address misses, at most every [`REFRESH_INTERVAL`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::jitdump::JitDumpParser;
use crate::{Mapping, Pid};

/// Longest line accepted; longer lines are skipped (and counted) without being buffered.
pub const MAX_LINE_BYTES: usize = 4096;
/// Most entries kept per process; the rest of the file is not read.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Largest code object accepted: a bigger size is garbage, not a function.
pub const MAX_SYMBOL_SIZE: u64 = 1 << 28;
/// Bytes asked of the loader per read; a refresh reads until the file ends.
pub const READ_CHUNK: usize = 1 << 20;
/// Most bytes one refresh reads of one of a process's files (its perf map, its jitdump), so
/// a huge file cannot stall the sampling thread for long; the rest is read at later
/// refreshes.
pub const MAX_REFRESH_BYTES: usize = 8 << 20;
/// Most bytes one [`JitTable::refresh_missed`] reads over every process: a crowd of
/// processes with big maps costs one bounded read per turn, not one each.
pub const MAX_REFRESH_ALL_BYTES: usize = 16 << 20;
/// Most bytes read of one process's JIT files over its life. A runtime that writes more is
/// named up to there; past it the files are no longer read (and this is reported once).
pub const MAX_FILE_BYTES: u64 = 512 << 20;
/// Most bytes of names kept per process: entries beyond are dropped and counted.
pub const MAX_NAME_BYTES: usize = 32 << 20;
/// Shortest time between two reads of one process's map. Short, because until the read a
/// runtime's newest functions cannot be named and some cannot be unwound (see
/// `sprof-unwind`'s CPython trampolines); reads are incremental, so each costs little.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(50);

/// One perf map line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitEntry {
    pub start: u64,
    pub end: u64,
    pub name: Box<str>,
}

/// Parses one line (without its newline): `START SIZE name`, START and SIZE hex without `0x`.
/// `None` for a malformed line: bad hex, zero or absurd size, overflowing range, empty name.
pub fn parse_perf_map_line(line: &[u8]) -> Option<JitEntry> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut fields = line.splitn(3, |&b| b == b' ');
    let hex = |f: &[u8]| {
        // from_str_radix would accept a leading '+'; the format has bare hex digits only.
        if f.is_empty() || f.len() > 16 || !f.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(f).ok()?, 16).ok()
    };
    let start = hex(fields.next()?)?;
    let size = hex(fields.next()?)?;
    let name = fields.next()?;
    if size == 0 || size > MAX_SYMBOL_SIZE || name.is_empty() {
        return None;
    }
    let end = start.checked_add(size)?;
    Some(JitEntry {
        start,
        end,
        name: String::from_utf8_lossy(name).into(),
    })
}

/// Counters of one process's perf map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerfMapStats {
    /// Lines read as entries.
    pub entries: u64,
    /// Lines skipped: malformed, or longer than [`MAX_LINE_BYTES`].
    pub malformed: u64,
    /// Entries dropped because a later entry covers the same addresses (code space reused).
    pub overlapped: u64,
    /// Entries not kept because the process had [`MAX_ENTRIES`] already.
    pub dropped: u64,
    /// Reads of the file.
    pub reads: u64,
}

/// An incremental parser over the bytes of a growing file.
#[derive(Debug, Default, Clone)]
pub struct PerfMapParser {
    /// Inside a line longer than [`MAX_LINE_BYTES`], skipping to its end.
    skipping: bool,
}

impl PerfMapParser {
    /// Parses the complete lines of `buf` (the bytes after those already consumed). Returns
    /// how many bytes were consumed: through the last newline, or all of `buf` while inside
    /// an over-long line. An incomplete last line is left for the next call, when the writer
    /// has finished it.
    pub fn feed(
        &mut self,
        buf: &[u8],
        stats: &mut PerfMapStats,
        mut entry: impl FnMut(JitEntry),
    ) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                if self.skipping {
                    return buf.len();
                }
                if rest.len() > MAX_LINE_BYTES {
                    self.skipping = true;
                    stats.malformed += 1;
                    return buf.len();
                }
                return pos;
            };
            let line = &rest[..nl];
            pos += nl + 1;
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            if line.is_empty() {
                continue;
            }
            match (line.len() <= MAX_LINE_BYTES)
                .then(|| parse_perf_map_line(line))
                .flatten()
            {
                Some(e) => {
                    stats.entries += 1;
                    entry(e);
                }
                None => stats.malformed += 1,
            }
        }
        pos
    }
}

/// What a [`crate::ModuleLoader`] found when asked for a perf map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerfMapRead {
    /// No map (yet), or the process is gone.
    Missing,
    /// A map exists but must not be read (wrong owner, writable by others, not a regular
    /// file); the reason is reported once.
    Rejected(String),
    /// Bytes from the requested offset were appended to the buffer; `file_len` is the file's
    /// size, which tells a truncated (rewritten) map from a grown one.
    Read { file_len: u64 },
}

/// The JIT symbols of one process.
#[derive(Debug, Default)]
pub struct JitSymbols {
    /// Entries in file order; sorted into `index` after each read.
    entries: Vec<JitEntry>,
    /// Disjoint entries sorted by start: indices into `entries`.
    index: Vec<u32>,
    parser: PerfMapParser,
    /// Bytes of the file consumed so far.
    offset: u64,
    /// The process's jitdump, once it mapped one.
    dump: Option<DumpSource>,
    last_read: Option<Instant>,
    /// A sampled address missed since the last read.
    missed: bool,
    /// The process exited or exec'd: its map is no longer read.
    closed: bool,
    /// Why the map was refused, once it was.
    pub rejected: Option<String>,
    pub stats: PerfMapStats,
    /// Bytes of names held in `entries` (bounded by [`MAX_NAME_BYTES`]).
    name_bytes: usize,
    /// Bytes read of the process's files over its life (bounded by [`MAX_FILE_BYTES`]).
    read_total: u64,
}

/// Keeps `e` unless the process's entry count or name bytes are at their bound.
fn admit(entries: &mut Vec<JitEntry>, name_bytes: &mut usize, e: JitEntry) -> bool {
    if entries.len() >= MAX_ENTRIES || *name_bytes + e.name.len() > MAX_NAME_BYTES {
        return false;
    }
    *name_bytes += e.name.len();
    entries.push(e);
    true
}

impl JitSymbols {
    /// The name covering `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        self.entry(addr).map(|e| &*e.name)
    }

    /// The entry covering `addr`.
    pub fn entry(&self, addr: u64) -> Option<&JitEntry> {
        let i = self
            .index
            .partition_point(|&e| self.entries[e as usize].start <= addr);
        let e = &self.entries[*self.index.get(i.checked_sub(1)?)? as usize];
        (addr < e.end).then_some(e)
    }

    /// Adds entries parsed from `buf` and makes them visible to lookups; returns the bytes
    /// consumed.
    pub fn feed(&mut self, buf: &[u8]) -> usize {
        let used = self.feed_unindexed(buf);
        self.reindex();
        used
    }

    /// [`JitSymbols::feed`] without the re-sort, for several chunks in a row.
    fn feed_unindexed(&mut self, buf: &[u8]) -> usize {
        let (entries, name_bytes) = (&mut self.entries, &mut self.name_bytes);
        let mut dropped = 0;
        let used = self.parser.feed(buf, &mut self.stats, |e| {
            if !admit(entries, name_bytes, e) {
                dropped += 1;
            }
        });
        self.stats.dropped += dropped;
        used
    }

    /// Rebuilds the sorted index. Where entries overlap, the one written later wins: a JIT
    /// reuses the addresses of collected code, and the newer code is what runs there now.
    fn reindex(&mut self) {
        let entries = &self.entries;
        let mut order: Vec<u32> = (0..entries.len() as u32).collect();
        order.sort_by_key(|&i| (entries[i as usize].start, i));
        let mut index: Vec<u32> = Vec::with_capacity(order.len());
        let mut overlapped = 0;
        for i in order {
            let e = &entries[i as usize];
            let mut keep = true;
            while let Some(&last) = index.last() {
                if entries[last as usize].end <= e.start {
                    break;
                }
                overlapped += 1;
                if last > i {
                    keep = false;
                    break;
                }
                index.pop();
            }
            if keep {
                index.push(i);
            }
        }
        self.index = index;
        self.stats.overlapped = overlapped;
    }

    /// Entries in the lookup index.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Reads the perf map from where the last read ended. Returns whether entries may have
    /// changed, or why the file was refused.
    fn pump_map(
        &mut self,
        pid: Pid,
        buf: &mut Vec<u8>,
        read: &mut ReadPerfMap<'_>,
        budget: &mut usize,
    ) -> Result<bool, String> {
        let mut changed = false;
        let mut total = 0;
        while total < MAX_REFRESH_BYTES && *budget > 0 && self.entries.len() < MAX_ENTRIES {
            self.within_file_bytes()?;
            buf.clear();
            match read(pid, JitFile::PerfMap, self.offset, READ_CHUNK, buf) {
                PerfMapRead::Missing => break,
                PerfMapRead::Rejected(reason) => return Err(reason),
                PerfMapRead::Read { file_len } if file_len < self.offset => {
                    // Rewritten from the start (a new program after exec, a restarted
                    // runtime): what was read before describes code that is gone.
                    self.forget_contents();
                    changed = true;
                    continue;
                }
                PerfMapRead::Read { .. } => {}
            }
            let got = buf.len().min(READ_CHUNK);
            if got == 0 {
                break;
            }
            changed = true;
            let used = self.feed_unindexed(&buf[..got]);
            self.offset += used as u64;
            total += got;
            self.read_total += got as u64;
            *budget = budget.saturating_sub(got);
            if used == 0 || got < READ_CHUNK {
                break;
            }
        }
        Ok(changed)
    }

    /// Reads the jitdump, if any, from where the last read ended.
    fn pump_dump(
        &mut self,
        pid: Pid,
        buf: &mut Vec<u8>,
        read: &mut ReadPerfMap<'_>,
        budget: &mut usize,
    ) -> Result<bool, String> {
        let mut changed = false;
        let mut total = 0;
        while total < MAX_REFRESH_BYTES && *budget > 0 && self.entries.len() < MAX_ENTRIES {
            self.within_file_bytes()?;
            let Some(d) = self.dump.as_mut().filter(|d| !d.parser.is_done()) else {
                break;
            };
            buf.clear();
            let max = READ_CHUNK;
            match read(pid, JitFile::JitDump(&d.mapping), d.offset, max, buf) {
                PerfMapRead::Missing => break,
                PerfMapRead::Rejected(reason) => {
                    self.dump = None;
                    return Err(reason);
                }
                PerfMapRead::Read { .. } => {}
            }
            let got = buf.len().min(max);
            if got == 0 {
                break;
            }
            changed = true;
            let (entries, stats) = (&mut self.entries, &mut self.stats);
            let name_bytes = &mut self.name_bytes;
            let mut dropped = 0;
            let used = d.parser.feed(&buf[..got], stats, |e| {
                if !admit(entries, name_bytes, e) {
                    dropped += 1;
                }
            });
            self.stats.dropped += dropped;
            d.offset += used as u64;
            total += got;
            self.read_total += got as u64;
            *budget = budget.saturating_sub(got);
            if used == 0 || got < max {
                break;
            }
        }
        Ok(changed)
    }

    /// `Err` once the process's files have cost [`MAX_FILE_BYTES`] of reading.
    fn within_file_bytes(&self) -> Result<(), String> {
        if self.read_total >= MAX_FILE_BYTES {
            return Err(format!(
                "JIT symbol files: {} bytes read, the limit per process; no more are read",
                self.read_total
            ));
        }
        Ok(())
    }

    fn forget_contents(&mut self) {
        let stats = PerfMapStats {
            reads: self.stats.reads,
            ..Default::default()
        };
        let dump = self.dump.take().map(|d| DumpSource {
            parser: JitDumpParser::default(),
            offset: 0,
            ..d
        });
        *self = JitSymbols {
            stats,
            dump,
            last_read: self.last_read,
            missed: self.missed,
            // why: rewriting the file from the start must not restore a spent budget.
            read_total: self.read_total,
            ..Default::default()
        };
    }
}

/// Which JIT symbol file of a process a read is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitFile<'a> {
    /// `/tmp/perf-PID.map` as the process sees it.
    PerfMap,
    /// The jitdump the process has mapped here.
    JitDump(&'a Mapping),
}

/// Reads a process's JIT symbol file on behalf of [`JitTable::refresh`]: appends the file's
/// bytes from `offset` (at most `max`) to `buf`.
pub type ReadPerfMap<'a> =
    dyn FnMut(Pid, JitFile<'_>, u64, usize, &mut Vec<u8>) -> PerfMapRead + 'a;

/// A jitdump being read.
#[derive(Debug, Clone)]
struct DumpSource {
    mapping: Mapping,
    parser: JitDumpParser,
    offset: u64,
}

/// The JIT symbols of every process seen with JIT frames.
#[derive(Debug, Default)]
pub struct JitTable {
    procs: HashMap<Pid, JitSymbols>,
    /// Scratch buffer for reads, kept to avoid reallocating it.
    buf: Vec<u8>,
}

impl JitTable {
    /// The name of JIT address `addr` in process `pid`.
    pub fn lookup(&self, pid: Pid, addr: u64) -> Option<&str> {
        self.procs.get(&pid)?.lookup(addr)
    }

    /// The entry covering JIT address `addr` in process `pid`.
    pub fn entry(&self, pid: Pid, addr: u64) -> Option<&JitEntry> {
        self.procs.get(&pid)?.entry(addr)
    }

    /// Whether a read of `pid`'s map is allowed at `now` (never read, or not for
    /// [`REFRESH_INTERVAL`]) and useful (a sampled address missed).
    pub fn refresh_due(&self, pid: Pid, now: Instant) -> bool {
        self.procs.get(&pid).is_some_and(|s| {
            s.missed
                && !s.closed
                && s.last_read
                    .is_none_or(|t| now.saturating_duration_since(t) >= REFRESH_INTERVAL)
        })
    }

    pub fn get(&self, pid: Pid) -> Option<&JitSymbols> {
        self.procs.get(&pid)
    }

    /// Notes that a sample of `pid` ran JIT code at `addr`: when no entry covers it, the map
    /// is read again at the next [`JitTable::refresh_missed`].
    pub fn note_address(&mut self, pid: Pid, addr: u64) {
        match self.procs.get_mut(&pid) {
            Some(s) if s.closed || s.missed || s.lookup(addr).is_some() => {}
            Some(s) => s.missed = true,
            None => {
                self.procs.insert(
                    pid,
                    JitSymbols {
                        missed: true,
                        ..Default::default()
                    },
                );
            }
        }
    }

    /// Reads the maps of processes with misses, each at most every [`REFRESH_INTERVAL`].
    /// Returns rejection reasons seen for the first time, to report once.
    pub fn refresh_missed(&mut self, now: Instant, read: &mut ReadPerfMap<'_>) -> Vec<String> {
        let mut news = Vec::new();
        let due: Vec<Pid> = self
            .procs
            .keys()
            .filter(|p| self.refresh_due(**p, now))
            .copied()
            .collect();
        let mut budget = MAX_REFRESH_ALL_BYTES;
        for pid in due {
            if budget == 0 {
                // Still missed: read at a later turn.
                break;
            }
            if let Some(reason) = self.refresh_within(pid, now, read, &mut budget) {
                news.push(reason);
            }
        }
        news
    }

    /// Reads what was appended to `pid`'s map (and jitdump) since the last read. Returns
    /// the reason a file was refused, the first time it is.
    pub fn refresh(
        &mut self,
        pid: Pid,
        now: Instant,
        read: &mut ReadPerfMap<'_>,
    ) -> Option<String> {
        let mut budget = MAX_REFRESH_ALL_BYTES;
        self.refresh_within(pid, now, read, &mut budget)
    }

    /// [`JitTable::refresh`], reading at most `budget` bytes (and taking them from it).
    fn refresh_within(
        &mut self,
        pid: Pid,
        now: Instant,
        read: &mut ReadPerfMap<'_>,
        budget: &mut usize,
    ) -> Option<String> {
        let s = self.procs.entry(pid).or_default();
        s.missed = false;
        s.last_read = Some(now);
        s.stats.reads += 1;
        let mut changed = false;
        let mut refused = None;
        match s.pump_map(pid, &mut self.buf, read, budget) {
            Ok(c) => changed |= c,
            Err(reason) => refused = Some(reason),
        }
        match s.pump_dump(pid, &mut self.buf, read, budget) {
            Ok(c) => changed |= c,
            Err(reason) => refused = refused.or(Some(reason)),
        }
        if changed {
            s.reindex();
        }
        let reason = refused?;
        let first = s.rejected.is_none();
        s.rejected = Some(reason.clone());
        first.then_some(reason)
    }

    /// The process mapped a jitdump (`jit-PID.dump`): it is read along with the perf map.
    pub fn add_jitdump(&mut self, pid: Pid, mapping: &Mapping) {
        let s = self.procs.entry(pid).or_default();
        if s.closed
            || s.dump
                .as_ref()
                .is_some_and(|d| d.mapping.inode == mapping.inode)
        {
            return;
        }
        s.dump = Some(DumpSource {
            mapping: mapping.clone(),
            parser: JitDumpParser::default(),
            offset: 0,
        });
    }

    /// Whether a sampled address of `pid` missed since its map was last read.
    pub fn has_misses(&self, pid: Pid) -> bool {
        self.procs.get(&pid).is_some_and(|s| s.missed && !s.closed)
    }

    /// The process exited: its symbols are kept for symbolization, its map no longer read.
    pub fn close(&mut self, pid: Pid) {
        if let Some(s) = self.procs.get_mut(&pid) {
            s.closed = true;
        }
    }

    /// The process exec'd: a new program, whose map starts again.
    pub fn reset(&mut self, pid: Pid) {
        self.procs.remove(&pid);
    }

    /// Drops the symbols of exited processes that `keep` does not ask for (frames not yet
    /// symbolized).
    pub fn release_closed(&mut self, keep: impl Fn(Pid) -> bool) {
        self.procs.retain(|pid, s| !s.closed || keep(*pid));
    }

    /// Counters summed over every process.
    pub fn stats(&self) -> PerfMapStats {
        let mut t = PerfMapStats::default();
        for s in self.procs.values() {
            t.entries += s.stats.entries;
            t.malformed += s.stats.malformed;
            t.overlapped += s.stats.overlapped;
            t.dropped += s.stats.dropped;
            t.reads += s.stats.reads;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &[u8]) -> (JitSymbols, usize) {
        let mut s = JitSymbols::default();
        let used = s.feed(text);
        (s, used)
    }

    #[test]
    fn parses_v8_and_cpython_lines() {
        let text = b"7f4d82febb00 378 JS:~jsHot /app/split.js:22:15\n\
                     18c4000 300 Builtin:DeoptimizationEntry_Eager\n\
                     7f70886b87c7 b py::leaf:/app/x.py\n";
        let (s, used) = parse_all(text);
        assert_eq!(used, text.len());
        assert_eq!(s.stats.entries, 3);
        assert_eq!(
            s.lookup(0x7f4d82febb00),
            Some("JS:~jsHot /app/split.js:22:15")
        );
        assert_eq!(
            s.lookup(0x7f4d82febb00 + 0x377),
            Some("JS:~jsHot /app/split.js:22:15")
        );
        assert_eq!(s.lookup(0x7f4d82febb00 + 0x378), None);
        assert_eq!(s.lookup(0x7f70886b87c7 + 0xa), Some("py::leaf:/app/x.py"));
        assert_eq!(s.lookup(0x18c3fff), None);
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let text = b"zz00 10 bad_hex\n\
                     1000 0 zero_size\n\
                     1000 fffffffffff huge_size\n\
                     ffffffffffffff00 100 overflowing\n\
                     1000 10\n\
                     1000\n\
                     0x1000 10 prefixed\n\
                     +1000 10 plus\n\
                     11112222333344445 10 seventeen_digits\n\
                     \n\
                     2000 10 good one\r\n";
        let (s, used) = parse_all(text);
        assert_eq!(used, text.len());
        assert_eq!(s.stats.malformed, 9);
        assert_eq!(s.len(), 1);
        assert_eq!(s.lookup(0x2008), Some("good one"));
    }

    #[test]
    fn non_utf8_names_are_kept_lossily() {
        let (s, _) = parse_all(b"1000 10 caf\xe9 \xff\xfe\n");
        assert_eq!(s.lookup(0x1000), Some("caf\u{fffd} \u{fffd}\u{fffd}"));
        let (s, _) = parse_all(b"10\xff0 10 x\n");
        assert_eq!((s.len(), s.stats.malformed), (0, 1));
    }

    #[test]
    fn incomplete_last_line_waits_for_the_writer() {
        let mut s = JitSymbols::default();
        let first = b"1000 10 one\n2000 10 tw";
        let used = s.feed(first);
        assert_eq!(used, 12);
        assert_eq!((s.len(), s.lookup(0x2000)), (1, None));
        // The next read starts where this one stopped, and finds the line finished.
        let used2 = s.feed(b"2000 10 two\n");
        assert_eq!(used2, 12);
        assert_eq!(s.lookup(0x2000), Some("two"));
        // Every cut of a line is either consumed whole or left alone, never half-parsed.
        let line = b"7f4d82febb00 378 JS:~jsHot /app/split.js:22:15\n";
        for cut in 0..line.len() {
            let (s, used) = parse_all(&line[..cut]);
            assert_eq!((used, s.len(), s.stats.malformed), (0, 0, 0));
        }
    }

    #[test]
    fn huge_lines_are_skipped_without_buffering() {
        let mut huge = vec![b'a'; 1 << 20];
        huge.extend_from_slice(b"\n3000 10 after\n");
        let (s, used) = parse_all(&huge);
        assert_eq!(used, huge.len());
        assert_eq!((s.stats.malformed, s.lookup(0x3000)), (1, Some("after")));

        // Split across reads: the first read ends inside the long line.
        let mut s = JitSymbols::default();
        let head = vec![b'b'; MAX_LINE_BYTES + 1];
        assert_eq!(s.feed(&head), head.len());
        assert_eq!(s.feed(b"bbbb\n4000 10 next\n"), 18);
        assert_eq!((s.stats.malformed, s.lookup(0x4000)), (1, Some("next")));

        // A line just within the cap is accepted.
        let mut ok = b"5000 10 ".to_vec();
        ok.resize(MAX_LINE_BYTES, b'n');
        ok.push(b'\n');
        let (s, _) = parse_all(&ok);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn later_entries_win_where_they_overlap() {
        let text = b"1000 100 old\n\
                     1080 100 newer_overlapping\n\
                     3000 10 kept\n\
                     3000 10 same_range_later\n\
                     5000 1000 wide_old\n\
                     5100 10 inner_new\n";
        let (s, _) = parse_all(text);
        assert_eq!(s.lookup(0x1010), None, "the overlapped old entry is gone");
        assert_eq!(s.lookup(0x1090), Some("newer_overlapping"));
        assert_eq!(s.lookup(0x3000), Some("same_range_later"));
        assert_eq!(s.lookup(0x5100), Some("inner_new"));
        assert_eq!(s.stats.overlapped, 3);
        // Lookups stay well defined on any input order.
        let (s, _) = parse_all(b"9000 10 c\n1000 10 a\n5000 10 b\n");
        assert_eq!(s.lookup(0x5004), Some("b"));
        assert_eq!(s.lookup(0x1004), Some("a"));
        assert_eq!(s.lookup(0x9004), Some("c"));
    }

    #[test]
    fn entry_count_is_capped() {
        let mut s = JitSymbols::default();
        let mut text = Vec::new();
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            text.extend_from_slice(format!("{:x} 10 f\n", 0x1000 + i * 0x10).as_bytes());
        }
        s.feed(&text);
        assert_eq!(s.len(), MAX_ENTRIES);
        assert_eq!(s.stats.dropped, 10);
    }

    /// A fake file that grows and can be rewritten.
    struct FakeMap {
        text: Vec<u8>,
        reads: usize,
    }

    impl FakeMap {
        fn read(&mut self, offset: u64, max: usize, buf: &mut Vec<u8>) -> PerfMapRead {
            self.reads += 1;
            let start = (offset as usize).min(self.text.len());
            let end = start.saturating_add(max).min(self.text.len());
            buf.extend_from_slice(&self.text[start..end]);
            PerfMapRead::Read {
                file_len: self.text.len() as u64,
            }
        }
    }

    /// Mutated perf maps (a target writes them) never panic the reader.
    #[test]
    fn mutated_perf_maps_are_read_without_panics() {
        use sprofd_tests::fuzz;
        let seed = b"7f0000001000 40 LazyCompile:*render app.js:3:7\n\
                     7f0000002000 1a py::main:/srv/app.py\n1000 10 [stub]\n"
            .to_vec();
        fuzz::run(
            "perf-map",
            &[seed],
            fuzz::iterations(5000),
            std::time::Duration::from_millis(200),
            |input| {
                let mut s = JitSymbols::default();
                let used = s.feed(input);
                s.feed(&input[used..]);
                let _ = s.lookup(0x7f00_0000_1010);
            },
        );
    }

    #[test]
    fn name_bytes_are_capped_per_process() {
        // 4000-byte names (the red-team review's 200 MB map): kept up to the byte bound.
        let mut s = JitSymbols::default();
        let name = "N".repeat(4000);
        let lines = MAX_NAME_BYTES / 4000 + 50;
        let mut text = Vec::new();
        for i in 0..lines as u64 {
            text.extend_from_slice(format!("{:x} 10 {name}\n", 0x1000 + i * 0x10).as_bytes());
        }
        s.feed(&text);
        assert_eq!(s.len(), MAX_NAME_BYTES / 4000);
        assert_eq!(s.stats.dropped, 50);
        assert!(s.name_bytes <= MAX_NAME_BYTES);
    }

    #[test]
    fn a_file_that_never_ends_is_read_up_to_the_bound_then_refused_once() {
        // A file claiming to be endless (a sparse terabyte, say) that a loader accepts:
        // each refresh reads at most its share, and the process's total is bounded.
        let pid = Pid(9);
        let reads = std::cell::Cell::new(0u64);
        let mut read = |_: Pid, _: JitFile<'_>, _off: u64, max: usize, buf: &mut Vec<u8>| {
            reads.set(reads.get() + max as u64);
            buf.resize(buf.len() + max, 0);
            PerfMapRead::Read { file_len: 1 << 40 }
        };
        let mut table = JitTable::default();
        let t0 = Instant::now();
        let mut reasons = Vec::new();
        for turn in 0..200u32 {
            table.note_address(pid, 0x1000);
            let before = reads.get();
            reasons.extend(table.refresh_missed(t0 + REFRESH_INTERVAL * turn, &mut read));
            assert!(reads.get() - before <= MAX_REFRESH_BYTES as u64);
        }
        assert!(
            reads.get() <= MAX_FILE_BYTES + READ_CHUNK as u64,
            "{}",
            reads.get()
        );
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("limit per process"), "{reasons:?}");
    }

    #[test]
    fn one_refresh_reads_a_bounded_total_over_every_process() {
        let reads = std::cell::Cell::new(0u64);
        let mut read = |_: Pid, _: JitFile<'_>, _off: u64, max: usize, buf: &mut Vec<u8>| {
            reads.set(reads.get() + max as u64);
            buf.resize(buf.len() + max, b'a');
            PerfMapRead::Read { file_len: 1 << 40 }
        };
        let mut table = JitTable::default();
        for pid in 1..=50 {
            table.note_address(Pid(pid), 0x1000);
        }
        table.refresh_missed(Instant::now(), &mut read);
        assert!(reads.get() <= MAX_REFRESH_ALL_BYTES as u64 + READ_CHUNK as u64);
        // Those not reached are still due.
        assert!((1..=50).any(|p| table.has_misses(Pid(p))));
    }

    #[test]
    fn misses_reread_the_growing_map_at_most_every_interval() {
        let pid = Pid(7);
        let map = std::cell::RefCell::new(FakeMap {
            text: b"1000 10 first\n".to_vec(),
            reads: 0,
        });
        let mut read = |_: Pid, _: JitFile<'_>, off: u64, max: usize, buf: &mut Vec<u8>| {
            map.borrow_mut().read(off, max, buf)
        };
        let mut table = JitTable::default();
        let t0 = Instant::now();
        table.note_address(pid, 0x1000);
        table.refresh_missed(t0, &mut read);
        assert_eq!(table.lookup(pid, 0x1004), Some("first"));
        map.borrow_mut().text.extend_from_slice(b"2000 10 second\n");
        // A hit asks for nothing; a miss asks, but only once the interval has passed.
        table.note_address(pid, 0x1000);
        table.note_address(pid, 0x2000);
        table.refresh_missed(t0 + REFRESH_INTERVAL / 5, &mut read);
        assert_eq!(table.lookup(pid, 0x2000), None);
        table.refresh_missed(t0 + REFRESH_INTERVAL, &mut read);
        assert_eq!(table.lookup(pid, 0x2000), Some("second"));
        assert_eq!(table.lookup(pid, 0x1000), Some("first"));
        assert_eq!(map.borrow().reads, 2);

        // Rewritten shorter (a new program): the old entries go.
        map.borrow_mut().text = b"3000 10 third\n".to_vec();
        table.note_address(pid, 0x3000);
        table.refresh_missed(t0 + 2 * REFRESH_INTERVAL, &mut read);
        assert_eq!(table.lookup(pid, 0x3000), Some("third"));
        assert_eq!(table.lookup(pid, 0x1000), None);

        // Exited: kept for symbolization, never read again, released when not needed.
        table.close(pid);
        table.note_address(pid, 0x9000);
        let reads = map.borrow().reads;
        table.refresh_missed(t0 + 10 * REFRESH_INTERVAL, &mut read);
        assert_eq!(map.borrow().reads, reads);
        table.release_closed(|p| p == pid);
        assert_eq!(table.lookup(pid, 0x3000), Some("third"));
        table.release_closed(|_| false);
        assert!(table.get(pid).is_none());
    }

    #[test]
    fn a_mapped_jitdump_is_read_with_the_perf_map() {
        use crate::jitdump::tests::{code_load_record, header};
        let mut dump = header();
        dump.extend(code_load_record(0x5000, 11, "py::f:/app/x.py"));
        let half = dump.len() - 4;
        let dump = std::cell::RefCell::new((dump, half));
        let mut read = |_: Pid, file: JitFile<'_>, off: u64, max: usize, buf: &mut Vec<u8>| {
            let (bytes, visible) = &*dump.borrow();
            match file {
                JitFile::PerfMap => PerfMapRead::Missing,
                JitFile::JitDump(m) => {
                    assert_eq!(m.path, "/tmp/jit-7.dump");
                    let end = (*visible).min(off as usize + max);
                    buf.extend_from_slice(&bytes[off as usize..end]);
                    PerfMapRead::Read {
                        file_len: *visible as u64,
                    }
                }
            }
        };
        let m = crate::maps::parse_line("7000-8000 r-xp 00000000 fe:01 9 /tmp/jit-7.dump").unwrap();
        let mut table = JitTable::default();
        table.add_jitdump(Pid(7), &m);
        let t0 = Instant::now();
        table.refresh(Pid(7), t0, &mut read);
        assert_eq!(
            table.lookup(Pid(7), 0x5004),
            None,
            "the record is not complete yet"
        );
        let full = dump.borrow().0.len();
        dump.borrow_mut().1 = full;
        table.refresh(Pid(7), t0 + REFRESH_INTERVAL, &mut read);
        assert_eq!(table.lookup(Pid(7), 0x5004), Some("py::f:/app/x.py"));
        assert_eq!(table.entry(Pid(7), 0x5000).map(|e| e.end), Some(0x500b));
    }

    #[test]
    fn a_rejected_map_is_reported_once() {
        let mut table = JitTable::default();
        let mut read = |_: Pid, _: JitFile<'_>, _: u64, _: usize, _: &mut Vec<u8>| {
            PerfMapRead::Rejected("owned by uid 65534".into())
        };
        let t0 = Instant::now();
        assert_eq!(
            table.refresh(Pid(1), t0, &mut read).as_deref(),
            Some("owned by uid 65534")
        );
        assert_eq!(table.refresh(Pid(1), t0, &mut read), None);
    }
}
