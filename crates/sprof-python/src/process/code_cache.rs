//! The code-object cache: each frame's code object validated with one batched read (a
//! checksum of immutable fields, so a freed and reused address is noticed), new ones read
//! (names, file, line table: two batched reads) and interned, and the frame's line computed.

use super::*;
use crate::layout::LineFormat;
use crate::linetable;

/// Largest `co_linetable` we fetch (py-spy's bytes cap); beyond it lines are unknown.
const MAX_LINETABLE: u64 = 64 * 1024;

/// Code objects cached per process before the cache is dropped and refilled.
const MAX_CACHED_CODES: usize = 1 << 16;

/// FNV-1a over fields that never change during a code object's life: type, flags, argument
/// count, first line, and the name/file/table pointers. A different object at a reused address
/// differs in at least one of these in practice.
fn checksum(l: &Layout, window: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| {
        for b in v.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    mix(le_u64(window, l.ob_type));
    mix(u64::from(le_u32(window, l.co_flags)));
    if let Some(o) = l.co_argcount {
        mix(u64::from(le_u32(window, o)));
    }
    mix(u64::from(le_u32(window, l.co_firstlineno)));
    for o in [
        l.co_filename,
        l.co_name,
        l.co_qualname.unwrap_or(l.co_name),
        l.co_linetable,
    ] {
        mix(le_u64(window, o));
    }
    h
}

impl PythonProcess {
    /// Drops the code cache (e.g. after the engine saw the process exec or unmap code).
    pub fn clear_code_cache(&mut self) {
        self.codes.clear();
    }

    /// Validates every frame's code object with one batched read, loads unknown ones, and
    /// emits `PyFrame`s.
    pub(super) fn resolve_frames(
        &mut self,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<(), PyError> {
        let w = self.layout.code_window();
        self.code_addrs.clear();
        for f in &self.raw {
            check_range("code object", f.code, w)?;
            self.code_addrs.push(f.code);
        }
        self.windows.resize(self.code_addrs.len() * w, 0);
        self.mem
            .read_uniform("code object", &self.code_addrs, w, &mut self.windows)?;
        if self.codes.len() > MAX_CACHED_CODES {
            self.codes.clear();
        }
        for i in 0..self.raw.len() {
            let f = self.raw[i];
            let window = &self.windows[i * w..(i + 1) * w];
            let l = &self.layout;
            if let Some(t) = self.code_type {
                if le_u64(window, l.ob_type) != t {
                    if l.minor >= 13 {
                        // f_executable may legitimately be something else on 3.13.
                        self.stats.skipped_frames += 1;
                        if f.entry {
                            if let Some(last) = out.last_mut() {
                                last.entry = true;
                            }
                        }
                        continue;
                    }
                    return Err(PyError::NotCode { addr: f.code });
                }
            }
            let sum = checksum(l, window);
            let fresh = self.codes.get(&f.code).is_some_and(|c| c.checksum == sum);
            if !fresh {
                let window = window.to_vec();
                let c = self.load_code(f.code, &window, sum, codes)?;
                self.codes.insert(f.code, c);
            }
            let Some(c) = self.codes.get(&f.code) else {
                continue;
            };
            let line = match self.layout.line_format {
                LineFormat::Locations => linetable::line_for(&c.linetable, c.first_line, f.addrq),
                LineFormat::Pep626 => {
                    linetable::line_for_pep626(&c.linetable, c.first_line, f.addrq)
                }
                LineFormat::Lnotab => {
                    linetable::line_for_lnotab(&c.linetable, c.first_line, f.addrq)
                }
            }
            .unwrap_or(0);
            out.push(PyFrame {
                addr: f.addr,
                code: c.id,
                line,
                entry: f.entry,
            });
        }
        Ok(())
    }

    /// Reads a code object's strings and location table: two batched syscalls.
    fn load_code(
        &mut self,
        addr: u64,
        window: &[u8],
        checksum: u64,
        codes: &mut CodeTable,
    ) -> Result<CachedCode, PyError> {
        self.stats.code_misses += 1;
        let l = self.layout;
        let first_line = le_i32(window, l.co_firstlineno);
        // Before 3.11 there is no co_qualname: the name is read twice and stands in for it.
        let ptrs = [
            le_u64(window, l.co_qualname.unwrap_or(l.co_name)),
            le_u64(window, l.co_name),
            le_u64(window, l.co_filename),
        ];
        let table = le_u64(window, l.co_linetable);
        let spans = self.code_spans(addr, ptrs, table)?;

        // 2: the character data and the table.
        let total: usize = spans.iter().map(|s| s.1).sum();
        let mut data = vec![0u8; total];
        {
            let mut rest = &mut data[..];
            let mut reqs: Vec<(u64, &mut [u8])> = Vec::with_capacity(4);
            for &(a, n, _) in &spans {
                let (head, tail) = rest.split_at_mut(n);
                rest = tail;
                if n > 0 {
                    reqs.push((a, head));
                }
            }
            self.mem.read_vectored("code object strings", &mut reqs)?;
        }
        let mut texts: [String; 3] = Default::default();
        let mut at = 0;
        for (i, t) in texts.iter_mut().enumerate() {
            let (_, n, kind) = spans[i];
            strings::decode(kind, &data[at..at + n], &mut self.text);
            t.push_str(&self.text);
            at += n;
        }
        let linetable = data[at..].to_vec().into_boxed_slice();
        let [qualname, name, filename] = texts;
        let first = u32::try_from(first_line).unwrap_or(0);
        let id = codes.intern(&qualname, &name, &filename, first);
        Ok(CachedCode {
            checksum,
            id,
            first_line,
            linetable,
        })
    }

    /// The first read of [`load_code`](Self::load_code): the headers of the three strings at
    /// `ptrs` and of the bytes object `table`, in one syscall, giving `(address, bytes,
    /// character kind)` of each one's data (the table's capped at [`MAX_LINETABLE`]).
    fn code_spans(
        &mut self,
        addr: u64,
        ptrs: [u64; 3],
        table: u64,
    ) -> Result<[(u64, usize, u8); 4], PyError> {
        let l = self.layout;
        let str_head = l.ascii_size as usize;
        let bytes_head = l.bytes_sval as usize;
        for &p in &ptrs {
            check_range("str", p, str_head)?;
        }
        check_range("co_linetable", table, bytes_head)?;

        // 1: the three string headers and the bytes header.
        let mut heads = vec![0u8; 3 * str_head + bytes_head];
        {
            let (s, b) = heads.split_at_mut(3 * str_head);
            let mut it = s.chunks_mut(str_head);
            let (Some(h0), Some(h1), Some(h2)) = (it.next(), it.next(), it.next()) else {
                return Err(PyError::BadString {
                    addr,
                    reason: "header",
                });
            };
            self.mem.read_vectored(
                "code object strings",
                &mut [(ptrs[0], h0), (ptrs[1], h1), (ptrs[2], h2), (table, b)],
            )?;
        }
        let mut spans = [(0u64, 0usize, 0u8); 4];
        for (i, &p) in ptrs.iter().enumerate() {
            let h = &heads[i * str_head..(i + 1) * str_head];
            let state = le_u32(h, l.str_state);
            let layout = strings::layout(state, l.ascii_size, l.compact_size)
                .map_err(|reason| PyError::BadString { addr: p, reason })?;
            let len = le_u64(h, l.str_length);
            let chars = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(strings::MAX_CHARS);
            spans[i] = (
                p + layout.data_offset,
                chars * usize::from(layout.kind),
                layout.kind,
            );
        }
        let table_len = le_u64(&heads[3 * str_head..], l.bytes_size);
        let table_len = if table_len <= MAX_LINETABLE {
            table_len as usize
        } else {
            0
        };
        spans[3] = (table + l.bytes_sval, table_len, 1);
        Ok(spans)
    }
}
