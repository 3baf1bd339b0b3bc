//! Struct offsets per CPython minor version (cpython-frames.md §2, §4, §5).
//!
//! Owns every number that depends on the interpreter's build: hard-coded tables for 3.8–3.10
//! (from `offsetof` against the pyenv headers, x86_64) and 3.11–3.12 (verified on x86_64), and
//! for 3.13 a parser of the `_Py_DebugOffsets` table the target
//! itself publishes at `&_PyRuntime`, validated before use. Semantics that the table does not
//! describe (owner values, `state` bits, the compact-string data offset) stay hand-coded.

/// Size of the 3.13 `_Py_DebugOffsets` prefix we parse (cookie + 72 `uint64_t` fields).
pub const DEBUG_OFFSETS_LEN: usize = 8 + 72 * 8;
const COOKIE: &[u8; 8] = b"xdebugpy";

/// How a thread state leads to its innermost frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameRoot {
    /// 3.11/3.12: `tstate->cframe->current_frame`. `_PyCFrame` is a local of each
    /// `_PyEval_EvalFrameDefault` activation (on the C stack), linked outwards by `previous`
    /// down to `tstate->root_cframe` (in the heap); see `PythonProcess::read_thread_at`.
    CFrame {
        cframe: u64,
        current_frame: u64,
        previous: u64,
    },
    /// 3.13: `tstate->current_frame`.
    Direct { current_frame: u64 },
}

/// How the entry of an eval activation is marked (§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMark {
    /// 3.11: `_PyInterpreterFrame.is_entry` at this offset.
    IsEntry(u64),
    /// 3.12/3.13: a shim frame with `owner == 3` sits just outside each activation.
    ShimOwner,
    /// ≤ 3.10: every `PyFrameObject` has its own eval activation.
    EveryFrame,
}

/// What the frame's instruction field holds and how it becomes a line-table offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    /// 3.11+: a pointer into `co_code_adaptive`; offset in code units.
    Pointer,
    /// 3.10: `int f_lasti` in code units; the table wants bytes (`× 2`).
    LastiUnits,
    /// 3.8/3.9: `int f_lasti` in bytes.
    LastiBytes,
}

/// The `co_linetable` / `co_lnotab` format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    Locations,
    Pep626,
    Lnotab,
}

/// glibc x86_64 `offsetof(struct pthread, tid)` (0x2d0, stable across glibc 2.x; checked on
/// 2.36). ≤ 3.10 thread states only record `pthread_self()`, the address of that struct.
pub const PTHREAD_TID: u64 = 0x2d0;

/// `_PyInterpreterFrame.owner` of a generator's or coroutine's frame (3.11–3.13).
pub const OWNER_GENERATOR: u8 = 1;

/// `_PyInterpreterFrame.owner` of the shim frame pushed per C→Python entry (3.12, 3.13).
pub const OWNER_CSTACK: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub minor: u8,
    pub interpreters_head: u64,
    pub interp_next: u64,
    pub threads_head: u64,
    pub ts_next: u64,
    pub ts_interp: u64,
    /// `native_thread_id` (3.11+), or on ≤ 3.10 `thread_id` (a `pthread_t`), see `tid_via_pthread`.
    pub ts_native_tid: u64,
    /// ≤ 3.10: the Linux tid is read from glibc's `struct pthread` at `thread_id + PTHREAD_TID`.
    pub tid_via_pthread: bool,
    pub frame_root: FrameRoot,
    /// 3.11/3.12 `PyThreadState.datastack_top`: frames at or above it are popped (checked with
    /// an `offsetof` program against the pyenv 3.11.7 and 3.12.1 headers).
    pub ts_datastack_top: Option<u64>,
    pub fr_code: u64,
    pub fr_previous: u64,
    pub fr_instr: u64,
    /// `_PyInterpreterFrame.owner`; `None` for ≤ 3.10 frame objects.
    pub fr_owner: Option<u64>,
    pub entry: EntryMark,
    pub instr: Instr,
    pub line_format: LineFormat,
    /// Frames are adjacent in a data stack (3.11+), so reading below a frame pays off.
    pub speculate: bool,
    pub co_flags: u64,
    pub co_argcount: Option<u64>,
    pub co_firstlineno: u64,
    pub co_filename: u64,
    pub co_name: u64,
    /// Absent before 3.11: the name stands in for it.
    pub co_qualname: Option<u64>,
    pub co_linetable: u64,
    pub co_code_adaptive: u64,
    pub ob_type: u64,
    pub bytes_size: u64,
    pub bytes_sval: u64,
    pub str_length: u64,
    pub str_state: u64,
    pub ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where non-ASCII compact data starts (unpublished).
    pub compact_size: u64,
}

