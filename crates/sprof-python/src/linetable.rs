//! Decoding of CPython's line tables: the 3.11+ location table (`co_linetable`, CPython
//! `Objects/locations.md`), 3.10's PEP 626 `co_linetable` and 3.8/3.9's `co_lnotab`.
//!
//! This module owns only the byte formats: given the table, the code object's first line and an
//! instruction offset, it returns the source line. It never reads target memory, so every case
//! (long, no-location, one-line, short entries, lost sync) is unit-tested on hand-built tables.

/// Location-table entry codes with a variable-length line delta (the 4-bit field of the start byte).
const CODE_NO_COLUMNS: u8 = 13;
const CODE_LONG: u8 = 14;

/// Varints in the table are small (line deltas, columns); more than this many 6-bit chunks means
/// the table is corrupt or we lost sync, and we must not loop or overflow on hostile bytes.
const MAX_VARINT_CHUNKS: u32 = 6;

/// The line for code unit `addrq` (`-1` = frame not started), or `None` when the table has no
/// location for it, is corrupt, or ends before `addrq`. Mirrors `PyCode_Addr2Line` semantics.
pub fn line_for(table: &[u8], first_line: i32, addrq: i64) -> Option<u32> {
    if addrq < 0 {
        return u32::try_from(first_line).ok().filter(|&l| l > 0);
    }
    let mut cur = Cursor { table, pos: 0 };
    let mut line = i64::from(first_line);
    let mut start: i64 = 0;
    while cur.pos < table.len() {
        let head = cur.byte()?;
        if head & 0x80 == 0 {
            // Not an entry start: sync lost (stale or torn table). Unknown, like OpenTelemetry.
            return None;
        }
        let code = (head >> 3) & 0x0f;
        let len = i64::from(head & 0x07) + 1;
        let entry_line = match code {
            0..=9 => {
                cur.skip(1)?;
                Some(line)
            }
            10..=12 => {
                line += i64::from(code - 10);
                cur.skip(2)?;
                Some(line)
            }
            CODE_NO_COLUMNS => {
                line += cur.svarint()?;
                Some(line)
            }
            CODE_LONG => {
                line += cur.svarint()?;
                cur.varint()?; // end-line delta
                cur.varint()?; // column + 1
                cur.varint()?; // end column + 1
                Some(line)
            }
            // CODE_NONE (15), the only value left of the 4-bit field: no location.
            _ => None,
        };
        if addrq < start + len {
            return entry_line
                .and_then(|l| u32::try_from(l).ok())
                .filter(|&l| l > 0);
        }
        start += len;
    }
    None
}

/// 3.10 (PEP 626) `co_linetable`: `(bytecode delta: u8, line delta: i8)` pairs, a line delta
/// of -128 meaning "no line" for that range; `addr` is in bytes (`f_lasti * 2`). Zero-length
/// ranges only move the line, as in CPython's `PyLineTable_NextAddressRange`.
pub fn line_for_pep626(table: &[u8], first_line: i32, addr: i64) -> Option<u32> {
    if addr < 0 {
        return u32::try_from(first_line).ok().filter(|&l| l > 0);
    }
    let mut line = i64::from(first_line);
    let mut end: i64 = 0;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        let range_line = if delta == -128 {
            None
        } else {
            line += i64::from(delta);
            Some(line)
        };
        if start <= addr && addr < end {
            return range_line
                .and_then(|l| u32::try_from(l).ok())
                .filter(|&l| l > 0);
        }
    }
    None
}

/// 3.8/3.9 `co_lnotab`: `(bytecode delta: u8, line delta: i8)` pairs; `addr` is `f_lasti` in
/// bytes. Mirrors 3.8's `PyCode_Addr2Line`, which cannot say "unknown".
pub fn line_for_lnotab(table: &[u8], first_line: i32, addr: i64) -> Option<u32> {
    let mut line = i64::from(first_line);
    let mut at: i64 = 0;
    for pair in table.chunks_exact(2) {
        at += i64::from(pair[0]);
        if at > addr {
            break;
        }
        line += i64::from(pair[1] as i8);
    }
    u32::try_from(line).ok().filter(|&l| l > 0)
}

