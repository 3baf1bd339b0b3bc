//! Reading a thread's chain of frames: the public reads ([`PythonProcess::read_thread`],
//! [`PythonProcess::read_thread_at`]), retried when the running target tears a walk, and the
//! walk itself along `previous`, frame by frame, with speculative reads of the frames below.

use super::*;
use crate::layout::{EntryMark, FrameRoot, Instr, OWNER_CSTACK, OWNER_GENERATOR};

/// How long a tid found without a thread state is answered from memory, so a C-extension
/// thread does not trigger a thread-list walk on every sample.
const NO_TSTATE_TTL: Duration = Duration::from_millis(250);

/// Extra walks after one that failed in a way a running target explains (see `is_race`).
const MAX_RETRIES: u32 = 4;

impl PythonProcess {
    /// Reads thread `tid`'s Python frames now, innermost first, into `out` (cleared first).
    /// `Ok(false)`: the thread has no Python thread state. On `Err`, `out` is empty.
    pub fn read_thread(
        &mut self,
        tid: u32,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<bool, PyError> {
        out.clear();
        self.stats.reads += 1;
        self.last_anchor = None;
        let r = self.read_inner(tid, None, codes, out);
        match &r {
            Ok(_) => self.stats.frames += out.len() as u64,
            Err(_) => {
                self.stats.errors += 1;
                out.clear();
            }
        }
        r
    }

    /// Reads thread `tid`'s Python frames **as of the sample** whose stack copy is `at`, when
    /// the copy allows it, else as [`read_thread`](Self::read_thread) does; same results and
    /// errors. [`ReadStats::anchored`] / [`ReadStats::unanchored`] count which happened.
    ///
    /// On 3.11 and 3.12 each `_PyEval_EvalFrameDefault` activation keeps its `_PyCFrame` on
    /// the C stack, and its `current_frame` field is that activation's innermost frame. The
    /// reader finds the innermost activation that is live now and whose cframe lies in the
    /// copy, takes `current_frame` **from the copy** (its value at the sample), and walks the
    /// frames outwards from there in live memory. Frames the thread pushed after the sample are
    /// so left out, in its innermost activation and in activations it entered since. What stays
    /// read-time: the contents of the anchored frame (its line, and its code if the frame was
    /// popped and its memory reused after the sample, see `walk_anchored`), and activations the
    /// thread has *returned* from since the sample, which are missing (the merge then reports
    /// their eval frames as unavailable rather than pairing them with wrong frames; given
    /// their number, [`recover_returned`](Self::recover_returned) can find them in the copy).
    ///
    /// 3.8-3.10 and 3.13 have nothing in the copy that pins the innermost frame (see the crate
    /// docs) and always fall back. Cost on 3.11/3.12: one read of the cframe (the read-time
    /// path reads it too), one more per activation entered since the sample; when the thread
    /// has moved, the read-time chain is walked as well to check the anchored one against it.
    pub fn read_thread_at(
        &mut self,
        tid: u32,
        at: SampleStack<'_>,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<bool, PyError> {
        out.clear();
        self.stats.reads += 1;
        self.last_anchor = None;
        let r = self.read_inner(tid, Some(at), codes, out);
        match &r {
            Ok(_) => self.stats.frames += out.len() as u64,
            Err(_) => {
                self.stats.errors += 1;
                out.clear();
            }
        }
        r
    }

    fn read_inner(
        &mut self,
        tid: u32,
        at: Option<SampleStack<'_>>,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<bool, PyError> {
        let ns_tid = self.ns_tid(tid)?;
        if !self.load_tstate(ns_tid)? {
            if let Some(at) = self.no_tstate.get(&tid) {
                if at.elapsed() < NO_TSTATE_TTL {
                    return Ok(false);
                }
            }
            let complete = self.rebuild_threads()?;
            if !self.load_tstate(ns_tid)? {
                if complete {
                    self.no_tstate.insert(tid, Instant::now());
                }
                // The tid may have been reused by a new thread in the namespace.
                self.ns_tids.remove(&tid);
                return Ok(false);
            }
        }
        self.no_tstate.remove(&tid);

        if let Some(at) = at {
            // Any failure of the anchored walk falls back to the read-time one below, which
            // retries races on its own.
            if let Ok(true) = self.read_anchored(at, codes, out) {
                self.stats.anchored += 1;
                if let Some(a) = &mut self.last_anchor {
                    a.tid = tid;
                }
                return Ok(true);
            }
            self.last_anchor = None;
            out.clear();
            self.stats.unanchored += 1;
        }

        // The target keeps running, so a walk can meet a frame being pushed or popped (a stale
        // `previous`, a half-written frame). Such a walk is retried from a fresh thread state:
        // it is cheap and turns most races into a slightly later but consistent chain.
        let mut attempt = 0;
        loop {
            let r = self.read_chain(codes, out);
            match r {
                Err(ref e) if attempt < MAX_RETRIES && e.is_race() => {
                    attempt += 1;
                    self.stats.retries += 1;
                    out.clear();
                    self.mem
                        .read("thread state", self.current_tstate, &mut self.tstate_buf)?;
                }
                r => return r,
            }
        }
    }

    /// Reads the chain of the thread state in `tstate_buf`.
    fn read_chain(
        &mut self,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<bool, PyError> {
        let l = &self.layout;
        let frame = match l.frame_root {
            FrameRoot::CFrame {
                cframe,
                current_frame,
                ..
            } => {
                let cf = le_u64(&self.tstate_buf, cframe);
                if cf == 0 {
                    // Thread starting or finishing: a thread state without frames.
                    return Ok(true);
                }
                check_range("cframe", cf, 8)?;
                self.mem
                    .read_u64("cframe.current_frame", cf + current_frame)?
            }
            FrameRoot::Direct { current_frame } => le_u64(&self.tstate_buf, current_frame),
        };

        self.walk_frames(frame, None)?;
        self.resolve_frames(codes, out)?;
        Ok(true)
    }

    /// Follows `previous` from `first`, one read per frame, into `self.raw` (innermost first).
    ///
    /// A complete chain ends at the thread's first C→Python entry: on 3.11 a frame with
    /// `is_entry`, on 3.12+ a shim frame. Ending anywhere else means we followed a `previous`
    /// that was cleared or rewritten under us (a generator yielding, a frame popping): torn.
    /// ≤ 3.10 frame objects carry no such mark, so a torn chain there goes unnoticed.
    ///
    /// With `rejoin`, the walk starts at a popped frame (`walk_anchored`): every frame before
    /// `rejoin.at` must lie at or above `rejoin.top`, the last of them exactly at `top`, and
    /// the walk must reach `rejoin.at`; else the chain is reported torn.
    pub(super) fn walk_frames(
        &mut self,
        first: u64,
        rejoin: Option<Rejoin>,
    ) -> Result<(), PyError> {
        let l = self.layout;
        self.raw.clear();
        self.visited.clear();
        self.block_hi = 0;
        let mut addr = first;
        let mut last = 0;
        let mut at_bottom = true;
        let mut joined = rejoin.is_none();
        while addr != 0 {
            if let (false, Some(r)) = (joined, rejoin) {
                if addr == r.at && last == r.top {
                    joined = true;
                } else if addr < r.top {
                    return Err(PyError::TornChain { addr });
                }
            }
            if self.raw.len() >= MAX_FRAMES {
                self.stats.truncated += 1;
                return Ok(());
            }
            if !addr.is_multiple_of(8) {
                return Err(PyError::BadPointer {
                    what: "frame",
                    addr,
                });
            }
            if !self.visited.insert(addr) {
                return Err(PyError::FrameLoop { addr });
            }
            self.frame_at(addr)?;
            let (owner, previous, code, addrq) = self.frame_fields();
            last = addr;
            match (l.entry, owner) {
                (EntryMark::ShimOwner, OWNER_CSTACK) => {
                    // The shim closes the activation whose innermost frames we pushed last.
                    if let Some(last) = self.raw.last_mut() {
                        last.entry = true;
                    }
                    at_bottom = true;
                }
                (_, 0..=2) => {
                    let entry = match l.entry {
                        EntryMark::IsEntry(off) => self.frame_buf[off as usize] != 0,
                        EntryMark::ShimOwner => false,
                        EntryMark::EveryFrame => true,
                    };
                    // 3.11 has no shim, and a generator resumed from C carries `is_entry`
                    // too: one whose `previous` was just cleared on a yield looks like a
                    // complete chain. A thread's first frame is never a generator's.
                    at_bottom = entry && !(l.minor == 11 && owner == OWNER_GENERATOR);
                    self.raw.push(RawFrame {
                        addr,
                        code,
                        addrq,
                        entry,
                    });
                }
                _ => return Err(PyError::BadFrame { addr, owner }),
            }
            addr = previous;
        }
        if at_bottom && joined {
            Ok(())
        } else {
            Err(PyError::TornChain { addr: last })
        }
    }

    /// `(owner, previous, code, instruction offset)` of the frame in `frame_buf`.
    pub(super) fn frame_fields(&self) -> (u8, u64, u64, i64) {
        let l = &self.layout;
        let owner = l.fr_owner.map_or(0, |o| self.frame_buf[o as usize]);
        let previous = le_u64(&self.frame_buf, l.fr_previous);
        let code = le_u64(&self.frame_buf, l.fr_code) & !l.fr_code_tag;
        let addrq = match l.instr {
            Instr::Pointer => {
                let base = code.wrapping_add(l.co_code_adaptive);
                let instr = le_u64(&self.frame_buf, l.fr_instr);
                if instr < base {
                    -1
                } else {
                    i64::try_from((instr - base) / 2).unwrap_or(i64::MAX)
                }
            }
            Instr::LastiUnits => i64::from(le_i32(&self.frame_buf, l.fr_instr)).max(-1) * 2,
            Instr::LastiBytes => i64::from(le_i32(&self.frame_buf, l.fr_instr)).max(-1),
        };
        (owner, previous, code, addrq)
    }

    /// Puts the frame at `addr` into `frame_buf`: from the block read for an inner frame of
    /// this walk when it lies there, else with a new read that also fetches the memory below.
    pub(super) fn frame_at(&mut self, addr: u64) -> Result<(), PyError> {
        if !self.layout.speculate {
            // ≤ 3.10 frame objects are scattered over the heap.
            return self.mem.read("frame", addr, &mut self.frame_buf);
        }
        let len = self.frame_buf.len() as u64;
        let cached =
            addr >= self.block_lo && addr.checked_add(len).is_some_and(|e| e <= self.block_hi);
        if !cached {
            let valid_below =
                self.mem
                    .read_with_below("frame", addr, SPECULATE, &mut self.block)?;
            self.block_base = addr.wrapping_sub(SPECULATE as u64);
            self.block_lo = addr - valid_below as u64;
            self.block_hi = addr + len;
        }
        let at = addr.wrapping_sub(self.block_base) as usize;
        self.frame_buf
            .copy_from_slice(&self.block[at..at + len as usize]);
        Ok(())
    }
}