impl Layout {
    pub fn v311() -> Layout {
        Layout {
            minor: 11,
            interpreters_head: 40,
            interp_next: 0,
            threads_head: 16,
            ts_next: 8,
            ts_interp: 16,
            ts_native_tid: 160,
            tid_via_pthread: false,
            frame_root: FrameRoot::CFrame {
                cframe: 56,
                current_frame: 8,
                previous: 16,
            },
            ts_datastack_top: Some(304),
            fr_code: 32,
            fr_previous: 48,
            fr_instr: 56,
            fr_owner: Some(69),
            entry: EntryMark::IsEntry(68),
            instr: Instr::Pointer,
            line_format: LineFormat::Locations,
            speculate: true,
            co_flags: 48,
            co_argcount: Some(56),
            co_firstlineno: 72,
            co_filename: 112,
            co_name: 120,
            co_qualname: Some(128),
            co_linetable: 136,
            co_code_adaptive: 184,
            ob_type: 8,
            bytes_size: 16,
            bytes_sval: 32,
            str_length: 16,
            str_state: 32,
            ascii_size: 48,
            compact_size: 72,
        }
    }

    pub fn v312() -> Layout {
        Layout {
            minor: 12,
            threads_head: 72,
            ts_native_tid: 144,
            frame_root: FrameRoot::CFrame {
                cframe: 56,
                current_frame: 0,
                previous: 8,
            },
            ts_datastack_top: Some(240),
            fr_code: 0,
            fr_previous: 8,
            fr_owner: Some(70),
            entry: EntryMark::ShimOwner,
            // Not in the verified table for 3.12; the checksum uses the other fields.
            co_argcount: None,
            co_firstlineno: 68,
            co_code_adaptive: 192,
            ascii_size: 40,
            compact_size: 56,
            ..Layout::v311()
        }
    }

    /// 3.8 and 3.9 (identical where it matters): `PyFrameObject` chains, `co_lnotab`.
    pub fn v38(minor: u8) -> Layout {
        Layout {
            minor,
            interpreters_head: 32,
            interp_next: 0,
            threads_head: 8,
            ts_next: 8,
            ts_interp: 16,
            ts_native_tid: 176,
            tid_via_pthread: true,
            frame_root: FrameRoot::Direct { current_frame: 24 },
            ts_datastack_top: None,
            fr_code: 32,
            fr_previous: 24,
            fr_instr: 104,
            fr_owner: None,
            entry: EntryMark::EveryFrame,
            instr: Instr::LastiBytes,
            line_format: LineFormat::Lnotab,
            speculate: false,
            co_flags: 36,
            co_argcount: Some(16),
            co_firstlineno: 40,
            co_filename: 104,
            co_name: 112,
            co_qualname: None,
            co_linetable: 120,
            co_code_adaptive: 0,
            ob_type: 8,
            bytes_size: 16,
            bytes_sval: 32,
            str_length: 16,
            str_state: 32,
            ascii_size: 48,
            compact_size: 72,
        }
    }

    /// 3.10: as 3.9 but `f_lasti` moved and counts code units; PEP 626 line table.
    pub fn v310() -> Layout {
        Layout {
            fr_instr: 96,
            instr: Instr::LastiUnits,
            line_format: LineFormat::Pep626,
            ..Layout::v38(10)
        }
    }