struct Cursor<'a> {
    table: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.table.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Skips `n` continuation bytes; each must have bit 7 clear or the entry is torn.
    fn skip(&mut self, n: usize) -> Option<()> {
        for _ in 0..n {
            if self.byte()? & 0x80 != 0 {
                return None;
            }
        }
        Some(())
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0u32;
        for _ in 0..MAX_VARINT_CHUNKS {
            let b = self.byte()?;
            if b & 0x80 != 0 {
                return None;
            }
            value |= u64::from(b & 0x3f) << shift;
            shift += 6;
            if b & 0x40 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn svarint(&mut self) -> Option<i64> {
        let v = self.varint()?;
        let magnitude = i64::try_from(v >> 1).ok()?;
        Some(if v & 1 != 0 { -magnitude } else { magnitude })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(code: u8, len: u8) -> u8 {
        0x80 | (code << 3) | (len - 1)
    }

    /// Encodes a varint the way CPython's `write_varint` does.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 64 {
            out.push(0x40 | (v & 0x3f) as u8);
            v >>= 6;
        }
        out.push(v as u8);
    }

    fn svarint(v: i64, out: &mut Vec<u8>) {
        let u = if v < 0 {
            ((-v as u64) << 1) | 1
        } else {
            (v as u64) << 1
        };
        varint(u, out);
    }

    #[test]
    fn not_started_is_first_line() {
        assert_eq!(line_for(&[], 7, -1), Some(7));
    }

    #[test]
    fn mixed_entries() {
        let mut t = Vec::new();
        // units 0..2: no-columns, line += 1 -> 11
        t.push(head(13, 2));
        svarint(1, &mut t);
        // units 2..5: short form, line unchanged -> 11
        t.push(head(3, 3));
        t.push(0x12);
        // units 5..6: one-line, += 2 -> 13
        t.push(head(12, 1));
        t.extend([4, 9]);
        // units 6..8: no location
        t.push(head(15, 2));
        // units 8..16: long, line += 300 -> 313 (multi-chunk varint)
        t.push(head(14, 8));
        svarint(300, &mut t);
        varint(2, &mut t);
        varint(5, &mut t);
        varint(70, &mut t);
        // units 16..17: no-columns with a negative delta: 313 - 303 = 10
        t.push(head(13, 1));
        svarint(-303, &mut t);

        let got: Vec<_> = (0..18).map(|a| line_for(&t, 10, a)).collect();
        let want = [
            Some(11),
            Some(11),
            Some(11),
            Some(11),
            Some(11),
            Some(13),
            None,
            None,
            Some(313),
            Some(313),
            Some(313),
            Some(313),
            Some(313),
            Some(313),
            Some(313),
            Some(313),
            Some(10),
            None, // past the end
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn one_line_codes_10_to_12() {
        let t = [head(10, 1), 0, 0, head(11, 1), 0, 0, head(12, 1), 0, 0];
        assert_eq!(line_for(&t, 5, 0), Some(5));
        assert_eq!(line_for(&t, 5, 1), Some(6));
        assert_eq!(line_for(&t, 5, 2), Some(8));
    }

    #[test]
    fn sync_loss_is_unknown() {
        // A continuation byte where an entry start is expected.
        let t = [head(3, 1), 0x01, 0x05, head(13, 1), 0x02];
        assert_eq!(line_for(&t, 5, 0), Some(5));
        assert_eq!(line_for(&t, 5, 1), None);
        assert_eq!(line_for(&t, 5, 2), None);
    }

    #[test]
    fn torn_entry_and_runaway_varint() {
        // Short entry whose column byte is missing.
        assert_eq!(line_for(&[head(3, 1)], 5, 0), None);
        // One-line entry whose column byte has bit 7 set.
        assert_eq!(line_for(&[head(10, 1), 0x80, 0x00], 5, 0), None);
        // A varint that never ends within the cap.
        let t = [head(13, 1), 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x01];
        assert_eq!(line_for(&t, 5, 0), None);
    }

    #[test]
    fn negative_or_zero_line_is_unknown() {
        let mut t = vec![head(13, 1)];
        svarint(-10, &mut t);
        assert_eq!(line_for(&t, 5, 0), None);
    }

    #[test]
    fn pep626_table() {
        // bytes 0..4 line 5 (+0), 4..10 line 7 (+2), a zero-length range moving the line to 9,
        // 10..12 no line, 12..14 line 8 (-1 from 9).
        let t = [4, 0, 6, 2, 0, 2, 2, 0x80, 2, 0xff];
        let lines: Vec<_> = [-2, 0, 3, 4, 9, 10, 11, 12, 13, 14]
            .iter()
            .map(|&a| line_for_pep626(&t, 5, a))
            .collect();
        assert_eq!(
            lines,
            [
                Some(5),
                Some(5),
                Some(5),
                Some(7),
                Some(7),
                None,
                None,
                Some(8),
                Some(8),
                None
            ]
        );
        // A trailing odd byte is ignored.
        assert_eq!(line_for_pep626(&[2, 1, 9], 5, 1), Some(6));
    }

    #[test]
    fn lnotab_table() {
        // bytes 0..6 line 10, 6..8 line 12, 8.. line 11 (negative delta).
        let t = [6, 2, 2, 0xff];
        let lines: Vec<_> = [-1, 0, 5, 6, 7, 8, 100]
            .iter()
            .map(|&a| line_for_lnotab(&t, 10, a))
            .collect();
        assert_eq!(
            lines,
            [
                Some(10),
                Some(10),
                Some(10),
                Some(12),
                Some(12),
                Some(11),
                Some(11)
            ]
        );
    }
}
