//! Struct offsets per CPython minor version (cpython-frames.md §2, §4, §5).
//!
//! Owns every number that depends on the interpreter's build: hard-coded tables for 3.8–3.10
//! (from `offsetof` against the pyenv headers, x86_64) and 3.11–3.12 (verified on x86_64), and
//! for 3.13 a parser of the `_Py_DebugOffsets` table the target
//! itself publishes at `&_PyRuntime`, validated before use. Semantics that the table does not
//! describe (owner values, `state` bits, the compact-string data offset) stay hand-coded.

use crate::debug_offsets::DebugTable;
pub use crate::debug_offsets::MAX_LEN as DEBUG_OFFSETS_LEN;

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
    /// Tag bits to clear from the frame's code pointer (3.14+ `_PyStackRef`).
    pub fr_code_tag: u64,
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
    /// Where the GIL's holder is published (3.11+).
    pub gil: Option<GilAt>,
    /// `PyInterpreterState` offset of the collector's `collecting` flag (an `int`, 3.11+).
    pub gc_collecting: Option<u64>,
    /// What following coroutines needs (3.14+).
    pub coro: Option<CoroLayout>,
}

/// Coroutine and set layouts, for asyncio task chains (3.14+, from `_Py_DebugOffsets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoroLayout {
    /// `PyGenObject.gi_iframe`: the embedded frame.
    pub gi_iframe: u64,
    /// `PyGenObject.gi_frame_state` (an `int8_t`).
    pub gi_frame_state: u64,
    /// The `gi_frame_state` of a coroutine suspended in `await`/`yield from` (unpublished:
    /// -1 on 3.14, 2 on 3.15, from each version's `pycore_frame.h`).
    pub suspended_yield_from: i8,
    /// `_PyInterpreterFrame.stackpointer`: the awaited object is just below it.
    pub fr_stackpointer: u64,
    /// `PySetObject.table` and `.mask`: a task awaited by several is in a set of them.
    pub set_table: u64,
    pub set_mask: u64,
    /// `PyLongObject` `lv_tag` and `ob_digit`: unnamed tasks are numbered (`Task-N`).
    pub long_tag: u64,
    pub long_digit: u64,
}