    /// Parses and validates 3.13's `_Py_DebugOffsets` (`raw` read from `&_PyRuntime`).
    /// `expect_minor` comes from `Py_Version` or the file name and must agree.
    pub fn from_debug_offsets(raw: &[u8], expect_minor: u8) -> Result<Layout, String> {
        if raw.len() < DEBUG_OFFSETS_LEN || &raw[..8] != COOKIE {
            return Err("_Py_DebugOffsets cookie missing".into());
        }
        let f =
            |i: usize| u64::from_le_bytes(raw[8 + 8 * i..16 + 8 * i].try_into().unwrap_or([0; 8]));
        let version = f(0);
        let (major, minor) = ((version >> 24) & 0xff, ((version >> 16) & 0xff) as u8);
        if major != 3 || minor != expect_minor {
            return Err(format!(
                "_Py_DebugOffsets says {major}.{minor}, the binary says 3.{expect_minor}"
            ));
        }
        if minor != 13 {
            return Err(format!("no _Py_DebugOffsets parser for 3.{minor}"));
        }
        if f(1) != 0 {
            return Err("free-threaded build".into());
        }
        // (struct size, offsets that must lie inside it), by field index (§5 order).
        let groups: &[(usize, &[usize], u64)] = &[
            (2, &[4], 1 << 22),                        // runtime_state: interpreters_head
            (5, &[7, 8], 1 << 22),                     // interpreter_state: next, threads_head
            (18, &[20, 21, 22, 24], 1 << 16), // thread_state: next, interp, current_frame, native_thread_id
            (27, &[28, 29, 30, 32], 4096), // interpreter_frame: previous, executable, instr_ptr, owner
            (33, &[34, 35, 36, 37, 38, 39, 42], 4096), // code_object
            (43, &[44], 4096),             // pyobject: ob_type
            (63, &[64, 65], 4096),         // bytes_object: ob_size, ob_sval
            (66, &[67, 68, 69], 4096),     // unicode_object: state, length, asciiobject_size
        ];
        for &(size_idx, fields, max) in groups {
            let size = f(size_idx);
            if size == 0 || size > max {
                return Err(format!("_Py_DebugOffsets: implausible struct size {size}"));
            }
            if let Some(&bad) = fields.iter().find(|&&i| f(i).saturating_add(1) > size) {
                return Err(format!(
                    "_Py_DebugOffsets: offset {} outside struct",
                    f(bad)
                ));
            }
        }
        Ok(Layout {
            minor,
            interpreters_head: f(4),
            interp_next: f(7),
            threads_head: f(8),
            ts_next: f(20),
            ts_interp: f(21),
            ts_native_tid: f(24),
            tid_via_pthread: false,
            frame_root: FrameRoot::Direct {
                current_frame: f(22),
            },
            ts_datastack_top: None,
            fr_code: f(29),
            fr_previous: f(28),
            fr_instr: f(30),
            fr_owner: Some(f(32)),
            entry: EntryMark::ShimOwner,
            instr: Instr::Pointer,
            line_format: LineFormat::Locations,
            speculate: true,
            // Not published; unchanged since 3.11 (`int co_flags` after three pointers).
            co_flags: 48,
            co_argcount: Some(f(39)),
            co_firstlineno: f(38),
            co_filename: f(34),
            co_name: f(35),
            co_qualname: Some(f(36)),
            co_linetable: f(37),
            co_code_adaptive: f(42),
            ob_type: f(44),
            bytes_size: f(64),
            bytes_sval: f(65),
            str_length: f(68),
            str_state: f(67),
            ascii_size: f(69),
            // 3.12+ dropped `wstr`: utf8_length and utf8 follow the ASCII header.
            compact_size: f(69) + 16,
        })
    }

    /// Bytes of a thread state we read at once: everything the walk and validation need.
    pub fn tstate_len(&self) -> usize {
        let root = match self.frame_root {
            FrameRoot::CFrame { cframe, .. } => cframe,
            FrameRoot::Direct { current_frame } => current_frame,
        };
        end_of(&[
            self.ts_next,
            self.ts_interp,
            self.ts_native_tid,
            root,
            self.ts_datastack_top.unwrap_or(0),
        ])
    }