/// Where a thread can tell whether it holds the GIL (3.11+). `locked` and `holder` are `int`
/// and `PyThreadState*` fields of `struct _gil_runtime_state`; `last_holder` stays set after
/// a release, so it only counts while `locked`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GilAt {
    /// 3.11: `_PyRuntime.gilstate.tstate_current`, the holder, at this runtime offset.
    RuntimeCurrent(u64),
    /// 3.12: `PyInterpreterState.ceval.gil` points to the GIL (offsets from the 3.12.1 headers).
    InterpPointer { gil: u64, holder: u64, locked: u64 },
    /// 3.13, 3.14: the interpreter's own GIL, `PyInterpreterState._gil`.
    Interp { holder: u64, locked: u64 },
    /// 3.15: `PyThreadState.holds_gil`, per thread.
    Thread { holds_gil: u64 },
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
            fr_code_tag: 0,
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
            // `offsetof` against the pyenv 3.11.7 headers (`-DPy_BUILD_CORE`).
            gil: Some(GilAt::RuntimeCurrent(576)),
            gc_collecting: Some(648 + 200),
            coro: None,
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
            // `offsetof` against the pyenv 3.12.1 headers (`-DPy_BUILD_CORE`).
            gil: Some(GilAt::InterpPointer {
                gil: 384,
                holder: 8,
                locked: 16,
            }),
            gc_collecting: Some(112 + 200),
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
            fr_code_tag: 0,
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
            gil: None,
            gc_collecting: None,
            coro: None,
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

    /// Builds the layout of a 3.13+ target from its `_Py_DebugOffsets` (`raw` read from
    /// `&_PyRuntime`), validated by [`DebugTable::parse`]. `expect_minor` comes from
    /// `Py_Version` or the file name and must agree.
    pub fn from_debug_offsets(raw: &[u8], expect_minor: u8) -> Result<Layout, String> {
        let t = DebugTable::parse(raw, expect_minor)?;
        let off = |g: &str, f: &str| t.offset(g, f);
        let ascii_size = t.value("unicode_object", "asciiobject_size")?;
        // 3.15 publishes `sizeof(PyCompactUnicodeObject)`; before, it is the ASCII header plus
        // `utf8_length` and `utf8` (3.12+ dropped `wstr`).
        let compact_size = t
            .value("unicode_object", "compactunicodeobject_size")
            .unwrap_or(ascii_size + 16);
        if ascii_size > t.value("unicode_object", "size")? || compact_size > 4096 {
            return Err("_Py_DebugOffsets: implausible string header sizes".into());
        }
        let gil = match t.offset_opt("thread_state", "holds_gil")? {
            Some(holds_gil) => GilAt::Thread { holds_gil },
            None => GilAt::Interp {
                holder: off("interpreter_state", "gil_runtime_state_holder")?,
                locked: off("interpreter_state", "gil_runtime_state_locked")?,
            },
        };
        let gc = t.value("interpreter_state", "gc")?;
        let gc_collecting = gc
            .checked_add(t.offset("gc", "collecting")?)
            .filter(|&o| o < t.value("interpreter_state", "size").unwrap_or(0))
            .ok_or("_Py_DebugOffsets: gc.collecting outside the interpreter state")?;
        Ok(Layout {
            minor: t.minor,
            interpreters_head: off("runtime_state", "interpreters_head")?,
            interp_next: off("interpreter_state", "next")?,
            threads_head: off("interpreter_state", "threads_head")?,
            ts_next: off("thread_state", "next")?,
            ts_interp: off("thread_state", "interp")?,
            ts_native_tid: off("thread_state", "native_thread_id")?,
            tid_via_pthread: false,
            frame_root: FrameRoot::Direct {
                current_frame: off("thread_state", "current_frame")?,
            },
            ts_datastack_top: None,
            fr_code: off("interpreter_frame", "executable")?,
            // 3.14+: `f_executable` is a `_PyStackRef` whose low bits are tags (one on 3.14's
            // default build, two on 3.15); objects are 16-byte aligned, so clearing both is
            // exact everywhere.
            fr_code_tag: if t.minor >= 14 { 3 } else { 0 },
            fr_previous: off("interpreter_frame", "previous")?,
            fr_instr: off("interpreter_frame", "instr_ptr")?,
            fr_owner: Some(off("interpreter_frame", "owner")?),
            entry: EntryMark::ShimOwner,
            instr: Instr::Pointer,
            line_format: LineFormat::Locations,
            speculate: true,
            // Not published; unchanged since 3.11 (`int co_flags` after three pointers).
            co_flags: 48,
            co_argcount: Some(off("code_object", "argcount")?),
            co_firstlineno: off("code_object", "firstlineno")?,
            co_filename: off("code_object", "filename")?,
            co_name: off("code_object", "name")?,
            co_qualname: Some(off("code_object", "qualname")?),
            co_linetable: off("code_object", "linetable")?,
            co_code_adaptive: off("code_object", "co_code_adaptive")?,
            ob_type: off("pyobject", "ob_type")?,
            bytes_size: off("bytes_object", "ob_size")?,
            bytes_sval: off("bytes_object", "ob_sval")?,
            str_length: off("unicode_object", "length")?,
            str_state: off("unicode_object", "state")?,
            ascii_size,
            compact_size,
            gil: Some(gil),
            gc_collecting: Some(gc_collecting),
            coro: if t.minor >= 14 {
                Some(CoroLayout {
                    gi_iframe: off("gen_object", "gi_iframe")?,
                    gi_frame_state: off("gen_object", "gi_frame_state")?,
                    suspended_yield_from: if t.minor == 14 { -1 } else { 2 },
                    fr_stackpointer: off("interpreter_frame", "stackpointer")?,
                    set_table: off("set_object", "table")?,
                    set_mask: off("set_object", "mask")?,
                    long_tag: off("long_object", "lv_tag")?,
                    long_digit: off("long_object", "ob_digit")?,
                })
            } else {
                None
            },
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
    const COOKIE: &[u8; 8] = b"xdebugpy";

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

    /// The 3.14 table of Debian's python3.14 (0x30e0af0), read from its `.PyRuntime` section.
    fn table_314() -> Vec<u8> {
        let fields: [u64; 94] = [
            0x30e0af0, 0, 316616, 784, 808, 225864, 7280, 7272, 7344, 7360, 7408, 7688, 7672, 7680,
            16, 7784, 0, 7800, 7792, 7992, 0, 832, 0, 8, 16, 72, 152, 160, 232, 32, 88, 8, 0, 56,
            80, 74, 64, 0, 216, 112, 120, 128, 136, 68, 52, 96, 104, 208, 0, 16, 8, 416, 24, 88,
            168, 40, 32, 16, 40, 24, 16, 200, 24, 40, 32, 48, 32, 40, 24, 16, 32, 16, 24, 40, 16,
            32, 64, 32, 16, 40, 264, 192, 160, 24, 72, 67, 0, 8, 24, 304, 8076, 0, 4, 512,
        ];
        let mut raw = COOKIE.to_vec();
        raw.extend(fields.iter().flat_map(|f| f.to_le_bytes()));
        raw
    }

    /// The 3.15 table of Debian's python3.15 (0x30f02f0), read from its `.PyRuntime` section.
    fn table_315() -> Vec<u8> {
        let fields: [u64; 110] = [
            0x30f02f0, 0, 346568, 912, 936, 226240, 7272, 7264, 7336, 7352, 7400, 7592, 7576, 7584,
            16, 7736, 0, 7752, 7744, 7944, 0, 888, 0, 8, 16, 72, 80, 88, 96, 176, 184, 256, 32, 36,
            40, 136, 288, 0, 88, 8, 0, 56, 80, 74, 64, 0, 216, 112, 120, 128, 136, 68, 52, 96, 104,
            208, 0, 16, 8, 424, 24, 88, 168, 32, 288, 944, 888, 40, 32, 16, 40, 24, 16, 200, 24,
            40, 32, 48, 32, 40, 24, 16, 32, 16, 24, 40, 16, 32, 64, 32, 16, 40, 56, 176, 112, 120,
            1120, 104, 160, 24, 72, 67, 0, 8, 24, 344, 8028, 0, 4, 512,
        ];
        let mut raw = COOKIE.to_vec();
        raw.extend(fields.iter().flat_map(|f| f.to_le_bytes()));
        raw
    }

    #[test]
    fn parses_314_and_315_debug_offsets() {
        let l = Layout::from_debug_offsets(&table_314(), 14).unwrap();
        assert_eq!((l.interpreters_head, l.threads_head), (808, 7344));
        assert_eq!(l.frame_root, FrameRoot::Direct { current_frame: 72 });
        assert_eq!((l.ts_next, l.ts_interp, l.ts_native_tid), (8, 16, 160));
        assert_eq!(
            (
                l.fr_previous,
                l.fr_code,
                l.fr_instr,
                l.fr_owner,
                l.fr_code_tag
            ),
            (8, 0, 56, Some(74), 3)
        );
        assert_eq!((l.co_firstlineno, l.co_code_adaptive), (68, 208));
        assert_eq!((l.ascii_size, l.compact_size), (40, 56));
        assert_eq!(
            l.gil,
            Some(GilAt::Interp {
                holder: 7792,
                locked: 7800
            })
        );
        // Fields inserted mid-struct in 3.15 move everything after them.
        let l = Layout::from_debug_offsets(&table_315(), 15).unwrap();
        assert_eq!((l.interpreters_head, l.threads_head), (936, 7336));
        assert_eq!(l.ts_native_tid, 184);
        assert_eq!((l.fr_owner, l.co_code_adaptive), (Some(74), 208));
        assert_eq!(
            (l.str_state, l.str_length, l.ascii_size, l.compact_size),
            (32, 16, 40, 56)
        );
        assert_eq!(l.gil, Some(GilAt::Thread { holds_gil: 36 }));
        // A table is only read with its own version's schema.
        assert!(Layout::from_debug_offsets(&table_315(), 14).is_err());
        assert!(Layout::from_debug_offsets(&table_314()[..400], 14).is_err());
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