    /// Bytes of `_PyInterpreterFrame` read per frame (one read each).
    pub fn frame_len(&self) -> usize {
        let entry = match self.entry {
            EntryMark::IsEntry(o) => o,
            EntryMark::ShimOwner | EntryMark::EveryFrame => 0,
        };
        let owner_end = self.fr_owner.map_or(0, |o| o as usize + 1);
        end_of(&[self.fr_code, self.fr_previous, self.fr_instr, entry]).max(owner_end)
    }

    /// Bytes of a code object read to validate it (type, checksum fields, string pointers).
    pub fn code_window(&self) -> usize {
        end_of(&[
            self.ob_type,
            self.co_flags,
            self.co_argcount.unwrap_or(0),
            self.co_firstlineno,
            self.co_filename,
            self.co_name,
            self.co_qualname.unwrap_or(0),
            self.co_linetable,
        ])
    }
}

/// One past the last byte of the 8-byte fields at `offsets`.
fn end_of(offsets: &[u64]) -> usize {
    offsets.iter().map(|&o| o as usize + 8).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 3.13.0 x86_64 table, as the file's `.PyRuntime` section holds it.
    fn table_3130() -> Vec<u8> {
        let fields: [u64; 72] = [
            0x30d00f0, 0, 283320, 608, 632, 194968, 7272, 7264, 7344, 7400, 7656, 7640, 7648, 16,
            7752, 0, 7768, 7760, 304, 0, 8, 16, 72, 152, 160, 232, 32, 80, 8, 0, 56, 72, 70, 208,
            112, 120, 128, 136, 68, 52, 96, 104, 200, 16, 8, 416, 24, 88, 168, 32, 24, 16, 40, 24,
            16, 48, 32, 40, 24, 16, 32, 16, 24, 40, 16, 32, 64, 32, 16, 40, 240, 200,
        ];
        let mut raw = COOKIE.to_vec();
        raw.extend(fields.iter().flat_map(|f| f.to_le_bytes()));
        raw
    }

    #[test]
    fn parses_3130_debug_offsets() {
        let l = Layout::from_debug_offsets(&table_3130(), 13).unwrap();
        assert_eq!(l.interpreters_head, 632);
        assert_eq!(l.threads_head, 7344);
        assert_eq!(l.frame_root, FrameRoot::Direct { current_frame: 72 });
        assert_eq!(l.ts_native_tid, 160);
        assert_eq!(
            (l.fr_previous, l.fr_code, l.fr_instr, l.fr_owner),
            (8, 0, 56, Some(70))
        );
        assert_eq!(
            (l.co_filename, l.co_name, l.co_qualname, l.co_linetable),
            (112, 120, Some(128), 136)
        );
        assert_eq!((l.co_firstlineno, l.co_code_adaptive), (68, 200));
        assert_eq!((l.str_state, l.str_length, l.ascii_size), (32, 16, 40));
    }

    #[test]
    fn rejects_bad_debug_offsets() {
        let good = table_3130();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(Layout::from_debug_offsets(&bad, 13).is_err());
        assert!(Layout::from_debug_offsets(&good, 12).is_err());
        assert!(Layout::from_debug_offsets(&good[..100], 13).is_err());
        let mut ft = good.clone();
        ft[16] = 1; // free_threaded
        assert!(Layout::from_debug_offsets(&ft, 13).is_err());
        let mut out_of_struct = good;
        // interpreter_frame.owner (index 32) beyond interpreter_frame.size (80)
        out_of_struct[8 + 32 * 8] = 200;
        assert!(Layout::from_debug_offsets(&out_of_struct, 13).is_err());
    }

    #[test]
    fn read_lengths() {
        assert_eq!(Layout::v311().frame_len(), 76);
        assert_eq!(Layout::v311().tstate_len(), 312);
        assert_eq!(Layout::v312().tstate_len(), 248);
        assert_eq!(Layout::v312().frame_len(), 71);
        assert_eq!(Layout::v312().code_window(), 144);
        assert_eq!(Layout::v310().frame_len(), 104);
        assert_eq!(Layout::v310().tstate_len(), 184);
        assert_eq!(Layout::v38(9).code_window(), 128);
    }
}
